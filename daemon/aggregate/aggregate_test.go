package aggregate

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/event"
)

// fakeClock is a settable clock; monotonic time is wall time minus a
// fixed boot time, as on a real host.
type fakeClock struct{ now time.Time }

var boot = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func (c *fakeClock) Now() time.Time           { return c.now }
func (c *fakeClock) Monotonic() time.Duration { return c.now.Sub(boot) }

func mono(t time.Time) int64 { return int64(t.Sub(boot)) }

// cycle builds the event of the n-th cycle, ending at end: the runtime's
// books as the GC family's probe copies them.
func cycle(pid int, n uint32, end time.Time, forced bool) event.GC {
	start := end.Add(-10 * time.Millisecond)
	return event.GC{PID: pid, Kind: event.GCCycleDone, Cycle: event.GCCycle{
		Seq: n, NumForcedGC: n / 2, Forced: forced, PauseTotal: uint64(n) * 300_000,
		TSweepTerm: mono(start), TMark: mono(start.Add(100 * time.Microsecond)),
		TMarkTerm: mono(end.Add(-200 * time.Microsecond)), TEnd: mono(end), EndUnixNs: end.UnixNano(),
		PauseNs: 300_000, Heap0: 4 << 20, Heap1: 5 << 20, Heap2: 3 << 20, AssistNs: 50_000,
	}}
}

// books builds a reading of the runtime's books with numgc cycles.
func books(pid int, numgc uint32, otherSTW int64, ring ...event.RingPause) event.GC {
	return event.GC{PID: pid, Kind: event.GCReading, Ring: ring, Books: event.GCBooks{
		NumGC: numgc, NumForcedGC: numgc / 2, PauseTotalNs: uint64(numgc) * 300_000, OtherSTW: otherSTW,
		GCSettings: event.GCSettings{GCPercent: 100, MemoryLimit: 1 << 62, HeapGoal: 8 << 20, HeapLive: 5 << 20},
		Goroutines: 12, GOMAXPROCS: 2,
	}}
}

func TestHistoryBoundedAndOrdered(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 3, MaxProcs: 10, ForgetAfter: time.Minute}, clk)
	a.Register(Meta{PID: 7, Exe: "/bin/x", GoVersion: "go1.26.8", StartTime: clk.now.Add(-time.Second)})
	for n := uint32(1); n <= 5; n++ {
		clk.now = clk.now.Add(100 * time.Millisecond)
		a.GC(cycle(7, n, clk.now, false))
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
	if c.PauseSeconds != 300e-6 || c.SweepTermSeconds != 100e-6 || c.MarkTermSeconds != 200e-6 || c.Trigger != api.TriggerHeap {
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
	a.GC(cycle(4, 1, clk.now, false)) // over the cap too
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

// A PID that exec'd anew: the runtime's counters start over, and so does
// the history.
func TestReExecResets(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 10, MaxProcs: 10, ForgetAfter: time.Minute}, clk)
	a.GC(books(9, 4, -1))
	for n := uint32(1); n <= 4; n++ {
		a.GC(cycle(9, n, clk.now, false))
	}
	a.GC(books(9, 1, -1))
	a.GC(cycle(9, 1, clk.now, true))
	h, _ := a.GCHistory(9, 0)
	if len(h.Cycles) != 1 || h.Process.GCCycles != 1 || !h.Cycles[0].Forced || h.Cycles[0].Trigger != api.TriggerForced {
		t.Errorf("after re-exec: %d cycles, totals %+v", len(h.Cycles), h.Process)
	}
}

// Other stop-the-world pauses come from the runtime's own count; a cycle
// starting more than two minutes after the previous one ended is the
// runtime's time trigger; the observer sees every completed cycle.
func TestOtherSTWTimeTriggerAndObserver(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	var seen []api.GCCycle
	a := New(Config{History: 10, MaxProcs: 10, ForgetAfter: time.Minute,
		OnCycle: func(p api.Process, c api.GCCycle) { seen = append(seen, c) }}, clk)
	a.GC(books(5, 0, 3))
	a.GC(cycle(5, 1, clk.now, false))
	clk.now = clk.now.Add(3 * time.Minute)
	a.GC(cycle(5, 2, clk.now, false))
	p := a.Processes()[0]
	if p.OtherSTWCount != 3 {
		t.Errorf("other STW %+v", p)
	}
	if len(seen) != 2 || seen[0].Trigger != api.TriggerHeap || seen[1].Trigger != api.TriggerTime {
		t.Errorf("observer saw %+v", seen)
	}
	if p.Runtime == nil || p.Runtime.GOGCPercent != 100 || p.Runtime.Goroutines != 12 || p.Runtime.GOMAXPROCS != 2 {
		t.Errorf("runtime gauges %+v", p.Runtime)
	}
}

// A process attached late: its totals are the runtime's from the first
// reading; the cycles the pause rings still hold are in the history,
// marked, until the probe's records of the same cycles replace them.
func TestBeforeProbesFromRings(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 4, MaxProcs: 10, ForgetAfter: time.Minute}, clk)
	var ring []event.RingPause
	for n := uint32(1); n <= 6; n++ {
		ring = append(ring, event.RingPause{Seq: n, PauseNs: 1000 * uint64(n), EndUnixNs: clk.now.UnixNano()})
	}
	a.GC(books(3, 6, -1, ring...))
	h, _ := a.GCHistory(3, 0)
	if h.Process.GCCycles != 6 || h.Process.GCPauseSecondsTotal != 6*300e-6 || len(h.Cycles) != 4 || h.Cycles[0].Seq != 3 {
		t.Fatalf("after the first reading: totals %+v, cycles %+v", h.Process, h.Cycles)
	}
	for _, c := range h.Cycles {
		if !c.BeforeProbes || c.PauseSeconds != float64(1000*c.Seq)/1e9 {
			t.Errorf("ring cycle %+v", c)
		}
	}
	a.GC(cycle(3, 6, clk.now, false))
	a.GC(cycle(3, 7, clk.now, false))
	h, _ = a.GCHistory(3, 0)
	if h.Process.GCCycles != 7 || h.Cycles[3].Seq != 7 || h.Cycles[2].BeforeProbes || !h.Cycles[1].BeforeProbes {
		t.Errorf("after two records: totals %+v, cycles %+v", h.Process, h.Cycles)
	}
}

// Exited entries never hold slots against live processes: at the cap, a
// live one takes the slot of the entry that exited first; with only live
// entries, it is dropped. The evicted PIDs are handed to the tracer once.
func TestExitedYieldSlotsToLive(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 3, MaxProcs: 3, ForgetAfter: time.Hour}, clk)
	for _, pid := range []int{1, 2, 3} {
		a.Register(Meta{PID: pid})
	}
	// 2 exits before 1; 3 lives.
	a.Exited(2)
	clk.now = clk.now.Add(time.Second)
	a.Exited(1)
	for _, step := range []struct {
		pid     int
		want    bool
		evicted []int
		listed  []int
	}{
		{10, true, []int{2}, []int{1, 3, 10}},  // the oldest exited goes
		{11, true, []int{1}, []int{3, 10, 11}}, // then the next
		{12, false, nil, []int{3, 10, 11}},     // all live: dropped
		{3, true, nil, []int{3, 10, 11}},       // a known one is refreshed
	} {
		if got := a.Register(Meta{PID: step.pid}); got != step.want {
			t.Errorf("Register(%d) = %v, want %v", step.pid, got, step.want)
		}
		if ev := a.TakeEvicted(); !slices.Equal(ev, step.evicted) {
			t.Errorf("after %d: evicted %v, want %v", step.pid, ev, step.evicted)
		}
		var listed []int
		for _, p := range a.Processes() {
			listed = append(listed, p.PID)
		}
		if !slices.Equal(listed, step.listed) {
			t.Errorf("after %d: listed %v, want %v", step.pid, listed, step.listed)
		}
	}
	if a.Dropped() != 1 {
		t.Errorf("dropped %d, want 1", a.Dropped())
	}
	// An entry forgotten by Sweep, or replaced by a new process of its
	// PID, is not evicted a second time.
	a.Exited(10)
	a.Register(Meta{PID: 10, StartTime: clk.now}) // (no start time before: not a reuse)
	a.Exited(11)
	clk.now = clk.now.Add(2 * time.Hour)
	gone := a.Sweep()
	slices.Sort(gone)
	if !slices.Equal(gone, []int{10, 11}) {
		t.Errorf("swept %v, want [10 11]", gone)
	}
	if len(a.exited) > a.Len() {
		t.Errorf("exit order holds %d entries for %d processes", len(a.exited), a.Len())
	}
}

// At the cap, an event alone takes no slot (the late events of an evicted
// process must not bring it back); an identified live process takes the
// slot of the oldest entry no Register identified when no exited entry is
// left.
func TestEventsDoNotEvict(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 3, MaxProcs: 3, ForgetAfter: time.Hour}, clk)
	a.Register(Meta{PID: 1})
	a.GC(cycle(2, 1, clk.now, false)) // unidentified
	clk.now = clk.now.Add(time.Second)
	a.GC(cycle(3, 1, clk.now, false)) // unidentified, younger
	a.Exited(1)
	a.GC(cycle(4, 1, clk.now, false)) // an event at the cap: dropped
	if a.Has(4) || !a.Has(1) || a.Dropped() != 1 {
		t.Fatalf("an event evicted: has 4 %v, has 1 %v, dropped %d", a.Has(4), a.Has(1), a.Dropped())
	}
	a.Register(Meta{PID: 5}) // takes exited 1's slot
	a.Register(Meta{PID: 6}) // takes unidentified 2's (the oldest)
	if ev := a.TakeEvicted(); !slices.Equal(ev, []int{1, 2}) {
		t.Errorf("evicted %v, want [1 2]", ev)
	}
	a.GC(cycle(1, 2, clk.now, false)) // late event of evicted 1: not back
	if a.Has(1) || !a.Has(3) || !a.Has(5) || !a.Has(6) {
		t.Errorf("after: 1 %v 3 %v 5 %v 6 %v", a.Has(1), a.Has(3), a.Has(5), a.Has(6))
	}
	a.Register(Meta{PID: 8, Gone: true}) // gone already: does not take unidentified 3's slot
	if !a.Has(3) || a.Has(8) {
		t.Errorf("a gone process evicted an unidentified entry: 3 %v 8 %v", a.Has(3), a.Has(8))
	}
	a.Register(Meta{PID: 3}) // identified now
	// (The late event of 1 is expected, not a dropped process.)
	if a.Register(Meta{PID: 7}) || a.Dropped() != 3 {
		t.Errorf("all identified and live: 7 must be dropped (dropped %d)", a.Dropped())
	}
}

// An exec storm of short-lived processes at the cap, then a long-running
// one: traced, whatever --forget-after.
func TestExecStormThenLongRunning(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 3, MaxProcs: 8, ForgetAfter: time.Hour}, clk)
	for pid := 100; pid < 1100; pid++ {
		if !a.Register(Meta{PID: pid}) {
			t.Fatalf("short-lived %d not traced", pid)
		}
		a.GC(cycle(pid, 1, clk.now, false))
		a.Exited(pid)
		clk.now = clk.now.Add(time.Millisecond)
	}
	if !a.Register(Meta{PID: 5000}) {
		t.Fatal("long-running process not traced after the storm")
	}
	if a.Len() != 8 || a.Dropped() != 0 || len(a.TakeEvicted()) != 1000-7 {
		t.Errorf("len %d dropped %d", a.Len(), a.Dropped())
	}
}

// A process is (PID, start time): a PID reused by a new process within
// --forget-after inherits neither the exited flag nor the figures of the
// old one; the same process registered again keeps them.
func TestPIDReuseStartsFresh(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 10, MaxProcs: 10, ForgetAfter: time.Hour}, clk)
	old := boot.Add(10 * time.Minute)
	a.Register(Meta{PID: 7, Exe: "/bin/old", StartTime: old})
	a.GC(books(7, 40, 3))
	a.GC(cycle(7, 41, clk.now, true))

	// The same process, registered again (a rescan): nothing lost.
	a.Register(Meta{PID: 7, Exe: "/bin/old", StartTime: old})
	if h, _ := a.GCHistory(7, 0); h.Process.GCCycles != 41 || len(h.Cycles) == 0 {
		t.Fatalf("same process re-registered: %d cycles, %d kept", h.Process.GCCycles, len(h.Cycles))
	}

	a.Exited(7)
	clk.now = clk.now.Add(time.Minute)
	a.Register(Meta{PID: 7, Exe: "/bin/new", StartTime: old.Add(time.Hour)})
	h, err := a.GCHistory(7, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := h.Process
	if p.Exited != nil || p.GCCycles != 0 || p.GCForcedCycles != 0 || p.GCCyclesRecorded != 0 || p.Runtime != nil ||
		p.OtherSTWCount != 0 || len(h.Cycles) != 0 || p.Exe != "/bin/new" || !p.FirstSeen.Equal(clk.now) {
		t.Errorf("reused PID inherited the old entry: %+v, %d cycles", p, len(h.Cycles))
	}
	a.GC(books(7, 2, 0))
	if h, _ := a.GCHistory(7, 0); h.Process.GCCycles != 2 {
		t.Errorf("new process: %d cycles, want its own 2", h.Process.GCCycles)
	}
	// The old entry's place in the exit order is not the new one's.
	a.Register(Meta{PID: 8})
	if ev := a.TakeEvicted(); len(ev) != 0 {
		t.Errorf("evicted %v", ev)
	}
}
