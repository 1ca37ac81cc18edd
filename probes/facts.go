// Package probes holds what every probe family shares: the per-Go-version
// facts about the runtime (argument registers, struct offsets) and the one
// attacher that turns a family's declarative Spec into uprobes and
// tracepoints.
package probes

import (
	"fmt"

	"github.com/gopulse/gopulse/probes/goinspect"
)

// Facts are the runtime internals that change between Go versions. Every
// row with Verified set is checked by TestFactsTable against DWARF of a
// real binary built with that toolchain; the others come from reading the
// runtime source of that release and are refined from DWARF at run time
// when the binary has it.
type Facts struct {
	Minor int // first Go 1.x release the row applies to
	// Verified: a test checks this row against binaries of that version,
	// amd64 and arm64 builds both (Books and ARM64Books).
	Verified bool
	// Arch is the architecture FactsFor chose the row for ("" in the
	// table itself, whose Books are amd64's).
	Arch goinspect.Arch
	// WorldStopABI: the runtime has the worldStop type (Go 1.22+):
	// startTheWorldWithSema takes it, and the scheduler keeps its own
	// histograms of stop-the-world time (sched.stwTotalTime{GC,Other}).
	WorldStopABI bool
	// Books is where the runtime keeps its own counters and settings
	// (memstats, gcController, work, sched, p), read from the process's
	// memory by probes/rtstate and by the GC family's one probe per cycle.
	Books Books
	// ARM64Books are the same books in an arm64 build. They differ from
	// amd64's from Go 1.21, when internal/cpu.CacheLinePadSize became 128
	// on arm64 (64 on amd64, and on arm64 up to 1.19 at least): workType
	// pads its work queues to cache lines, and gcControllerState its
	// per-cycle counters (measured from DWARF, TestFactsTable). FactsFor
	// puts them in Books for an arm64 binary.
	ARM64Books Books
	// SpinbitMutex: runtime locks are lock_spinbit.go's (Go 1.24+): a
	// contended lock2 sleeps on its M's semaphore (semasleep), not on the
	// lock's own futex as lock_futex.go's did.
	SpinbitMutex bool
	// TimeHist is the layout of runtime.timeHistogram, the type of
	// sched.timeToRun (the data behind /sched/latencies:seconds).
	TimeHist TimeHist
}

// TimeHist describes runtime.timeHistogram: an HDR histogram of
// nanoseconds, counts[] then underflow (then overflow from Go 1.20).
//
// Go 1.19: SuperBuckets super-buckets of 2^SubBucketBits sub-buckets;
// super-bucket 0 counts 0..15 ns one by one, super-bucket s ≥ 1 the values
// whose highest set bit is s+SubBucketBits-1; the last sub-bucket also
// takes everything beyond the range. Go 1.20+: MinBucketBits > 0; bucket 0
// holds values below 2^(MinBucketBits-1), bucket i ≥ 1 those whose highest
// set bit is i+MinBucketBits-2, up to MaxBucketBits (exclusive), each split
// in 2^SubBucketBits; values beyond go to overflow.
type TimeHist struct {
	SubBucketBits uint8
	SuperBuckets  uint8 // Go 1.19 layout; 0 for the Go 1.20+ layout
	MinBucketBits uint8 // Go 1.20+ layout
	MaxBucketBits uint8 // Go 1.20+ layout, exclusive
}

var (
	timeHist119 = TimeHist{SubBucketBits: 4, SuperBuckets: 45}
	timeHist120 = TimeHist{SubBucketBits: 2, MinBucketBits: 9, MaxBucketBits: 48}
)

// Counts is the length of the counts array.
func (h TimeHist) Counts() int {
	if h.SuperBuckets > 0 {
		return int(h.SuperBuckets) << h.SubBucketBits
	}
	return int(h.MaxBucketBits-h.MinBucketBits+1) << h.SubBucketBits
}

// Overflow reports whether the type has an overflow counter after
// underflow.
func (h TimeHist) Overflow() bool { return h.SuperBuckets == 0 }

// Size is the size of the type in bytes.
func (h TimeHist) Size() int {
	n := h.Counts() + 1
	if h.Overflow() {
		n++
	}
	return 8 * n
}

// Valid reports whether the row knows the layout.
func (h TimeHist) Valid() bool { return h.SubBucketBits > 0 }

// factsTable is ordered by Minor. Go 1.19 is the oldest release with the
// register ABI on every function gopulse probes and with the pacer
// functions it reads (startCycle/endCycle with these arguments).
var factsTable = []Facts{
	{Minor: 19, Verified: true, Books: books119, ARM64Books: books119, TimeHist: timeHist119},
	// No Go 1.20 toolchain here: the row is go1.19's, unverified on both
	// architectures (run-time checks refuse a layout that does not hold).
	{Minor: 20, Books: books119, ARM64Books: books119, TimeHist: timeHist120},
	{Minor: 21, Verified: true, Books: books121, ARM64Books: arm64Books(books121, 128), TimeHist: timeHist120},
	{Minor: 22, Verified: true, WorldStopABI: true, Books: books122, ARM64Books: arm64Books(books122, 128), TimeHist: timeHist120},
	{Minor: 23, Verified: true, WorldStopABI: true, Books: books123, ARM64Books: arm64Books(books123, 128), TimeHist: timeHist120},
	{Minor: 24, Verified: true, WorldStopABI: true, SpinbitMutex: true, Books: books123, ARM64Books: arm64Books(books123, 128), TimeHist: timeHist120},
	{Minor: 25, Verified: true, WorldStopABI: true, SpinbitMutex: true, Books: books125, ARM64Books: arm64Books(books125, 192), TimeHist: timeHist120},
	{Minor: 26, Verified: true, WorldStopABI: true, SpinbitMutex: true, Books: books126, ARM64Books: arm64Books(books126, 256), TimeHist: timeHist120},
	{Minor: 27, Verified: true, WorldStopABI: true, SpinbitMutex: true, Books: books126, ARM64Books: arm64Books(books126, 256), TimeHist: timeHist120},
}

// FactsTable returns a copy of the table, for tests and documentation.
func FactsTable() []Facts { return append([]Facts(nil), factsTable...) }

// MinGoMinor is the oldest Go 1.x release gopulse traces.
const MinGoMinor = 19

// FactsFor returns the facts for a binary: its version's row, with the
// books of its architecture (amd64 or arm64; any other is refused). A
// release newer than any row gets the newest row; what reads its runtime's
// books checks the layout against the binary's own code and data before
// use.
func FactsFor(b *goinspect.Binary) (Facts, error) {
	f, err := FactsForVersion(b.Version)
	if err != nil {
		return Facts{}, fmt.Errorf("%s: %w", b.Path, err)
	}
	if f, err = f.ForArch(b.Arch); err != nil {
		return Facts{}, fmt.Errorf("%s: %w", b.Path, err)
	}
	return f, nil
}

// ForArch returns the row for binaries of arch: Books are that
// architecture's.
func (f Facts) ForArch(arch goinspect.Arch) (Facts, error) {
	switch arch {
	case goinspect.AMD64:
	case goinspect.ARM64:
		f.Books = f.ARM64Books
	default:
		return Facts{}, fmt.Errorf("facts table for %s: none: %w", arch, goinspect.ErrArchUnsupported)
	}
	f.Arch = arch
	return f, nil
}

// arm64Books returns an amd64 row's books as an arm64 build (Go 1.21+) has
// them: work's fields after its cache-line-padded queues moved by
// workShift bytes, gcControllerState 64 bytes longer (its padded counters
// are at its end: every field gopulse reads is where amd64 has it).
func arm64Books(b Books, workShift uint32) Books {
	return with(b, func(b *Books) {
		b.WorkUserForced += workShift
		b.WorkTSweepTerm += workShift
		b.WorkPauseNS += workShift
		b.WorkHeap0 += workShift
		b.CtlSize += 64
	})
}

// FactsForVersion returns the table row for a Go release.
func FactsForVersion(v goinspect.Version) (Facts, error) {
	if v.Major != 1 || v.Minor < MinGoMinor {
		return Facts{}, fmt.Errorf("go%d.%d is older than go1.%d, the oldest release gopulse traces", v.Major, v.Minor, MinGoMinor)
	}
	f := factsTable[0]
	for _, row := range factsTable {
		if row.Minor <= v.Minor {
			f = row
		}
	}
	return f, nil
}

// with returns a copy of b changed by f; the timestamps, pauseNS and the
// heap sizes stay contiguous as in every release (tSweepTerm, tMark,
// tMarkTerm, tEnd; heap0, heap1, heap2).
func with(b Books, f func(*Books)) Books {
	f(&b)
	b.WorkTMark, b.WorkTMarkTerm, b.WorkTEnd = b.WorkTSweepTerm+8, b.WorkTSweepTerm+16, b.WorkTSweepTerm+24
	b.WorkHeap1, b.WorkHeap2 = b.WorkHeap0+8, b.WorkHeap0+16
	return b
}

// Books are the offsets, in bytes, of the runtime's own books that gopulse
// reads: fields of runtime.workType (work), runtime.mstats (memstats),
// runtime.gcControllerState (gcController), runtime.schedt (sched) and
// runtime.p. Every verified row is checked against DWARF (TestFactsTable);
// at run time each read is checked against identities the runtime keeps
// (rtstate.check), so an unverified row that does not hold is refused.
type Books struct {
	// work: phase timestamps and heap sizes of the last cycle.
	WorkTSweepTerm, WorkTMark, WorkTMarkTerm, WorkTEnd uint32
	WorkPauseNS                                        uint32
	WorkHeap0, WorkHeap1, WorkHeap2                    uint32
	WorkUserForced                                     uint32
	// memstats: the cycle counters and the rings of the last 256 pauses.
	MemLastGCUnix, MemPauseTotalNS, MemPauseNS, MemPauseEnd uint32
	MemNumGC, MemNumForcedGC, MemLastGCNanotime             uint32
	// memstats.heapStats: three heapStatsDelta generations of
	// HeapStatsDeltaSize bytes, whose inStacks the runtime sums.
	MemHeapStats, HeapStatsDeltaSize, HeapStatsInStacks uint32
	// gcController.
	CtlGCPercent, CtlMemoryLimit, CtlHeapMinimum                           uint32
	CtlGCPercentHeapGoal, CtlSweepDistMinTrigger                           uint32
	CtlTriggered, CtlHeapLive, CtlHeapMarked, CtlAssistTime                uint32
	CtlHeapInUse, CtlHeapFree, CtlTotalAlloc, CtlTotalFree, CtlMappedReady uint32
	CtlSize                                                                uint32
	// GoalHeadroomPercent is memoryLimitHeapGoalHeadroomPercent (Go
	// 1.21+; before, a fixed 1 MiB headroom).
	GoalHeadroomPercent uint32
	// sched: system goroutines and the free-G lists' counts (one int32 on
	// Go < 1.24: gFree.n; two from 1.24: gFree.stack.size and
	// gFree.noStack.size); stwTotalTimeOther (Go 1.22+, 0 before).
	SchedNGsys, SchedGFree1, SchedGFree2, SchedSTWOther uint32
	SchedTimeToRun                                      uint32
	// p: id (the index in allp) and the per-P free-G count.
	PGFreeN uint32
}

var (
	books119 = Books{
		WorkTSweepTerm: 360, WorkTMark: 368, WorkTMarkTerm: 376, WorkTEnd: 384, WorkPauseNS: 392,
		WorkHeap0: 408, WorkHeap1: 416, WorkHeap2: 424, WorkUserForced: 280,
		MemLastGCUnix: 3592, MemPauseTotalNS: 3600, MemPauseNS: 3608, MemPauseEnd: 5656,
		MemNumGC: 7704, MemNumForcedGC: 7708, MemLastGCNanotime: 7720,
		MemHeapStats: 0, HeapStatsDeltaSize: 1176, HeapStatsInStacks: 24,
		CtlGCPercent: 0, CtlMemoryLimit: 8, CtlHeapMinimum: 16,
		CtlGCPercentHeapGoal: 104, CtlSweepDistMinTrigger: 112,
		CtlTriggered: 120, CtlHeapLive: 136, CtlHeapMarked: 184, CtlAssistTime: 224,
		CtlHeapInUse: 304, CtlHeapFree: 320, CtlTotalAlloc: 328, CtlTotalFree: 336, CtlMappedReady: 344, CtlSize: 424,
		SchedNGsys: 72, SchedGFree1: 176, SchedTimeToRun: 312,
		PGFreeN: 2472,
	}
	books126 = Books{
		WorkTSweepTerm: 664, WorkTMark: 672, WorkTMarkTerm: 680, WorkTEnd: 688, WorkPauseNS: 696,
		WorkHeap0: 704, WorkHeap1: 712, WorkHeap2: 720, WorkUserForced: 536,
		MemLastGCUnix: 3568, MemPauseTotalNS: 3576, MemPauseNS: 3584, MemPauseEnd: 5632,
		MemNumGC: 7680, MemNumForcedGC: 7684, MemLastGCNanotime: 7696,
		MemHeapStats: 0, HeapStatsDeltaSize: 1168, HeapStatsInStacks: 24,
		CtlGCPercent: 0, CtlMemoryLimit: 8, CtlHeapMinimum: 16,
		CtlGCPercentHeapGoal: 72, CtlSweepDistMinTrigger: 80,
		CtlTriggered: 88, CtlHeapLive: 104, CtlHeapMarked: 152, CtlAssistTime: 192,
		CtlHeapInUse: 272, CtlHeapFree: 288, CtlTotalAlloc: 296, CtlTotalFree: 304, CtlMappedReady: 312, CtlSize: 392,
		GoalHeadroomPercent: 3,
		SchedNGsys:          96, SchedGFree1: 200, SchedGFree2: 216, SchedSTWOther: 5560, SchedTimeToRun: 360,
		PGFreeN: 2472,
	}
	// Go 1.21: work gains fields before the timestamps; gcController as
	// in 1.26; the memory-limit goal keeps 3% headroom.
	books121 = with(books119, func(b *Books) {
		b.WorkUserForced, b.WorkTSweepTerm, b.WorkPauseNS, b.WorkHeap0 = 344, 416, 448, 464
		b.CtlGCPercentHeapGoal, b.CtlSweepDistMinTrigger, b.CtlTriggered = 72, 80, 88
		b.CtlHeapLive, b.CtlHeapMarked, b.CtlAssistTime = 104, 152, 192
		b.CtlHeapInUse, b.CtlHeapFree, b.CtlTotalAlloc, b.CtlTotalFree, b.CtlMappedReady, b.CtlSize = 272, 288, 296, 304, 312, 392
		b.GoalHeadroomPercent = 3
		b.SchedGFree1, b.SchedTimeToRun = 184, 320
	})
	// Go 1.22: work.pauseStart gone (worldStop); sched.stwTotalTime*.
	books122 = with(books121, func(b *Books) {
		b.WorkHeap0 = 456
		b.SchedSTWOther = 5520
	})
	books123 = with(books122, func(b *Books) {
		b.WorkUserForced, b.WorkTSweepTerm, b.WorkPauseNS, b.WorkHeap0 = 336, 440, 472, 480
		b.PGFreeN = 2464
	})
	// Go 1.25: mstats shrinks; the free-G lists count per list (gList.size).
	books125 = with(books123, func(b *Books) {
		b.WorkUserForced, b.WorkTSweepTerm, b.WorkPauseNS, b.WorkHeap0 = 400, 528, 560, 568
		b.MemLastGCUnix, b.MemPauseTotalNS, b.MemPauseNS, b.MemPauseEnd = 3568, 3576, 3584, 5632
		b.MemNumGC, b.MemNumForcedGC, b.MemLastGCNanotime, b.HeapStatsDeltaSize = 7680, 7684, 7696, 1168
		b.SchedNGsys, b.SchedGFree1, b.SchedGFree2, b.SchedSTWOther, b.SchedTimeToRun = 80, 184, 200, 5544, 344
	})
)
