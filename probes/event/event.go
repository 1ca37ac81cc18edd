// Package event holds the domain events of the probe families: what a
// family hands on once it has turned its kernel records (the bpf2go
// structs, private to the family) into figures with names. The aggregator
// consumes these; it never sees a bpf2go type. A leaf package: no BPF, no
// cilium/ebpf.
//
// The record-to-answer path of one figure:
//
//	bpf/F.bpf.c → probes/F (bpf2go record → event.F) → daemon/tracer/registry.go
//	(one row per family) → daemon/aggregate/F.go (per-PID state) →
//	daemon/api/types.go → exporters/metrics_families.go, tools/gopulse/format.go
package event

// HistBuckets is the number of power-of-two buckets of the kernel side's
// latency histograms: bucket i counts durations in [2^(i-1), 2^i) ns, the
// last one everything above (bpf/hist.h HIST_BUCKETS; the families' tests
// check both agree).
const HistBuckets = 40

// Madvise is one madvise call of a traced process (the madvise family).
type Madvise struct {
	Pid    uint32
	Tid    uint32
	Advice int32  // MADV_* value
	Ret    int32  // the syscall's return: 0 or -errno
	Start  uint64 // the range advised
	Len    uint64
	Ts     uint64 // CLOCK_MONOTONIC ns
	// Running totals of this advice's slot (AdviceSlot) in this process,
	// kept by the kernel side: exact even when events are lost.
	Calls uint64
	Bytes uint64
	// Source says who in the runtime asked (Source* constants), from the
	// call's user stack.
	Source string
}

// Sched is the sched family's running totals for one process, polled.
type Sched struct {
	Pid uint32
	// RunQueue is the OS-thread run-queue latency histogram (ns,
	// power-of-two buckets) and RunQueueNs its sum.
	RunQueue    [HistBuckets]uint64
	RunQueueNs  uint64
	OnCPUNs     uint64
	OffCPUNs    uint64 // blocked: switched out not runnable, until woken
	Voluntary   uint64
	Involuntary uint64
	Threads     int64 // seen and not exited
	// ThreadsDropped: thread states the kernel side could not keep (its
	// map full, or the process at its thread bound): their switches are
	// not timed.
	ThreadsDropped uint64
	// GoLatency is the goroutine scheduling latency read with the totals,
	// nil when the family does not follow the process.
	GoLatency *GoLatency
}

// GoLatency is a process's goroutine scheduling latency histogram in the
// form runtime/metrics gives /sched/latencies:seconds: Buckets are the
// boundaries in seconds, len(Counts)+1 of them from -Inf to +Inf, and
// Counts[0] is the runtime's underflow count. Err, when set, says why the
// process has no histogram (Buckets and Counts are then nil).
type GoLatency struct {
	Buckets []float64
	Counts  []uint64
	Err     string
}

// Lock implementations of MheapLock.Method.
const (
	LockMethodFutex   = "futex"
	LockMethodSpinbit = "spinbit"
)

// MheapLock is the mheaplock family's running totals for one process,
// polled.
type MheapLock struct {
	Pid    uint32
	Method string // LockMethodFutex or LockMethodSpinbit
	// Sleeps to acquire runtime.mheap_.lock, their summed duration and
	// histogram (ns, power-of-two buckets).
	Contended uint64
	WaitNs    uint64
	WaitHist  [HistBuckets]uint64
	// The same for every other runtime lock.
	OtherContended uint64
	OtherWaitNs    uint64
	// Dropped: sleeps not timed, the kernel side's map of waits full.
	Dropped uint64
}
