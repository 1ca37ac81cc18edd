// Package tracer ties the parts of the daemon together: discovery events
// decide which binaries get probes, probe events feed the aggregator, and
// exited processes are forgotten after the grace period.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/procfs"
	"golang.org/x/sync/errgroup"

	"github.com/gopulse/gopulse/daemon/aggregate"
	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/daemon/procmeta"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/catalog"
	"github.com/gopulse/gopulse/probes/discovery"
	"github.com/gopulse/gopulse/probes/gc"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/sanitize"
)

// Config of the tracer.
type Config struct {
	ProcRoot    string // normally /proc
	Families    []string
	MaxBinaries int // binaries probed at once
	MaxPIDs     int // processes traced at once: sizes the kernel-side maps
	// Per user (root exempt), so that one user cannot take every slot:
	// binaries probed and running processes traced; 0: no share.
	MaxBinariesPerUser int
	MaxPIDsPerUser     int
	SweepEvery         time.Duration // how often exited processes are checked
}

// Version is set by the daemon's main (from the build).
var Version = "dev"

const maxNotGo = 8192

type fileKey struct {
	id    goinspect.FileID
	size  int64
	mtime int64
}

type binInfo struct {
	goVersion             string
	pie, static, stripped bool
	uid                   uint32 // who first ran it: its share is theirs
	pids                  map[int]struct{}
}

// Tracer runs discovery and the probe families.
type Tracer struct {
	log *slog.Logger
	cfg Config
	agg *aggregate.Aggregator

	disc *discovery.Discovery
	att  *probes.Attacher
	mods *modWatch

	started   time.Time
	heartbeat atomic.Int64 // unix ns of the event loop's last turn
	ready     atomic.Bool  // initial scan done
	// Exec events missed (queue full here, or ring buffer full in the
	// kernel) since the last /proc rescan.
	execsDropped atomic.Uint64
	discLost     uint64
	discWatch    *readerWatch
	inspectSeen  uint64 // inspectDropped at the last sweep

	famMu   sync.Mutex
	fams    map[string]*loaded
	famErrs map[string]string // enabled families that could not start, and why
	runCtx  context.Context   // families started later read under it

	mu        sync.Mutex
	notGo     map[fileKey]struct{}
	bins      map[goinspect.FileID]*binInfo
	pidBin    map[int]goinspect.FileID
	pidUID    map[int]uint32
	trackedAt map[int]time.Duration // when identified (monotonic): older exec events are stale
	latencies []float64             // last attach latencies, seconds
	refused   []api.BinaryStatus    // last binaries refused, and why

	cost   costMeter
	procFS procfs.FS // cfg.ProcRoot, for start times

	// New binaries wait here for the inspection workers (inspect.go);
	// pending is the event loop's own.
	queue          *fairQueue
	results        chan inspectResult
	pending        map[goinspect.FileID]*inspectJob
	pendingN       atomic.Int64
	inspectDropped atomic.Uint64 // queue full, or too many processes waiting on one binary
	quotaDropped   atomic.Uint64 // a user's share reached
	limitLog       rateLog
}

// New loads the enabled families and attaches their tracepoints.
func New(log *slog.Logger, cfg Config, agg *aggregate.Aggregator) (*Tracer, error) {
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if cfg.MaxBinaries <= 0 {
		cfg.MaxBinaries = 1024
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = 5 * time.Second
	}
	t := &Tracer{
		log: log, cfg: cfg, agg: agg, started: time.Now(), fams: map[string]*loaded{}, famErrs: map[string]string{},
		notGo: map[fileKey]struct{}{}, bins: map[goinspect.FileID]*binInfo{}, pidBin: map[int]goinspect.FileID{},
		pidUID: map[int]uint32{}, trackedAt: map[int]time.Duration{},
		queue: newFairQueue(), pending: map[goinspect.FileID]*inspectJob{},
		// Room for every job queued or in flight: a worker never blocks.
		results: make(chan inspectResult, inspectQueue+inspectWorkers),
	}
	var err error
	if t.procFS, err = procfs.NewFS(cfg.ProcRoot); err != nil {
		return nil, fmt.Errorf("procfs at %s: %w", cfg.ProcRoot, err)
	}
	if t.disc, err = discovery.New(); err != nil {
		return nil, err
	}
	if t.mods, err = newModWatch(); err != nil {
		t.Close()
		return nil, err
	}
	if nested, err := nestedPIDNamespace(cfg.ProcRoot); err == nil && nested {
		log.Warn("gopulsed runs in a nested PID namespace: BPF reports host PIDs, which this /proc cannot show; " +
			"processes started after the daemon will not be traced. Run gopulsed in the host's PID namespace.")
	}
	t.discWatch = &readerWatch{name: "discovery", src: t.disc}
	t.heartbeat.Store(time.Now().UnixNano())
	if t.att, err = probes.NewAttacher(log, t.disc.Spec()); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// Close detaches and unloads everything.
func (t *Tracer) Close() {
	// Every link of every family at once first, then the families (their
	// RemoveSpec finds nothing left): family by family, the detaches
	// queued one grace period after another (measured: 4.5 to 20 s to stop
	// with --probes all and tens of binaries, one link per site).
	if t.att != nil {
		t.att.Close()
	}
	t.famMu.Lock()
	for name := range t.fams {
		_ = t.stopFamily(name)
	}
	t.famMu.Unlock()
	for id, j := range t.pending {
		j.o.f.Close()
		delete(t.pending, id)
	}
	if t.mods != nil {
		t.mods.close()
	}
	if t.disc != nil {
		t.disc.Close()
	}
	t.cost.close()
}

// Run traces until ctx is done. ready is called once the processes that
// were running at start are attached.
func (t *Tracer) Run(ctx context.Context, ready func()) error {
	g, ctx := errgroup.WithContext(ctx)
	// Exec events queue in the ring buffer while the scan runs, so nothing
	// started during the scan is missed.
	execs := make(chan discovery.Event, 4096)
	g.Go(func() error {
		return t.disc.Read(ctx, func(ev discovery.Event) {
			if ev.Kind == discovery.Exit {
				t.agg.Exited(ev.PID)
				return
			}
			select {
			case execs <- ev:
			default:
				// The next sweep rescans /proc and finds it.
				t.execsDropped.Add(1)
			}
		})
	})
	// Writes to probed binaries are handled on the event loop, before any
	// exec queued behind them, so a process started from a rewritten file
	// gets fresh probes, never the old ones.
	mods := make(chan goinspect.FileID, 64)
	g.Go(func() error {
		return t.mods.run(func(id goinspect.FileID) {
			select {
			case mods <- id:
			case <-ctx.Done():
			}
		})
	})
	g.Go(func() error {
		<-ctx.Done()
		t.mods.close()
		return nil
	})
	// Families load before the scan, so the processes it finds get every
	// family's probes at once.
	t.famMu.Lock()
	t.runCtx = ctx
	for _, cf := range catalog.Families() {
		if !slices.Contains(t.cfg.Families, cf.Name) {
			continue
		}
		// A family that cannot start (a kernel without its tracepoint,
		// say) is reported, not fatal: the others keep tracing.
		t.tryStartFamily(ctx, cf.Name)
	}
	t.famMu.Unlock()
	g.Go(func() error { return t.sampleCosts(ctx) })
	g.Go(func() error { return t.runInspectors(ctx) })
	g.Go(func() error {
		t.scan()
		// Ready means the binaries of the processes running at start are
		// attached; execs meanwhile are served as usual.
		initial := map[goinspect.FileID]struct{}{}
		for id := range t.pending {
			initial[id] = struct{}{}
		}
		markReady := func() {
			if t.ready.Load() {
				return
			}
			for id := range initial {
				if _, ok := t.pending[id]; ok {
					return
				}
			}
			t.ready.Store(true)
			t.log.Info("processes running at start identified", "traced", t.agg.Len())
			if ready != nil {
				ready()
			}
		}
		markReady()
		sweep := time.NewTicker(t.cfg.SweepEvery)
		defer sweep.Stop()
		beat := time.NewTicker(time.Second)
		defer beat.Stop()
		for {
			t.heartbeat.Store(time.Now().UnixNano())
			select {
			case <-ctx.Done():
				return nil
			case id := <-mods:
				t.modified(id)
			case ev := <-execs:
				for drained := false; !drained; {
					select {
					case id := <-mods:
						t.modified(id)
					default:
						drained = true
					}
				}
				t.exec(ev)
			case r := <-t.results:
				t.inspected(r)
				markReady()
			case <-sweep.C:
				t.sweep()
			case <-beat.C:
			}
		}
	})
	return g.Wait()
}

func (t *Tracer) scan() {
	pids, err := discovery.Scan(t.cfg.ProcRoot)
	if err != nil {
		t.log.Error("scan processes", "err", err)
		return
	}
	for _, pid := range pids {
		t.track(pid, nil)
	}
	t.log.Info("initial scan done", "processes", len(pids), "traced", t.agg.Len())
}

func (t *Tracer) exec(ev discovery.Event) {
	t.mu.Lock()
	at, traced := t.trackedAt[ev.PID]
	t.mu.Unlock()
	if traced && at > ev.At {
		// Identified after this exec (by the scan): already what it runs.
		return
	}
	// A traced PID that runs a new program (an exec, or a reused PID's
	// first exec) is a new process for us: its figures start afresh, as
	// the kernel side's did at the exec (bpf/*.bpf.c sched_process_exec),
	// and nothing of the previous program is shown as its.
	t.agg.NewProgram(ev.PID)
	if traced {
		// The old program's binary binding and the families' readers
		// go with it.
		t.release(ev.PID)
	}
	t.track(ev.PID, &ev)
}

// track identifies pid's executable (an open and an fstat, on the event
// loop) and registers it when the binary is known; a never-seen binary is
// queued for the inspection workers and the process waits on it. exec is
// its exec event, nil for processes found by a scan.
func (t *Tracer) track(pid int, exec *discovery.Event) {
	o, err := openExe(t.cfg.ProcRoot, pid, exec)
	if err != nil {
		if exec != nil && !errors.Is(err, os.ErrNotExist) {
			t.log.Debug("process not identified", "pid", pid, "err", err)
		}
		return
	}
	w := waiter{pid: pid, exec: exec, name: o.name, gone: o.gone, uid: o.uid}
	if !o.gone {
		w.start = procStart(t.procFS, pid)
	}
	t.mu.Lock()
	_, skip := t.notGo[o.key]
	info, known := t.bins[o.key.id]
	t.mu.Unlock()
	if skip || known {
		o.f.Close()
		if known {
			t.register(w, o.key.id, info)
		}
		return
	}
	if j, ok := t.pending[o.key.id]; ok {
		o.f.Close()
		if len(j.waiters) < maxWaiters {
			j.waiters = append(j.waiters, w)
		} else {
			t.inspectDropped.Add(1)
		}
		return
	}
	if why := t.binaryQuota(o.uid); why != "" {
		o.f.Close()
		t.quotaDropped.Add(1)
		t.limitLog.warn(t.log, why, "pid", pid, "exe", o.name, "uid", o.uid)
		return
	}
	j := &inspectJob{o: o, queued: time.Now(), waiters: []waiter{w}}
	if !t.queue.push(o.uid, j) {
		o.f.Close()
		t.inspectDropped.Add(1)
		t.limitLog.warn(t.log, "binary not inspected now: inspection queue full (the next rescan retries)", "pid", pid, "exe", o.name, "uid", o.uid)
		return
	}
	t.pending[o.key.id] = j
	t.pendingN.Store(int64(len(t.pending)))
}

// maxWaiters bounds the processes waiting on one binary's inspection (an
// exec storm of one new binary); more are found by the next rescan.
const maxWaiters = 4096

// binaryQuota says why a new binary of uid may not be probed now, or "".
// Binaries waiting for inspection count.
func (t *Tracer) binaryQuota(uid uint32) string {
	t.mu.Lock()
	n, mine := len(t.bins), 0
	for _, b := range t.bins {
		if b.uid == uid {
			mine++
		}
	}
	t.mu.Unlock()
	for _, j := range t.pending {
		n++
		if j.o.uid == uid {
			mine++
		}
	}
	if n >= t.cfg.MaxBinaries {
		return "binary not traced: --max-binaries reached"
	}
	if uid != rootUID && t.cfg.MaxBinariesPerUser > 0 && mine >= t.cfg.MaxBinariesPerUser {
		return "binary not traced: this user's share (--max-binaries-per-user) reached"
	}
	return ""
}

// inspected handles a worker's answer on the event loop: the binary is
// known (or refused) and the processes that waited on it are registered.
func (t *Tracer) inspected(r inspectResult) {
	j := r.job
	id := j.o.key.id
	if j.stale {
		// Written to while inspected: what was attached may sit on old
		// bytes. Inspect again what the file holds now.
		t.log.Info("binary modified while inspected: inspecting it again", "exe", j.o.name)
		if r.bin != nil {
			t.mods.remove(id)
			t.att.Detach(id)
		}
		j.stale = false
		if !t.queue.push(j.o.uid, j) {
			t.dropJob(j)
		}
		return
	}
	delete(t.pending, id)
	t.pendingN.Store(int64(len(t.pending)))
	defer j.o.f.Close()
	log := t.log.With("exe", j.o.name)
	if r.err != nil {
		notGo := errors.Is(r.err, goinspect.ErrNotGo) || errors.Is(r.err, goinspect.ErrNotELF)
		switch {
		case r.info == nil && (!notGo || errors.Is(r.err, goinspect.ErrMalformed)):
			// A forged file (past the parse budget, impossible headers)
			// is shown with its reason, as a layout that does not check out.
			log.Warn("cannot inspect binary", "err", r.err)
			t.refuse(api.BinaryStatus{Path: j.o.name, Errors: []string{r.err.Error()}})
		case notGo:
		default:
			log.Warn("binary not traced", "go", r.info.goVersion, "err", r.err)
			t.refuse(api.BinaryStatus{Path: j.o.name, GoVersion: r.info.goVersion, Errors: strings.Split(r.err.Error(), "\n")})
		}
		t.skip(j.o.key)
		return
	}
	info := r.info
	attrs := []any{"go", info.goVersion, "probes", r.bin.Probes, "inspect_ms", ms(r.took), "queued_ms", ms(time.Since(j.queued) - r.took)}
	if w := j.waiters[0]; w.exec != nil {
		lat := discovery.Monotonic() - w.exec.At
		attrs = append(attrs, "latency_ms", ms(lat))
		t.mu.Lock()
		t.latencies = append(t.latencies, lat.Seconds())
		if len(t.latencies) > 32 {
			t.latencies = t.latencies[1:]
		}
		t.mu.Unlock()
	}
	log.Info("binary attached", attrs...)
	t.mu.Lock()
	t.bins[id] = info
	t.mu.Unlock()
	for _, w := range j.waiters {
		// It waited: it may have exited, exec'd again or its PID been
		// reused meanwhile.
		if !w.gone {
			switch now := procStart(t.procFS, w.pid); {
			case now.IsZero():
				w.gone = true
			case !now.Equal(w.start):
				continue // another process now: its own exec event says what it runs
			default:
				if cur, err := goinspect.StatPID(t.cfg.ProcRoot, w.pid); err != nil || cur != id {
					continue // exec'd again: its own exec event follows
				}
			}
		}
		t.register(w, id, info)
	}
}

// dropJob gives up on a queued binary (queue full on a retry).
func (t *Tracer) dropJob(j *inspectJob) {
	delete(t.pending, j.o.key.id)
	t.pendingN.Store(int64(len(t.pending)))
	j.o.f.Close()
	t.inspectDropped.Add(1)
}

// register starts tracing a process whose binary is attached.
func (t *Tracer) register(w waiter, id goinspect.FileID, info *binInfo) {
	pid := w.pid
	if w.gone {
		// Its events may still be in flight: they land on an entry that
		// says who it was, already marked exited.
		if t.agg.Register(aggregate.Meta{PID: pid, Exe: w.name, GoVersion: info.goVersion,
			PIE: info.pie, Static: info.static, Stripped: info.stripped, Gone: true}) {
			t.agg.Exited(pid)
		}
		return
	}
	if w.uid != rootUID && t.cfg.MaxPIDsPerUser > 0 && t.userProcesses(w.uid, pid) >= t.cfg.MaxPIDsPerUser {
		t.quotaDropped.Add(1)
		t.limitLog.warn(t.log, "process not traced: this user's share (--max-pids-per-user) reached", "pid", pid, "exe", w.name, "uid", w.uid)
		return
	}
	who := procmeta.Describe(t.cfg.ProcRoot, pid, w.name)
	if !t.agg.Register(aggregate.Meta{
		PID: pid, Exe: w.name, GoVersion: info.goVersion,
		PIE: info.pie, Static: info.static, Stripped: info.stripped, StartTime: w.start,
		ServiceName: who.ServiceName, SystemdUnit: who.SystemdUnit, ContainerID: who.ContainerID,
	}) {
		t.limitLog.warn(t.log, "process not traced: --max-pids reached", "pid", pid, "exe", w.name)
		return
	}
	t.releaseEvicted()
	t.bind(pid, id, info, w.uid)
	t.trackFamilies(pid)
}

// userProcesses counts uid's running traced processes other than pid.
// Exited ones (kept for --forget-after) hold no share.
func (t *Tracer) userProcesses(uid uint32, pid int) int {
	t.mu.Lock()
	var mine []int
	for p, u := range t.pidUID {
		if u == uid && p != pid {
			mine = append(mine, p)
		}
	}
	t.mu.Unlock()
	if len(mine) < t.cfg.MaxPIDsPerUser {
		return len(mine)
	}
	running := map[int]bool{}
	for _, p := range t.agg.Running() {
		running[p] = true
	}
	n := 0
	for _, p := range mine {
		if running[p] {
			n++
		}
	}
	return n
}

// procStart is the process's start time (zero once it is gone): with the
// PID, what identifies a process.
func procStart(fs procfs.FS, pid int) time.Time {
	p, err := fs.Proc(pid)
	if err != nil {
		return time.Time{}
	}
	s, err := p.Stat()
	if err != nil {
		return time.Time{}
	}
	secs, err := s.StartTime()
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, int64(secs*1e9))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// maxRefused bounds the refused binaries status lists.
const maxRefused = 32

// refuse records a binary that gets no probes, for status: the newest
// maxRefused, one entry per path.
func (t *Tracer) refuse(b api.BinaryStatus) {
	// The reasons may quote the path an exec event named, raw.
	for i, e := range b.Errors {
		b.Errors[i] = sanitize.String(e, sanitize.MaxPath)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refused = slices.DeleteFunc(t.refused, func(o api.BinaryStatus) bool { return o.Path == b.Path })
	t.refused = append(t.refused, b)
	if len(t.refused) > maxRefused {
		t.refused = t.refused[len(t.refused)-maxRefused:]
	}
}

// bind records that pid runs binary id, releasing the binary it ran
// before an exec.
func (t *Tracer) bind(pid int, id goinspect.FileID, info *binInfo, uid uint32) {
	t.mu.Lock()
	prev, had := t.pidBin[pid]
	t.mu.Unlock()
	if had && prev != id {
		t.unbind(pid)
	}
	t.mu.Lock()
	info.pids[pid] = struct{}{}
	t.pidBin[pid] = id
	t.pidUID[pid] = uid
	t.trackedAt[pid] = discovery.Monotonic()
	t.mu.Unlock()
}

func (t *Tracer) skip(key fileKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.notGo) >= maxNotGo {
		clear(t.notGo) // bounded; a few re-inspections are cheap
	}
	t.notGo[key] = struct{}{}
}

func (t *Tracer) release(pid int) {
	for _, l := range t.families() {
		l.f.Forget(uint32(pid))
	}
	t.unbind(pid)
}

// unbind drops pid from its binary, detaching the binary's probes when no
// process of it is left.
func (t *Tracer) unbind(pid int) {
	t.mu.Lock()
	id, ok := t.pidBin[pid]
	delete(t.pidBin, pid)
	delete(t.pidUID, pid)
	delete(t.trackedAt, pid)
	var detach bool
	if info := t.bins[id]; ok && info != nil {
		delete(info.pids, pid)
		if len(info.pids) == 0 {
			delete(t.bins, id)
			detach = true
		}
	}
	t.mu.Unlock()
	if detach {
		t.mods.remove(id)
		t.att.Detach(id)
		t.log.Info("binary detached: no process left", "dev", id.Dev, "ino", id.Ino)
	}
}

// modified drops the probes of a binary written to in place; the next
// process started from it is inspected anew.
func (t *Tracer) modified(id goinspect.FileID) {
	if j, ok := t.pending[id]; ok {
		// Being inspected: its worker's answer is dropped and the file
		// inspected again (inspected).
		j.stale = true
		return
	}
	start := time.Now()
	t.mods.remove(id)
	t.att.Detach(id)
	t.mu.Lock()
	delete(t.bins, id)
	t.mu.Unlock()
	t.log.Warn("binary modified in place: probes removed", "dev", id.Dev, "ino", id.Ino,
		"detach_ms", float64(time.Since(start).Microseconds())/1000)
}

// sweep forgets processes past the grace period, catches exits whose
// event was lost, and rescans /proc when exec events were lost.
func (t *Tracer) sweep() {
	lost, _ := t.disc.Lost()
	queueFull := t.inspectDropped.Load() != t.inspectSeen
	t.inspectSeen = t.inspectDropped.Load()
	if dropped := t.execsDropped.Swap(0); dropped > 0 || lost != t.discLost || queueFull {
		t.log.Warn("exec events lost: rescanning /proc", "dropped", dropped, "ring_lost", lost-t.discLost)
		t.discLost = lost
		t.scan()
	}
	for _, pid := range t.agg.Running() {
		if _, err := os.Stat(filepath.Join(t.cfg.ProcRoot, strconv.Itoa(pid))); errors.Is(err, os.ErrNotExist) {
			t.agg.Exited(pid)
		}
	}
	for _, pid := range t.agg.Sweep() {
		t.release(pid)
	}
	t.releaseEvicted()
}

// releaseEvicted releases the exited processes the aggregator forgot to
// make room for live ones (their binaries' probes go with their last
// process); a PID already tracked again is left alone.
func (t *Tracer) releaseEvicted() {
	for _, pid := range t.agg.TakeEvicted() {
		if !t.agg.Has(pid) {
			t.release(pid)
		}
	}
}

// Processes implements api.Source.
func (t *Tracer) Processes() []api.Process { return t.agg.Processes() }

// GCHistory implements api.Source.
func (t *Tracer) GCHistory(pid, last int) (api.GCHistory, error) { return t.agg.GCHistory(pid, last) }

// Status implements api.Source.
func (t *Tracer) Status() api.Status {
	t.famMu.Lock()
	fams := slices.Clone(t.cfg.Families)
	t.famMu.Unlock()
	s := api.Status{
		Version: Version, Started: t.started, Ready: t.ready.Load(), Probes: fams,
		Processes: t.agg.Len(), ProcessesDropped: t.agg.Dropped(),
	}
	s.TrapCostNs, s.TrapCostSource = t.cost.trapCost()
	s.InspectionsPending = int(t.pendingN.Load())
	s.InspectionsDropped = t.inspectDropped.Load()
	s.UserShareDropped = t.quotaDropped.Load()
	t.mu.Lock()
	s.AttachLatencySeconds = slices.Clone(t.latencies)
	s.Refused = slices.Clone(t.refused)
	counts := map[goinspect.FileID]int{}
	for id, info := range t.bins {
		counts[id] = len(info.pids)
	}
	t.mu.Unlock()
	for _, b := range t.att.Binaries() {
		bs := api.BinaryStatus{Path: b.Path, GoVersion: b.GoVersion, Processes: counts[b.ID], Probes: b.Probes}
		for fam, e := range b.Errors {
			bs.Errors = append(bs.Errors, fam+": "+e)
		}
		s.Binaries = append(s.Binaries, bs)
	}
	disc := api.FamilyStatus{Name: "discovery", Hits: hits(t.disc.Programs())}
	disc.LostEvents, _ = t.disc.Lost()
	shareStatus(&disc, t.disc)
	s.Families = append(s.Families, disc)
	for _, l := range t.families() {
		f := api.FamilyStatus{Name: l.name, Events: l.events.Load(), KernelFallbacks: l.fallbacks}
		f.LostEvents, _ = l.f.Lost()
		if sh, ok := l.f.(sharer); ok {
			shareStatus(&f, sh)
		}
		l.costStatus(&f, s.TrapCostNs)
		if l.name == gc.Name && f.Events+f.LostEvents > 0 {
			f.UprobeHitsPerGCCycle = float64(f.UprobeHits) / float64(f.Events+f.LostEvents)
		}
		s.Families = append(s.Families, f)
	}
	t.famMu.Lock()
	for name, e := range t.famErrs {
		s.Families = append(s.Families, api.FamilyStatus{Name: name, Error: e})
	}
	t.famMu.Unlock()
	return s
}

// shareStatus fills a family's ring size and per-UID shares.
func shareStatus(f *api.FamilyStatus, sh sharer) {
	f.RingBytes, f.RingSharePerSecond, f.RingShareBurst = sh.RingSize()
	shares, _ := sh.Shares()
	for _, u := range shares {
		uid := int64(u.UID)
		if u.UID == probes.ShareOther {
			uid = -1
		}
		f.UIDShares = append(f.UIDShares, api.UIDShare{UID: uid, Sent: u.Sent, Dropped: u.Dropped})
	}
}

// hits sums the programs' run counts (kept by the kernel only while
// kernel.bpf_stats_enabled=1).
func hits(progs []*ebpf.Program) uint64 {
	var n uint64
	for _, p := range progs {
		if st, err := p.Stats(); err == nil {
			n += st.RunCount
		}
	}
	return n
}

// nestedPIDNamespace reports whether the daemon runs in a PID namespace
// below the initial one: its NSpid line lists more than one PID.
func nestedPIDNamespace(procRoot string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, "self", "status"))
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			return len(strings.Fields(v)) > 1, nil
		}
	}
	return false, nil
}
