package main

// End-to-end tests: the real gopulsed binary loads its BPF programs and
// traces real Go processes (the tools/fixtures programs, built with each
// toolchain), and its figures are compared with the runtime's own
// (runtime.MemStats printed by the fixture).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/tools/fixturebuild"
	"github.com/gopulse/gopulse/tools/testenv"
)

// memStats is a "baseline"/"final" line of the gcload fixture.
type memStats struct{ numGC, forced, pauseNs uint64 }

type fixtureRun struct {
	pid             int
	baseline, final memStats
	result          string // deterministic output line
}

func parseStats(t *testing.T, line string) memStats {
	t.Helper()
	var m memStats
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("fixture line %q: %v", line, err)
		}
		switch k {
		case "numgc":
			m.numGC = n
		case "forced":
			m.forced = n
		case "pause_total_ns":
			m.pauseNs = n
		}
	}
	return m
}

// fixture is a running gcload process whose stdin gates its phases.
type fixture struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	run   fixtureRun
}

func startFixture(t *testing.T, bin string, args ...string) *fixture {
	t.Helper()
	cmd := exec.Command(bin, args...)
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
	f := &fixture{t: t, cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	f.expect("ready")
	f.run.pid = cmd.Process.Pid
	return f
}

// expect reads lines up to one starting with prefix.
func (f *fixture) expect(prefix string) string {
	f.t.Helper()
	for f.out.Scan() {
		line := f.out.Text()
		switch {
		case strings.HasPrefix(line, "baseline "):
			f.run.baseline = parseStats(f.t, line)
		case strings.HasPrefix(line, "final "):
			f.run.final = parseStats(f.t, line)
		case strings.HasPrefix(line, "result "):
			f.run.result = line
		}
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	f.t.Fatalf("fixture ended before %q: %v", prefix, f.out.Err())
	return ""
}

func (f *fixture) proceed() { _, _ = io.WriteString(f.stdin, "\n") }

// finish lets a -hold fixture exit and waits for it.
func (f *fixture) finish() fixtureRun {
	f.t.Helper()
	f.proceed()
	if err := f.cmd.Wait(); err != nil {
		f.t.Fatalf("fixture %s: %v", f.cmd.Path, err)
	}
	return f.run
}

// warmUp runs bin once, held until its binary is probed, so that the
// next process of it is "a process of an already-seen binary".
func warmUp(t *testing.T, d *daemon, bin string) {
	t.Helper()
	f := startFixture(t, bin, "-wait", "-hold", "-gcloop", "1")
	d.waitBinary(t, bin)
	f.proceed()
	f.expect("final")
	f.finish()
}

// runFixture runs gcload to completion.
func runFixture(t *testing.T, bin string, args ...string) fixtureRun {
	t.Helper()
	f := startFixture(t, bin, args...)
	f.expect("final")
	if err := f.cmd.Wait(); err != nil {
		t.Fatalf("fixture %s: %v", bin, err)
	}
	return f.run
}

type daemon struct {
	cmd    *exec.Cmd
	socket string
	client *api.Client
}

var daemonBin string

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "gopulsed-e2e")
		if err != nil {
			panic(err)
		}
		daemonBin = filepath.Join(dir, "gopulsed")
		if out, err := exec.Command("go", "build", "-o", daemonBin, ".").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build gopulsed: %v\n%s", err, out)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	testenv.RequireRoot(t)
	sock := filepath.Join(t.TempDir(), "gopulse.sock")
	cmd := exec.Command(daemonBin, append([]string{"--socket", sock}, args...)...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "gopulsed.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, socket: sock, client: api.NewClient(sock)}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gopulsed exited with %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("gopulsed did not stop within 10s of SIGTERM")
		}
		if t.Failed() {
			log, _ := os.ReadFile(logf.Name())
			t.Logf("gopulsed log:\n%s", log)
		}
	})
	waitFor(t, 20*time.Second, "gopulsed to serve", func() bool {
		_, err := d.client.Status(context.Background())
		return err == nil
	})
	return d
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) process(t *testing.T, pid int) (api.Process, bool) {
	t.Helper()
	ps, err := d.client.Processes(context.Background())
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

// waitBinary waits until a binary at path has probes attached.
func (d *daemon) waitBinary(t *testing.T, path string) {
	t.Helper()
	waitFor(t, 10*time.Second, "probes on "+path, func() bool {
		st, err := d.client.Status(context.Background())
		if err != nil {
			return false
		}
		for _, b := range st.Binaries {
			if strings.TrimSuffix(b.Path, " (deleted)") == path && b.Probes > 0 {
				return true
			}
		}
		return false
	})
}

// checkCycles compares the daemon's figures for pid with the runtime's
// deltas, waiting for in-flight events to be read.
func (d *daemon) checkCycles(t *testing.T, pid int, want memStats) api.Process {
	t.Helper()
	var got api.Process
	waitFor(t, 10*time.Second, fmt.Sprintf("pid %d to show %d cycles", pid, want.numGC), func() bool {
		p, ok := d.process(t, pid)
		got = p
		return ok && p.GCCycles >= want.numGC
	})
	if got.GCCycles != want.numGC {
		t.Errorf("gc_cycles = %d, runtime NumGC delta = %d", got.GCCycles, want.numGC)
	}
	if got.GCForcedCycles != want.forced {
		t.Errorf("gc_forced_cycles = %d, runtime NumForcedGC delta = %d", got.GCForcedCycles, want.forced)
	}
	pauseNs := got.GCPauseSecondsTotal * 1e9
	if dev := math.Abs(pauseNs-float64(want.pauseNs)) / float64(want.pauseNs); dev > 0.15 {
		t.Errorf("gc_pause_seconds_total = %.0fns, runtime PauseTotalNs delta = %dns (%.1f%% apart, want <= 15%%)", pauseNs, want.pauseNs, dev*100)
	}
	t.Logf("pid %d: %d cycles (%d forced), pause %.0fns vs runtime %dns (%+.2f%%)", pid, got.GCCycles, got.GCForcedCycles,
		pauseNs, want.pauseNs, (pauseNs-float64(want.pauseNs))/float64(want.pauseNs)*100)
	return got
}

func sub(a, b memStats) memStats {
	return memStats{numGC: a.numGC - b.numGC, forced: a.forced - b.forced, pauseNs: a.pauseNs - b.pauseNs}
}

var workload = []string{"-workers", "4", "-iters", "60000", "-forced", "6"}

// A process of an already-probed binary, started after the daemon, is
// traced from its first instruction: every cycle counts.
func TestNewProcessOfKnownBinary(t *testing.T) {
	d := startDaemon(t)
	for _, shape := range fixturebuild.Shapes() {
		t.Run(shape.Name, func(t *testing.T) {
			bin := fixturebuild.Build(t, "gcload", shape)
			warmUp(t, d, bin)
			run := runFixture(t, bin, workload...)
			if run.final.numGC < 5 {
				t.Fatalf("fixture ran only %d GC cycles; the workload is too small to compare", run.final.numGC)
			}
			p := d.checkCycles(t, run.pid, run.final)
			if p.GoVersion == "" || !strings.HasPrefix(p.GoVersion, shape.Toolchain) {
				t.Errorf("go_version = %q, want %s.x", p.GoVersion, shape.Toolchain)
			}
		})
	}
}

// A process already running when the daemon starts is found by the /proc
// scan; the daemon's counts equal the runtime's deltas from then on.
func TestProcessRunningBeforeDaemon(t *testing.T) {
	testenv.RequireRoot(t)
	for _, shape := range fixturebuild.Shapes() {
		t.Run(shape.Name, func(t *testing.T) {
			bin := fixturebuild.Build(t, "gcload", shape)
			f := startFixture(t, bin, append([]string{"-wait", "-hold"}, workload...)...)
			d := startDaemon(t)
			waitFor(t, 10*time.Second, "the running fixture to be listed", func() bool {
				_, ok := d.process(t, f.run.pid)
				return ok
			})
			f.proceed()
			f.expect("final")
			d.checkCycles(t, f.run.pid, sub(f.run.final, f.run.baseline))
			f.finish()
		})
	}
}

// Several hundred GC cycles per second: totals stay exact (they are
// counted in the kernel), and per-cycle events are either delivered or
// counted as lost.
func TestHighCycleRate(t *testing.T) {
	d := startDaemon(t)
	shape := fixturebuild.Shapes()[0]
	bin := fixturebuild.Build(t, "gcload", shape)
	warmUp(t, d, bin)
	before := familyStatus(t, d, "gc")
	start := time.Now()
	run := runFixture(t, bin, "-gcloop", "3000")
	elapsed := time.Since(start)
	rate := float64(run.final.numGC) / elapsed.Seconds()
	t.Logf("%d cycles in %v: %.0f cycles/s", run.final.numGC, elapsed, rate)
	if rate < 200 {
		t.Fatalf("only %.0f cycles/s; the test needs several hundred", rate)
	}
	d.checkCycles(t, run.pid, run.final)
	after := familyStatus(t, d, "gc")
	events := after.Events - before.Events
	lost := after.LostEvents - before.LostEvents
	// Other Go processes on the host may add events; ours must all be
	// there or counted as lost.
	if events+lost < run.final.numGC {
		t.Errorf("events %d + lost %d < cycles %d", events, lost, run.final.numGC)
	}
	h, err := d.client.GCHistory(context.Background(), run.pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	if lost == 0 && uint64(len(h.Cycles)) != min(run.final.numGC, 100) {
		t.Errorf("history has %d cycles, want %d (nothing lost)", len(h.Cycles), min(run.final.numGC, 100))
	}
	t.Logf("events %d, lost %d", events, lost)
}

func familyStatus(t *testing.T, d *daemon, name string) api.FamilyStatus {
	t.Helper()
	st, err := d.client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range st.Families {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no family %q in status", name)
	return api.FamilyStatus{}
}

// Traced fixtures behave as untraced ones: same output, clean exit.
func TestTracedOutputUnchanged(t *testing.T) {
	testenv.RequireRoot(t)
	var bins []string
	untraced := map[string]string{}
	for _, shape := range fixturebuild.Shapes() {
		bin := fixturebuild.Build(t, "gcload", shape)
		bins = append(bins, bin)
		untraced[bin] = runFixture(t, bin, workload...).result
	}
	d := startDaemon(t)
	for _, bin := range bins {
		warmUp(t, d, bin)
		if got := runFixture(t, bin, workload...).result; got != untraced[bin] {
			t.Errorf("%s: traced output %q, untraced %q", bin, got, untraced[bin])
		}
	}
}

// A binary never seen before is probed soon after its exec; the latency
// is logged, and the history of a process is readable with the CLI's
// JSON names.
func TestNewBinaryAttachLatency(t *testing.T) {
	d := startDaemon(t)
	src := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	var lat []float64
	for i := 0; i < 5; i++ {
		// A copy is a new inode: a binary the daemon has never seen.
		bin := filepath.Join(t.TempDir(), fmt.Sprintf("gcload-new-%d", i))
		copyFile(t, src, bin)
		f := startFixture(t, bin, "-wait", "-hold")
		d.waitBinary(t, bin)
		f.proceed()
		f.expect("final")
		f.finish()
		st, err := d.client.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n := len(st.AttachLatencySeconds); n > 0 {
			lat = append(lat, st.AttachLatencySeconds[n-1])
		}
	}
	if len(lat) == 0 {
		t.Fatal("no attach latency recorded")
	}
	t.Logf("exec-to-attach latency of new binaries (ms): %v", scale(lat, 1000))
}

func scale(xs []float64, k float64) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = strconv.FormatFloat(x*k, 'f', 1, 64)
	}
	return out
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// Exited processes are forgotten after the grace period, and so are their
// binaries' probes.
func TestExitedProcessForgotten(t *testing.T) {
	d := startDaemon(t, "--forget-after", "1s")
	src := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	bin := filepath.Join(t.TempDir(), "gcload-forget")
	copyFile(t, src, bin)
	f := startFixture(t, bin, "-hold", "-gcloop", "3")
	d.waitBinary(t, bin)
	f.expect("final")
	run := f.finish()
	waitFor(t, 5*time.Second, "the process to show as exited", func() bool {
		p, ok := d.process(t, run.pid)
		return ok && p.Exited != nil
	})
	waitFor(t, 20*time.Second, "the exited process to be forgotten", func() bool {
		_, ok := d.process(t, run.pid)
		return !ok
	})
	st, err := d.client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range st.Binaries {
		if b.Path == bin {
			t.Errorf("binary %s still probed after its last process was forgotten", bin)
		}
	}
}

// The CLI against the real daemon: ps and gc in JSON carry the names
// scripts depend on.
func TestCLIAgainstDaemon(t *testing.T) {
	d := startDaemon(t)
	bin := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	f := startFixture(t, bin, append([]string{"-wait", "-hold"}, workload...)...)
	waitFor(t, 10*time.Second, "the fixture to be listed", func() bool {
		_, ok := d.process(t, f.run.pid)
		return ok
	})
	f.proceed()
	f.expect("final")
	d.checkCycles(t, f.run.pid, sub(f.run.final, f.run.baseline))

	cli := filepath.Join(t.TempDir(), "gopulse")
	if out, err := exec.Command("go", "build", "-o", cli, "../../tools/gopulse").CombinedOutput(); err != nil {
		t.Fatalf("build gopulse: %v\n%s", err, out)
	}
	out, err := exec.Command(cli, "--socket", d.socket, "ps", "-o", "json").Output()
	if err != nil {
		t.Fatalf("gopulse ps -o json: %v", err)
	}
	var ps []map[string]any
	if err := json.Unmarshal(out, &ps); err != nil {
		t.Fatalf("ps json: %v\n%s", err, out)
	}
	found := false
	for _, p := range ps {
		for _, k := range []string{"pid", "exe", "go_version", "gc_cycles", "gc_forced_cycles", "gc_pause_seconds_total"} {
			if _, ok := p[k]; !ok {
				t.Errorf("ps -o json object lacks %q: %v", k, p)
			}
		}
		if int(p["pid"].(float64)) == f.run.pid {
			found = true
		}
	}
	if !found {
		t.Errorf("ps -o json does not list pid %d", f.run.pid)
	}
	out, err = exec.Command(cli, "--socket", d.socket, "gc", strconv.Itoa(f.run.pid)).Output()
	if err != nil {
		t.Fatalf("gopulse gc: %v", err)
	}
	if n := strings.Count(string(out), "\ngc "); n == 0 {
		t.Errorf("gopulse gc shows no cycle lines:\n%s", out)
	}
	t.Logf("gopulse gc %d:\n%s", f.run.pid, out)
	f.finish()
}
