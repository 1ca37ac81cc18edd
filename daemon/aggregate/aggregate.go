// Package aggregate keeps, per traced process, the totals and the last N
// GC cycles the probes reported. Everything is bounded: the number of
// processes (over the cap new ones are dropped and counted), the history
// per process, and exited processes are forgotten after a grace period.
package aggregate

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/gc"
)

// Config bounds the aggregator.
type Config struct {
	History     int           // GC cycles kept per process
	MaxProcs    int           // processes tracked at once
	ForgetAfter time.Duration // how long an exited process stays listed
	// OnCycle, if set, sees every completed GC cycle (e.g. for exporter
	// histograms); it runs on the event reader and must not block.
	OnCycle func(api.Process, api.GCCycle)
}

// Clock converts the runtime's CLOCK_MONOTONIC timestamps to wall time.
type Clock interface {
	Now() time.Time
	Monotonic() time.Duration
}

// Meta describes a process, from discovery and binary inspection.
type Meta struct {
	PID       int
	Exe       string
	GoVersion string
	PIE       bool
	Static    bool
	Stripped  bool
	StartTime time.Time
	// Who it is, for labels.
	ServiceName, SystemdUnit, ContainerID string
}

const rateWindow = time.Minute

type proc struct {
	info    api.Process
	cycles  []api.GCCycle // ring, len <= History
	next    int           // ring write index once full
	ends    []time.Time   // recent cycle ends, for the rate; ring of rateSlots
	endNext int
	ext     procExt // the optional families' figures (families.go)
}

const rateSlots = 256

// Aggregator is safe for concurrent use.
type Aggregator struct {
	cfg   Config
	clock Clock

	mu      sync.Mutex
	procs   map[int]*proc
	dropped uint64
	follow  followers // gc -f subscriptions (follow.go)
}

// New returns an empty aggregator.
func New(cfg Config, clock Clock) *Aggregator {
	if cfg.History <= 0 {
		cfg.History = 100
	}
	if cfg.MaxProcs <= 0 {
		cfg.MaxProcs = 4096
	}
	return &Aggregator{cfg: cfg, clock: clock, procs: map[int]*proc{}}
}

// lookup returns the entry for pid, creating it within the cap.
func (a *Aggregator) lookup(pid int) *proc {
	if p, ok := a.procs[pid]; ok {
		return p
	}
	if len(a.procs) >= a.cfg.MaxProcs {
		a.dropped++
		return nil
	}
	p := &proc{info: api.Process{PID: pid, FirstSeen: a.clock.Now()}}
	a.procs[pid] = p
	return p
}

// reset forgets the GC history of a process that exec'd anew.
func (p *proc) reset() {
	p.info = api.Process{PID: p.info.PID, FirstSeen: p.info.FirstSeen, Exe: p.info.Exe, GoVersion: p.info.GoVersion,
		PIE: p.info.PIE, Static: p.info.Static, Stripped: p.info.Stripped, StartTime: p.info.StartTime}
	p.cycles, p.next, p.ends, p.endNext = nil, 0, nil, 0
	p.ext = procExt{}
}

// Register records (or refreshes) what is known of a process. It reports
// false when the process cap is reached.
func (a *Aggregator) Register(m Meta) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.lookup(m.PID)
	if p == nil {
		return false
	}
	p.info.Exe, p.info.GoVersion = m.Exe, m.GoVersion
	p.info.PIE, p.info.Static, p.info.Stripped = m.PIE, m.Static, m.Stripped
	p.info.StartTime = m.StartTime
	p.info.ServiceName, p.info.SystemdUnit, p.info.ContainerID = m.ServiceName, m.SystemdUnit, m.ContainerID
	return true
}

// Running lists the tracked processes not known to have exited.
func (a *Aggregator) Running() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	var pids []int
	for pid, p := range a.procs {
		if p.info.Exited == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Remove forgets a process at once (e.g. it exec'd another program).
func (a *Aggregator) Remove(pid int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.procs, pid)
}

// Exited marks a process as gone; Sweep forgets it later.
func (a *Aggregator) Exited(pid int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.procs[pid]; ok && p.info.Exited == nil {
		t := a.clock.Now()
		p.info.Exited = &t
	}
}

// Sweep forgets processes that exited more than ForgetAfter ago and
// returns their PIDs.
func (a *Aggregator) Sweep() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clock.Now()
	var gone []int
	for pid, p := range a.procs {
		if p.info.Exited != nil && now.Sub(*p.info.Exited) >= a.cfg.ForgetAfter {
			delete(a.procs, pid)
			gone = append(gone, pid)
		}
	}
	return gone
}

// Dropped is the number of processes not tracked because of the cap.
func (a *Aggregator) Dropped() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dropped
}

// Len is the number of processes tracked.
func (a *Aggregator) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.procs)
}

// wall converts a runtime nanotime to wall-clock time.
func (a *Aggregator) wall(mono int64) time.Time {
	return a.clock.Now().Add(time.Duration(mono) - a.clock.Monotonic())
}

// GC records one event of the GC family.
func (a *Aggregator) GC(ev *gc.Event) {
	a.mu.Lock()
	p, c, ok := a.gc(ev)
	var info api.Process
	if ok && a.cfg.OnCycle != nil {
		info = a.snapshot(p, a.clock.Now())
	}
	a.mu.Unlock()
	if ok && a.cfg.OnCycle != nil {
		a.cfg.OnCycle(info, c)
	}
}

// gc applies ev under a.mu and returns the cycle it completed, if any.
func (a *Aggregator) gc(ev *gc.Event) (*proc, api.GCCycle, bool) {
	p := a.lookup(int(ev.Pid))
	if p == nil {
		return nil, api.GCCycle{}, false
	}
	switch ev.Kind {
	case gc.KindSTWOther:
		p.info.OtherSTWCount++
		p.info.OtherSTWSecondsTotal += seconds(ev.StwMarkNs)
		return p, api.GCCycle{}, false
	case gc.KindCycle:
	default:
		return p, api.GCCycle{}, false
	}
	if ev.Cycles < p.info.GCCycles {
		// The kernel side starts over when a PID execs a new image: so
		// does the history.
		p.reset()
	}
	// Totals come from the kernel side's running counters, so they stay
	// exact when some events were lost.
	p.info.GCCycles = ev.Cycles
	p.info.GCForcedCycles = ev.ForcedCycles
	p.info.GCPauseSecondsTotal = seconds(ev.PauseTotalNs)
	p.info.GCLastPauseSeconds = seconds(ev.StwSweepNs + ev.StwMarkNs)
	p.info.GCAssistSecondsTotal += seconds(ev.AssistNs)

	c := api.GCCycle{
		Seq:              ev.Seq,
		Trigger:          triggerName(ev.Trigger),
		Forced:           ev.Trigger == gc.TriggerCycle,
		SweepTermSeconds: seconds(ev.StwSweepNs),
		MarkTermSeconds:  seconds(ev.StwMarkNs),
		PauseSeconds:     seconds(ev.StwSweepNs + ev.StwMarkNs),
		AssistSeconds:    seconds(ev.AssistNs),
		HeapStartBytes:   ev.HeapStart,
		HeapEndBytes:     ev.HeapEnd,
		Partial:          ev.Flags&gc.FlagPartial != 0,
	}
	if ev.T_sweepTerm != 0 {
		c.Start = a.wall(ev.T_sweepTerm)
		if !p.info.StartTime.IsZero() {
			c.SinceProcessStart = c.Start.Sub(p.info.StartTime).Seconds()
		}
	}
	if ev.T_mark != 0 && ev.T_markTerm > ev.T_mark {
		c.MarkSeconds = seconds(uint64(ev.T_markTerm - ev.T_mark))
	}
	if len(p.cycles) < a.cfg.History {
		p.cycles = append(p.cycles, c)
	} else {
		p.cycles[p.next] = c
		p.next = (p.next + 1) % len(p.cycles)
	}
	a.follow.publish(p.info.PID, c)
	end := a.wall(ev.T_end)
	if len(p.ends) < rateSlots {
		p.ends = append(p.ends, end)
	} else {
		p.ends[p.endNext] = end
		p.endNext = (p.endNext + 1) % rateSlots
	}
	return p, c, true
}

func triggerName(k uint8) string {
	switch k {
	case gc.TriggerHeap:
		return api.TriggerHeap
	case gc.TriggerTime:
		return api.TriggerTime
	case gc.TriggerCycle:
		return api.TriggerForced
	}
	return fmt.Sprintf("unknown(%d)", k)
}

func seconds(ns uint64) float64 { return float64(ns) / 1e9 }

// snapshot returns p's public view; a.mu must be held.
func (a *Aggregator) snapshot(p *proc, now time.Time) api.Process {
	info := p.info
	window := rateWindow
	if since := now.Sub(info.FirstSeen); since < window {
		window = since
	}
	if info.Exited != nil {
		window = 0 // an exited process runs no cycles
	}
	if window > 0 {
		n := 0
		for _, t := range p.ends {
			if now.Sub(t) <= window {
				n++
			}
		}
		info.GCCyclesPerSecond = float64(n) / window.Seconds()
	}
	p.extSnapshot(&info, now)
	return info
}

// Processes lists the tracked processes by PID.
func (a *Aggregator) Processes() []api.Process {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clock.Now()
	out := make([]api.Process, 0, len(a.procs))
	for _, p := range a.procs {
		out = append(out, a.snapshot(p, now))
	}
	slices.SortFunc(out, func(x, y api.Process) int { return x.PID - y.PID })
	return out
}

// GCHistory returns the last cycles of pid (all kept when last <= 0).
func (a *Aggregator) GCHistory(pid, last int) (api.GCHistory, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.procs[pid]
	if !ok {
		return api.GCHistory{}, fmt.Errorf("pid %d: %w", pid, api.ErrNoProcess)
	}
	cycles := make([]api.GCCycle, 0, len(p.cycles))
	cycles = append(cycles, p.cycles[p.next:]...)
	cycles = append(cycles, p.cycles[:p.next]...)
	if last > 0 && len(cycles) > last {
		cycles = cycles[len(cycles)-last:]
	}
	return api.GCHistory{Process: a.snapshot(p, a.clock.Now()), Cycles: cycles}, nil
}
