package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/daemon/api/apitest"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shortDir returns a fresh directory with a path short enough for sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startServer serves src on a new socket until the test ends.
func startServer(t *testing.T, src api.Source, log *slog.Logger, tweak func(*api.Server)) string {
	t.Helper()
	path := filepath.Join(shortDir(t), "gopulse.sock")
	ln, err := api.Listen(path, api.DefaultSocketMode)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(src, log)
	if tweak != nil {
		tweak(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

func httpClient(path string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
}

func fixture(t *testing.T) (*apitest.Source, []api.Process, map[int][]api.GCCycle, api.Status) {
	t.Helper()
	src := apitest.NewSource()
	src.PanicPID, src.ErrorPID = 666, 500
	procs, cycles, st := apitest.Fixture(src)
	return src, procs, cycles, st
}

func TestRoutes(t *testing.T) {
	src, procs, cycles, st := fixture(t)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	path := startServer(t, src, log, nil)
	hc := httpClient(path)

	sortedProcs := []api.Process{procs[1], procs[0]} // by PID: 77, 1234
	seqs := func(h api.GCHistory) []uint64 {
		var s []uint64
		for _, c := range h.Cycles {
			s = append(s, c.Seq)
		}
		return s
	}
	checkGC := func(wantFirst, wantLast uint64, wantAsked int) func(*testing.T, []byte) {
		return func(t *testing.T, body []byte) {
			var h api.GCHistory
			if err := json.Unmarshal(body, &h); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h.Process, procs[0]) {
				t.Errorf("process = %+v, want %+v", h.Process, procs[0])
			}
			s := seqs(h)
			if len(s) == 0 || s[0] != wantFirst || s[len(s)-1] != wantLast {
				t.Errorf("cycles seqs = %v, want %d..%d", s, wantFirst, wantLast)
			}
			if !reflect.DeepEqual(h.Cycles, cycles[1234][wantFirst-1:wantLast]) {
				t.Errorf("cycles differ from the source's")
			}
			if got := src.LastAsked(); got != wantAsked {
				t.Errorf("source asked for last=%d, want %d", got, wantAsked)
			}
		}
	}

	tests := []struct {
		name      string
		method    string
		path      string
		header    map[string]string
		wantCode  int
		wantErr   []string // substrings of api.Error.Error
		wantAllow string
		check     func(*testing.T, []byte)
	}{
		{name: "ps", path: "/v1/ps", wantCode: 200, check: func(t *testing.T, b []byte) {
			var ps []api.Process
			if err := json.Unmarshal(b, &ps); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ps, sortedProcs) {
				t.Errorf("ps = %+v\nwant %+v", ps, sortedProcs)
			}
		}},
		{name: "status", path: "/v1/status", wantCode: 200, check: func(t *testing.T, b []byte) {
			var got api.Status
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, st) {
				t.Errorf("status = %+v\nwant %+v", got, st)
			}
		}},
		{name: "gc all", path: "/v1/gc/1234", wantCode: 200, check: checkGC(1, 30, api.MaxLast)},
		{name: "gc last 5", path: "/v1/gc/1234?last=5", wantCode: 200, check: checkGC(26, 30, 5)},
		{name: "gc last 0 is all", path: "/v1/gc/1234?last=0", wantCode: 200, check: checkGC(1, 30, api.MaxLast)},
		{name: "gc last capped", path: "/v1/gc/1234?last=99999", wantCode: 200, check: checkGC(1, 30, api.MaxLast)},
		{name: "gc last huge capped", path: "/v1/gc/1234?last=99999999999999999999999", wantCode: 200, check: checkGC(1, 30, api.MaxLast)},
		{name: "gc no cycles is empty array", path: "/v1/gc/77?last=3", wantCode: 200, check: func(t *testing.T, b []byte) {
			if !bytes.Contains(b, []byte(`"cycles": [`)) {
				t.Errorf("cycles not an array: %s", b)
			}
		}},
		{name: "head ps", method: "HEAD", path: "/v1/ps", wantCode: 200},
		{name: "bad pid", path: "/v1/gc/abc", wantCode: 400, wantErr: []string{`bad pid "abc"`, "expected a process ID"}},
		{name: "negative pid", path: "/v1/gc/-5", wantCode: 400, wantErr: []string{`bad pid "-5"`}},
		{name: "zero pid", path: "/v1/gc/0", wantCode: 400, wantErr: []string{`bad pid "0"`}},
		{name: "huge pid", path: "/v1/gc/99999999999999999999", wantCode: 400, wantErr: []string{"bad pid"}},
		{name: "bad last", path: "/v1/gc/1234?last=abc", wantCode: 400, wantErr: []string{`bad last "abc"`, "non-negative integer"}},
		{name: "negative last", path: "/v1/gc/1234?last=-1", wantCode: 400, wantErr: []string{`bad last "-1"`}},
		{name: "empty last", path: "/v1/gc/1234?last=", wantCode: 400, wantErr: []string{`bad last ""`}},
		{name: "repeated last", path: "/v1/gc/1234?last=1&last=2", wantCode: 400, wantErr: []string{"given 2 times"}},
		{name: "unknown pid", path: "/v1/gc/4242", wantCode: 404, wantErr: []string{"pid 4242", api.ErrNoProcess.Error()}},
		{name: "unknown route", path: "/v1/nope", wantCode: 404, wantErr: []string{"unknown route GET /v1/nope"}},
		{name: "root", path: "/", wantCode: 404, wantErr: []string{"unknown route"}},
		{name: "gc without pid", path: "/v1/gc/", wantCode: 404, wantErr: []string{"unknown route"}},
		{name: "gc extra segment", path: "/v1/gc/1234/x", wantCode: 404, wantErr: []string{"unknown route"}},
		{name: "post ps", method: "POST", path: "/v1/ps", wantCode: 405, wantErr: []string{"method POST not allowed on /v1/ps"}, wantAllow: "GET, HEAD"},
		{name: "delete gc", method: "DELETE", path: "/v1/gc/1234", wantCode: 405, wantErr: []string{"not allowed"}, wantAllow: "GET, HEAD"},
		{name: "put status", method: "PUT", path: "/v1/status", wantCode: 405, wantAllow: "GET, HEAD"},
		{name: "handler panic", path: "/v1/gc/666", wantCode: 500, wantErr: []string{"internal error"}},
		{name: "source error", path: "/v1/gc/500", wantCode: 500, wantErr: []string{"pid 500", "ring buffer on fire"}},
		{name: "still alive after panic", path: "/v1/ps", wantCode: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			req, err := http.NewRequest(method, "http://gopulsed"+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tt.wantAllow != "" && resp.Header.Get("Allow") != tt.wantAllow {
				t.Errorf("Allow %q, want %q", resp.Header.Get("Allow"), tt.wantAllow)
			}
			if method == "HEAD" {
				return
			}
			if tt.wantCode >= 300 {
				var e api.Error
				if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
					t.Fatalf("error body %q is not an api.Error: %v", body, err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(e.Error, w) {
						t.Errorf("error %q does not contain %q", e.Error, w)
					}
				}
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}

	l := logs.String()
	for _, want := range []string{
		`msg="api: handler panicked"`, `path=/v1/gc/666`, `panic="apitest: panic for pid 666"`, "stack=",
		`msg="api: GC history" pid=500`,
		`msg="api request" method=GET path=/v1/ps query="" status=200`,
		`path=/v1/gc/abc query="" status=400`,
		fmt.Sprintf("peer_pid=%d", os.Getpid()),
	} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}
}

func TestClient(t *testing.T) {
	src, procs, cycles, st := fixture(t)
	path := startServer(t, src, nil, nil)
	c := api.NewClient(path)
	ctx := context.Background()

	ps, err := c.Processes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []api.Process{procs[1], procs[0]}; !reflect.DeepEqual(ps, want) {
		t.Errorf("Processes = %+v, want %+v", ps, want)
	}

	gotSt, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotSt, st) {
		t.Errorf("Status = %+v, want %+v", gotSt, st)
	}

	for _, tt := range []struct {
		last       int
		wantCycles []api.GCCycle
	}{
		{0, cycles[1234]},
		{-1, cycles[1234]},
		{3, cycles[1234][27:]},
		{1000, cycles[1234]},
	} {
		h, err := c.GCHistory(ctx, 1234, tt.last)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(h, api.GCHistory{Process: procs[0], Cycles: tt.wantCycles}) {
			t.Errorf("GCHistory(1234, %d) = %+v", tt.last, h)
		}
	}

	_, err = c.GCHistory(ctx, 4242, 0)
	var se *api.StatusError
	if !errors.Is(err, api.ErrNoProcess) || !errors.As(err, &se) || se.Code != 404 {
		t.Errorf("GCHistory(unknown) error = %#v, want a 404 wrapping ErrNoProcess", err)
	}
	if err != nil && !strings.HasPrefix(err.Error(), "pid 4242: no such traced process") {
		t.Errorf("GCHistory(unknown) error text %q", err)
	}

	_, err = c.GCHistory(ctx, -5, 0)
	if err == nil || !strings.Contains(err.Error(), `bad pid "-5"`) || errors.Is(err, api.ErrNoProcess) {
		t.Errorf("GCHistory(-5) error = %v", err)
	}
}

func TestClientErrors(t *testing.T) {
	dir := shortDir(t)
	ctx := context.Background()

	// Missing socket.
	missing := filepath.Join(dir, "missing.sock")
	_, err := api.NewClient(missing).Processes(ctx)
	want := "cannot reach gopulsed at " + missing + ": no such file (is gopulsed running? --socket overrides the path)"
	if err == nil || err.Error() != want {
		t.Errorf("missing socket: got %v\nwant %s", err, want)
	}
	var ce *api.ConnError
	if !errors.As(err, &ce) || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("missing socket: error %#v is not a ConnError wrapping ENOENT", err)
	}

	// A regular file where the socket should be.
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = api.NewClient(regular).Status(ctx)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("regular file: got %v", err)
	}

	// A server that does not speak api.Error.
	ln, err := net.Listen("unix", filepath.Join(dir, "proxy.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/status" {
			io.WriteString(w, "not json")
			return
		}
		http.Error(w, "upstream broke", http.StatusBadGateway)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := api.NewClient(ln.Addr().String())
	_, err = c.Processes(ctx)
	if err == nil || err.Error() != "gopulsed answered 502 Bad Gateway: upstream broke" {
		t.Errorf("non-api error: got %v", err)
	}
	_, err = c.Status(ctx)
	if err == nil || !strings.Contains(err.Error(), "cannot decode the answer of gopulsed for /v1/status") {
		t.Errorf("bad json: got %v", err)
	}

	// Cancelled context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Processes(cctx)
	if err == nil || !strings.Contains(err.Error(), "cancelled") {
		t.Errorf("cancelled: got %v", err)
	}
}

func dialErr(errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", errno)}
}

func TestConnErrorMessages(t *testing.T) {
	const sock = "/run/gopulse/gopulse.sock"
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"missing", dialErr(syscall.ENOENT), "cannot reach gopulsed at /run/gopulse/gopulse.sock: no such file (is gopulsed running? --socket overrides the path)"},
		{"eacces", dialErr(syscall.EACCES), "cannot reach gopulsed at /run/gopulse/gopulse.sock: permission denied (membership of group gopulse or root is needed)"},
		{"eperm", dialErr(syscall.EPERM), "cannot reach gopulsed at /run/gopulse/gopulse.sock: permission denied (membership of group gopulse or root is needed)"},
		{"refused", dialErr(syscall.ECONNREFUSED), "cannot reach gopulsed at /run/gopulse/gopulse.sock: connection refused (stale socket or not a socket: is gopulsed running? --socket overrides the path)"},
		{"notdir", dialErr(syscall.ENOTDIR), "cannot reach gopulsed at /run/gopulse/gopulse.sock: a parent of the path is not a directory (--socket overrides the path)"},
		{"other dial", dialErr(syscall.EAGAIN), "cannot reach gopulsed at /run/gopulse/gopulse.sock: connect: resource temporarily unavailable"},
		{"wrapped in url.Error", fmt.Errorf("Get %q: %w", "http://gopulsed/v1/ps", dialErr(syscall.EACCES)), "cannot reach gopulsed at /run/gopulse/gopulse.sock: permission denied (membership of group gopulse or root is needed)"},
		{"reset mid-answer", &net.OpError{Op: "read", Net: "unix", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, "talking to gopulsed at /run/gopulse/gopulse.sock: read unix: read: connection reset by peer"},
		{"deadline", context.DeadlineExceeded, "gopulsed at /run/gopulse/gopulse.sock did not answer in time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := api.ConnErrorForTest(sock, tt.err)
			if err.Error() != tt.want {
				t.Errorf("got  %q\nwant %q", err, tt.want)
			}
			if !errors.Is(err, tt.err) && !errors.Is(tt.err, errors.Unwrap(err)) {
				t.Errorf("%v does not wrap %v", err, tt.err)
			}
		})
	}
}

// TestPermissionDenied queries a mode 0000 socket as an unprivileged user:
// as root, through a child process running as nobody.
func TestPermissionDenied(t *testing.T) {
	if os.Getenv("GOPULSE_TEST_CONNECT") != "" {
		return // the child's run: see TestPermissionDeniedChild
	}
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "locked.sock")
	ln, err := api.Listen(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0 {
		t.Fatalf("mode %v, want 0000", fi.Mode())
	}
	want := "cannot reach gopulsed at " + path + ": permission denied (membership of group gopulse or root is needed)"

	if os.Geteuid() != 0 {
		_, err := api.NewClient(path).Processes(context.Background())
		if err == nil || err.Error() != want {
			t.Errorf("got %v\nwant %s", err, want)
		}
		return
	}
	// Root ignores socket permissions: copy the test binary where nobody
	// can run it and ask it to connect.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "api.test")
	if err := os.WriteFile(child, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(child, "-test.run=^TestPermissionDeniedChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GOPULSE_TEST_CONNECT="+path)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("cannot run the test binary as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "CONNECT-ERROR: "+want+"\n") {
		t.Errorf("child output lacks the permission message %q:\n%s", want, out)
	}
}

func TestPermissionDeniedChild(t *testing.T) {
	path := os.Getenv("GOPULSE_TEST_CONNECT")
	if path == "" {
		t.Skip("run by TestPermissionDenied")
	}
	_, err := api.NewClient(path).Processes(context.Background())
	fmt.Printf("CONNECT-ERROR: %v\n", err)
}

func TestListen(t *testing.T) {
	t.Run("creates dir and sets mode", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "run", "gopulse", "gopulse.sock")
		ln, err := api.Listen(path, api.DefaultSocketMode)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
			t.Errorf("socket mode %v, want socket 0660", fi.Mode())
		}
		di, err := os.Stat(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		if di.Mode().Perm() != 0o755&^umask() {
			t.Errorf("dir mode %v, want 0755 less umask", di.Mode())
		}
	})

	t.Run("removes stale socket", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "gopulse.sock")
		old, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		old.(*net.UnixListener).SetUnlinkOnClose(false)
		old.Close() // leaves a socket nobody listens on
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("stale socket not left behind: %v", err)
		}
		ln, err := api.Listen(path, api.DefaultSocketMode)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		ln.Close()
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Close did not remove the socket: %v", err)
		}
	})

	t.Run("refuses regular file", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "gopulse.sock")
		if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := api.Listen(path, api.DefaultSocketMode)
		if err == nil || !strings.Contains(err.Error(), "refusing to replace it: it exists and is not a socket") {
			t.Errorf("Listen over a file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "precious" {
			t.Errorf("file clobbered: %q", b)
		}
	})

	t.Run("refuses directory", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "gopulse.sock")
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := api.Listen(path, api.DefaultSocketMode)
		if err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Listen over a directory: %v", err)
		}
	})

	t.Run("refuses live socket", func(t *testing.T) {
		src, _, _, _ := fixture(t)
		path := startServer(t, src, nil, nil)
		_, err := api.Listen(path, api.DefaultSocketMode)
		if err == nil || !strings.Contains(err.Error(), "another gopulsed is already listening there") {
			t.Errorf("Listen over a live socket: %v", err)
		}
		if _, err := api.NewClient(path).Status(context.Background()); err != nil {
			t.Errorf("live daemon harmed: %v", err)
		}
	})

	t.Run("path too long", func(t *testing.T) {
		path := "/tmp/" + strings.Repeat("x", 120) + ".sock"
		_, err := api.Listen(path, api.DefaultSocketMode)
		if err == nil || !strings.Contains(err.Error(), "socket path too long") {
			t.Errorf("Listen with a long path: %v", err)
		}
	})

	t.Run("empty path", func(t *testing.T) {
		if _, err := api.Listen("", api.DefaultSocketMode); err == nil {
			t.Error("Listen(\"\") succeeded")
		}
	})
}

func umask() fs.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return fs.FileMode(m)
}

func TestServeShutdown(t *testing.T) {
	src, _, _, _ := fixture(t)
	path := filepath.Join(shortDir(t), "gopulse.sock")
	ln, err := api.Listen(path, api.DefaultSocketMode)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.NewServer(src, nil).Serve(ctx, ln) }()
	if _, err := api.NewClient(path).Processes(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Serve: %v", err)
	}

	// A listener failing before cancel: Serve reports it.
	ln2, err := api.Listen(filepath.Join(shortDir(t), "s.sock"), api.DefaultSocketMode)
	if err != nil {
		t.Fatal(err)
	}
	ln2.Close()
	if err := api.NewServer(src, nil).Serve(context.Background(), ln2); err == nil {
		t.Error("Serve on a closed listener returned nil")
	}
}

func TestServerRobustness(t *testing.T) {
	src, _, _, _ := fixture(t)
	path := startServer(t, src, nil, func(s *api.Server) {
		s.SetTimeoutsForTest(200*time.Millisecond, time.Second, time.Second, time.Second, 4<<10)
	})

	t.Run("huge header", func(t *testing.T) {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET /v1/ps HTTP/1.1\r\nHost: x\r\nX-Junk: %s\r\n\r\n", strings.Repeat("a", 64<<10))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status %d, want 431", resp.StatusCode)
		}
	})

	t.Run("slow header", func(t *testing.T) {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET /v1/ps HTTP/1.1\r\n") // and never finish
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, err = io.ReadAll(conn)
		if err != nil {
			t.Errorf("connection not closed by the server: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("server took %v to drop a slow client", d)
		}
	})

	t.Run("garbage", func(t *testing.T) {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "\x00\x01\x02 not http at all\r\n\r\n")
		b, _ := io.ReadAll(conn)
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 400")) {
			t.Errorf("answer to garbage: %q", b)
		}
	})

	if _, err := api.NewClient(path).Processes(context.Background()); err != nil {
		t.Errorf("server unusable after bad clients: %v", err)
	}
}
