package probes

import (
	"sync"

	"github.com/gopulse/gopulse/probes/goinspect"
)

// ProcSymbols names the functions of user-space addresses of traced Go
// processes (from .gopclntab, so stripped binaries too), one function table
// per binary (PerBinary: a process of a known binary costs a stat and, for
// PIE, a read of /proc/PID/maps — not the ~30 ms and 15 MiB of parsing a
// large .gopclntab again) and one load bias per process. Bounded: past the
// caps it starts over, which costs a re-read, never memory. Files are read
// without holding the cache's lock.
type ProcSymbols struct {
	bins PerBinary[goinspect.FuncTable]

	mu    sync.Mutex
	pids  map[uint32]procSym
	fails map[uint32]struct{}
}

type procSym struct {
	tab  goinspect.FuncTable
	bias uint64
}

const (
	maxSymPIDs = 4096
	maxSymBins = 64
)

// NewProcSymbols returns an empty cache reading procfs at procRoot ("" is
// /proc).
func NewProcSymbols(procRoot string) *ProcSymbols {
	s := &ProcSymbols{pids: map[uint32]procSym{}, fails: map[uint32]struct{}{}}
	s.bins.ProcRoot, s.bins.Max = Env{ProcRoot: procRoot}.Proc(), maxSymBins
	return s
}

// Resolve returns the function names of pcs in process pid ("" for an
// address outside Go code), or nil when the process cannot be read.
func (s *ProcSymbols) Resolve(pid uint32, pcs []uint64) []string {
	p, ok := s.lookup(pid)
	if !ok {
		return nil
	}
	out := make([]string, len(pcs))
	for i, pc := range pcs {
		if pc < p.bias {
			continue
		}
		// A return address points after the call: look up pc-1 so a call
		// that ends its function is named right.
		if f, ok := p.tab.Lookup(pc - p.bias - 1); ok {
			out[i] = f.Name
		}
	}
	return out
}

func funcTable(b *goinspect.Binary) (goinspect.FuncTable, error) {
	return goinspect.FuncTable(b.Funcs()), nil
}

func (s *ProcSymbols) lookup(pid uint32) (procSym, bool) {
	s.mu.Lock()
	p, ok := s.pids[pid]
	_, failed := s.fails[pid]
	s.mu.Unlock()
	if ok {
		return p, true
	}
	if failed {
		return procSym{}, false
	}
	tab, bias, err := s.bins.ForPID(pid, funcTable)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if len(s.fails) >= maxSymPIDs {
			clear(s.fails)
		}
		s.fails[pid] = struct{}{}
		return procSym{}, false
	}
	if len(s.pids) >= maxSymPIDs {
		clear(s.pids)
	}
	p = procSym{tab: tab, bias: bias}
	s.pids[pid] = p
	return p, true
}

// Preload reads pid's symbols now (see Resolve), so that addresses can be
// named after the process exited. It re-reads them: a tracked PID that
// exec'd is a new program.
func (s *ProcSymbols) Preload(pid uint32) {
	s.Forget(pid)
	s.lookup(pid)
}

// Forget drops what is cached of an exited process.
func (s *ProcSymbols) Forget(pid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pids, pid)
	delete(s.fails, pid)
}
