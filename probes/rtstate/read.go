package rtstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/sched"
)

// Mem is a process's memory, read at absolute addresses: a /proc/PID/mem
// descriptor, opened once when the process is tracked, so that it stays
// bound to that address space (a recycled PID can never make it read
// another program).
type Mem interface {
	io.ReaderAt
}

// maxProcs bounds the allp walk (GOMAXPROCS beyond is refused).
const maxProcs = 1 << 12

// Reader reads one process's books.
type Reader struct {
	stwBounds []float64 // sched.stwTotalTimeOther's bucket boundaries
	mem       Mem
	a         Addrs // run-time addresses
	f         probes.Facts
	last      Sample
}

// NewReader checks the books at a (run-time addresses) in mem against the
// runtime's identities once, and returns a Reader or why the layout does
// not check out.
func NewReader(mem Mem, a Addrs, f probes.Facts) (*Reader, error) {
	r := &Reader{mem: mem, a: a, f: f}
	if f.Books.SchedSTWOther != 0 && f.TimeHist.Valid() {
		r.stwBounds = sched.Buckets(f.TimeHist)
	}
	var err error
	// A cycle ending between two of the reads breaks an identity once; a
	// wrong layout breaks it every time.
	for range 3 {
		if _, err = r.Read(); err == nil {
			return r, nil
		}
		if errors.Is(err, ErrNotReady) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("runtime books (found by %s) do not check out: %w", a.From, err)
}

func (r *Reader) read(addr uint64, n uint32) ([]byte, error) {
	buf := make([]byte, n)
	if _, err := r.mem.ReadAt(buf, int64(addr)); err != nil {
		return nil, fmt.Errorf("%w: %d bytes at %#x: %w", ErrRead, n, addr, err)
	}
	return buf, nil
}

// ErrNotReady: the runtime has not set its books up yet (a process read
// right after exec, before schedinit and gcinit ran): try again shortly.
var ErrNotReady = errors.New("the runtime has not started yet")

// ErrRead: the memory could not be read (after a first good reading: the
// process is gone).
var ErrRead = errors.New("read process memory")

// ErrBackwards: a counter the runtime only increases went down — the
// address is not the runtime's, or the process exec'd anew.
var ErrBackwards = errors.New("runtime counter went backwards")

// Read takes a sample and checks it.
func (r *Reader) Read() (Sample, error) {
	bk := r.f.Books
	var s Sample
	s.At = time.Now()
	var win [NumWindows][]byte
	for i, w := range CycleWindows(bk) {
		b, err := r.read(r.a.Addr(w), w.Len)
		if err != nil {
			return s, err
		}
		win[i] = b
	}
	mem, unix := win[1], win[2]
	s.NumGC = u32(mem, 0)
	s.NumForcedGC = u32(mem, bk.MemNumForcedGC-bk.MemNumGC)
	s.PauseTotalNs = u64(unix, bk.MemPauseTotalNS-bk.MemLastGCUnix)
	if s.NumForcedGC > s.NumGC {
		return s, fmt.Errorf("memstats.numforcedgc %d > numgc %d", s.NumForcedGC, s.NumGC)
	}
	if s.NumGC < r.last.NumGC || s.PauseTotalNs < r.last.PauseTotalNs {
		return s, fmt.Errorf("%w: numgc %d→%d, pause_total_ns %d→%d", ErrBackwards, r.last.NumGC, s.NumGC, r.last.PauseTotalNs, s.PauseTotalNs)
	}
	if s.NumGC > 0 {
		// Between gcStart and gcMarkTermination work holds the next
		// cycle's start; only a completed one must check out.
		c, err := DecodeCycle(bk, win)
		switch {
		case err == nil:
			s.Last = c
		case c.TSweepTerm > c.TEnd && c.TEnd == int64(u64(mem, bk.MemLastGCNanotime-bk.MemNumGC)):
			// A cycle under way: work.tSweepTerm is the next one's.
		default:
			return s, fmt.Errorf("last cycle: %w", err)
		}
	}
	ctl, err := r.read(r.a.GCController, bk.CtlSize)
	if err != nil {
		return s, err
	}
	if allZero(ctl) {
		// gcinit has not run: every word of the pacer is still zero.
		return s, fmt.Errorf("gcController all zero: %w", ErrNotReady)
	}
	if s.GCSettings, err = DecodeSettings(bk, ctl); err != nil {
		if s.NumGC == 0 && s.HeapLive == 0 && s.HeapMarked == 0 {
			// gcinit ran but the heap has not counted its first span
			// (seen on a saturated host: mappedReady 256 KiB, heapLive
			// 0): too early, not a wrong layout.
			return s, fmt.Errorf("%w: %w", err, ErrNotReady)
		}
		return s, err
	}
	if err := r.goroutines(&s); err != nil {
		return s, err
	}
	if s.StackBytes, err = r.stacks(); err != nil {
		return s, err
	}
	if s.OtherSTW, s.OtherSTWHist, err = r.otherSTW(); err != nil {
		return s, err
	}
	if s.OtherSTWHist != nil {
		s.OtherSTWBounds = r.stwBounds
	}
	r.last = s
	return s, nil
}

// goroutines counts as runtime.gcount does: allglen minus the free Gs
// (global and per P) minus system goroutines.
func (r *Reader) goroutines(s *Sample) error {
	bk := r.f.Books
	b, err := r.read(r.a.Allglen, 8)
	if err != nil {
		return err
	}
	n := int64(u64(b, 0))
	schedEnd := max(bk.SchedNGsys, bk.SchedGFree1, bk.SchedGFree2) + 4
	sb, err := r.read(r.a.Sched, schedEnd)
	if err != nil {
		return err
	}
	n -= int64(int32(u32(sb, bk.SchedNGsys)))
	n -= int64(int32(u32(sb, bk.SchedGFree1)))
	if bk.SchedGFree2 != 0 {
		n -= int64(int32(u32(sb, bk.SchedGFree2)))
	}
	hdr, err := r.read(r.a.Allp, 16)
	if err != nil {
		return err
	}
	ptr, procs := u64(hdr, 0), u64(hdr, 8)
	if procs == 0 && s.NumGC == 0 {
		return fmt.Errorf("allp empty: %w", ErrNotReady) // procresize has not run
	}
	if procs == 0 || procs > maxProcs {
		return fmt.Errorf("len(allp) = %d", procs)
	}
	for i := range procs {
		pb, err := r.read(ptr+8*i, 8)
		if err != nil {
			return err
		}
		p := u64(pb, 0)
		if p == 0 {
			// procresize is filling allp: its entries come next.
			return fmt.Errorf("allp[%d] nil: %w", i, ErrNotReady)
		}
		id, err := r.read(p, 4)
		if err != nil {
			return fmt.Errorf("allp[%d]: %w", i, err)
		}
		if uint64(binary.LittleEndian.Uint32(id)) != i {
			return fmt.Errorf("allp[%d].id = %d: not the runtime's allp", i, binary.LittleEndian.Uint32(id))
		}
		free, err := r.read(p+uint64(bk.PGFreeN), 4)
		if err != nil {
			return err
		}
		n -= int64(int32(u32(free, 0)))
	}
	if n < 1 {
		// The runtime's own answer when its racy sum dips below.
		n = 1
	}
	if allg := int64(u64(b, 0)); allg > 1<<32 {
		return fmt.Errorf("allglen = %d", allg)
	}
	s.Goroutines, s.GOMAXPROCS = int(n), int(procs)
	return nil
}

// stacks sums memstats.heapStats' three generations of inStacks, as the
// runtime's unsafeRead does.
func (r *Reader) stacks() (uint64, error) {
	bk := r.f.Books
	var sum int64
	for g := range uint32(3) {
		b, err := r.read(r.a.Memstats+uint64(bk.MemHeapStats+g*bk.HeapStatsDeltaSize+bk.HeapStatsInStacks), 8)
		if err != nil {
			return 0, err
		}
		sum += int64(u64(b, 0))
	}
	if sum < 0 {
		return 0, nil
	}
	return uint64(sum), nil
}

// otherSTW reads sched.stwTotalTimeOther (Go 1.22+): its total count,
// and its counts in runtime/metrics order (underflow first, overflow
// last).
func (r *Reader) otherSTW() (int64, []uint64, error) {
	bk, h := r.f.Books, r.f.TimeHist
	if bk.SchedSTWOther == 0 || !h.Valid() {
		return -1, nil, nil
	}
	b, err := r.read(r.a.Sched+uint64(bk.SchedSTWOther), uint32(h.Size()))
	if err != nil {
		return 0, nil, err
	}
	n := h.Counts()
	out := make([]uint64, 0, n+2)
	out = append(out, binary.LittleEndian.Uint64(b[8*n:]))
	for i := 0; i < n; i++ {
		out = append(out, binary.LittleEndian.Uint64(b[8*i:]))
	}
	if h.Overflow() {
		out = append(out, binary.LittleEndian.Uint64(b[8*(n+1):]))
	}
	var total uint64
	for _, c := range out {
		total += c
	}
	return int64(total), out, nil
}

// PauseRing returns the cycles up to numgc that the rings still hold
// (the last 256), oldest first.
func (r *Reader) PauseRing(numgc uint32) ([]RingPause, error) {
	bk := r.f.Books
	ns, err := r.read(r.a.Memstats+uint64(bk.MemPauseNS), 256*8)
	if err != nil {
		return nil, err
	}
	end, err := r.read(r.a.Memstats+uint64(bk.MemPauseEnd), 256*8)
	if err != nil {
		return nil, err
	}
	first := uint32(1)
	if numgc > 256 {
		first = numgc - 255
	}
	var out []RingPause
	for seq := first; seq <= numgc && seq != 0; seq++ {
		i := uint32((seq - 1) % 256)
		out = append(out, RingPause{Seq: seq, PauseNs: u64(ns, 8*i), EndUnixNs: int64(u64(end, 8*i))})
	}
	return out, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
