// Package gc is the GC probe family: the runtime's own books of every
// traced Go process — absolute cycle and pause totals, the GC settings and
// gauges (read from its memory, probes/rtstate), and one record per
// completed cycle (one uprobe hit, bpf/gc.bpf.c) with its phases, pause,
// assist time and heap sizes.
package gc

import (
	"context"
	"errors"
	"fmt"
	"github.com/gopulse/gopulse/probes/event"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/arch/arm64/arm64asm"
	"golang.org/x/arch/x86/x86asm"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/rtstate"
)

// Name is the family's name in --probes.
const Name = "gc"

// Event is the family's domain event (probes/event.GC).
type Event = event.GC

// Kind says what an Event carries.
type Kind = event.GCKind

// The kinds, as probes/event names them.
const (
	KindCycle = event.GCCycleDone
	KindBooks = event.GCReading
	KindError = event.GCError
)

// Family owns the loaded GC program, its ring buffer, the per-binary
// layouts the program copies, and a books reader per tracked process.
type Family struct {
	objs gcObjects
	ring *probes.Ring[gcGcRecord]
	// reading: Read's ring reader runs, so Poll can drain the ring.
	reading atomic.Bool
	every   time.Duration
	bins    probes.PerBinary[bin]

	mu      sync.Mutex
	layouts map[goinspect.FileID]uint32 // binary → gc_layouts key
	order   []goinspect.FileID          // keys in order of creation, for eviction
	books   map[uint32]probes.Books     // gc_layouts key → how to decode
	nextKey uint32
	readers map[uint32]*reader
	tracks  []uint32       // processes to start reading (Track), by the reader loop
	early   map[uint32]int // processes read before their runtime started, by attempts
	wake    chan struct{}  // Track's nudge to the reader loop

	polls chan chan struct{} // Drain's requests for a reading now

	// cookies: the kernel has BPF attach cookies; else the program reads
	// its layout key from objs.GpCookies (bpf/cookie.h).
	cookies bool
	// ringBytes is gc_events' size, set from --max-pids at load.
	ringBytes uint32
	// maxReaders bounds the processes whose books are read: --max-pids
	// (the tracer never tracks more at once).
	maxReaders int
	// maxLayouts is gc_layouts' size: twice --max-binaries, so that the
	// oldest layout evicted to make room (user space evicts, the kernel
	// never does) is one whose binary is long gone.
	maxLayouts int
	// multi: the uprobe program is loaded for uprobe_multi links.
	multi bool
}

// bin is what the family learns of a binary once.
type bin struct {
	facts probes.Facts
	addrs rtstate.Addrs
}

// RecordBytes is the size of one cycle's record in the ring (the kernel
// adds an 8-byte header).
const RecordBytes = uint32(unsafe.Sizeof(gcGcRecord{}))

// RingBytes is the GC ring's size for a configuration: 1 KiB per process
// of --max-pids (a record each, about), at least 256 KiB, at most 64 MiB;
// 4 MiB at the default 4096.
func RingBytes(env probes.Env) uint32 { return env.RingBytes(1024, 1<<18, 1<<26) }

// New loads the GC program into the kernel, for the host's /proc.
func New() (*Family, error) { return Load(probes.Env{}) }

// Load loads the GC program into the kernel; env says where procfs is.
func Load(env probes.Env) (*Family, error) {
	f := &Family{every: time.Second, layouts: map[goinspect.FileID]uint32{}, books: map[uint32]probes.Books{},
		readers: map[uint32]*reader{}, polls: make(chan chan struct{}, 64), wake: make(chan struct{}, 1),
		early: map[uint32]int{}}
	f.bins.ProcRoot = env.Proc()
	spec, err := loadGc()
	if err != nil {
		return nil, fmt.Errorf("load gc spec: %w", err)
	}
	if f.cookies, err = probes.SetCookieMode(spec); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	f.ringBytes = RingBytes(env)
	f.maxReaders = int(env.Procs())
	f.maxLayouts = int(env.Binaries()) * 2
	if err := probes.SetMaxEntries(spec, map[string]uint32{"gc_events": f.ringBytes, "gc_layouts": uint32(f.maxLayouts)}); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	if err := probes.SetShares(spec, f.ringBytes, RecordBytes); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	if f.multi, err = probes.SetUprobeMode(spec, env); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	if err := spec.LoadAndAssign(&f.objs, nil); err != nil {
		return nil, fmt.Errorf("load gc programs: %w", err)
	}
	if err := probes.InitShares(f.objs.GcShares); err != nil {
		f.objs.Close()
		return nil, fmt.Errorf("gc: %w", err)
	}
	ring, err := probes.NewRing[gcGcRecord](Name, f.objs.GcEvents)
	if err != nil {
		f.objs.Close()
		return nil, err
	}
	f.ring = ring
	return f, nil
}

// Spec declares the probe: one site per binary, in gcMarkTermination.
func (f *Family) Spec() probes.Spec {
	var cookieMap *ebpf.Map
	if !f.cookies {
		cookieMap = f.objs.GpCookies
	}
	return probes.Spec{
		Family:    Name,
		CookieMap: cookieMap,
		Multi:     f.multi,
		Uprobes: []probes.Uprobe{
			{Symbol: "runtime.gcMarkTermination", Entry: f.objs.GcCycle, Sites: f.site},
		},
	}
}

// site locates the probe (the CALL runtime.mProf_Flush after the world
// restarts) and the books, and writes the binary's layout for the program.
func (f *Family) site(b *goinspect.Binary, fn goinspect.Func, facts probes.Facts) ([]probes.Site, error) {
	addr, err := FlushCall(b, fn)
	if err != nil {
		return nil, err
	}
	if err := b.ClaimSites(fn, 1, "CALL runtime.mProf_Flush"); err != nil {
		return nil, err
	}
	addrs, err := rtstate.Locate(b, facts)
	if err != nil {
		return nil, err
	}
	key, err := f.layout(b.ID, addr, addrs, facts.Books)
	if err != nil {
		return nil, err
	}
	// The books reader of each process of this binary needs the same.
	f.bins.Seed(b, bin{facts: facts, addrs: addrs})
	return []probes.Site{{Addr: addr, Cookie: uint64(key)}}, nil
}

// FlushCall returns the address of the one `CALL runtime.mProf_Flush` in
// runtime.gcMarkTermination (BL on arm64).
func FlushCall(b *goinspect.Binary, fn goinspect.Func) (uint64, error) {
	flush, err := b.Func("runtime.mProf_Flush")
	if err != nil {
		return 0, err
	}
	var sites []uint64
	if b.Arch == goinspect.ARM64 {
		code, err := b.CodeARM64(fn)
		if err != nil {
			return 0, err
		}
		for _, in := range code {
			if t, ok := in.BranchTarget(); ok && in.Op == arm64asm.BL && t == flush.Entry {
				sites = append(sites, in.Addr)
			}
		}
		return oneSite(b, fn, sites)
	}
	code, err := b.Code(fn)
	if err != nil {
		return 0, err
	}
	for _, in := range code {
		if in.Op != x86asm.CALL {
			continue
		}
		if t, _ := in.Target(); t == flush.Entry {
			sites = append(sites, in.Addr)
		}
	}
	return oneSite(b, fn, sites)
}

func oneSite(b *goinspect.Binary, fn goinspect.Func, sites []uint64) (uint64, error) {
	if len(sites) != 1 {
		return 0, fmt.Errorf("%s: %s calls runtime.mProf_Flush %d times, want once", b.Path, fn.Name, len(sites))
	}
	return sites[0], nil
}

func (f *Family) layout(id goinspect.FileID, site uint64, a rtstate.Addrs, bk probes.Books) (uint32, error) {
	var l gcGcLayout
	l.Site = site
	for i, w := range rtstate.CycleWindows(bk) {
		if w.Len > uint32(len(gcGcRecord{}.Data[i])) {
			return 0, fmt.Errorf("books window %d of %d bytes exceeds the record's %d", i, w.Len, len(gcGcRecord{}.Data[i]))
		}
		l.Addr[i], l.Len[i] = a.Addr(w), w.Len
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key, ok := f.layouts[id]
	if !ok {
		if len(f.order) >= f.maxLayouts {
			// The oldest binary seen: with at most --max-binaries
			// probed at once, long gone.
			old := f.order[0]
			f.order = f.order[1:]
			delete(f.books, f.layouts[old])
			_ = f.objs.GcLayouts.Delete(f.layouts[old])
			delete(f.layouts, old)
		}
		f.nextKey++
		key = f.nextKey
		f.layouts[id] = key
		f.order = append(f.order, id)
	}
	if err := f.objs.GcLayouts.Put(key, &l); err != nil {
		return 0, fmt.Errorf("write gc layout: %w", err)
	}
	f.books[key] = bk
	return key, nil
}

// Programs returns the family's programs, for run statistics.
func (f *Family) Programs() []*ebpf.Program { return []*ebpf.Program{f.objs.GcCycle} }

// Track starts reading a process's books. It only queues the process:
// the reader goroutine opens its memory, takes one checked reading and
// the pause rings at once (Read), so no file is read on the caller's
// event loop and the families tracked after this one wait for nothing.
func (f *Family) Track(pid uint32) {
	f.mu.Lock()
	if len(f.tracks) < f.maxReaders {
		f.tracks = append(f.tracks, pid)
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// A process is read at once when tracked, but its runtime may not have
// set its books up yet: tens of milliseconds after exec on a quiet host,
// seconds on a saturated one (measured: 300 processes starting next to
// busy CPUs, some not scheduled for over 2 s). So it is tried again soon
// (earlyRetries every earlyEvery), then once a poll period for up to
// lateRetries periods before it is reported unreadable.
const (
	earlyRetries = 40
	earlyEvery   = 50 * time.Millisecond
	lateRetries  = 120
)

// retryEarly queues a process read before its runtime set its books up
// for another attempt, and reports whether it did.
func (f *Family) retryEarly(pid uint32) bool {
	f.mu.Lock()
	n := f.early[pid]
	if n >= earlyRetries+lateRetries || len(f.early) >= f.maxReaders {
		delete(f.early, pid)
		f.mu.Unlock()
		return false
	}
	f.early[pid] = n + 1
	f.mu.Unlock()
	wait := earlyEvery
	if n >= earlyRetries {
		wait = f.every
	}
	time.AfterFunc(wait, func() { f.Track(pid) })
	return true
}

// track opens a queued process's reader: the event to hand on, and
// whether there is one (a process gone before it was read has none).
func (f *Family) track(pid uint32) (Event, bool) {
	ev := Event{PID: int(pid), Kind: KindBooks}
	r, err := f.openReader(pid)
	if errors.Is(err, fs.ErrNotExist) {
		return ev, false
	}
	if errors.Is(err, rtstate.ErrNotReady) && f.retryEarly(pid) {
		return ev, false
	}
	if err == nil {
		ev.Books, err = r.r.Read()
	}
	if err == nil {
		ev.Ring, err = r.r.PauseRing(ev.Books.NumGC)
		r.last, r.filled = ev.Books.NumGC, ev.Books.NumGC
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.early, pid)
	if old := f.readers[pid]; old != nil {
		old.close()
		delete(f.readers, pid)
	}
	switch {
	case err != nil:
		if r != nil {
			r.close()
		}
		ev = Event{PID: int(pid), Kind: KindError, Err: err.Error()}
	case len(f.readers) < f.maxReaders:
		f.readers[pid] = r
	default:
		r.close()
		ev = Event{PID: int(pid), Kind: KindError, Err: fmt.Sprintf("runtime books not read: %d processes already followed", f.maxReaders)}
	}
	return ev, true
}

type reader struct {
	mem    *os.File
	r      *rtstate.Reader
	last   uint32 // numgc at the last reading (Poll's own)
	filled uint32 // cycles up to this one were filled in from the rings or recorded
}

func (r *reader) close() {
	if r.mem != nil {
		r.mem.Close()
		r.mem = nil
	}
}

func (f *Family) openReader(pid uint32) (*reader, error) {
	// Seeded when the binary's probe was attached; inspected here for a
	// process whose binary is not probed yet.
	bn, bias, err := f.bins.ForPID(pid, func(b *goinspect.Binary) (bin, error) {
		facts, err := probes.FactsFor(b)
		if err != nil {
			return bin{}, err
		}
		a, err := rtstate.Locate(b, facts)
		return bin{facts: facts, addrs: a}, err
	})
	if err != nil {
		return nil, err
	}
	mem, err := os.Open(filepath.Join(f.bins.ProcRoot, strconv.Itoa(int(pid)), "mem"))
	if err != nil {
		return nil, fmt.Errorf("open memory of pid %d: %w", pid, err)
	}
	r, err := rtstate.NewReader(mem, bn.addrs.Add(bias), bn.facts)
	if err != nil {
		mem.Close()
		return nil, err
	}
	return &reader{mem: mem, r: r}, nil
}

// Forget stops reading an exited process's books.
func (f *Family) Forget(pid uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.early, pid)
	if r := f.readers[pid]; r != nil {
		r.close()
		delete(f.readers, pid)
	}
}

// Read delivers events to fn until the family is closed or ctx is done:
// cycle records as the probe writes them, and every poll period each
// tracked process's books. fn is called from one goroutine at a time.
func (f *Family) Read(ctx context.Context, fn func(Event)) error {
	var fnMu sync.Mutex
	deliver := func(ev Event) {
		fnMu.Lock()
		defer fnMu.Unlock()
		fn(ev)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		tick := time.NewTicker(f.every)
		defer tick.Stop()
		var asked []chan struct{}
		for {
			f.Poll(deliver)
			for _, done := range asked {
				close(done)
			}
			asked = asked[:0]
		wait:
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					break wait
				case <-f.wake:
					// A process to start reading: at once, not at the
					// next poll.
					f.startTracked(deliver)
				case done := <-f.polls:
					asked = append(asked, done)
					for len(f.polls) > 0 {
						asked = append(asked, <-f.polls)
					}
					break wait
				}
			}
		}
	}()
	f.reading.Store(true)
	defer f.reading.Store(false)
	err := f.ring.Read(ctx, func(rec *gcGcRecord) {
		if ev, ok := f.decode(rec); ok {
			deliver(ev)
		}
	})
	cancel()
	<-polled
	return err
}

// startTracked opens the readers of the processes Track queued, handing
// on their first reading.
func (f *Family) startTracked(fn func(Event)) {
	f.mu.Lock()
	tracks := f.tracks
	f.tracks = nil
	f.mu.Unlock()
	for _, pid := range tracks {
		if ev, ok := f.track(pid); ok {
			fn(ev)
		}
	}
}

// Poll starts reading the processes tracked since the last call, then
// reads every tracked process's books once.
func (f *Family) Poll(fn func(Event)) {
	f.startTracked(fn)
	f.mu.Lock()
	readers := make(map[uint32]*reader, len(f.readers))
	for pid, r := range f.readers {
		readers[pid] = r
	}
	f.mu.Unlock()
	fill := false
	for _, r := range readers {
		fill = fill || r.last > r.filled
	}
	if fill && f.reading.Load() {
		// Cycles are about to be filled in from the pause rings: their
		// records, if any, must be in first. A record submitted without a
		// wakeup waits up to a reader's poll period (probes.PollEvery), as
		// long as this poll's: without this drain, a follower was once
		// handed a ring line for a cycle whose record was still in the ring.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_ = f.ring.Drain(ctx)
		cancel()
	}
	for pid, r := range readers {
		s, err := r.r.Read()
		switch {
		case err == nil:
			ev := Event{PID: int(pid), Kind: KindBooks, Books: s}
			if r.last > r.filled {
				// Cycles that completed before the previous reading and
				// whose record may never come (the probe attached after
				// them, or the record was lost): a poll period later, a
				// record in flight has arrived, so what is still missing
				// is filled in from the rings (the aggregator keeps a
				// record over a ring entry). Not sooner: a follower would
				// see a cycle's ring line before its record.
				ring, _ := r.r.PauseRing(s.NumGC)
				for _, c := range ring {
					if c.Seq > r.filled && c.Seq <= r.last {
						ev.Ring = append(ev.Ring, c)
					}
				}
				r.filled = r.last
			}
			r.last = s.NumGC
			fn(ev)
		case errors.Is(err, rtstate.ErrRead):
			// Exited: its last figures stand.
			f.Forget(pid)
		case errors.Is(err, rtstate.ErrBackwards):
			fn(Event{PID: int(pid), Kind: KindError, Err: err.Error()})
			f.Forget(pid)
		default:
			// A cycle ending between two reads: the next poll retries.
		}
	}
}

func (f *Family) decode(rec *gcGcRecord) (Event, bool) {
	f.mu.Lock()
	bk, ok := f.books[rec.Layout]
	f.mu.Unlock()
	if !ok {
		return Event{}, false
	}
	var win [rtstate.NumWindows][]byte
	for i := range win {
		win[i] = rec.Data[i][:min(int(rec.Len[i]), len(rec.Data[i]))]
	}
	c, err := rtstate.DecodeCycle(bk, win)
	if err != nil {
		return Event{PID: int(rec.Pid), Kind: KindError, Err: fmt.Sprintf("cycle books: %v", err)}, true
	}
	return Event{PID: int(rec.Pid), Kind: KindCycle, Cycle: c}, true
}

// Drain returns once every cycle record submitted before the call, and a
// reading of every tracked process's books taken after it, were handed to
// Read's fn (see probes.Ring.Drain): an answer includes the cycles the
// runtime completed before the question.
func (f *Family) Drain(ctx context.Context) error {
	if err := f.ring.Drain(ctx); err != nil {
		return err
	}
	done := make(chan struct{})
	select {
	case f.polls <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Backlog reports the ring buffer's unread bytes and the events read.
func (f *Family) Backlog() (pending int, consumed uint64) { return f.ring.Backlog() }

// Lost is the number of cycle records lost: the ring buffer had no room
// for them, their UID was over its share of the ring (Shares), or their
// binary had no layout (a bug). The
// cycles themselves are still counted: totals are the runtime's.
func (f *Family) Lost() (uint64, error) {
	full, err := probes.SumPerCPU(f.objs.GcLost)
	over, err2 := probes.SharesDropped(f.objs.GcShares)
	nolayout, err3 := probes.SumPerCPU(f.objs.GcNolayout)
	return full + over + nolayout, errors.Join(err, err2, err3)
}

// Shares reports each UID's records let through and refused over its
// share of the ring.
func (f *Family) Shares() ([]probes.Share, error) { return probes.ReadShares(f.objs.GcShares) }

// RingSize is the ring's size in bytes and the records per second and
// burst each UID may put in it.
func (f *Family) RingSize() (bytes uint32, perSecond, burst uint64) {
	perSecond, burst = probes.ShareRate(f.ringBytes, RecordBytes)
	return f.ringBytes, perSecond, burst
}

// Close stops the reader and unloads the program; attached probes must
// be detached first (the attacher's Close).
func (f *Family) Close() error {
	f.ring.Close()
	f.mu.Lock()
	for pid, r := range f.readers {
		r.close()
		delete(f.readers, pid)
	}
	f.mu.Unlock()
	return f.objs.Close()
}
