// Package madvise is the madvise probe family: the memory a traced Go
// process hands back to the OS (or advises on), per advice, from the
// syscalls:sys_{enter,exit}_madvise tracepoints; no uprobe. Each call's user stack
// says who in the runtime asked: the background scavenger, the scavenging
// an allocation does (memory limit, heap growth), debug.FreeOSMemory.
package madvise

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/catalog"
	"github.com/gopulse/gopulse/probes/event"
)

// Name of the family, as --probes spells it.
const Name = catalog.Madvise

// The advice values, names and sources are the domain's (probes/event);
// these names keep the family's own API.
const (
	AdvNormal     = event.AdvNormal
	AdvDontNeed   = event.AdvDontNeed
	AdvFree       = event.AdvFree
	AdvRemove     = event.AdvRemove
	AdvHugePage   = event.AdvHugePage
	AdvNoHugePage = event.AdvNoHugePage
	AdvPageOut    = event.AdvPageOut
	AdvDontNeedLk = event.AdvDontNeedLk
	AdvCollapse   = event.AdvCollapse
	Slots         = event.AdviceSlots

	SourceBackground = event.SourceBackground
	SourceAlloc      = event.SourceAlloc
	SourceForced     = event.SourceForced
	SourceOther      = event.SourceOther
	SourceUnknown    = event.SourceUnknown
)

// AdviceName is the MADV_ name of an advice value.
func AdviceName(adv int32) string { return event.AdviceName(adv) }

// Releases reports whether an advice gives memory back to the OS.
func Releases(adv int32) bool { return event.Releases(adv) }

// Event is one madvise call of a traced process, as the family hands it on.
type Event = event.Madvise

// Family is the loaded madvise family.
type Family struct {
	objs      madviseObjects
	ring      *probes.Ring[madviseMadvEvent]
	syms      *probes.ProcSymbols
	ringBytes uint32
	// untracked counts processes Track could not add: madv_procs full
	// (it is sized to --max-pids, which the tracer never exceeds).
	untracked atomic.Uint64
}

// RecordBytes is the size of one event in the ring (plus the kernel's
// 8-byte header).
const RecordBytes = uint32(unsafe.Sizeof(madviseMadvEvent{}))

// RingBytes is the madvise ring's size for a configuration: 256 bytes per
// process of --max-pids, at least 1 MiB (a UID's share, an eighth, is then
// 496 events: a debug.FreeOSMemory of 64 MiB was measured at up to 459
// madvise calls at once), at most 16 MiB; 1 MiB at the default 4096.
func RingBytes(env probes.Env) uint32 { return env.RingBytes(256, 1<<20, 1<<24) }

// New loads the family's programs, for a host whose procfs is /proc.
func New() (*Family, error) { return Load(probes.Env{}) }

// Load loads the family's programs.
func Load(env probes.Env) (*Family, error) {
	f := &Family{}
	f.syms = probes.NewProcSymbols(env.Proc())
	spec, err := loadMadvise()
	if err != nil {
		return nil, fmt.Errorf("load madvise spec: %w", err)
	}
	// Sized from the configuration before load.
	f.ringBytes = RingBytes(env)
	if err := probes.SetMaxEntries(spec, map[string]uint32{
		"madv_procs": env.Procs(), "madv_inflight": env.Threads(), "madv_events": f.ringBytes,
	}); err != nil {
		return nil, fmt.Errorf("madvise: %w", err)
	}
	if err := probes.SetShares(spec, f.ringBytes, RecordBytes); err != nil {
		return nil, fmt.Errorf("madvise: %w", err)
	}
	if err := spec.LoadAndAssign(&f.objs, nil); err != nil {
		return nil, fmt.Errorf("load madvise programs: %w", err)
	}
	if err := probes.InitShares(f.objs.MadvShares); err != nil {
		f.objs.Close()
		return nil, fmt.Errorf("madvise: %w", err)
	}
	ring, err := probes.NewRing[madviseMadvEvent](Name, f.objs.MadvEvents)
	if err != nil {
		f.objs.Close()
		return nil, err
	}
	f.ring = ring
	return f, nil
}

// Spec is the family's one kernel probe.
func (f *Family) Spec() probes.Spec {
	return probes.Spec{
		Family: Name,
		Tracepoints: []probes.Tracepoint{
			{Name: "syscalls:sys_enter_madvise", Program: f.objs.MadvEnter},
			{Name: "syscalls:sys_exit_madvise", Program: f.objs.MadvExit},
			// Resets a traced process's totals when it runs a new program.
			{Name: "sched_process_exec", Program: f.objs.MadvExec},
		},
	}
}

// Programs returns the programs, for run counts.
func (f *Family) Programs() []*ebpf.Program {
	return []*ebpf.Program{f.objs.MadvEnter, f.objs.MadvExit, f.objs.MadvExec}
}

// Track starts counting pid's madvise calls (the kernel side ignores every
// process not tracked). An entry already there is kept: it was zeroed by
// the kernel side when the process's program started (madv_exec), so it
// holds exactly this program's calls, including those made before Track.
func (f *Family) Track(pid uint32) {
	var zero madviseMadvTotals
	if err := f.objs.MadvProcs.Update(pid, &zero, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		f.untracked.Add(1)
	}
	// Events reach user space up to probes.PollEvery later, when a
	// short-lived process may be gone with its /proc entry: learn its
	// symbols (function table, load bias) now, while it runs.
	f.syms.Preload(pid)
}

// Forget drops an exited process's kernel-side state.
func (f *Family) Forget(pid uint32) {
	_ = f.objs.MadvProcs.Delete(pid)
	f.syms.Forget(pid)
}

// Drain returns once every event submitted before the call was handed to
// Read's fn (see probes.Ring.Drain).
func (f *Family) Drain(ctx context.Context) error { return f.ring.Drain(ctx) }

// Read hands every event to fn until the family is closed or ctx is done.
func (f *Family) Read(ctx context.Context, fn func(*Event)) error {
	var ev Event
	return f.ring.Read(ctx, func(raw *madviseMadvEvent) {
		n := min(int(raw.Nframes), len(raw.Stack))
		ev = Event{
			Pid: raw.Pid, Tid: raw.Tid, Advice: raw.Advice, Ret: raw.Ret,
			Start: raw.Start, Len: raw.Len, Ts: raw.Ts, Calls: raw.Calls, Bytes: raw.Bytes,
			Source: Classify(f.syms.Resolve(raw.Pid, raw.Stack[:n])),
		}
		fn(&ev)
	})
}

// Classify names who asked for a madvise from the functions on its stack,
// innermost first. The kernel walks the user stack by frame pointers, which
// Go keeps on amd64 and which systemstack links to the goroutine's stack
// (checked on Go 1.19 and 1.26).
func Classify(funcs []string) string {
	if len(funcs) == 0 {
		return SourceUnknown
	}
	for _, fn := range funcs {
		switch {
		case strings.HasPrefix(fn, "runtime/debug.freeOSMemory"),
			strings.HasPrefix(fn, "runtime.runtime_debug_freeOSMemory"),
			strings.HasPrefix(fn, "runtime/debug.FreeOSMemory"),
			fn == "runtime.(*mheap).scavengeAll":
			return SourceForced
		case fn == "runtime.bgscavenge", strings.HasPrefix(fn, "runtime.(*scavengerState)."):
			return SourceBackground
		case fn == "runtime.(*mheap).allocSpan", fn == "runtime.(*mheap).grow", fn == "runtime.gcPaceScavenger":
			return SourceAlloc
		}
	}
	return SourceOther
}

// Backlog reports the ring buffer's unread bytes and the events consumed.
func (f *Family) Backlog() (int, uint64) { return f.ring.Backlog() }

// Lost is the number of events lost: the ring buffer had no room for
// them, or their UID was over its share of the ring (Shares); plus the
// calls not counted at all (madv_inflight full) and the processes not
// tracked (madv_procs full). The totals of what was counted stay exact.
func (f *Family) Lost() (uint64, error) {
	full, err := probes.SumPerCPU(f.objs.MadvLost)
	over, err2 := probes.SharesDropped(f.objs.MadvShares)
	dropped, err3 := probes.SumPerCPU(f.objs.MadvDropped)
	return full + over + dropped + f.untracked.Load(), errors.Join(err, err2, err3)
}

// Shares reports each UID's events let through and refused over its
// share of the ring.
func (f *Family) Shares() ([]probes.Share, error) { return probes.ReadShares(f.objs.MadvShares) }

// RingSize is the ring's size in bytes and the events per second and
// burst each UID may put in it.
func (f *Family) RingSize() (bytes uint32, perSecond, burst uint64) {
	perSecond, burst = probes.ShareRate(f.ringBytes, RecordBytes)
	return f.ringBytes, perSecond, burst
}

// Totals returns the kernel side's totals of pid (tests).
func (f *Family) Totals(pid uint32) (calls, bytes [Slots]uint64, errs, dropped uint64, ok bool) {
	var t madviseMadvTotals
	if err := f.objs.MadvProcs.Lookup(pid, &t); err != nil {
		return calls, bytes, 0, 0, false
	}
	return t.Calls, t.Bytes, t.Errors, t.Dropped, true
}

// Close unloads the family.
func (f *Family) Close() error {
	f.ring.Close()
	return f.objs.Close()
}
