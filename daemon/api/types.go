// Package api is the JSON contract of gopulsed's Unix-socket API, shared by
// the daemon (server) and the gopulse CLI (client). Field names are part of
// the contract: scripts parse `gopulse ... -o json`.
package api

import (
	"math"
	"math/bits"
	"time"
)

// Process is one traced Go process, as listed by `gopulse ps`.
type Process struct {
	PID       int    `json:"pid"`
	Exe       string `json:"exe"`
	GoVersion string `json:"go_version"`
	// Binary shape, as the inspector saw it.
	PIE      bool `json:"pie"`
	Static   bool `json:"static"`
	Stripped bool `json:"stripped"`
	// StartTime is when the process started (from /proc), FirstSeen when the
	// daemon learnt of it; cycles before FirstSeen were not observed.
	StartTime time.Time `json:"start_time"`
	// Who the process is, as OpenTelemetry names it: its OTEL_SERVICE_NAME,
	// else its systemd unit, else the executable's name.
	ServiceName string     `json:"service_name,omitempty"`
	SystemdUnit string     `json:"systemd_unit,omitempty"`
	ContainerID string     `json:"container_id,omitempty"`
	FirstSeen   time.Time  `json:"first_seen"`
	Exited      *time.Time `json:"exited,omitempty"`

	GCCycles       uint64 `json:"gc_cycles"`        // completed cycles observed
	GCForcedCycles uint64 `json:"gc_forced_cycles"` // of those, forced by runtime.GC
	// GCCyclesRecorded counts the cycles whose books the GC family's probe
	// delivered (the others: before the probes, or records lost).
	GCCyclesRecorded uint64 `json:"gc_cycles_recorded"`
	// GCPauseSecondsTotal is all stop-the-world time of the observed cycles
	// (sweep termination + mark termination, as the runtime's PauseTotalNs).
	GCPauseSecondsTotal float64 `json:"gc_pause_seconds_total"`
	GCLastPauseSeconds  float64 `json:"gc_last_pause_seconds"`
	// GCCyclesPerSecond is the rate over the last minute (or since first seen).
	GCCyclesPerSecond float64 `json:"gc_cycles_per_second"`
	// GCAssistSecondsTotal is mutator assist time summed over the cycles.
	GCAssistSecondsTotal float64 `json:"gc_assist_seconds_total"`
	// OtherSTWSecondsTotal is stop-the-world time not caused by the GC
	// (ReadMemStats, GOMAXPROCS, profiles...), Go 1.22+ only.
	OtherSTWCount        uint64  `json:"other_stw_count"`
	OtherSTWSecondsTotal float64 `json:"other_stw_seconds_total"`

	// The runtime's own settings and gauges, read from the process's
	// memory (the GC controller, memstats, sched); absent (nil) until read
	// or when its layout was refused (RuntimeError says why).
	*Runtime
	RuntimeError string `json:"runtime_error,omitempty"`

	// Sections of the optional probe families; nil (absent) when the family
	// is off or saw nothing of the process yet.
	MheapLock *MheapLockStats `json:"mheap_lock,omitempty"`
	Madvise   *MadviseStats   `json:"madvise,omitempty"`
	Sched     *SchedStats     `json:"sched,omitempty"`
}

// Runtime is what the Go runtime of a process records about itself,
// read from its memory at attach and on every poll; the names are a
// contract (`ps -o json`), the OpenTelemetry names in README's table.
type Runtime struct {
	// GCGoalBytes is the heap goal of the current cycle
	// (/gc/heap/goal:bytes, go.memory.gc.goal).
	GCGoalBytes uint64 `json:"gc_goal_bytes"`
	// GOGCPercent is GOGC as now in force (debug.SetGCPercent included);
	// -1 when GC is off (go.config.gogc).
	GOGCPercent int64 `json:"gogc_percent"`
	// MemoryLimitBytes is GOMEMLIMIT / debug.SetMemoryLimit
	// (math.MaxInt64: no limit; go.memory.limit).
	MemoryLimitBytes int64 `json:"memory_limit_bytes"`
	// Goroutines alive (/sched/goroutines, go.goroutine.count).
	Goroutines int64 `json:"goroutines"`
	// GOMAXPROCS (/sched/gomaxprocs, go.processor.limit).
	GOMAXPROCS int64 `json:"gomaxprocs"`
	// HeapLiveBytes is the heap in use as the pacer counts it
	// (gcController.heapLive).
	HeapLiveBytes uint64 `json:"heap_live_bytes"`
	// MemoryUsedBytes is memory mapped by the runtime and not released
	// (/memory/classes/total − heap/released, go.memory.used), of which
	// MemoryStackBytes are goroutine stacks (go.memory.type=stack).
	MemoryUsedBytes  uint64 `json:"memory_used_bytes"`
	MemoryStackBytes uint64 `json:"memory_stack_bytes"`
	// AllocatedBytes and Allocations are cumulative heap allocations
	// (go.memory.allocated, go.memory.allocations).
	AllocatedBytes uint64 `json:"allocated_bytes_total"`
	Allocations    uint64 `json:"allocations_total"`
	// HeapMarkedBytes is the live heap the last cycle marked.
	HeapMarkedBytes uint64 `json:"heap_marked_bytes"`
	// ReadAt is when the figures were read.
	ReadAt time.Time `json:"runtime_read_at"`
}

// Histogram is a distribution of durations in power-of-two buckets:
// Counts[i] counts values <= BucketUpperSeconds[i] and above the previous
// bound.
type Histogram struct {
	Count      uint64  `json:"count"`
	SumSeconds float64 `json:"sum_seconds"`
	// Quantiles interpolated within the buckets (so within a factor of 2).
	P50Seconds float64 `json:"p50_seconds"`
	P90Seconds float64 `json:"p90_seconds"`
	P99Seconds float64 `json:"p99_seconds"`
	// BucketUpperSeconds are the buckets' upper bounds; the last is -1,
	// meaning no bound.
	BucketUpperSeconds []float64 `json:"bucket_upper_seconds"`
	Counts             []uint64  `json:"counts"`
}

// MheapLockStats is the contention of the runtime's heap lock
// (runtime.mheap_.lock), from the mheaplock family.
type MheapLockStats struct {
	// Method says how contention was observed: "futex" (Go < 1.24: the
	// lock's own futex, tracepoints only) or "spinbit" (Go >= 1.24: a uprobe
	// on lock2's sleep path, plus the futex tracepoints).
	Method string `json:"method"`
	// Contended counts the times a thread had to sleep to get the lock,
	// WaitSeconds the time threads slept for it (spinning before the sleep
	// is not counted).
	Contended   uint64    `json:"contended_total"`
	WaitSeconds float64   `json:"wait_seconds_total"`
	Wait        Histogram `json:"wait"`
	// The same for every other runtime-internal lock of the process.
	OtherContended   uint64  `json:"other_locks_contended_total"`
	OtherWaitSeconds float64 `json:"other_locks_wait_seconds_total"`
	// Dropped counts the sleeps not timed: the kernel side's map of
	// waits was full (never another thread's wait evicted).
	Dropped uint64 `json:"dropped,omitempty"`
	// ContendedPerSecond over the last minute (or since first seen).
	ContendedPerSecond float64 `json:"contended_per_second"`
}

// AdviceCount is one madvise advice's successful calls and the bytes they
// covered.
type AdviceCount struct {
	Advice string `json:"advice"` // e.g. "dontneed", "free", "hugepage"
	Calls  uint64 `json:"calls"`
	Bytes  uint64 `json:"bytes"`
}

// Who asked the runtime to release memory (MadviseStats.ReleasedBySource).
const (
	SourceBackgroundScavenger = "background_scavenger"
	SourceAllocation          = "allocation"
	SourceFreeOSMemory        = "free_os_memory"
	SourceOther               = "other"
	SourceUnknown             = "unknown"
)

// MadviseStats is what the process advised the kernel about its memory,
// from the madvise family.
type MadviseStats struct {
	Advice []AdviceCount `json:"advice"`
	Errors uint64        `json:"errors"` // failed madvise calls
	// ReleasedBytes sums the advices that give memory back (DONTNEED,
	// FREE, REMOVE, PAGEOUT); ReleasedBytesPerSecond is its rate over the
	// last minute.
	ReleasedBytes          uint64  `json:"released_bytes_total"`
	ReleasedBytesPerSecond float64 `json:"released_bytes_per_second"`
	// ReleasedBySource attributes released bytes (of the calls whose event
	// was read, from their user stacks) to who asked.
	ReleasedBySource map[string]uint64 `json:"released_bytes_by_source"`
	// RSSBytes is the process's resident set now (procfs), 0 once exited.
	RSSBytes uint64 `json:"rss_bytes"`
}

// Pow2Bucket is the power-of-two bucket of a bucket with upper bound
// upperSeconds: j such that the bound lies in (2^(j-1), 2^j] ns (0 for a
// bound of 0 ns or less, -1 for the unbounded bucket, upperSeconds < 0).
// Finer buckets that never straddle a power of two (the runtime's) fold
// into these exactly; the kernel side's power-of-two buckets map to
// themselves.
func Pow2Bucket(upperSeconds float64) int {
	if upperSeconds < 0 {
		return -1
	}
	ns := uint64(math.Round(upperSeconds * 1e9))
	if ns == 0 {
		return 0
	}
	return bits.Len64(ns - 1)
}

// SchedStats is how the process's OS threads were scheduled, from the
// sched family (kernel sched_switch/sched_wakeup tracepoints).
type SchedStats struct {
	Threads int `json:"threads"` // threads seen, alive
	// ThreadsDropped counts the thread states the kernel side could not
	// keep (its map full, or the process at a quarter of it): those
	// threads' switches are not timed. Never another thread evicted.
	ThreadsDropped uint64 `json:"threads_dropped,omitempty"`
	// RunQueueLatency: from a thread's wakeup (or preemption) to running.
	RunQueueLatency Histogram `json:"runqueue_latency"`
	OnCPUSeconds    float64   `json:"on_cpu_seconds_total"`
	OffCPUSeconds   float64   `json:"off_cpu_seconds_total"` // blocked (slept) time
	RunQueueSeconds float64   `json:"runqueue_seconds_total"`
	// Voluntary: the thread blocked; involuntary: it was preempted.
	VoluntarySwitches   uint64 `json:"voluntary_switches"`
	InvoluntarySwitches uint64 `json:"involuntary_switches"`
	// GoroutineLatency: from a goroutine becoming runnable to running
	// (OpenTelemetry's go.schedule.duration): the runtime's own histogram
	// (sched.timeToRun, as /sched/latencies:seconds), read from the
	// process's memory. The runtime times one transition in 8: Count is of
	// those. Its buckets are the runtime's; SumSeconds is estimated from
	// bucket midpoints (the runtime keeps no sum).
	GoroutineLatency *Histogram `json:"goroutine_schedule_latency,omitempty"`
	// GoroutineLatencyError says why GoroutineLatency is missing.
	GoroutineLatencyError string `json:"goroutine_schedule_latency_error,omitempty"`
}

// Trigger names, as gctrace and runtime/debug speak of them.
const (
	TriggerHeap   = "heap"
	TriggerTime   = "time"
	TriggerForced = "forced"
)

// GCCycle is one completed GC cycle, one line of `gopulse gc PID`.
type GCCycle struct {
	// Seq is the runtime's own cycle number (the N of gctrace's "gc N").
	Seq uint64 `json:"seq"`
	// BeforeProbes marks a cycle that ran before the daemon's probes saw
	// the process, recovered from the runtime's own pause rings: only its
	// pause (and when it ended) are known.
	BeforeProbes bool      `json:"before_probes,omitempty"`
	Trigger      string    `json:"trigger"`
	Forced       bool      `json:"forced"`
	Start        time.Time `json:"start"` // sweep termination began (wall clock)
	// SinceProcessStart is the cycle's start relative to the process start,
	// the "@Xs" of a gctrace line.
	SinceProcessStart float64 `json:"since_process_start_seconds"`

	// Wall-clock phase durations, the "A+B+C ms clock" of a gctrace line.
	SweepTermSeconds float64 `json:"sweep_term_seconds"` // STW
	MarkSeconds      float64 `json:"mark_seconds"`       // concurrent
	MarkTermSeconds  float64 `json:"mark_term_seconds"`  // STW (incl. restarts)
	// PauseSeconds is the cycle's total stop-the-world time, as the
	// runtime's PauseNs entry for the cycle.
	PauseSeconds  float64 `json:"pause_seconds"`
	AssistSeconds float64 `json:"assist_seconds"` // mutator assist CPU time
	// Heap in use (live + not yet swept) at the start and at mark
	// termination, and what the cycle marked live: gctrace's X->Y->Z.
	HeapStartBytes  uint64 `json:"heap_start_bytes"`
	HeapEndBytes    uint64 `json:"heap_end_bytes"`
	HeapMarkedBytes uint64 `json:"heap_marked_bytes"`
	// NextGoalBytes is the heap goal the cycle set for the next one.
	NextGoalBytes uint64 `json:"next_goal_bytes"`
	// End is when the cycle ended (wall clock; memstats.last_gc_unix).
	End time.Time `json:"end"`
	// Partial is set when the daemon attached mid-cycle and some phases are
	// unknown (zero).
	Partial bool `json:"partial,omitempty"`
}

// GCHistory answers `gopulse gc PID`.
type GCHistory struct {
	Process Process   `json:"process"`
	Cycles  []GCCycle `json:"cycles"` // oldest first
}

// Status answers `gopulse status`.
type Status struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// Ready: the probe families are loaded and the processes running at
	// start are attached (the API answers before that).
	Ready     bool     `json:"ready"`
	Probes    []string `json:"probe_families"`
	Processes int      `json:"processes_traced"`
	// ProcessesDropped counts Go processes not traced because of --max-pids.
	ProcessesDropped uint64         `json:"processes_dropped"`
	Binaries         []BinaryStatus `json:"binaries"`
	// Refused are the last binaries that got no probes, with the reasons
	// (e.g. a runtime layout that does not check out).
	Refused  []BinaryStatus `json:"binaries_refused,omitempty"`
	Families []FamilyStatus `json:"families"`
	// AttachLatency is the time from a new binary's exec to its probes being
	// attached, for the last few binaries.
	AttachLatencySeconds []float64 `json:"attach_latency_seconds"`
	// TrapCostNs is what one uprobe hit costs a traced thread on this host
	// (the trap, the kernel's uprobe dispatch, the return), as measured by
	// the daemon at start or set by $GOPULSE_TRAP_COST_NS; TrapCostSource
	// says which ("measured", "configured", or "pending").
	TrapCostNs     float64 `json:"trap_cost_ns"`
	TrapCostSource string  `json:"trap_cost_source"`
	// New binaries waiting for (or in) inspection; those not queued
	// because the queue was full (the next rescan retries them); and
	// binaries or processes not traced because their user's share
	// (--max-binaries-per-user, --max-pids-per-user) was reached.
	InspectionsPending int    `json:"inspections_pending"`
	InspectionsDropped uint64 `json:"inspections_dropped"`
	UserShareDropped   uint64 `json:"user_share_dropped"`
}

// BinaryStatus is one traced executable (one inode), probed once however
// many processes run it.
type BinaryStatus struct {
	Path      string   `json:"path"`
	GoVersion string   `json:"go_version"`
	Processes int      `json:"processes"`
	Probes    int      `json:"probes_attached"`
	Errors    []string `json:"errors,omitempty"`
}

// FamilyStatus is one probe family's health.
type FamilyStatus struct {
	Name       string `json:"name"`
	Events     uint64 `json:"events"`
	LostEvents uint64 `json:"lost_events"`
	// Hits is the number of probe program runs (from kernel.bpf_stats_enabled
	// when on, else 0).
	Hits uint64 `json:"hits"`
	// Error says why an enabled family is not running (it could not
	// start); the other families run on.
	Error string `json:"error,omitempty"`
	// KernelFallbacks lists the kernel features this kernel lacks that the
	// family runs without, each "feature (Linux x.y): what it does
	// instead" (gopulsed --check-kernel prints the same).
	KernelFallbacks []string `json:"kernel_fallbacks,omitempty"`
	// UprobeHits is the part of Hits that were uprobes: each one a trap in
	// the traced program.
	UprobeHits uint64 `json:"uprobe_hits"`
	// UprobeHitsPerGCCycle (gc family): uprobe hits over the GC cycles
	// the family recorded (events + lost) since it was loaded: the traps
	// each cycle costs the traced programs.
	UprobeHitsPerGCCycle float64 `json:"uprobe_hits_per_gc_cycle,omitempty"`
	// HitsPerSecond and UprobeHitsPerSecond are recent rates.
	HitsPerSecond       float64 `json:"hits_per_second"`
	UprobeHitsPerSecond float64 `json:"uprobe_hits_per_second"`
	// BPFSecondsPerSecond is the CPU time the kernel measured running the
	// family's programs, per second (kernel run_time_ns).
	BPFSecondsPerSecond float64 `json:"bpf_seconds_per_second"`
	// BPFSeconds is the CPU time the kernel measured running the family's
	// programs since they were loaded (the uprobe programs' traps are
	// counted apart, in UprobeHits).
	BPFSeconds float64 `json:"bpf_seconds"`
	// RingBytes is the size of the family's ring buffer (sized from
	// --max-pids); RingSharePerSecond and RingShareBurst are the records
	// each UID may put in it, sustained and at once (bpf/share.h).
	RingBytes          uint32 `json:"ring_bytes,omitempty"`
	RingSharePerSecond uint64 `json:"ring_share_per_second,omitempty"`
	RingShareBurst     uint64 `json:"ring_share_burst,omitempty"`
	// UIDShares are the records each UID put through the ring and those
	// refused over its share (counted in LostEvents too); UID -1 is the
	// bucket shared by the UIDs beyond the 4096 with one of their own.
	UIDShares []UIDShare `json:"uid_shares,omitempty"`
	// EstCostSecondsPerSecond estimates the CPU time the family costs the
	// traced programs, per second: uprobe hits/s × Status.TrapCostNs plus
	// the BPF run time of its programs. 0.01 is 1% of one CPU.
	EstCostSecondsPerSecond float64 `json:"est_cost_seconds_per_second"`
}

// UIDShare is one UID's records through a family's ring.
type UIDShare struct {
	UID     int64  `json:"uid"`
	Sent    uint64 `json:"sent"`
	Dropped uint64 `json:"dropped"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}
