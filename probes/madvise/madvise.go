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
)

// Name of the family, as --probes spells it.
const Name = "madvise"

// Linux madvise advice values gopulse names.
const (
	AdvNormal     = 0
	AdvRandom     = 1
	AdvSequential = 2
	AdvWillNeed   = 3
	AdvDontNeed   = 4
	AdvFree       = 8
	AdvRemove     = 9
	AdvDontFork   = 10
	AdvDoFork     = 11
	AdvMergeable  = 12
	AdvUnmergable = 13
	AdvHugePage   = 14
	AdvNoHugePage = 15
	AdvDontDump   = 16
	AdvDoDump     = 17
	AdvWipeOnFork = 18
	AdvKeepOnFork = 19
	AdvCold       = 20
	AdvPageOut    = 21
	AdvPopulateR  = 22
	AdvPopulateW  = 23
	AdvDontNeedLk = 24
	AdvCollapse   = 25
	// Slots is the number of advice slots the kernel side counts; the last
	// one gathers every advice value >= Slots-1.
	Slots = 32
)

// AdviceName is the MADV_ name of an advice value.
func AdviceName(adv int32) string {
	names := map[int32]string{
		AdvNormal: "normal", AdvRandom: "random", AdvSequential: "sequential", AdvWillNeed: "willneed",
		AdvDontNeed: "dontneed", AdvFree: "free", AdvRemove: "remove", AdvDontFork: "dontfork",
		AdvDoFork: "dofork", AdvMergeable: "mergeable", AdvUnmergable: "unmergeable",
		AdvHugePage: "hugepage", AdvNoHugePage: "nohugepage", AdvDontDump: "dontdump",
		AdvDoDump: "dodump", AdvWipeOnFork: "wipeonfork", AdvKeepOnFork: "keeponfork",
		AdvCold: "cold", AdvPageOut: "pageout", AdvPopulateR: "populate_read",
		AdvPopulateW: "populate_write", AdvDontNeedLk: "dontneed_locked", AdvCollapse: "collapse",
	}
	if n, ok := names[adv]; ok {
		return n
	}
	return fmt.Sprintf("advice_%d", adv)
}

// Releases reports whether an advice gives memory back to the OS (RSS
// drops at once or under pressure).
func Releases(adv int32) bool {
	switch adv {
	case AdvDontNeed, AdvFree, AdvRemove, AdvDontNeedLk, AdvPageOut:
		return true
	}
	return false
}

// Who asked, from the call's user stack.
const (
	SourceBackground = "background_scavenger" // runtime.bgscavenge
	SourceAlloc      = "allocation"           // scavenging by an allocation (memory limit, heap growth)
	SourceForced     = "free_os_memory"       // debug.FreeOSMemory
	SourceOther      = "other"                // e.g. huge page hints at heap growth
	SourceUnknown    = "unknown"              // stack unreadable
)

// Event is one madvise call of a traced process.
type Event struct {
	madviseMadvEvent
	Source string
}

// Family is the loaded madvise family.
type Family struct {
	objs madviseObjects
	ring *probes.Ring[madviseMadvEvent]
	syms probes.ProcSymbols
}

// New loads the family's programs.
func New() (*Family, error) {
	f := &Family{}
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
		ev.madviseMadvEvent = *raw
		n := min(int(ev.Nframes), len(ev.Stack))
		ev.Source = Classify(f.syms.Resolve(ev.Pid, ev.Stack[:n]))
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
