package exporters

import (
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/gopulse/gopulse/daemon/api"
)

// Explicit bucket boundaries, in seconds. GC pauses of a healthy Go
// program are 10µs..1ms, pathological ones reach 100ms+; the concurrent
// mark phase runs for milliseconds to seconds.
var (
	pauseBounds = []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1}
	phaseBounds = []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}
)

// GC phases, values of the go.gc.phase attribute.
const (
	phaseSweepTerm = "sweep_termination"
	phaseMark      = "mark"
	phaseMarkTerm  = "mark_termination"
)

var phases = [3]string{phaseSweepTerm, phaseMark, phaseMarkTerm}

// hist is one explicit-bucket histogram (cumulative).
type hist struct {
	counts   []uint64 // len(bounds)+1
	count    uint64
	sum      float64
	min, max float64
}

func (h *hist) record(bounds []float64, v float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(bounds)+1)
	}
	// Bucket i holds (bounds[i-1], bounds[i]], as OpenTelemetry defines.
	h.counts[sort.SearchFloat64s(bounds, v)]++
	if h.count == 0 || v < h.min {
		h.min = v
	}
	if h.count == 0 || v > h.max {
		h.max = v
	}
	h.count++
	h.sum += v
}

func (h *hist) add(o *hist) {
	if o.count == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, len(o.counts))
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.count == 0 || o.min < h.min {
		h.min = o.min
	}
	if h.count == 0 || o.max > h.max {
		h.max = o.max
	}
	h.count += o.count
	h.sum += o.sum
}

func (h hist) clone() hist {
	h.counts = slices.Clone(h.counts)
	return h
}

// figures are the cumulative figures of one exported series (a process or
// a service).
type figures struct {
	cycles          uint64 // exact, from the kernel's counters
	forced          uint64
	pauseSeconds    float64
	assistSeconds   float64
	otherSTWCount   uint64
	otherSTWSeconds float64
	triggers        map[string]uint64 // observed cycles by trigger
	pause           hist              // each GC stop-the-world pause
	phase           [3]hist           // per phase, by phases
	fam             famFigures        // the other probe families
	runtime         api.Runtime       // the runtime's gauges (summed for a service)
	hasRuntime      bool
	summed          bool // a service's sum of processes
}

func (f *figures) add(o *figures) {
	f.cycles += o.cycles
	f.forced += o.forced
	f.pauseSeconds += o.pauseSeconds
	f.assistSeconds += o.assistSeconds
	f.otherSTWCount += o.otherSTWCount
	f.otherSTWSeconds += o.otherSTWSeconds
	for k, v := range o.triggers {
		if f.triggers == nil {
			f.triggers = map[string]uint64{}
		}
		f.triggers[k] += v
	}
	f.pause.add(&o.pause)
	for i := range f.phase {
		f.phase[i].add(&o.phase[i])
	}
	f.fam.add(&o.fam, true)
	if o.hasRuntime {
		f.hasRuntime, f.summed = true, true
		f.runtime.GCGoalBytes += o.runtime.GCGoalBytes
		f.runtime.Goroutines += o.runtime.Goroutines
		f.runtime.GOMAXPROCS += o.runtime.GOMAXPROCS
		f.runtime.MemoryUsedBytes += o.runtime.MemoryUsedBytes
		f.runtime.MemoryStackBytes += o.runtime.MemoryStackBytes
		f.runtime.AllocatedBytes += o.runtime.AllocatedBytes
	}
}

func (f figures) clone() figures {
	f.triggers = maps(f.triggers)
	f.pause = f.pause.clone()
	for i := range f.phase {
		f.phase[i] = f.phase[i].clone()
	}
	f.fam = f.fam.clone()
	return f
}

func maps(m map[string]uint64) map[string]uint64 {
	if m == nil {
		return nil
	}
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// maxTriggers bounds the distinct trigger names kept per process (the
// aggregator names unknown ones by number).
const maxTriggers = 8

// observe adds one completed cycle's histogram figures.
func (f *figures) observe(c api.GCCycle) {
	if f.triggers == nil {
		f.triggers = map[string]uint64{}
	}
	if _, ok := f.triggers[c.Trigger]; ok || len(f.triggers) < maxTriggers {
		f.triggers[c.Trigger]++
	}
	// go.memory.gc.pause.duration is per stop-the-world pause, as the
	// runtime's /sched/pauses/total/gc:seconds: a cycle has two.
	// The runtime books the cycle's total pause (both stops, restarts
	// included) and the phases' clock; the sweep termination's clock is
	// its stop, the mark termination's stop is the rest of the total.
	if c.BeforeProbes {
		return
	}
	f.pause.record(pauseBounds, c.SweepTermSeconds)
	f.pause.record(pauseBounds, max(c.PauseSeconds-c.SweepTermSeconds, 0))
	f.phase[0].record(phaseBounds, c.SweepTermSeconds)
	f.phase[1].record(phaseBounds, c.MarkSeconds)
	f.phase[2].record(phaseBounds, c.MarkTermSeconds)
}

// pidState is what the exporter keeps of one process: its histograms (fed
// by ObserveCycle) and its last listed totals.
type pidState struct {
	pid       int
	firstSeen time.Time
	proc      api.Process
	fig       figures
	attrs     attribute.Set
	attrsKey  string
	exported  bool // chosen under the MaxProcesses cap (sticky)
	capped    bool // counted as dropped by the cap
}

// totals refreshes the exact totals from the aggregator's view.
func (s *pidState) totals(p api.Process) {
	s.proc = p
	s.fig.cycles = p.GCCycles
	s.fig.forced = p.GCForcedCycles
	s.fig.pauseSeconds = p.GCPauseSecondsTotal
	s.fig.assistSeconds = p.GCAssistSecondsTotal
	s.fig.otherSTWCount = p.OtherSTWCount
	s.fig.otherSTWSeconds = p.OtherSTWSecondsTotal
	s.fig.fam.set(p)
	if p.Runtime != nil {
		s.fig.runtime, s.fig.hasRuntime = *p.Runtime, true
	}
}

// processAttrs are the data-point attributes of a per-process series.
func processAttrs(p api.Process) attribute.Set {
	exe := strings.TrimSuffix(p.Exe, " (deleted)")
	kvs := []attribute.KeyValue{
		semconv.ProcessPID(p.PID),
		semconv.ProcessExecutableName(filepath.Base(exe)),
		semconv.ProcessExecutablePath(exe),
		semconv.ProcessRuntimeName("go"),
		semconv.ProcessRuntimeVersion(p.GoVersion),
		semconv.ServiceName(serviceOf(p)),
	}
	if p.ContainerID != "" {
		kvs = append(kvs, semconv.ContainerID(p.ContainerID))
	}
	return attribute.NewSet(kvs...)
}

// serviceAttrs are the data-point attributes of a per-service series.
func serviceAttrs(name string) attribute.Set {
	return attribute.NewSet(semconv.ServiceName(name), semconv.ProcessRuntimeName("go"))
}

func serviceOf(p api.Process) string {
	if p.ServiceName != "" {
		return p.ServiceName
	}
	if p.Exe != "" {
		return filepath.Base(strings.TrimSuffix(p.Exe, " (deleted)"))
	}
	return "unknown_service"
}

// svcState is one service of the per-service mode: the figures of its
// processes that are gone, so that its counters never go down when one
// of them is forgotten.
type svcState struct {
	name      string
	firstSeen time.Time
	retired   figures
	attrs     attribute.Set
	exported  bool
	capped    bool
}

// series is one exported series at a collection.
type series struct {
	attrs attribute.Set
	start time.Time
	fig   figures
}

// view is what one collection exports.
type view struct {
	at       time.Time
	series   []series
	exported int    // series exported
	excluded int    // processes or services over the cap now
	dropped  uint64 // cumulative, distinct processes or services over the cap
}

// state is the exporter's per-process and per-service bookkeeping. It is
// bounded: entries of processes the aggregator no longer lists are
// dropped at the next reconciliation.
type state struct {
	mu         sync.Mutex
	pids       map[int]*pidState
	services   map[string]*svcState
	perService bool
	max        int
	dropped    uint64 // distinct processes/services over the cap
	overflow   uint64 // cycles not recorded: state table full
	cache      *view  // last view, reused by collections within cacheFor
}

// maxStates bounds the per-process entries ObserveCycle may create
// between reconciliations (the aggregator bounds the traced processes; this
// is a second line).
const maxStates = 1 << 16

// cacheFor lets the instruments' callback and the histogram producer of
// one collection share a view.
const cacheFor = 250 * time.Millisecond

func newState(perService bool, max int) *state {
	return &state{pids: map[int]*pidState{}, services: map[string]*svcState{}, perService: perService, max: max}
}

func (st *state) setMode(perService bool, max int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.perService != perService || st.max != max {
		st.cache = nil
		// The cap's choice starts over in the new mode.
		for _, p := range st.pids {
			p.exported, p.capped = false, false
		}
		for _, s := range st.services {
			s.exported, s.capped = false, false
		}
	}
	st.perService, st.max = perService, max
}

// lookup returns the entry of p, starting a new one for a new process (a
// PID reused, or a process that exec'd anew, whose counters restarted).
func (st *state) lookup(p api.Process) *pidState {
	s, ok := st.pids[p.PID]
	if ok && s.firstSeen.Equal(p.FirstSeen) && p.GCCycles >= s.fig.cycles {
		return s
	}
	if ok {
		st.retire(s)
	} else if len(st.pids) >= maxStates {
		return nil
	}
	s = &pidState{pid: p.PID, firstSeen: p.FirstSeen}
	st.pids[p.PID] = s
	return s
}

// retire folds a process that is gone into its service's figures.
func (st *state) retire(s *pidState) {
	if svc, ok := st.services[serviceOf(s.proc)]; ok {
		// A gone process holds no memory and runs no threads.
		fig := s.fig
		fig.fam.rss, fig.fam.threads = 0, 0
		svc.retired.add(&fig)
	}
	delete(st.pids, s.pid)
}

// observe records one completed cycle (ObserveCycle).
func (st *state) observe(p api.Process, c api.GCCycle) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.lookup(p)
	if s == nil {
		st.overflow++
		return
	}
	if s.proc.PID == 0 {
		s.totals(p)
	}
	s.fig.observe(c)
}

// reconcile brings the state in line with the aggregator's list and
// returns what to export.
func (st *state) reconcile(procs []api.Process, now time.Time) *view {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cache != nil && now.Sub(st.cache.at) >= 0 && now.Sub(st.cache.at) < cacheFor {
		return st.cache
	}
	listed := make(map[int]struct{}, len(procs))
	live := map[string][]*pidState{}
	for _, p := range procs {
		s := st.lookup(p)
		if s == nil {
			continue
		}
		listed[p.PID] = struct{}{}
		s.totals(p)
		svc := serviceOf(p)
		if key := attrsKey(p); key != s.attrsKey {
			s.attrs, s.attrsKey = processAttrs(p), key
		}
		live[svc] = append(live[svc], s)
		if _, ok := st.services[svc]; !ok {
			st.services[svc] = &svcState{name: svc, firstSeen: now, attrs: serviceAttrs(svc)}
		}
	}
	for pid, s := range st.pids {
		if _, ok := listed[pid]; !ok {
			st.retire(s)
		}
	}
	for name := range st.services {
		if _, ok := live[name]; !ok {
			delete(st.services, name)
		}
	}

	v := &view{at: now}
	if st.perService {
		names := make([]string, 0, len(st.services))
		for name := range st.services {
			names = append(names, name)
		}
		sort.Strings(names)
		chosen := st.chooseServices(names)
		for _, svc := range chosen {
			fig := svc.retired.clone()
			for _, s := range live[svc.name] {
				fig.add(&s.fig)
			}
			v.series = append(v.series, series{attrs: svc.attrs, start: svc.firstSeen, fig: fig})
		}
		v.excluded = len(names) - len(chosen)
	} else {
		pids := make([]int, 0, len(listed))
		for pid := range listed {
			pids = append(pids, pid)
		}
		sort.Ints(pids)
		chosen := st.choosePIDs(pids)
		for _, s := range chosen {
			start := s.firstSeen
			if !s.proc.StartTime.IsZero() && s.proc.StartTime.Before(start) {
				start = s.proc.StartTime
			}
			v.series = append(v.series, series{attrs: s.attrs, start: start, fig: s.fig.clone()})
		}
		v.excluded = len(pids) - len(chosen)
	}
	v.exported = len(v.series)
	v.dropped = st.dropped
	st.cache = v
	return v
}

// choosePIDs applies the cap to processes, in PID order.
func (st *state) choosePIDs(pids []int) []*pidState {
	items := make([]*pidState, len(pids))
	for i, pid := range pids {
		items[i] = st.pids[pid]
	}
	out := chooseCapped(items, st.max, &st.dropped, func(s *pidState) (*bool, *bool) { return &s.exported, &s.capped })
	slices.SortFunc(out, func(a, b *pidState) int { return a.pid - b.pid })
	return out
}

// chooseServices applies the cap to services, in name order.
func (st *state) chooseServices(names []string) []*svcState {
	items := make([]*svcState, len(names))
	for i, n := range names {
		items[i] = st.services[n]
	}
	out := chooseCapped(items, st.max, &st.dropped, func(s *svcState) (*bool, *bool) { return &s.exported, &s.capped })
	slices.SortFunc(out, func(a, b *svcState) int { return strings.Compare(a.name, b.name) })
	return out
}

// chooseCapped applies the cap (max <= 0: none): entries already exported
// stay (their series do not flap), new ones fill what is left in order,
// and the others are counted once in dropped.
func chooseCapped[T any](items []T, max int, dropped *uint64, flags func(T) (exported, capped *bool)) []T {
	var out []T
	for _, it := range items {
		if exported, _ := flags(it); *exported {
			out = append(out, it)
		}
	}
	for _, it := range items {
		exported, capped := flags(it)
		if *exported {
			continue
		}
		if max <= 0 || len(out) < max {
			*exported = true
			out = append(out, it)
		} else if !*capped {
			*capped = true
			*dropped++
		}
	}
	return out
}

func attrsKey(p api.Process) string {
	return p.Exe + "\x00" + p.GoVersion + "\x00" + serviceOf(p) + "\x00" + p.ContainerID
}
