package main

// End-to-end tests: the real gopulsed binary loads its BPF programs and
// traces real Go processes (the tools/fixtures programs, built with each
// toolchain), and its figures are compared with the runtime's own
// (runtime.MemStats printed by the fixture).

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
)

// checkCycles compares the daemon's figures for pid with the runtime's
// deltas, waiting for in-flight events to be read.
func checkCycles(t *testing.T, d *e2etest.Daemon, pid int, want e2etest.MemStats) api.Process {
	t.Helper()
	var got api.Process
	e2etest.WaitFor(t, 10*time.Second, fmt.Sprintf("pid %d to show %d cycles", pid, want.NumGC), func() bool {
		p, ok := d.Process(t, pid)
		got = p
		return ok && p.GCCycles >= want.NumGC
	})
	if got.GCCycles != want.NumGC {
		t.Errorf("gc_cycles = %d, runtime NumGC delta = %d", got.GCCycles, want.NumGC)
	}
	if got.GCForcedCycles != want.Forced {
		t.Errorf("gc_forced_cycles = %d, runtime NumForcedGC delta = %d", got.GCForcedCycles, want.Forced)
	}
	pauseNs := got.GCPauseSecondsTotal * 1e9
	if dev := math.Abs(pauseNs-float64(want.PauseNs)) / float64(want.PauseNs); dev > 0.15 {
		t.Errorf("gc_pause_seconds_total = %.0fns, runtime PauseTotalNs delta = %dns (%.1f%% apart, want <= 15%%)", pauseNs, want.PauseNs, dev*100)
	}
	t.Logf("pid %d: %d cycles (%d forced), pause %.0fns vs runtime %dns (%+.2f%%)", pid, got.GCCycles, got.GCForcedCycles,
		pauseNs, want.PauseNs, (pauseNs-float64(want.PauseNs))/float64(want.PauseNs)*100)
	return got
}

var workload = []string{"-workers", "4", "-iters", "60000", "-forced", "6"}

// A process of an already-probed binary, started after the daemon, is
// traced from its first instruction: every cycle counts.
func TestNewProcessOfKnownBinary(t *testing.T) {
	d := e2etest.StartDaemon(t)
	for _, shape := range fixturebuild.Shapes() {
		t.Run(shape.Name, func(t *testing.T) {
			bin := fixturebuild.Build(t, "gcload", shape)
			e2etest.WarmUp(t, d, bin)
			run := e2etest.RunFixture(t, bin, nil, workload...)
			if run.Final.NumGC < 5 {
				t.Fatalf("fixture ran only %d GC cycles; the workload is too small to compare", run.Final.NumGC)
			}
			p := checkCycles(t, d, run.PID, run.Final)
			if p.GoVersion == "" || !strings.HasPrefix(p.GoVersion, shape.Toolchain) {
				t.Errorf("go_version = %q, want %s.x", p.GoVersion, shape.Toolchain)
			}
			if p.GCCyclesRecorded != run.Final.NumGC {
				t.Errorf("the probe recorded %d of the %d cycles", p.GCCyclesRecorded, run.Final.NumGC)
			}
		})
	}
	// One trap per GC cycle, counted by the kernel (bpf_stats) over every
	// cycle the probe recorded, in every Go 1.19-1.27 shape above (and
	// whatever else ran Go on the host).
	f := familyStatus(t, d, "gc")
	t.Logf("gc family: %d uprobe hits, %d records (+%d lost): %.3f traps per cycle", f.UprobeHits, f.Events, f.LostEvents, f.UprobeHitsPerGCCycle)
	if f.UprobeHitsPerGCCycle == 0 || f.UprobeHitsPerGCCycle > 1.5 {
		t.Errorf("%.3f uprobe hits per GC cycle, want 1 (at most 1.5)", f.UprobeHitsPerGCCycle)
	}
}

// A process already running when the daemon starts is found by the /proc
// scan; the daemon's counts are the runtime's own, absolute: the cycles
// before the daemon count too.
func TestProcessRunningBeforeDaemon(t *testing.T) {
	testenv.RequireRoot(t)
	for _, shape := range fixturebuild.Shapes() {
		t.Run(shape.Name, func(t *testing.T) {
			bin := fixturebuild.Build(t, "gcload", shape)
			f := e2etest.StartFixture(t, bin, nil, append([]string{"-wait", "-hold"}, workload...)...)
			d := e2etest.StartDaemon(t)
			e2etest.WaitFor(t, 10*time.Second, "the running fixture to be listed", func() bool {
				_, ok := d.Process(t, f.PID)
				return ok
			})
			f.Proceed()
			f.Expect("final")
			checkCycles(t, d, f.PID, f.Final)
			f.Finish()
		})
	}
}

// Several hundred GC cycles per second: totals stay exact (they are
// counted in the kernel), and per-cycle events are either delivered or
// counted as lost.
func TestHighCycleRate(t *testing.T) {
	d := e2etest.StartDaemon(t)
	shape := fixturebuild.Shapes()[0]
	bin := fixturebuild.Build(t, "gcload", shape)
	e2etest.WarmUp(t, d, bin)
	before := familyStatus(t, d, "gc")
	start := time.Now()
	run := e2etest.RunFixture(t, bin, nil, "-gcloop", "3000")
	elapsed := time.Since(start)
	rate := float64(run.Final.NumGC) / elapsed.Seconds()
	t.Logf("%d cycles in %v: %.0f cycles/s", run.Final.NumGC, elapsed, rate)
	if rate < 200 {
		t.Fatalf("only %.0f cycles/s; the test needs several hundred", rate)
	}
	checkCycles(t, d, run.PID, run.Final)
	after := familyStatus(t, d, "gc")
	events := after.Events - before.Events
	lost := after.LostEvents - before.LostEvents
	// Other Go processes on the host may add events; ours must all be
	// there or counted as lost.
	if events+lost < run.Final.NumGC {
		t.Errorf("events %d + lost %d < cycles %d", events, lost, run.Final.NumGC)
	}
	h, err := d.Client.GCHistory(context.Background(), run.PID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if lost == 0 && uint64(len(h.Cycles)) != min(run.Final.NumGC, 100) {
		t.Errorf("history has %d cycles, want %d (nothing lost)", len(h.Cycles), min(run.Final.NumGC, 100))
	}
	t.Logf("events %d, lost %d", events, lost)
}

func familyStatus(t *testing.T, d *e2etest.Daemon, name string) api.FamilyStatus {
	t.Helper()
	st, err := d.Client.Status(context.Background())
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
		untraced[bin] = e2etest.RunFixture(t, bin, nil, workload...).Result
	}
	d := e2etest.StartDaemon(t)
	for _, bin := range bins {
		e2etest.WarmUp(t, d, bin)
		if got := e2etest.RunFixture(t, bin, nil, workload...).Result; got != untraced[bin] {
			t.Errorf("%s: traced output %q, untraced %q", bin, got, untraced[bin])
		}
	}
}

// A binary never seen before is probed soon after its exec; the latency
// is logged, and the history of a process is readable with the CLI's
// JSON names.
func TestNewBinaryAttachLatency(t *testing.T) {
	d := e2etest.StartDaemon(t)
	src := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	var lat []float64
	for i := 0; i < 5; i++ {
		// A copy is a new inode: a binary the daemon has never seen.
		bin := filepath.Join(t.TempDir(), fmt.Sprintf("gcload-new-%d", i))
		copyFile(t, src, bin)
		f := e2etest.StartFixture(t, bin, nil, "-wait", "-hold")
		d.WaitBinary(t, bin)
		f.Proceed()
		f.Expect("final")
		f.Finish()
		st, err := d.Client.Status(context.Background())
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
	d := e2etest.StartDaemon(t, "--forget-after", "1s")
	src := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	bin := filepath.Join(t.TempDir(), "gcload-forget")
	copyFile(t, src, bin)
	f := e2etest.StartFixture(t, bin, nil, "-hold", "-gcloop", "3")
	d.WaitBinary(t, bin)
	f.Expect("final")
	run := f.Finish()
	e2etest.WaitFor(t, 5*time.Second, "the process to show as exited", func() bool {
		p, ok := d.Process(t, run.PID)
		return ok && p.Exited != nil
	})
	e2etest.WaitFor(t, 20*time.Second, "the exited process to be forgotten", func() bool {
		_, ok := d.Process(t, run.PID)
		return !ok
	})
	// Detaching takes the kernel a while per probe: wait for it.
	e2etest.WaitFor(t, 20*time.Second, "the binary's probes to go with its last process", func() bool {
		_, ok := d.Binary(t, bin)
		return !ok
	})
}

// The CLI against the real daemon: ps and gc in JSON carry the names
// scripts depend on.
func TestCLIAgainstDaemon(t *testing.T) {
	d := e2etest.StartDaemon(t)
	bin := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	f := e2etest.StartFixture(t, bin, nil, append([]string{"-wait", "-hold"}, workload...)...)
	e2etest.WaitFor(t, 10*time.Second, "the fixture to be listed", func() bool {
		_, ok := d.Process(t, f.PID)
		return ok
	})
	f.Proceed()
	f.Expect("final")
	checkCycles(t, d, f.PID, f.Final)

	cli := filepath.Join(t.TempDir(), "gopulse")
	if out, err := exec.Command("go", "build", "-o", cli, "../../tools/gopulse").CombinedOutput(); err != nil {
		t.Fatalf("build gopulse: %v\n%s", err, out)
	}
	out, err := exec.Command(cli, "--socket", d.Socket, "ps", "-o", "json").Output()
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
		if int(p["pid"].(float64)) == f.PID {
			found = true
		}
	}
	if !found {
		t.Errorf("ps -o json does not list pid %d", f.PID)
	}
	out, err = exec.Command(cli, "--socket", d.Socket, "gc", strconv.Itoa(f.PID)).Output()
	if err != nil {
		t.Fatalf("gopulse gc: %v", err)
	}
	if n := strings.Count(string(out), "\ngc "); n == 0 {
		t.Errorf("gopulse gc shows no cycle lines:\n%s", out)
	}
	t.Logf("gopulse gc %d:\n%s", f.PID, out)
	f.Finish()
}

// A probed binary overwritten in place (same inode, new bytes) loses its
// probes at the first write, so the next process started from it is not
// trapped at offsets that now fall mid-instruction; it is then probed anew.
func TestBinaryRewrittenInPlace(t *testing.T) {
	d := e2etest.StartDaemon(t)
	shapes := fixturebuild.Shapes()
	first := fixturebuild.Build(t, "gcload", shapes[0])
	var second string
	for _, s := range shapes {
		if s.Toolchain != shapes[0].Toolchain {
			second = fixturebuild.Build(t, "gcload", s)
			break
		}
	}
	want := e2etest.RunFixture(t, second, nil, workload...).Result

	bin := filepath.Join(t.TempDir(), "gcload-rewritten")
	copyFile(t, first, bin)
	e2etest.WarmUp(t, d, bin)
	data, err := os.ReadFile(second)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(bin, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e2etest.WaitFor(t, 5*time.Second, "the rewritten binary's probes to go", func() bool {
		_, ok := d.Binary(t, bin)
		return !ok
	})
	e2etest.WarmUp(t, d, bin)
	run := e2etest.RunFixture(t, bin, nil, workload...)
	if run.Result != want {
		t.Errorf("rewritten binary printed %q, want %q", run.Result, want)
	}
	checkCycles(t, d, run.PID, run.Final)
}
