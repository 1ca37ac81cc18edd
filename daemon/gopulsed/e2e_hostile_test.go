package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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
