package main

// systemd's side of the protocols, played against the real binary:
// sd_notify (NOTIFY_SOCKET: READY=1 once the probes are attached,
// STATUS=, WATCHDOG=1 at WATCHDOG_USEC/2, RELOADING=1 on SIGHUP,
// STOPPING=1) and socket activation (LISTEN_FDS/LISTEN_PID).
// packaging's TestUnderSystemd proves the same under a real systemd.

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/testenv"
)

type notifyMsg struct {
	at    time.Time
	lines []string
}

func (m notifyMsg) has(line string) bool {
	for _, l := range m.lines {
		if l == line || (strings.HasSuffix(line, "=") && strings.HasPrefix(l, line)) {
			return true
		}
	}
	return false
}

func (m notifyMsg) get(key string) string {
	for _, l := range m.lines {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	return ""
}

func TestSystemdProtocols(t *testing.T) {
	testenv.RequireRoot(t)
	daemonBin := e2etest.DaemonBinary(t)
	dir := t.TempDir()

	// The notify socket, as systemd's.
	nsock := filepath.Join(dir, "notify.sock")
	nconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nconn.Close()
	msgs := make(chan notifyMsg, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := nconn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- notifyMsg{at: time.Now(), lines: strings.Split(strings.TrimSpace(string(buf[:n])), "\n")}
		}
	}()

	// The listening socket, as gopulsed.socket's.
	apiSock := filepath.Join(dir, "activated.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: apiSock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	lnFile, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // lnFile keeps the socket open
	configured := filepath.Join(dir, "configured.sock")

	// LISTEN_PID must be the daemon's pid: a shell sets it to its own and
	// execs the daemon, which keeps the pid and fd 3.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, daemonBin,
		"--config", filepath.Join(dir, "absent-ok.yaml"), "--socket", configured, "--prometheus-listen", "")
	os.WriteFile(filepath.Join(dir, "absent-ok.yaml"), []byte("# empty\n"), 0o644)
	cmd.ExtraFiles = []*os.File{lnFile}
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+nsock, "WATCHDOG_USEC=1000000",
		"LISTEN_FDS=1", "LISTEN_FDNAMES=gopulsed.socket")
	logf, err := os.Create(filepath.Join(dir, "gopulsed.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lnFile.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("gopulsed log:\n%s", b)
		}
	}()

	next := func(what string, ok func(notifyMsg) bool) notifyMsg {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case m, open := <-msgs:
				if !open {
					t.Fatalf("notify socket closed waiting for %s", what)
				}
				if ok(m) {
					return m
				}
			case err := <-done:
				t.Fatalf("gopulsed exited (%v) before %s", err, what)
			case <-timeout:
				t.Fatalf("no %s within 30s", what)
			}
		}
	}

	// READY=1 once the probes are attached, with a status line; no
	// watchdog ping before is required, but they may come.
	ready := next("READY=1", func(m notifyMsg) bool { return m.has("READY=1") })
	if st := ready.get("STATUS"); !strings.HasPrefix(st, "tracing ") || !strings.Contains(st, "probes gc") {
		t.Errorf("READY=1 came with STATUS=%q, want what is traced", st)
	}
	// Served on the activated socket; the configured path is not created.
	c := api.NewClient(apiSock)
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("status through the activated socket: %v", err)
	}
	if _, err := os.Lstat(configured); err == nil {
		t.Errorf("gopulsed created its own socket %s although systemd passed one", configured)
	}

	// Watchdog: pings every WATCHDOG_USEC/2 while healthy.
	var pings []time.Time
	for len(pings) < 3 {
		pings = append(pings, next("WATCHDOG=1", func(m notifyMsg) bool { return m.has("WATCHDOG=1") }).at)
	}
	if gap := pings[2].Sub(pings[1]); gap < 300*time.Millisecond || gap > 900*time.Millisecond {
		t.Errorf("watchdog pings %v apart, want about 500ms (WATCHDOG_USEC/2)", gap)
	}

	// SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	rl := next("RELOADING=1", func(m notifyMsg) bool { return m.has("RELOADING=1") })
	if rl.get("MONOTONIC_USEC") == "" {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", rl.lines)
	}
	next("READY=1 after reload", func(m notifyMsg) bool { return m.has("READY=1") })

	// SIGTERM: STOPPING=1, then a clean exit.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next("STOPPING=1", func(m notifyMsg) bool { return m.has("STOPPING=1") })
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("gopulsed exited with %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("gopulsed did not exit within 15s of SIGTERM")
	}
	log, _ := os.ReadFile(logf.Name())
	if !strings.Contains(string(log), "socket_activated=true") {
		t.Errorf("log does not say the socket came from systemd:\n%s", log)
	}
}

// --check-config exits 0 on a good file and 1, naming file:line: key, on
// a bad one; a missing explicit --config is an error.
func TestCheckConfig(t *testing.T) {
	daemonBin := e2etest.DaemonBinary(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("history: 7\nlog:\n  level: debug\n"), 0o644)
	os.WriteFile(bad, []byte("history: 7\nexport:\n  otlp:\n    insecure: maybe\n"), 0o644)
	out, err := exec.Command(daemonBin, "--config", good, "--check-config").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration OK: "+good) || !strings.Contains(string(out), "history: 7") {
		t.Errorf("--check-config on a good file: %v\n%s", err, out)
	}
	out, err = exec.Command(daemonBin, "--config", bad, "--check-config").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), bad+":4: export.otlp.insecure: want true or false") {
		t.Errorf("--check-config on a bad file: %v\n%s", err, out)
	}
	out, err = exec.Command(daemonBin, "--config", filepath.Join(dir, "none.yaml"), "--check-config").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "none.yaml") {
		t.Errorf("--check-config with a missing --config: %v\n%s", err, out)
	}
	// Flags win, and are checked too.
	out, err = exec.Command(daemonBin, "--config", good, "--history", "9", "--check-config").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "history: 9") {
		t.Errorf("--history over the file: %v\n%s", err, out)
	}
}
