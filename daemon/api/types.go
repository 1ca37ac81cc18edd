// Package api is the JSON contract of gopulsed's Unix-socket API, shared by
// the daemon (server) and the gopulse CLI (client). Field names are part of
// the contract: scripts parse `gopulse ... -o json`.
package api

import "time"

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
}

// Trigger names, as gctrace and runtime/debug speak of them.
const (
	TriggerHeap   = "heap"
	TriggerTime   = "time"
	TriggerForced = "forced"
)

// GCCycle is one completed GC cycle, one line of `gopulse gc PID`.
type GCCycle struct {
	// Seq numbers cycles as the daemon saw them (1 = first observed). For a
	// process traced from its start it equals the runtime's cycle number.
	Seq     uint64    `json:"seq"`
	Trigger string    `json:"trigger"`
	Forced  bool      `json:"forced"`
	Start   time.Time `json:"start"` // sweep termination began (wall clock)
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
	// Heap in use (live + not yet swept) at the start and at mark termination.
	HeapStartBytes uint64 `json:"heap_start_bytes"`
	HeapEndBytes   uint64 `json:"heap_end_bytes"`
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
	Version   string    `json:"version"`
	Started   time.Time `json:"started"`
	Probes    []string  `json:"probe_families"`
	Processes int       `json:"processes_traced"`
	// ProcessesDropped counts Go processes not traced because of --max-pids.
	ProcessesDropped uint64         `json:"processes_dropped"`
	Binaries         []BinaryStatus `json:"binaries"`
	Families         []FamilyStatus `json:"families"`
	// AttachLatency is the time from a new binary's exec to its probes being
	// attached, for the last few binaries.
	AttachLatencySeconds []float64 `json:"attach_latency_seconds"`
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
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}
