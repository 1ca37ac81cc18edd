package event

import "time"

// The GC family's domain events (probes/gc): the runtime's own books of a
// process, read from its memory (probes/rtstate) or copied by the one
// probe per cycle. Plain data, shared by the aggregator, the API and the
// exporters.

// GCKind says what a GC event carries.
type GCKind uint8

const (
	// GCCycleDone: a cycle just completed, from the probe (Cycle).
	GCCycleDone GCKind = iota + 1
	// GCReading: a reading of the process's books (Books), at tracking
	// and on every poll; with the pause rings (Ring) when cycles went by
	// unrecorded.
	GCReading
	// GCError: the process's books cannot be read (Err).
	GCError
)

// GC is one event of the GC family.
type GC struct {
	PID   int
	Kind  GCKind
	Cycle GCCycle
	Books GCBooks
	// Ring holds cycles the runtime's pause rings still had, that the
	// probe did not record (before it was attached, or lost).
	Ring []RingPause
	Err  string
}

// Counts says whether the event counts as one of the family's events in
// status: cycle records do; readings of the books are not events.
func (e GC) Counts() bool { return e.Kind == GCCycleDone }

// GCCycle is one completed GC cycle as the runtime booked it.
type GCCycle struct {
	// Seq is the runtime's cycle number (memstats.numgc after the cycle,
	// the N of gctrace's "gc N").
	Seq         uint32
	NumForcedGC uint32
	Forced      bool   // work.userForced: runtime.GC / debug.FreeOSMemory
	PauseTotal  uint64 // memstats.pause_total_ns, this cycle included
	// nanotime() at each phase start, as work keeps them.
	TSweepTerm, TMark, TMarkTerm, TEnd int64
	EndUnixNs                          int64  // memstats.last_gc_unix
	PauseNs                            uint64 // work.pauseNS: both stops, restarts included
	Heap0, Heap1, Heap2                uint64 // heapLive at start, at mark termination; marked
	AssistNs                           int64  // gcController.assistTime of the cycle
	HeapLive                           uint64 // gcController.heapLive when read
	NextGoal                           uint64 // gcPercentHeapGoal for the next cycle
}

// GCSettings is the GC controller's state: GOGC, the memory limit, the heap
// goal and its inputs.
type GCSettings struct {
	GCPercent   int32
	MemoryLimit int64
	HeapGoal    uint64
	HeapLive    uint64
	HeapMarked  uint64
	MappedReady uint64 // mapped and not released: /memory/classes/total − heap/released
	TotalAlloc  uint64 // heap bytes allocated, cumulative
}

// GCBooks is one reading of a process's books (probes/rtstate).
type GCBooks struct {
	NumGC, NumForcedGC uint32
	PauseTotalNs       uint64
	GCSettings
	// Goroutines as runtime.NumGoroutine counts them; GOMAXPROCS as
	// len(allp).
	Goroutines, GOMAXPROCS int
	// StackBytes: memory in goroutine stacks (/memory/classes/heap/stacks).
	StackBytes uint64
	// OtherSTW counts the world's stops not made by the GC (Go 1.22+,
	// sched.stwTotalTimeOther; -1 before).
	OtherSTW int64
	// OtherSTWHist is sched.stwTotalTimeOther in runtime/metrics form
	// (/sched/pauses/total/other:seconds): OtherSTWBounds are its bucket
	// boundaries in seconds, one more than the counts (nil before 1.22).
	OtherSTWHist   []uint64
	OtherSTWBounds []float64
	// Last is the last completed cycle's books, when none is under way
	// (Last.Seq == NumGC) — else zero.
	Last GCCycle
	At   time.Time
}

// RingPause is one entry of the runtime's rings of the last 256 pauses.
type RingPause struct {
	Seq       uint32
	PauseNs   uint64
	EndUnixNs int64
}
