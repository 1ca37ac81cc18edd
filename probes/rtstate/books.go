package rtstate

import (
	"encoding/binary"
	"fmt"
	"github.com/gopulse/gopulse/probes/event"
	"math"

	"github.com/gopulse/gopulse/probes"
)

// The books' types are the GC family's domain events (probes/event).
type (
	Cycle     = event.GCCycle
	Settings  = event.GCSettings
	Sample    = event.GCBooks
	RingPause = event.RingPause
)

// Struct selects one of the runtime's structures a Window reads.
type Struct uint8

const (
	Work Struct = iota
	Memstats
	GCController
)

// Window is a byte range of one of the runtime's structures.
type Window struct {
	Struct   Struct
	Off, Len uint32
}

// NumWindows is how many windows make up a cycle's books (CycleWindows);
// bpf/gc.h's GC_WINDOWS must be equal (TestWindowsFitBPF).
const NumWindows = 4

// CycleWindows are what the GC family's one probe per cycle copies out of
// the process when a cycle has just ended, and what DecodeCycle reads:
// work's last-cycle fields, memstats' counters and gcController's.
func CycleWindows(bk probes.Books) [NumWindows]Window {
	return [NumWindows]Window{
		{Work, bk.WorkUserForced, bk.WorkHeap2 + 8 - bk.WorkUserForced},
		{Memstats, bk.MemNumGC, bk.MemLastGCNanotime + 8 - bk.MemNumGC},
		{Memstats, bk.MemLastGCUnix, bk.MemPauseTotalNS + 8 - bk.MemLastGCUnix},
		{GCController, bk.CtlGCPercentHeapGoal, bk.CtlAssistTime + 8 - bk.CtlGCPercentHeapGoal},
	}
}

// Addr is the address of w in a process whose books are at a.
func (a Addrs) Addr(w Window) uint64 {
	switch w.Struct {
	case Work:
		return a.Work + uint64(w.Off)
	case Memstats:
		return a.Memstats + uint64(w.Off)
	}
	return a.GCController + uint64(w.Off)
}

func u64(b []byte, off uint32) uint64 { return binary.LittleEndian.Uint64(b[off:]) }
func u32(b []byte, off uint32) uint32 { return binary.LittleEndian.Uint32(b[off:]) }

// DecodeCycle reads a cycle's books from the CycleWindows' bytes and
// checks the identities gcMarkTermination establishes: work.tEnd ==
// memstats.last_gc_nanotime, the phases in order, forced ≤ all cycles.
func DecodeCycle(bk probes.Books, win [NumWindows][]byte) (Cycle, error) {
	ws := CycleWindows(bk)
	for i, w := range ws {
		if uint32(len(win[i])) < w.Len {
			return Cycle{}, fmt.Errorf("window %d: %d bytes, want %d", i, len(win[i]), w.Len)
		}
	}
	work, mem, unix, ctl := win[0], win[1], win[2], win[3]
	wo := func(off uint32) uint64 { return u64(work, off-bk.WorkUserForced) }
	co := func(off uint32) uint64 { return u64(ctl, off-bk.CtlGCPercentHeapGoal) }
	c := Cycle{
		Seq:         u32(mem, 0),
		NumForcedGC: u32(mem, bk.MemNumForcedGC-bk.MemNumGC),
		Forced:      work[0] != 0,
		PauseTotal:  u64(unix, bk.MemPauseTotalNS-bk.MemLastGCUnix),
		EndUnixNs:   int64(u64(unix, 0)),
		TSweepTerm:  int64(wo(bk.WorkTSweepTerm)),
		TMark:       int64(wo(bk.WorkTMark)),
		TMarkTerm:   int64(wo(bk.WorkTMarkTerm)),
		TEnd:        int64(wo(bk.WorkTEnd)),
		PauseNs:     wo(bk.WorkPauseNS),
		Heap0:       wo(bk.WorkHeap0),
		Heap1:       wo(bk.WorkHeap1),
		Heap2:       wo(bk.WorkHeap2),
		AssistNs:    int64(co(bk.CtlAssistTime)),
		HeapLive:    co(bk.CtlHeapLive),
		NextGoal:    co(bk.CtlGCPercentHeapGoal),
	}
	lastNano := int64(u64(mem, bk.MemLastGCNanotime-bk.MemNumGC))
	switch {
	case work[0] > 1:
		return c, fmt.Errorf("work.userForced = %d, not a bool", work[0])
	case c.Seq == 0:
		return c, fmt.Errorf("memstats.numgc = 0 after a cycle")
	case c.NumForcedGC > c.Seq:
		return c, fmt.Errorf("memstats.numforcedgc %d > numgc %d", c.NumForcedGC, c.Seq)
	case c.TEnd != lastNano:
		return c, fmt.Errorf("work.tEnd %d != memstats.last_gc_nanotime %d", c.TEnd, lastNano)
	case !(0 < c.TSweepTerm && c.TSweepTerm <= c.TMark && c.TMark <= c.TMarkTerm && c.TMarkTerm <= c.TEnd):
		return c, fmt.Errorf("work's phase times out of order: %d %d %d %d", c.TSweepTerm, c.TMark, c.TMarkTerm, c.TEnd)
	case c.PauseNs > uint64(c.TEnd-c.TSweepTerm):
		return c, fmt.Errorf("work.pauseNS %d longer than the cycle %d", c.PauseNs, c.TEnd-c.TSweepTerm)
	case c.AssistNs < 0:
		return c, fmt.Errorf("gcController.assistTime %d < 0", c.AssistNs)
	}
	return c, nil
}

// defaultHeapMinimum is the runtime's heap minimum at GOGC=100.
const defaultHeapMinimum = 4 << 20

// DecodeSettings reads gcController (CtlSize bytes from its start) and
// checks it: heapMinimum is what setGCPercent derives from gcPercent, the
// limit is not negative.
func DecodeSettings(bk probes.Books, ctl []byte) (Settings, error) {
	if uint32(len(ctl)) < bk.CtlSize {
		return Settings{}, fmt.Errorf("gcController: %d bytes, want %d", len(ctl), bk.CtlSize)
	}
	s := Settings{
		GCPercent:   int32(u32(ctl, bk.CtlGCPercent)),
		MemoryLimit: int64(u64(ctl, bk.CtlMemoryLimit)),
		HeapLive:    u64(ctl, bk.CtlHeapLive),
		HeapMarked:  u64(ctl, bk.CtlHeapMarked),
		MappedReady: u64(ctl, bk.CtlMappedReady),
		TotalAlloc:  u64(ctl, bk.CtlTotalAlloc),
	}
	heapMin := u64(ctl, bk.CtlHeapMinimum)
	switch {
	case s.GCPercent < -1:
		return s, fmt.Errorf("gcController.gcPercent = %d", s.GCPercent)
	case heapMin != defaultHeapMinimum*uint64(int64(s.GCPercent))/100:
		return s, fmt.Errorf("gcController.heapMinimum %d does not follow from gcPercent %d", heapMin, s.GCPercent)
	case s.MemoryLimit < 0:
		return s, fmt.Errorf("gcController.memoryLimit = %d", s.MemoryLimit)
	case s.HeapLive == 0 || s.MappedReady == 0 || s.MappedReady < u64(ctl, bk.CtlHeapInUse):
		// A running runtime has a heap and mapped memory, and its heap
		// in use is part of what is mapped.
		return s, fmt.Errorf("gcController: heapLive %d, mappedReady %d, heapInUse %d: not a running runtime's pacer", s.HeapLive, s.MappedReady, u64(ctl, bk.CtlHeapInUse))
	}
	s.HeapGoal = heapGoal(bk, ctl)
	return s, nil
}

// heapGoal is the runtime's gcControllerState.heapGoalInternal (goal
// part), Go 1.19-1.27: the GOGC goal, unless the memory limit's is lower;
// else pushed up to the sweep distance and a minimum runway past the
// trigger point.
func heapGoal(bk probes.Books, ctl []byte) uint64 {
	goal := u64(ctl, bk.CtlGCPercentHeapGoal)
	if lim := memoryLimitHeapGoal(bk, ctl); lim < goal {
		return lim
	}
	if sweep := u64(ctl, bk.CtlSweepDistMinTrigger); sweep > goal {
		goal = sweep
	}
	const minRunway = 64 << 10
	if trig := u64(ctl, bk.CtlTriggered); trig != math.MaxUint64 && goal < trig+minRunway {
		goal = trig + minRunway
	}
	return goal
}

func memoryLimitHeapGoal(bk probes.Books, ctl []byte) uint64 {
	heapFree := u64(ctl, bk.CtlHeapFree)
	heapAlloc := u64(ctl, bk.CtlTotalAlloc) - u64(ctl, bk.CtlTotalFree)
	mapped := u64(ctl, bk.CtlMappedReady)
	limit := u64(ctl, bk.CtlMemoryLimit)
	marked := u64(ctl, bk.CtlHeapMarked)
	if heapFree+heapAlloc > mapped {
		// The runtime retries until its three loads agree; one racy
		// read of ours counts the heap as all there is.
		mapped = heapFree + heapAlloc
	}
	nonHeap := mapped - heapFree - heapAlloc
	var overage uint64
	if mapped > limit {
		overage = mapped - limit
	}
	if nonHeap+overage >= limit {
		return marked
	}
	goal := limit - (nonHeap + overage)
	const minHeadroom = 1 << 20
	headroom := uint64(minHeadroom)
	if bk.GoalHeadroomPercent > 0 {
		headroom = max(goal/100*uint64(bk.GoalHeadroomPercent), minHeadroom)
	}
	if goal < headroom || goal-headroom < headroom {
		goal = headroom
	} else {
		goal -= headroom
	}
	return max(goal, marked)
}
