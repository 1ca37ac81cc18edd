package goinspect

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// What inspecting one binary may cost, from Open to Close, whatever its
// headers claim (issue 12: a 2 MB binary, sparse on disk, whose
// .gopclntab section header claimed 512 MiB took the daemon to 2 GB RSS
// and an 8 s attach). Every byte read from the file, every buffer sized
// from a header field and every decoded instruction or table entry is
// charged to the Binary's budget, and loops check the CPU it has spent;
// past either bound the Binary is refused (ErrBudget), for good.
//
// Measured on real binaries (go1.19–1.27 fixtures, amd64 and arm64):
// opening one and locating everything the probe families need costs
// 1–3 MiB and a few ms; a 100 MiB binary's .gopclntab is ~30 MiB.
const (
	// MaxParseBytes bounds the bytes read from the file and allocated
	// from what it claims, cumulated over the Binary's life.
	MaxParseBytes = 64 << 20
	// MaxParseCPU bounds the CPU time of the threads parsing it (thread
	// CPU clock, so a loaded host's waiting does not count).
	MaxParseCPU = time.Second
)

// ErrBudget is wrapped by every error of a Binary that went past
// MaxParseBytes or MaxParseCPU: the file is refused, not parsed further.
var ErrBudget = errors.New("beyond the parse budget")

// budget is one Binary's account. Operations (Open, Code, Symbols...)
// run between begin and end on a locked OS thread, so that the thread's
// CPU clock measures them alone.
type budget struct {
	mu    sync.Mutex
	bytes uint64        // charged so far
	cpu   time.Duration // spent by finished operations
	depth int           // operations running (nested calls)
	start time.Duration // thread CPU when the outermost one began
	ticks uint32
	err   error // the first refusal: every later charge fails with it
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// begin starts an operation; end must follow, on the same goroutine.
func (g *budget) begin() {
	runtime.LockOSThread()
	g.mu.Lock()
	if g.depth == 0 {
		g.start = threadCPU()
	}
	g.depth++
	g.mu.Unlock()
}

func (g *budget) end() {
	g.mu.Lock()
	g.depth--
	if g.depth == 0 {
		g.cpu += threadCPU() - g.start
	}
	g.mu.Unlock()
	runtime.UnlockOSThread()
}

// spent returns the CPU time used so far; g.mu is held.
func (g *budget) spent() time.Duration {
	if g.depth > 0 {
		return g.cpu + threadCPU() - g.start
	}
	return g.cpu
}

// Used returns the bytes charged and CPU spent so far (for tests and
// diagnostics).
func (g *budget) used() (uint64, time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.bytes, g.spent()
}

// refuse records the first refusal; g.mu is held.
func (g *budget) refuse(format string, args ...any) error {
	if g.err == nil {
		g.err = fmt.Errorf("refused: %s: %w", fmt.Sprintf(format, args...), ErrBudget)
	}
	return g.err
}

// need fails, without charging, when n more bytes would not fit: a
// header's claim is refused before anything is read or allocated for it.
func (g *budget) need(n uint64, what string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return g.err
	}
	if n > MaxParseBytes-g.bytes {
		return g.refuse("%s claims %s, beyond the %s parse budget (%s used)", what, fmtSize(n), fmtSize(MaxParseBytes), fmtSize(g.bytes))
	}
	return nil
}

// charge counts n bytes read or allocated.
func (g *budget) charge(n uint64, what string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return g.err
	}
	if n > MaxParseBytes-g.bytes {
		return g.refuse("%s: %s more would pass the %s parse budget (%s used)", what, fmtSize(n), fmtSize(MaxParseBytes), fmtSize(g.bytes))
	}
	g.bytes += n
	return nil
}

// tick is called once per unit of work in every loop whose length a
// file decides; every 1024th call checks the CPU spent.
func (g *budget) tick() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return g.err
	}
	g.ticks++
	if g.ticks%1024 != 0 {
		return nil
	}
	return g.checkCPU()
}

func (g *budget) checkCPU() error {
	if s := g.spent(); s > MaxParseCPU {
		return g.refuse("%v of CPU spent parsing, past the %v budget", s.Round(time.Millisecond), MaxParseCPU)
	}
	return nil
}

func fmtSize(n uint64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// ParseCost returns what b has cost so far: bytes charged to its budget
// and CPU time spent parsing it.
func (b *Binary) ParseCost() (uint64, time.Duration) { return b.budget.used() }

// fileReader is the only way goinspect reads a file: every read is
// charged to the budget and stops at the size the file had when opened
// (a file grown since, or a section claiming to reach past the end, reads
// EOF). The ELF header and the program and section header tables are
// served from the copy checkELF validated, so that a file rewritten
// while it is parsed cannot show debug/elf other headers than the ones
// checked.
type fileReader struct {
	f      readerAt
	size   int64
	budget *budget
	snaps  []snapshot
	// free: reads are not charged (only CPU-checked), for goinspect's own
	// passes through a reused buffer, which charge what they keep.
	free bool
}

type snapshot struct {
	off  int64
	data []byte
}

func (r *fileReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: negative offset", off)
	}
	if off >= r.size {
		return 0, errEOF
	}
	want := p
	if int64(len(p)) > r.size-off {
		p = p[:r.size-off]
	}
	if !r.free {
		if err := r.budget.charge(uint64(len(p)), "reading the file"); err != nil {
			return 0, err
		}
	}
	if err := r.budget.tick(); err != nil {
		return 0, err
	}
	n, err := r.f.ReadAt(p, off)
	for _, s := range r.snaps {
		lo, hi := max(off, s.off), min(off+int64(n), s.off+int64(len(s.data)))
		if lo < hi {
			copy(p[lo-off:hi-off], s.data[lo-s.off:hi-s.off])
		}
	}
	if err == nil && len(p) < len(want) {
		err = errEOF
	}
	return n, err
}
