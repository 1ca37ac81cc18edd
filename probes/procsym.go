package probes

import (
	"sync"

	"github.com/gopulse/gopulse/probes/goinspect"
)

// ProcSymbols names the functions of user-space addresses of traced Go
// processes (from .gopclntab, so stripped binaries too), one function table
// per binary and one load bias per process (PIE). Bounded: past the caps
// it starts over, which costs a re-read, never memory.
type ProcSymbols struct {
	ProcRoot string

	mu    sync.Mutex
	pids  map[uint32]procSym
	bins  map[goinspect.FileID]goinspect.FuncTable
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

func (s *ProcSymbols) lookup(pid uint32) (procSym, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pids == nil {
		s.pids, s.bins, s.fails = map[uint32]procSym{}, map[goinspect.FileID]goinspect.FuncTable{}, map[uint32]struct{}{}
	}
	if p, ok := s.pids[pid]; ok {
		return p, true
	}
	if _, failed := s.fails[pid]; failed {
		return procSym{}, false
	}
	root := s.ProcRoot
	if root == "" {
		root = "/proc"
	}
	p, err := s.load(root, pid)
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
	s.pids[pid] = p
	return p, true
}

func (s *ProcSymbols) load(root string, pid uint32) (procSym, error) {
	b, err := goinspect.OpenPID(root, int(pid))
	if err != nil {
		return procSym{}, err
	}
	defer b.Close()
	bias, err := b.LoadBias(root, int(pid))
	if err != nil {
		return procSym{}, err
	}
	tab, ok := s.bins[b.ID]
	if !ok {
		tab = goinspect.FuncTable(b.Funcs())
		if len(s.bins) >= maxSymBins {
			clear(s.bins)
		}
		s.bins[b.ID] = tab
	}
	return procSym{tab: tab, bias: bias}, nil
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
