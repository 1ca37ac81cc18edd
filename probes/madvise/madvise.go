// Package madvise is the madvise probe family: the memory a traced Go
// process hands back to the OS (or advises on), per advice, from the
// syscalls:sys_{enter,exit}_madvise tracepoints; no uprobe. Each call's user stack
// says who in the runtime asked: the background scavenger, the scavenging
// an allocation does (memory limit, heap growth), debug.FreeOSMemory.
package madvise

import (
	"context"
	"fmt"
	"strings"

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
	objs madviseObjects
	ring *probes.Ring[madviseMadvEvent]
	syms *probes.ProcSymbols
}

// New loads the family's programs, for a host whose procfs is /proc.
func New() (*Family, error) { return Load(probes.Env{}) }

// Load loads the family's programs.
func Load(env probes.Env) (*Family, error) {
	f := &Family{}
	f.syms = probes.NewProcSymbols(env.Proc())
	if err := loadMadviseObjects(&f.objs, nil); err != nil {
		return nil, fmt.Errorf("load madvise programs: %w", err)
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
		},
	}
}

// Programs returns the programs, for run counts.
func (f *Family) Programs() []*ebpf.Program {
	return []*ebpf.Program{f.objs.MadvEnter, f.objs.MadvExit}
}

// Track starts counting pid's madvise calls (the kernel side ignores every
// process not tracked).
func (f *Family) Track(pid uint32) {
	var zero madviseMadvTotals
	_ = f.objs.MadvProcs.Update(pid, &zero, ebpf.UpdateNoExist)
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

// Lost is the number of events the ring buffer had no room for.
func (f *Family) Lost() (uint64, error) { return probes.SumPerCPU(f.objs.MadvLost) }

// Close unloads the family.
func (f *Family) Close() error {
	f.ring.Close()
	return f.objs.Close()
}
