package aggregate

import (
	"errors"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/gc"
)

// fakeClock is a settable clock; monotonic time is wall time minus a
// fixed boot time, as on a real host.
type fakeClock struct{ now time.Time }

var boot = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func (c *fakeClock) Now() time.Time           { return c.now }
func (c *fakeClock) Monotonic() time.Duration { return c.now.Sub(boot) }

func mono(t time.Time) int64 { return int64(t.Sub(boot)) }

// cycle builds the event of the n-th cycle, ending at end.
func cycle(pid uint32, n uint64, end time.Time, trigger uint8) *gc.Event {
	start := end.Add(-10 * time.Millisecond)
	return &gc.Event{
		Pid: pid, Kind: gc.KindCycle, Trigger: trigger, Seq: n,
		T_sweepTerm: mono(start), T_mark: mono(start.Add(100 * time.Microsecond)),
		T_markTerm: mono(end.Add(-200 * time.Microsecond)), T_end: mono(end),
		StwSweepNs: 100_000, StwMarkNs: 200_000, HeapStart: 4 << 20, HeapEnd: 5 << 20, AssistNs: 50_000,
		Cycles: n, ForcedCycles: n / 2, PauseTotalNs: n * 300_000,
	}
}

func TestHistoryBoundedAndOrdered(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 3, MaxProcs: 10, ForgetAfter: time.Minute}, clk)
	a.Register(Meta{PID: 7, Exe: "/bin/x", GoVersion: "go1.26.8", StartTime: clk.now.Add(-time.Second)})
	for n := uint64(1); n <= 5; n++ {
		clk.now = clk.now.Add(100 * time.Millisecond)
		a.GC(cycle(7, n, clk.now, gc.TriggerHeap))
	}
	h, err := a.GCHistory(7, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, c := range h.Cycles {
		seqs = append(seqs, c.Seq)
	}
	if len(seqs) != 3 || seqs[0] != 3 || seqs[2] != 5 {
		t.Errorf("kept cycles %v, want [3 4 5]", seqs)
	}
	if h, _ := a.GCHistory(7, 2); len(h.Cycles) != 2 || h.Cycles[1].Seq != 5 {
		t.Errorf("last=2 gave %+v", h.Cycles)
	}
	p := h.Process
	if p.GCCycles != 5 || p.GCForcedCycles != 2 || p.GCPauseSecondsTotal != 5*300e-6 {
		t.Errorf("totals %+v", p)
	}
	c := h.Cycles[2]
	if c.PauseSeconds != 300e-6 || c.SweepTermSeconds != 100e-6 || c.MarkTermSeconds != 200e-6 {
		t.Errorf("cycle phases %+v", c)
	}
	if got := c.Start; !got.Equal(clk.now.Add(-10 * time.Millisecond)) {
		t.Errorf("cycle start %v, want %v", got, clk.now.Add(-10*time.Millisecond))
	}
	if p.GCCyclesPerSecond <= 0 {
		t.Errorf("rate %v", p.GCCyclesPerSecond)
	}
}

func TestProcessCap(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 3, MaxProcs: 2, ForgetAfter: time.Minute}, clk)
	for _, c := range []struct {
		pid  int
		want bool
	}{{1, true}, {2, true}, {3, false}, {1, true}} {
		if got := a.Register(Meta{PID: c.pid}); got != c.want {
			t.Errorf("Register(%d) = %v, want %v", c.pid, got, c.want)
		}
	}
	a.GC(cycle(4, 1, clk.now, gc.TriggerHeap)) // over the cap too
	if a.Len() != 2 || a.Dropped() != 2 {
		t.Errorf("len %d dropped %d, want 2 and 2", a.Len(), a.Dropped())
	}
}

func TestExitedForgottenAfterGrace(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 3, MaxProcs: 10, ForgetAfter: time.Minute}, clk)
	a.Register(Meta{PID: 1})
	a.Register(Meta{PID: 2})
	a.Exited(1)
	clk.now = clk.now.Add(30 * time.Second)
	if gone := a.Sweep(); len(gone) != 0 {
		t.Errorf("forgot %v before the grace period", gone)
	}
	clk.now = clk.now.Add(31 * time.Second)
	if gone := a.Sweep(); len(gone) != 1 || gone[0] != 1 {
		t.Errorf("forgot %v, want [1]", gone)
	}
	if _, err := a.GCHistory(1, 0); !errors.Is(err, api.ErrNoProcess) {
		t.Errorf("GCHistory of a forgotten pid: %v", err)
	}
	if r := a.Running(); len(r) != 1 || r[0] != 2 {
		t.Errorf("running %v, want [2]", r)
	}
}

// A PID that exec'd anew restarts from cycle 1 in the kernel; the history
// restarts with it.
func TestReExecResets(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 10, MaxProcs: 10, ForgetAfter: time.Minute}, clk)
	for n := uint64(1); n <= 4; n++ {
		a.GC(cycle(9, n, clk.now, gc.TriggerHeap))
	}
	a.GC(cycle(9, 1, clk.now, gc.TriggerCycle))
	h, _ := a.GCHistory(9, 0)
	if len(h.Cycles) != 1 || h.Process.GCCycles != 1 || !h.Cycles[0].Forced || h.Cycles[0].Trigger != api.TriggerForced {
		t.Errorf("after re-exec: %d cycles, totals %+v", len(h.Cycles), h.Process)
	}
}

func TestOtherSTWAndObserver(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	var seen []api.GCCycle
	a := New(Config{History: 10, MaxProcs: 10, ForgetAfter: time.Minute,
		OnCycle: func(p api.Process, c api.GCCycle) { seen = append(seen, c) }}, clk)
	a.GC(&gc.Event{Pid: 5, Kind: gc.KindSTWOther, StwReason: 7, StwMarkNs: 40_000})
	a.GC(cycle(5, 1, clk.now, gc.TriggerTime))
	p := a.Processes()[0]
	if p.OtherSTWCount != 1 || p.OtherSTWSecondsTotal != 40e-6 {
		t.Errorf("other STW %+v", p)
	}
	if len(seen) != 1 || seen[0].Trigger != api.TriggerTime {
		t.Errorf("observer saw %+v", seen)
	}
}
