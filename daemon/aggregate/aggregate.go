// Package aggregate keeps, per traced process, the totals and the last N
// GC cycles the probes reported. Everything is bounded: the number of
// processes (over the cap new ones are dropped and counted), the history
// per process, and exited processes are forgotten after a grace period —
// or sooner, oldest first, when a live process needs their slot.
//
// A process is its PID and its start time: a PID reused by a new process
// starts a fresh entry.
package aggregate

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/event"
)

// Config bounds the aggregator.
type Config struct {
	History     int           // GC cycles kept per process
	MaxProcs    int           // processes tracked at once
	ForgetAfter time.Duration // how long an exited process stays listed
	ProcRoot    string        // procfs mount point, for RSS ("" is /proc)
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
	// Gone: the process had already exited when identified (its events
	// may still be in flight). At the cap it may take an exited entry's
	// slot, not an unidentified one's (that may be a live process).
	Gone bool
}

const rateWindow = time.Minute

type proc struct {
	// registered: the tracer identified it (Register); an entry made by a
	// GC event alone may be a process that already exited, or that was
	// evicted and whose last events are late.
	registered bool
	info       api.Process
	cycles     []api.GCCycle // by Seq (the runtime's cycle number), len <= History
	numgc      counterRing   // the runtime's cycle count, for the rate
	ext        procExt       // the optional families' figures (extension.go)
}

// Aggregator is safe for concurrent use.
type Aggregator struct {
	cfg   Config
	clock Clock

	mu      sync.Mutex
	procs   map[int]*proc
	dropped uint64
	// exited lists the exited entries in the order they exited, so that
	// a live process over the cap takes the oldest one's slot. Entries
	// forgotten since, or replaced by a new process of the same PID, are
	// skipped when met and compacted by Sweep.
	exited []exitedEntry
	// evicted are the PIDs whose entries (exited or unidentified) made
	// room, for the tracer to release (TakeEvicted).
	evicted []int
	// gone remembers the PIDs evicted lately, whose late events are
	// expected: not counted as dropped processes. Bounded (maxGone).
	gone   map[int]struct{}
	follow followers // gc -f subscriptions (follow.go)
}

// New returns an empty aggregator.
func New(cfg Config, clock Clock) *Aggregator {
	if cfg.History <= 0 {
		cfg.History = 100
	}
	if cfg.MaxProcs <= 0 {
		cfg.MaxProcs = 4096
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	return &Aggregator{cfg: cfg, clock: clock, procs: map[int]*proc{}}
}

type exitedEntry struct {
	pid int
	p   *proc
}

// lookup returns the entry for pid, creating it within the cap. At the
// cap, an identified live process (register) takes the slot of an exited
// entry, else of an entry no Register identified; an event alone takes
// none (else the late events of an evicted process would bring it back
// and evict another, as measured: an exec storm at the cap filled every
// slot with such entries).
func (a *Aggregator) lookup(pid int, register, gone bool) *proc {
	if p, ok := a.procs[pid]; ok {
		return p
	}
	if len(a.procs) >= a.cfg.MaxProcs && !(register && (a.evictExited() || !gone && a.evictUnidentified())) {
		if _, late := a.gone[pid]; !late || register {
			a.dropped++
		}
		return nil
	}
	p := &proc{info: api.Process{PID: pid, FirstSeen: a.clock.Now()}}
	a.procs[pid] = p
	return p
}

// evictExited forgets the exited entry that exited first, to make room
// for a live process: exited processes are kept for people to look at,
// never at the cost of tracing a running one (a go build's burst of
// short-lived processes would otherwise hold every slot for
// --forget-after). It reports false when every entry is live. a.mu held.
func (a *Aggregator) evictExited() bool {
	for len(a.exited) > 0 {
		e := a.exited[0]
		a.exited[0] = exitedEntry{}
		a.exited = a.exited[1:]
		if a.procs[e.pid] == e.p {
			a.evict(e.pid)
			return true
		}
	}
	return false
}

// evictUnidentified forgets the oldest entry no Register identified, for
// an identified live process: such an entry is most likely a process
// already gone (its exit seen before its first event). It reports false
// when every entry is identified. a.mu held; a scan of the entries, only
// at the cap when no exited entry is left.
func (a *Aggregator) evictUnidentified() bool {
	victim, first := -1, time.Time{}
	for pid, p := range a.procs {
		if !p.registered && (victim < 0 || p.info.FirstSeen.Before(first)) {
			victim, first = pid, p.info.FirstSeen
		}
	}
	if victim < 0 {
		return false
	}
	a.evict(victim)
	return true
}

// maxGone bounds the evicted PIDs remembered for their late events.
const maxGone = 4096

// evict forgets pid to make room. a.mu held.
func (a *Aggregator) evict(pid int) {
	delete(a.procs, pid)
	a.evicted = append(a.evicted, pid)
	if a.gone == nil || len(a.gone) >= maxGone {
		a.gone = map[int]struct{}{} // bounded; a few miscounted drops at worst
	}
	a.gone[pid] = struct{}{}
}

// TakeEvicted returns (and clears) the PIDs of the entries (exited or
// unidentified) forgotten to make room for live processes since the last
// call: the tracer releases them as it does Sweep's.
func (a *Aggregator) TakeEvicted() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.evicted
	a.evicted = nil
	return out
}

// reset forgets the GC history of a process that exec'd anew.
func (p *proc) reset() {
	p.info = api.Process{PID: p.info.PID, FirstSeen: p.info.FirstSeen, Exe: p.info.Exe, GoVersion: p.info.GoVersion,
		PIE: p.info.PIE, Static: p.info.Static, Stripped: p.info.Stripped, StartTime: p.info.StartTime}
	p.cycles, p.numgc = nil, counterRing{}
	p.ext = procExt{}
}

// Register records (or refreshes) what is known of a process. It reports
// false when the process cap is reached.
func (a *Aggregator) Register(m Meta) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.procs[m.PID]; ok && !m.StartTime.IsZero() && !p.info.StartTime.IsZero() && !m.StartTime.Equal(p.info.StartTime) {
		// The PID was reused: another process, which inherits nothing
		// of the old one (its exited flag, its figures).
		delete(a.procs, m.PID)
	}
	p := a.lookup(m.PID, true, m.Gone)
	if p == nil {
		return false
	}
	p.registered = true
	p.info.Exe, p.info.GoVersion = m.Exe, m.GoVersion
	p.info.PIE, p.info.Static, p.info.Stripped = m.PIE, m.Static, m.Stripped
	p.info.StartTime = m.StartTime
	p.info.ServiceName, p.info.SystemdUnit, p.info.ContainerID = m.ServiceName, m.SystemdUnit, m.ContainerID
	return true
}

// Has reports whether pid is tracked.
func (a *Aggregator) Has(pid int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.procs[pid]
	return ok
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

// NewProgram forgets what pid ran before an exec: the entry the tracer
// identified (Register) belongs to the previous program, or to the
// process that had the PID before. An entry made by probe events alone is
// kept: those events came after the exec (a short-lived process's can
// arrive before its exec is handled) and are the new program's.
func (a *Aggregator) NewProgram(pid int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.procs[pid]; ok && p.registered {
		delete(a.procs, pid)
	}
}

// Exited marks a process as gone; Sweep forgets it later.
func (a *Aggregator) Exited(pid int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.procs[pid]; ok && p.info.Exited == nil {
		t := a.clock.Now()
		p.info.Exited = &t
		a.exited = append(a.exited, exitedEntry{pid: pid, p: p})
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
	// Compact the exit order: keep the entries still listed (their order
	// unchanged), so that it never holds more than the map.
	kept := a.exited[:0]
	for _, e := range a.exited {
		if a.procs[e.pid] == e.p {
			kept = append(kept, e)
		}
	}
	clear(a.exited[len(kept):])
	a.exited = kept
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

// GC records one event of the GC family: the runtime's books of a
// process (totals, settings, gauges; at tracking also the pause rings),
// one completed cycle, or why the books cannot be read.
func (a *Aggregator) GC(ev event.GC) {
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
func (a *Aggregator) gc(ev event.GC) (*proc, api.GCCycle, bool) {
	p := a.lookup(ev.PID, false, false)
	if p == nil {
		return nil, api.GCCycle{}, false
	}
	switch ev.Kind {
	case event.GCError:
		p.info.RuntimeError = ev.Err
	case event.GCReading:
		a.books(p, ev.Books)
		for _, r := range ev.Ring {
			if r.Seq <= ev.Books.NumGC {
				p.insert(api.GCCycle{Seq: uint64(r.Seq), BeforeProbes: true, PauseSeconds: seconds(r.PauseNs),
					End: time.Unix(0, r.EndUnixNs)}, a.cfg.History, false)
			}
		}
	case event.GCCycleDone:
		// Records arrive up to a ring poll late, after readings of the
		// books that already count them: totals only move forward.
		cy := ev.Cycle
		a.totals(p, cy.Seq, cy.NumForcedGC, cy.PauseTotal)
		c := a.cycle(p, cy)
		p.info.GCCyclesRecorded++
		p.info.GCLastPauseSeconds = c.PauseSeconds
		p.info.GCAssistSecondsTotal += c.AssistSeconds
		p.insert(c, a.cfg.History, true)
		a.follow.publish(p.info.PID, c)
		return p, c, true
	}
	return p, api.GCCycle{}, false
}

// books takes a reading of the runtime's books: the absolute totals (the
// runtime's own, whatever happened before the probes), settings and
// gauges.
func (a *Aggregator) books(p *proc, s event.GCBooks) {
	if uint64(s.NumGC) < p.info.GCCycles && p.info.Runtime != nil {
		// The counter went down: the PID runs a new program.
		p.reset()
	}
	a.totals(p, s.NumGC, s.NumForcedGC, s.PauseTotalNs)
	if s.OtherSTW >= 0 {
		p.info.OtherSTWCount = uint64(s.OtherSTW)
		// The runtime keeps a histogram of these stops, not their sum:
		// estimated from its bucket midpoints.
		p.info.OtherSTWSecondsTotal = BoundsHistogram(s.OtherSTWBounds, s.OtherSTWHist).SumSeconds
	}
	p.info.Runtime = &api.Runtime{
		GCGoalBytes: s.HeapGoal, GOGCPercent: int64(s.GCPercent), MemoryLimitBytes: s.MemoryLimit,
		Goroutines: int64(s.Goroutines), GOMAXPROCS: int64(s.GOMAXPROCS),
		HeapLiveBytes: s.HeapLive, HeapMarkedBytes: s.HeapMarked,
		MemoryUsedBytes: s.MappedReady, MemoryStackBytes: s.StackBytes,
		AllocatedBytes: s.TotalAlloc, ReadAt: s.At,
	}
	p.info.RuntimeError = ""
}

// totals moves the process's totals forward to the runtime's own
// counters; they never go back (a reading older than a record is ignored).
func (a *Aggregator) totals(p *proc, numgc, forced uint32, pauseNs uint64) {
	if uint64(numgc) < p.info.GCCycles {
		return
	}
	p.info.GCCycles = uint64(numgc)
	p.info.GCForcedCycles = uint64(forced)
	p.info.GCPauseSecondsTotal = seconds(pauseNs)
	p.numgc.add(a.clock.Now(), uint64(numgc))
}

// forcegcperiod is the runtime's: sysmon starts a cycle when none ran for
// two minutes.
const forcegcperiod = 2 * time.Minute

// cycle turns a cycle's books into the API's view. The trigger is forced
// when work.userForced says so, time when it began more than the
// runtime's forcegcperiod after the previous cycle ended (what sysmon
// tests), else heap.
func (a *Aggregator) cycle(p *proc, cy event.GCCycle) api.GCCycle {
	c := api.GCCycle{
		Seq:              uint64(cy.Seq),
		Trigger:          api.TriggerHeap,
		Forced:           cy.Forced,
		Start:            a.wall(cy.TSweepTerm),
		End:              time.Unix(0, cy.EndUnixNs),
		SweepTermSeconds: seconds(uint64(cy.TMark - cy.TSweepTerm)),
		MarkSeconds:      seconds(uint64(cy.TMarkTerm - cy.TMark)),
		MarkTermSeconds:  seconds(uint64(cy.TEnd - cy.TMarkTerm)),
		PauseSeconds:     seconds(cy.PauseNs),
		AssistSeconds:    seconds(uint64(cy.AssistNs)),
		HeapStartBytes:   cy.Heap0,
		HeapEndBytes:     cy.Heap1,
		HeapMarkedBytes:  cy.Heap2,
		NextGoalBytes:    cy.NextGoal,
	}
	if !p.info.StartTime.IsZero() {
		c.SinceProcessStart = c.Start.Sub(p.info.StartTime).Seconds()
	}
	switch {
	case cy.Forced:
		c.Trigger = api.TriggerForced
	default:
		if prev, ok := p.find(uint64(cy.Seq) - 1); ok && !prev.End.IsZero() && c.Start.Sub(prev.End) > forcegcperiod {
			c.Trigger = api.TriggerTime
		}
	}
	return c
}

// find returns the kept cycle seq.
func (p *proc) find(seq uint64) (api.GCCycle, bool) {
	i, ok := slices.BinarySearchFunc(p.cycles, seq, func(c api.GCCycle, s uint64) int { return cmpU64(c.Seq, s) })
	if !ok {
		return api.GCCycle{}, false
	}
	return p.cycles[i], true
}

// insert keeps c in Seq order: a cycle with full books replaces a
// before-probes entry of the same number (replace), never the reverse;
// beyond max the oldest go.
func (p *proc) insert(c api.GCCycle, max int, replace bool) {
	i, ok := slices.BinarySearchFunc(p.cycles, c.Seq, func(x api.GCCycle, s uint64) int { return cmpU64(x.Seq, s) })
	switch {
	case ok && replace:
		p.cycles[i] = c
	case ok:
		if p.cycles[i].BeforeProbes && !c.BeforeProbes {
			p.cycles[i] = c
		}
	default:
		if len(p.cycles) >= max && i == 0 {
			return // older than all kept
		}
		p.cycles = slices.Insert(p.cycles, i, c)
		if len(p.cycles) > max {
			p.cycles = slices.Delete(p.cycles, 0, len(p.cycles)-max)
		}
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func seconds(ns uint64) float64 { return float64(ns) / 1e9 }

// snapshot returns p's public view without what needs file I/O (withIO);
// a.mu must be held.
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
		info.GCCyclesPerSecond = p.numgc.rate(now)
	}
	p.extSnapshot(&info, now)
	return info
}

// Processes lists the tracked processes by PID.
func (a *Aggregator) Processes() []api.Process {
	a.mu.Lock()
	now := a.clock.Now()
	out := make([]api.Process, 0, len(a.procs))
	for _, p := range a.procs {
		out = append(out, a.snapshot(p, now))
	}
	a.mu.Unlock()
	// The /proc reads after the lock: the event readers wait for no file.
	a.withIO(out)
	slices.SortFunc(out, func(x, y api.Process) int { return x.PID - y.PID })
	return out
}

// GCHistory returns the last cycles of pid (all kept when last <= 0).
func (a *Aggregator) GCHistory(pid, last int) (api.GCHistory, error) {
	h, err := a.gcHistory(pid, last)
	if err == nil {
		info := []api.Process{h.Process}
		a.withIO(info)
		h.Process = info[0]
	}
	return h, err
}

func (a *Aggregator) gcHistory(pid, last int) (api.GCHistory, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.procs[pid]
	if !ok {
		return api.GCHistory{}, fmt.Errorf("pid %d: %w", pid, api.ErrNoProcess)
	}
	cycles := slices.Clone(p.cycles)
	if last > 0 && len(cycles) > last {
		cycles = cycles[len(cycles)-last:]
	}
	return api.GCHistory{Process: a.snapshot(p, a.clock.Now()), Cycles: cycles}, nil
}
