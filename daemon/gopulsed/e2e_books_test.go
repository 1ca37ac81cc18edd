package main

// The runtime's own books through the daemon: absolute totals, settings
// and gauges of processes however late they were attached, compared with
// what the processes say of themselves at rest.

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
)

// booksShapes are the shapes the issue names: Go 1.19 static, 1.26
// stripped, PIE and cgo, 1.27.
func booksShapes() []fixturebuild.Shape {
	var out []fixturebuild.Shape
	for _, s := range fixturebuild.Shapes() {
		switch s.Name {
		case "go1.19-static", "go1.26-stripped", "go1.26-pie", "go1.26-cgo", "go1.27-static":
			out = append(out, s)
		}
	}
	return out
}

// compareBooks waits (within a few polls) for the daemon's view of pid to
// equal the fixture's own figures at rest: cycles, forced cycles and the
// pause total exactly, the goal within 1%, GOGC and the limit exactly,
// goroutines within 2, GOMAXPROCS exactly.
func compareBooks(t *testing.T, d *e2etest.Daemon, f *e2etest.Fixture, what string) api.Process {
	t.Helper()
	var got api.Process
	var diff string
	deadline := time.Now().Add(5 * time.Second)
	for {
		// The fixture's figures, then the daemon's (each query drains the
		// readers and reads the books): a cycle the runtime completes
		// after one reading is in the next pair.
		want := f.Stats()
		p, ok := d.Process(t, f.PID)
		got, diff = p, ""
		switch {
		case !ok || p.Runtime == nil:
			diff = fmt.Sprintf("no runtime figures yet (listed %v, runtime_error %q)", ok, p.RuntimeError)
		case int64(p.GCCycles) != want["numgc"] || int64(p.GCForcedCycles) != want["forced"]:
			diff = fmt.Sprintf("gc_cycles %d forced %d, runtime %d %d", p.GCCycles, p.GCForcedCycles, want["numgc"], want["forced"])
		case math.Round(p.GCPauseSecondsTotal*1e9) != float64(want["pause_total_ns"]):
			diff = fmt.Sprintf("gc_pause_seconds_total %.9f, runtime PauseTotalNs %d", p.GCPauseSecondsTotal, want["pause_total_ns"])
		case math.Abs(float64(p.GCGoalBytes)-float64(want["goal"]))/float64(want["goal"]) > 0.01:
			diff = fmt.Sprintf("gc_goal_bytes %d, runtime /gc/heap/goal %d", p.GCGoalBytes, want["goal"])
		case p.GOGCPercent != want["gogc"] || p.MemoryLimitBytes != want["limit"]:
			diff = fmt.Sprintf("gogc_percent %d memory_limit_bytes %d, runtime %d %d", p.GOGCPercent, p.MemoryLimitBytes, want["gogc"], want["limit"])
		case p.Goroutines < want["goroutines"]-2 || p.Goroutines > want["goroutines"]+2:
			diff = fmt.Sprintf("goroutines %d, runtime %d", p.Goroutines, want["goroutines"])
		case p.GOMAXPROCS != want["gomaxprocs"]:
			diff = fmt.Sprintf("gomaxprocs %d, runtime %d", p.GOMAXPROCS, want["gomaxprocs"])
		}
		if diff == "" {
			t.Logf("%s: pid %d: %d cycles (%d forced), pause %.0f ns, goal %d (runtime %d), GOGC %d, limit %d, %d goroutines, GOMAXPROCS %d, used %d (runtime %d)",
				what, f.PID, got.GCCycles, got.GCForcedCycles, got.GCPauseSecondsTotal*1e9, got.GCGoalBytes, want["goal"], got.GOGCPercent,
				got.MemoryLimitBytes, got.Goroutines, got.GOMAXPROCS, got.MemoryUsedBytes, want["used"])
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, diff)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freshCopy copies bin to a new file: a binary the daemon has never seen.
func freshCopy(t *testing.T, bin string) string {
	t.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(bin))
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// The first process of a never-seen binary and a process started before
// the daemon both show the runtime's own figures, cycles before the probes
// included; settings changed at run time are seen within a poll; the
// history numbers cycles as the runtime does and holds the earlier ones
// from the pause rings, marked.
func TestRuntimeBooksThroughDaemon(t *testing.T) {
	testenv.RequireRoot(t)
	env := []string{"GOGC=150", "GOMEMLIMIT=3GiB"}
	for _, shape := range booksShapes() {
		bin := fixturebuild.Build(t, "books", shape)
		t.Run(shape.Name+"/started-before-daemon", func(t *testing.T) {
			f := e2etest.StartFixture(t, freshCopy(t, bin), env)
			f.Do("alloc 32")
			f.Do("gc 4")
			d := e2etest.StartDaemon(t)
			p := compareBooks(t, d, f, "before the daemon")
			checkHistory(t, d, f.PID, p.GCCycles)
			runtimeChanges(t, d, f)
		})
		t.Run(shape.Name+"/never-seen-binary", func(t *testing.T) {
			d := e2etest.StartDaemon(t)
			f := e2etest.StartFixture(t, freshCopy(t, bin), env)
			// Cycles at once, likely before the probes are attached.
			f.Do("gc 3")
			f.Do("alloc 32")
			compareBooks(t, d, f, "first process of a new binary")
			f.Do("gc 2")
			p := compareBooks(t, d, f, "after two more cycles")
			checkHistory(t, d, f.PID, p.GCCycles)
			runtimeChanges(t, d, f)
		})
	}
}

// checkHistory: the last cycle of the history is the runtime's cycle
// number n, and numbers run without gaps — once the cycles whose record
// never came were filled in from the pause rings (a poll period after the
// reading that counted them).
func checkHistory(t *testing.T, d *e2etest.Daemon, pid int, n uint64) {
	t.Helper()
	var h api.GCHistory
	var why string
	complete := func() bool {
		var err error
		if h, err = d.Client.GCHistory(context.Background(), pid, 0); err != nil {
			t.Fatal(err)
		}
		if len(h.Cycles) == 0 || h.Cycles[len(h.Cycles)-1].Seq != n {
			why = fmt.Sprintf("history %+v does not end at cycle %d", h.Cycles, n)
			return false
		}
		for i, c := range h.Cycles {
			if i > 0 && c.Seq != h.Cycles[i-1].Seq+1 {
				why = fmt.Sprintf("history jumps from cycle %d to %d", h.Cycles[i-1].Seq, c.Seq)
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(4 * time.Second)
	for !complete() {
		if time.Now().After(deadline) {
			t.Fatal(why)
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := 0
	for _, c := range h.Cycles {
		if c.BeforeProbes {
			before++
		}
	}
	t.Logf("history: cycles %d..%d, %d of them from the pause rings", h.Cycles[0].Seq, n, before)
}

// runtimeChanges: debug.SetGCPercent and debug.SetMemoryLimit at run time
// are seen within a poll.
func runtimeChanges(t *testing.T, d *e2etest.Daemon, f *e2etest.Fixture) {
	t.Helper()
	f.Do("gogc 50")
	f.Do("limit 100000000")
	f.Do("spawn 25")
	compareBooks(t, d, f, "SetGCPercent(50), SetMemoryLimit(1e8), 25 more goroutines")
	f.Do("gogc -1")
	p := compareBooks(t, d, f, "GC off")
	if p.GOGCPercent != -1 {
		t.Errorf("gogc_percent %d with GC off, want -1", p.GOGCPercent)
	}
}

// A binary whose runtime does not have the layout its version claims (a
// Go 1.26 stripped binary whose version strings say go1.19.8): the books
// are refused with a reason in status and ps, and no figures are shown.
func TestBooksLayoutRefused(t *testing.T) {
	testenv.RequireRoot(t)
	var shape fixturebuild.Shape
	for _, s := range fixturebuild.Shapes() {
		if s.Name == "go1.26-stripped" {
			shape = s
		}
	}
	data, err := os.ReadFile(fixturebuild.Build(t, "books", shape))
	if err != nil {
		t.Fatal(err)
	}
	ver := []byte(strings.TrimPrefix(goVersionOf(t, data), ""))
	forged := bytes.ReplaceAll(data, ver, []byte("go1.19.8"))
	path := filepath.Join(t.TempDir(), "forged")
	if err := os.WriteFile(path, forged, 0o755); err != nil {
		t.Fatal(err)
	}
	d := e2etest.StartDaemon(t)
	f := e2etest.StartFixture(t, path, nil)
	f.Do("gc 2")
	var reason []string
	e2etest.WaitFor(t, 10*time.Second, "the refused layout's reason in status", func() bool {
		st, err := d.Client.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range st.Refused {
			if b.Path == path {
				reason = b.Errors
			}
		}
		return reason != nil
	})
	t.Logf("status: %s refused: %v", path, reason)
	if !strings.Contains(strings.Join(reason, " "), "runtime.") {
		t.Errorf("the reason does not name the runtime structure: %v", reason)
	}
	if p, ok := d.Process(t, f.PID); ok && (p.Runtime != nil || p.GCCycles != 0) {
		t.Errorf("figures from a refused layout: %+v", p)
	}
}

// goVersionOf finds the "go1.N.P" release string a Go binary carries.
func goVersionOf(t *testing.T, data []byte) string {
	t.Helper()
	i := bytes.Index(data, []byte("go1.26."))
	if i < 0 {
		t.Fatal("no go1.26 version string")
	}
	j := i + len("go1.26.")
	for j < len(data) && data[j] >= '0' && data[j] <= '9' {
		j++
	}
	if j-i != len("go1.19.8") {
		t.Fatalf("version %q is not 8 bytes long", data[i:j])
	}
	return string(data[i:j])
}
