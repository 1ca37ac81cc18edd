// Package gc is the GC probe family: one event per completed GC cycle of
// every traced Go process (trigger, phase timestamps, stop-the-world
// pauses, assist time, heap in use), read from the runtime's own
// timestamps. See bpf/gc.bpf.c for the probes.
package gc

import (
	"context"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/probes"
)

// Name is the family's name in --probes.
const Name = "gc"

// Event is one GC event as the BPF program writes it (layout from C).
type Event = gcGcEvent

// Event kinds and flags, mirrored from bpf/gc.h.
const (
	KindCycle    = 1
	KindSTWOther = 2
	FlagPartial  = 1

	TriggerHeap  = 0
	TriggerTime  = 1
	TriggerCycle = 2 // runtime.GC
)

// Family owns the loaded GC programs and their ring buffer.
type Family struct {
	objs gcObjects
	ring *probes.Ring[Event]
	// cookies: the kernel has BPF attach cookies; else the programs read
	// their per-binary constants from objs.GpCookies (bpf/cookie.h).
	cookies bool
}

// New loads the GC programs into the kernel.
func New() (*Family, error) {
	f := &Family{}
	spec, err := loadGc()
	if err != nil {
		return nil, fmt.Errorf("load gc spec: %w", err)
	}
	if f.cookies, err = probes.SetCookieMode(spec); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	if err := spec.LoadAndAssign(&f.objs, nil); err != nil {
		return nil, fmt.Errorf("load gc programs: %w", err)
	}
	ring, err := probes.NewRing[Event](Name, f.objs.GcEvents)
	if err != nil {
		f.objs.Close()
		return nil, err
	}
	f.ring = ring
	return f, nil
}

// Spec declares the probes; the shared attacher puts them on each binary.
func (f *Family) Spec() probes.Spec {
	offsets := func(fa probes.Facts) uint64 {
		return uint64(fa.HeapLiveOffset) | uint64(fa.AssistTimeOffset)<<16
	}
	var cookieMap *ebpf.Map
	if !f.cookies {
		cookieMap = f.objs.GpCookies
	}
	return probes.Spec{
		Family:    Name,
		CookieMap: cookieMap,
		Uprobes: []probes.Uprobe{
			{Symbol: "runtime.(*gcControllerState).startCycle", Entry: f.objs.GcStartCycle, Cookie: offsets},
			{Symbol: "runtime.(*gcControllerState).endCycle", Entry: f.objs.GcEndCycle, Cookie: offsets},
			{Symbol: "runtime.startTheWorldWithSema", Entry: f.objs.GcStwStartEntry, Return: f.objs.GcStwStartRet,
				When: func(fa probes.Facts) bool { return fa.WorldStopABI }},
			{Symbol: "runtime.(*gcCPULimiterState).finishGCTransition", Entry: f.objs.GcFinishTransition,
				When: func(fa probes.Facts) bool { return !fa.WorldStopABI }},
		},
		Tracepoints: []probes.Tracepoint{
			{Name: "sched_process_exec", Program: f.objs.GcProcExec},
			{Name: "sched_process_exit", Program: f.objs.GcProcExit},
		},
	}
}

// Programs returns the family's programs, for run statistics.
func (f *Family) Programs() []*ebpf.Program {
	return []*ebpf.Program{f.objs.GcStartCycle, f.objs.GcEndCycle, f.objs.GcStwStartEntry, f.objs.GcStwStartRet, f.objs.GcFinishTransition, f.objs.GcProcExec, f.objs.GcProcExit}
}

// Read delivers events to fn until the family is closed or ctx is done
// (see probes.Ring.Read).
func (f *Family) Read(ctx context.Context, fn func(*Event)) error { return f.ring.Read(ctx, fn) }

// Backlog reports the ring buffer's unread bytes and the events read.
func (f *Family) Backlog() (pending int, consumed uint64) { return f.ring.Backlog() }

// Lost is the number of events the ring buffer had no room for.
func (f *Family) Lost() (uint64, error) {
	return probes.SumPerCPU(f.objs.GcLost)
}

// Forget drops the in-kernel state of an exited process.
func (f *Family) Forget(pid uint32) {
	_ = f.objs.GcStates.Delete(pid)
}

// Close stops the reader and unloads the programs; attached probes must
// be detached first (the attacher's Close).
func (f *Family) Close() error {
	f.ring.Close()
	return f.objs.Close()
}
