// Package e2etest runs the real gopulsed and the gcload fixture for the
// project's end-to-end tests (daemon, exporters, probe families), so that
// each suite compares the daemon's figures with the runtime's own the
// same way.
package e2etest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
)

// MemStats is a "baseline" or "final" line of the gcload fixture: the
// runtime's own runtime.MemStats figures.
type MemStats struct{ NumGC, Forced, PauseNs uint64 }

// Sub is a - b, field by field.
func (a MemStats) Sub(b MemStats) MemStats {
	return MemStats{NumGC: a.NumGC - b.NumGC, Forced: a.Forced - b.Forced, PauseNs: a.PauseNs - b.PauseNs}
}

func parseStats(t testing.TB, line string) MemStats {
	t.Helper()
	var m MemStats
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("fixture line %q: %v", line, err)
		}
		switch k {
		case "numgc":
			m.NumGC = n
		case "forced":
			m.Forced = n
		case "pause_total_ns":
			m.PauseNs = n
		}
	}
	return m
}

// Fixture is a running gcload process; with -wait/-hold its stdin gates
// its phases.
type Fixture struct {
	t     testing.TB
	Cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner

	PID             int
	Baseline, Final MemStats
	Result          string   // the deterministic "result" line
	Lines           []string // every line read so far
}

// StartFixture starts bin with args (and extra environment) and waits for
// its "ready" line.
func StartFixture(t testing.TB, bin string, env []string, args ...string) *Fixture {
	t.Helper()
	return StartFixtureAs(t, nil, bin, env, args...)
}

// StartFixtureAs is StartFixture with the fixture run as another user
// (cred nil: as the test).
func StartFixtureAs(t testing.TB, cred *syscall.Credential, bin string, env []string, args ...string) *Fixture {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &Fixture{t: t, Cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	f.Expect("ready")
	f.PID = cmd.Process.Pid
	return f
}

// Expect reads lines up to one starting with prefix, and returns it.
func (f *Fixture) Expect(prefix string) string {
	f.t.Helper()
	for f.out.Scan() {
		line := f.out.Text()
		f.Lines = append(f.Lines, line)
		switch {
		case strings.HasPrefix(line, "baseline "):
			f.Baseline = parseStats(f.t, line)
		case strings.HasPrefix(line, "final "):
			f.Final = parseStats(f.t, line)
		case strings.HasPrefix(line, "result "):
			f.Result = line
		}
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	f.t.Fatalf("fixture ended before %q: %v", prefix, f.out.Err())
	return ""
}

// Do sends a command to the books fixture (tools/fixtures/books) and
// waits for its "ok".
func (f *Fixture) Do(cmd string) {
	f.t.Helper()
	f.Send(cmd)
	f.Expect("ok")
}

// Stats asks the books fixture for its own figures (runtime.MemStats,
// runtime/metrics...) and returns them by key.
func (f *Fixture) Stats() map[string]int64 {
	f.t.Helper()
	f.Send("stats")
	line := f.Expect("stats ")
	f.Expect("ok")
	out := map[string]int64{}
	for _, kv := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			f.t.Fatalf("books fixture: %s: %v", kv, err)
		}
		out[k] = n
	}
	return out
}

// Send writes a command line to the fixture's stdin.
func (f *Fixture) Send(line string) { _, _ = io.WriteString(f.stdin, line+"\n") }

// Proceed releases a fixture waiting on stdin.
func (f *Fixture) Proceed() { _, _ = io.WriteString(f.stdin, "\n") }

// Finish lets a -hold fixture exit and waits for it.
func (f *Fixture) Finish() *Fixture {
	f.t.Helper()
	f.Proceed()
	if err := f.Cmd.Wait(); err != nil {
		f.t.Fatalf("fixture %s: %v", f.Cmd.Path, err)
	}
	return f
}

// RunFixture runs gcload to completion.
func RunFixture(t testing.TB, bin string, env []string, args ...string) *Fixture {
	t.Helper()
	f := StartFixture(t, bin, env, args...)
	f.Expect("final")
	if err := f.Cmd.Wait(); err != nil {
		t.Fatalf("fixture %s: %v", bin, err)
	}
	return f
}

var daemonBuild struct {
	once sync.Once
	path string
	err  error
}

// DaemonBinary builds gopulsed once per test process, or returns
// $GOPULSE_E2E_DAEMON when set (to measure another build, e.g. main's,
// with the same tests).
func DaemonBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("GOPULSE_E2E_DAEMON"); p != "" {
		return p
	}
	daemonBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "gopulsed-e2e")
		if err != nil {
			daemonBuild.err = err
			return
		}
		daemonBuild.path = filepath.Join(dir, "gopulsed")
		cmd := exec.Command("go", "build", "-o", daemonBuild.path, "./daemon/gopulsed")
		cmd.Dir = fixturebuild.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			daemonBuild.err = fmt.Errorf("build gopulsed: %v\n%s", err, out)
		}
	})
	if daemonBuild.err != nil {
		t.Fatal(daemonBuild.err)
	}
	return daemonBuild.path
}

// Daemon is a running gopulsed.
type Daemon struct {
	Cmd    *exec.Cmd
	Socket string
	Client *api.Client
	Log    string // path of its log file
}

// StartDaemon runs gopulsed with a socket in a temporary directory (and
// without a Prometheus endpoint unless args set one), waits until it
// answers, and stops it when the test ends: SIGTERM must stop it cleanly
// within 30 s (each uprobe detach waits for the kernel).
func StartDaemon(t testing.TB, args ...string) *Daemon {
	t.Helper()
	return StartDaemonEnv(t, nil, args...)
}

// StartDaemonEnv is StartDaemon with env added to the daemon's environment.
func StartDaemonEnv(t testing.TB, env []string, args ...string) *Daemon {
	t.Helper()
	testenv.RequireRoot(t)
	bin := DaemonBinary(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "gopulse.sock")
	full := append([]string{"--socket", sock, "--prometheus-listen", ""}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.Create(filepath.Join(dir, "gopulsed.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Cmd: cmd, Socket: sock, Client: api.NewClient(sock), Log: logf.Name()}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gopulsed exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("gopulsed did not stop within 30s of SIGTERM")
		}
		if t.Failed() {
			log, _ := os.ReadFile(logf.Name())
			t.Logf("gopulsed log:\n%s", log)
		}
	})
	// The API answers before the families are loaded and the running
	// processes attached: wait for ready, or a test's first process could
	// run before the probes are there.
	WaitFor(t, 60*time.Second, "gopulsed to be ready", func() bool {
		st, err := d.Client.Status(context.Background())
		return err == nil && st.Ready
	})
	return d
}

// WaitFor polls ok until it holds, failing the test after limit.
func WaitFor(t testing.TB, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Process returns the daemon's view of pid.
func (d *Daemon) Process(t testing.TB, pid int) (api.Process, bool) {
	t.Helper()
	ps, err := d.Client.Processes(context.Background())
	if err != nil {
		t.Fatalf("ps: %v", err)
	}
	for _, p := range ps {
		if p.PID == pid {
			return p, true
		}
	}
	return api.Process{}, false
}

// Binary returns the daemon's status of the binary at path, if probed.
func (d *Daemon) Binary(t testing.TB, path string) (api.BinaryStatus, bool) {
	t.Helper()
	st, err := d.Client.Status(context.Background())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, b := range st.Binaries {
		if strings.TrimSuffix(b.Path, " (deleted)") == path {
			return b, true
		}
	}
	return api.BinaryStatus{}, false
}

// WaitBinary waits until the binary at path has probes attached.
func (d *Daemon) WaitBinary(t testing.TB, path string) {
	t.Helper()
	WaitFor(t, 10*time.Second, "probes on "+path, func() bool {
		b, ok := d.Binary(t, path)
		return ok && b.Probes > 0
	})
}

// RSS is the daemon's resident set size in bytes.
func (d *Daemon) RSS(t testing.TB) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// WarmUp runs bin once, held until its binary is probed, so that the next
// process of it is "a process of an already-seen binary", traced from its
// first instruction.
func WarmUp(t testing.TB, d *Daemon, bin string) {
	t.Helper()
	f := StartFixture(t, bin, nil, "-wait", "-hold", "-gcloop", "1")
	d.WaitBinary(t, bin)
	f.Proceed()
	f.Expect("final")
	f.Finish()
}

// Gcload builds the gcload fixture in a shape (fixturebuild.Shapes()).
func Gcload(t testing.TB, shape fixturebuild.Shape) string {
	t.Helper()
	return fixturebuild.Build(t, "gcload", shape)
}

// RunFixtureUntil runs a fixture to completion, reading its output up to
// the line starting with last (for fixtures other than gcload).
func RunFixtureUntil(t testing.TB, bin string, env []string, last string, args ...string) *Fixture {
	t.Helper()
	f := StartFixture(t, bin, env, args...)
	f.Expect(last)
	if err := f.Cmd.Wait(); err != nil {
		t.Fatalf("fixture %s: %v", bin, err)
	}
	return f
}
