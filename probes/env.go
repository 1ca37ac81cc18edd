package probes

import (
	"fmt"
	"math/bits"
	"os"
	"runtime"

	"github.com/cilium/ebpf"
)

// Env is what a family needs to know of the host it runs on and of the
// daemon's configuration, given by the daemon when it loads the family
// (daemon/tracer/registry.go).
type Env struct {
	// ProcRoot is procfs's mount point, the daemon's --proc ("" is /proc).
	ProcRoot string
	// MaxPIDs is the daemon's --max-pids (0: DefaultMaxPIDs): the
	// per-process BPF maps are sized from it before they are loaded.
	MaxPIDs int
	// MaxBinaries is the daemon's --max-binaries (0: 1024): the
	// per-binary maps are sized from it.
	MaxBinaries int
	// SingleUprobes loads the uprobe programs for one link per site even
	// where the kernel has uprobe_multi links (SetUprobeMode): for a
	// caller that attaches them itself with link.Executable.Uprobe (the
	// bench's trap cost).
	SingleUprobes bool
}

// Binaries is --max-binaries, at most MaxBinaryEntries.
func (e Env) Binaries() uint32 {
	n := e.MaxBinaries
	if n <= 0 {
		n = 1024
	}
	return uint32(min(n, MaxBinaryEntries))
}

// MaxBinaryEntries caps the per-binary maps: the --max-binaries bound.
const MaxBinaryEntries = 1 << 16

// Proc returns the procfs mount point.
func (e Env) Proc() string {
	if e.ProcRoot == "" {
		return "/proc"
	}
	return e.ProcRoot
}

// DefaultMaxPIDs is the daemon's default --max-pids.
const DefaultMaxPIDs = 4096

// Bounds of the kernel-side sizes derived from --max-pids.
const (
	// MaxProcEntries caps the per-process maps (and so --max-pids, see
	// daemon/config): a hash map's bucket array is allocated whole, 16
	// bytes per entry rounded up to a power of two, even without
	// preallocation.
	MaxProcEntries = 1 << 18
	// Per-thread maps: a Go process runs about GOMAXPROCS threads (the
	// host's CPUs unless set) plus sysmon, the template thread and those
	// blocked in syscalls, so CPUs+8 threads per traced process, at least
	// minThreadEntries and at most maxThreadEntries: these maps are
	// preallocated (they are written from sched_switch and syscall
	// tracepoints, where allocating is not safe on every kernel), ~80
	// bytes an entry, so the cap keeps each under ~11 MiB.
	minThreadEntries = 4096
	maxThreadEntries = 1 << 17
)

// Procs is the size of the per-process maps: --max-pids. The tracer never
// tracks more processes than that at once (exited ones are released
// before a new one takes their slot), so an insert fails only past it.
func (e Env) Procs() uint32 {
	n := e.MaxPIDs
	if n <= 0 {
		n = DefaultMaxPIDs
	}
	return uint32(min(n, MaxProcEntries))
}

// Threads is the size of the per-thread maps (see minThreadEntries).
func (e Env) Threads() uint32 {
	per := uint64(runtime.NumCPU() + 8)
	return uint32(min(max(uint64(e.Procs())*per, minThreadEntries), maxThreadEntries))
}

// RingBytes sizes a ring buffer from --max-pids: perProc bytes per traced
// process, rounded up to a power of two (the kernel requires one, in
// pages) and kept within [lo, hi].
func (e Env) RingBytes(perProc, lo, hi uint32) uint32 {
	n := max(uint64(e.Procs())*uint64(perProc), uint64(lo), uint64(os.Getpagesize()))
	n = 1 << bits.Len64(n-1)
	return uint32(min(n, uint64(hi)))
}

// SetMaxEntries sizes the named maps of spec before it is loaded.
func SetMaxEntries(spec *ebpf.CollectionSpec, sizes map[string]uint32) error {
	for name, n := range sizes {
		m, ok := spec.Maps[name]
		if !ok {
			return fmt.Errorf("collection has no map %s", name)
		}
		m.MaxEntries = n
	}
	return nil
}
