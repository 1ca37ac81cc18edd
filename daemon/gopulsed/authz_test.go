package main

// The API's peer check: a client running as user nobody is refused (403,
// JSON error, log line) even through a world-writable socket, and let in
// when the allowed group is its primary or a supplementary group. The
// clients are this test binary, copied where nobody can run it and
// re-executed under other credentials.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/daemon/api/apitest"
	"github.com/gopulse/gopulse/internal/testenv"
)

const authzSocketEnv = "GOPULSE_AUTHZ_TEST_SOCKET"

// TestAuthzClientHelper is the client, run by TestPeerAuthorization: it
// prints the HTTP status and body of GET /v1/status.
func TestAuthzClientHelper(t *testing.T) {
	sock := os.Getenv(authzSocketEnv)
	if sock == "" {
		t.Skip("helper process for TestPeerAuthorization")
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://gopulsed" + api.PathStatus)
	if err != nil {
		fmt.Printf("ERROR %v\n", err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("STATUS %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
}

// testGroup picks an existing group that nobody is not in, to stand for
// group gopulse (which the test does not create on the host).
func testGroup(t *testing.T) (string, uint32) {
	t.Helper()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		testenv.Unavailable(t, "no user nobody: %v", err)
	}
	gids, _ := nobody.GroupIds()
	for _, name := range []string{"gopulse", "users", "daemon", "sys", "adm"} {
		g, err := user.LookupGroup(name)
		if err != nil || g.Gid == nobody.Gid {
			continue
		}
		member := false
		for _, id := range gids {
			member = member || id == g.Gid
		}
		if !member {
			n, _ := strconv.Atoi(g.Gid)
			return name, uint32(n)
		}
	}
	testenv.Unavailable(t, "no group to test with")
	return "", 0
}

func TestPeerAuthorization(t *testing.T) {
	testenv.RequireRoot(t)
	group, gid := testGroup(t)
	nobody, _ := user.Lookup("nobody")
	uid, _ := strconv.Atoi(nobody.Uid)
	ngid, _ := strconv.Atoi(nobody.Gid)

	// A directory everyone may enter, a test binary everyone may run.
	dir, err := os.MkdirTemp("", "gopulse-authz")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}

	logBuf := &lockedBuf{}
	log := slog.New(slog.NewTextHandler(logBuf, nil))
	srv := api.NewServer(apitest.NewSource(), log)
	srv.RequirePeerGroup(group, "/proc")
	sock := filepath.Join(dir, "api.sock")
	ln, err := api.Listen(sock, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	// The mode no longer protects: only the peer check does.
	os.Chmod(sock, 0o666)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()

	client := func(cred *syscall.Credential) (int, string) {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^TestAuthzClientHelper$")
		cmd.Env = append(os.Environ(), authzSocketEnv+"="+sock, "GOCOVERDIR="+dir)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client: %v\n%s", err, out)
		}
		s := string(out)
		i := strings.Index(s, "STATUS ")
		if i < 0 {
			t.Fatalf("client output: %s", s)
		}
		var code int
		fmt.Sscanf(s[i:], "STATUS %d", &code)
		return code, s[i:]
	}

	// root (this process): allowed.
	if _, err := api.NewClient(sock).Status(ctx); err != nil {
		t.Errorf("root: %v", err)
	}
	// nobody, not in the group: 403 with a JSON error.
	code, out := client(&syscall.Credential{Uid: uint32(uid), Gid: uint32(ngid), Groups: []uint32{}})
	if code != 403 || !strings.Contains(out, "application/json") {
		t.Errorf("nobody: %d\n%s", code, out)
	}
	var e api.Error
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):strings.LastIndex(out, "}")+1]), &e); err != nil {
		t.Errorf("403 body is not an api.Error: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("uid %d (nobody) is neither root nor a member of group %s", uid, group); !strings.Contains(e.Error, want) {
		t.Errorf("403 error %q, want it to say %q", e.Error, want)
	}
	if l := logBuf.String(); !strings.Contains(l, "refused a peer") || !strings.Contains(l, "peer_uid="+nobody.Uid) {
		t.Errorf("no log line for the refusal:\n%s", l)
	}
	// nobody with the group as a supplementary group: allowed.
	if code, out := client(&syscall.Credential{Uid: uint32(uid), Gid: uint32(ngid), Groups: []uint32{gid}}); code != 200 {
		t.Errorf("nobody with supplementary group %s: %d\n%s", group, code, out)
	}
	// nobody with the group as its primary group: allowed.
	if code, out := client(&syscall.Credential{Uid: uint32(uid), Gid: gid, Groups: []uint32{}}); code != 200 {
		t.Errorf("nobody with primary group %s: %d\n%s", group, code, out)
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
