package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
)

// freeAddr returns a loopback TCP address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// rawControl returns the first control character (other than newline and
// tab) in s, if any.
func rawControl(s string) (rune, bool) {
	for _, r := range s {
		if r != '\n' && r != '\t' && (r < 0x20 || r == 0x7f || 0x80 <= r && r <= 0x9f) {
			return r, true
		}
	}
	return 0, false
}

// Any local user names their binary: a Go program whose file name holds a
// terminal escape and invalid UTF-8 is listed by the CLI escaped (table
// and JSON, the JSON valid UTF-8), and exported to Prometheus with a valid
// label, by the real daemon.
func TestHostileExecutableName(t *testing.T) {
	addr := freeAddr(t)
	d := e2etest.StartDaemon(t, "--prometheus-listen", addr)
	src := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	dir := t.TempDir()
	name := "ev\x1b[31mil\x07\xff\xfe\u009b"
	bin := filepath.Join(dir, name)
	copyFile(t, src, bin)
	f := e2etest.StartFixture(t, bin, nil, "-wait", "-hold", "-gcloop", "2")
	e2etest.WaitFor(t, 10*time.Second, "the fixture to be listed", func() bool {
		_, ok := d.Process(t, f.PID)
		return ok
	})
	f.Proceed()
	f.Expect("final")

	// The daemon cleaned the name where it entered.
	clean := `ev\x1b[31mil\x07` + "\uFFFD\uFFFD" + `\u009b`
	p, _ := d.Process(t, f.PID)
	if p.Exe != filepath.Join(dir, clean) {
		t.Errorf("exe = %q, want %q", p.Exe, filepath.Join(dir, clean))
	}
	if p.ServiceName != clean {
		t.Errorf("service name = %q, want %q", p.ServiceName, clean)
	}

	for _, args := range [][]string{{"ps"}, {"ps", "-o", "json"}, {"gc", strconv.Itoa(f.PID)}, {"status"}} {
		out, err := exec.Command(cliBinary(t), append([]string{"--socket", d.Socket}, args...)...).Output()
		if err != nil {
			t.Fatalf("gopulse %v: %v", args, err)
		}
		s := string(out)
		if r, ok := rawControl(s); ok || !utf8.ValidString(s) {
			t.Errorf("gopulse %v: control %U or invalid UTF-8 in %q", args, r, s)
		}
		if args[0] == "ps" && len(args) == 1 && !strings.Contains(s, clean) {
			t.Errorf("gopulse ps: %q not shown escaped:\n%s", clean, s)
		}
	}
	ps := psJSON(t, d)
	found := false
	for _, q := range ps {
		found = found || q.PID == f.PID && q.Exe == filepath.Join(dir, clean)
	}
	if !found {
		t.Errorf("gopulse ps -o json: pid %d with exe %q not listed", f.PID, filepath.Join(dir, clean))
	}

	// Prometheus: the series of the process, its labels valid UTF-8.
	var body, last string
	e2etest.WaitFor(t, 15*time.Second, "the process's series on /metrics", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body, last = string(b), resp.Status
		return resp.StatusCode == http.StatusOK && strings.Contains(body, fmt.Sprintf(`process_pid="%d"`, f.PID))
	})
	if !utf8.ValidString(body) {
		t.Errorf("/metrics not valid UTF-8")
	}
	if r, ok := rawControl(body); ok {
		t.Errorf("/metrics holds control %U", r)
	}
	// The text format escapes the backslashes of the cleaned name.
	want := `process_executable_name="` + strings.ReplaceAll(clean, `\`, `\\`) + `"`
	if !strings.Contains(body, want) {
		t.Errorf("/metrics: no %s (last %s)", want, last)
	}
	f.Finish()
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// in dir, and returns their paths and a pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gopulsed test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// The Prometheus endpoint behind TLS and basic auth, configured as
// node-exporter's (--web.config.file, exporter-toolkit's format): a scrape
// without credentials, or with a wrong password, is refused with 401; with
// them it is served, over TLS only.
func TestPrometheusTLSBasicAuth(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	conf := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  scraper: %s\n", certFile, keyFile, hash)
	if err := os.WriteFile(webConfig, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	e2etest.StartDaemon(t, "--prometheus-listen", addr, "--web.config.file", webConfig)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(scheme, user, pass string) (int, string, error) {
		req, err := http.NewRequest(http.MethodGet, scheme+"://"+addr+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	var code int
	var body string
	e2etest.WaitFor(t, 10*time.Second, "the endpoint to serve with credentials", func() bool {
		code, body, err = get("https", "scraper", "s3cret")
		return err == nil && code == http.StatusOK
	})
	if !strings.Contains(body, "gopulse_processes_traced") {
		t.Errorf("with credentials: no gopulse_processes_traced in:\n%.2000s", body)
	}
	for _, tc := range []struct {
		name, scheme, user, pass string
		want                     int
	}{
		{"no credentials", "https", "", "", http.StatusUnauthorized},
		{"wrong password", "https", "scraper", "guess", http.StatusUnauthorized},
		{"unknown user", "https", "admin", "s3cret", http.StatusUnauthorized},
		{"plain HTTP", "http", "scraper", "s3cret", http.StatusBadRequest},
	} {
		code, body, err := get(tc.scheme, tc.user, tc.pass)
		if err != nil || code != tc.want {
			t.Errorf("%s: status %d, err %v, want %d", tc.name, code, err, tc.want)
		}
		if strings.Contains(body, "gopulse_") {
			t.Errorf("%s: metrics served:\n%.500s", tc.name, body)
		}
	}
}

// An exec storm of short-lived Go processes fills --max-pids with exited
// entries (kept --forget-after, here the default 5 minutes); a
// long-running process started next is traced all the same: exited
// entries give their slots to live ones. (The cap leaves room for the
// other Go processes this shared host runs.)
func TestExecStormThenLongRunning(t *testing.T) {
	const maxPIDs, storm = 64, 150
	d := e2etest.StartDaemon(t, "--max-pids", strconv.Itoa(maxPIDs))
	src := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	bin := filepath.Join(t.TempDir(), "gcload-storm")
	copyFile(t, src, bin)
	e2etest.WarmUp(t, d, bin)
	for i := 0; i < storm; i++ {
		if out, err := exec.Command(bin, "-gcloop", "1").CombinedOutput(); err != nil {
			t.Fatalf("short-lived run %d: %v\n%s", i, err, out)
		}
	}
	e2etest.WaitFor(t, 20*time.Second, fmt.Sprintf("the daemon to hold %d processes", maxPIDs), func() bool {
		st, err := d.Client.Status(context.Background())
		return err == nil && st.Processes == maxPIDs
	})
	f := e2etest.StartFixture(t, bin, nil, "-wait", "-hold", "-gcloop", "3")
	defer func() {
		if t.Failed() {
			ps, _ := d.Client.Processes(context.Background())
			for _, p := range ps {
				t.Logf("listed: pid %d exe %s exited %v", p.PID, p.Exe, p.Exited)
			}
		}
	}()
	e2etest.WaitFor(t, 10*time.Second, "the long-running process to be traced", func() bool {
		p, ok := d.Process(t, f.PID)
		return ok && p.Exited == nil
	})
	f.Proceed()
	f.Expect("final")
	// Traced from its start: every cycle counted.
	checkCycles(t, d, f.PID, f.Final.Sub(e2etest.MemStats{}))
	f.Finish()
	st, err := d.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d short-lived processes: %d listed (cap %d), %d dropped", storm, st.Processes, maxPIDs, st.ProcessesDropped)
}
