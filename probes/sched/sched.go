// Package sched is the sched probe family: how the OS threads of traced Go
// processes are scheduled (run-queue latency, on/off-CPU time, voluntary
// and involuntary switches, threads), from the kernel's sched_switch and
// sched_wakeup BTF tracepoints. No uprobe: the traced programs take no
// trap; the cost is a BPF program run (~100-300 ns) per context switch and
// wakeup on the host, most of them a hash-map miss.
package sched

import (
	"context"
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/probes"
)

// Name of the family, as --probes spells it.
const Name = "sched"

// HistBuckets is the number of power-of-two buckets of the histograms:
// bucket i counts durations in [2^(i-1), 2^i) ns.
const HistBuckets = 40

// Proc is the kernel side's running totals for one process.
type Proc = schedSchedProc

// Family is the loaded sched family.
type Family struct {
	objs   schedObjects
	totals *probes.Totals[Proc]
	every  time.Duration
}

// New loads the family's programs.
func New() (*Family, error) {
	f := &Family{every: time.Second}
	if err := loadSchedObjects(&f.objs, nil); err != nil {
		return nil, fmt.Errorf("load sched programs: %w", err)
	}
	f.totals = probes.NewTotals[Proc](Name, f.objs.SchedProcs)
	return f, nil
}

// Spec lists the family's tracepoints.
func (f *Family) Spec() probes.Spec {
	return probes.Spec{
		Family: Name,
		Tracepoints: []probes.Tracepoint{
			{Name: "sched_switch", Program: f.objs.SchedSwitch},
			{Name: "sched_wakeup", Program: f.objs.SchedWakeup},
			{Name: "sched_wakeup_new", Program: f.objs.SchedWakeupNew},
			{Name: "sched_process_exit", Program: f.objs.SchedExit},
		},
	}
}

// Programs returns the programs, for run counts.
func (f *Family) Programs() []*ebpf.Program {
	return []*ebpf.Program{f.objs.SchedSwitch, f.objs.SchedWakeup, f.objs.SchedWakeupNew, f.objs.SchedExit}
}

// Track starts following pid's threads.
func (f *Family) Track(pid uint32) {
	var zero Proc
	_ = f.objs.SchedProcs.Update(pid, &zero, ebpf.UpdateNoExist)
}

// Forget drops an exited process's kernel-side state.
func (f *Family) Forget(pid uint32) { _ = f.objs.SchedProcs.Delete(pid) }

// Read polls the per-process totals every second and hands each to fn,
// until ctx is done.
func (f *Family) Read(ctx context.Context, fn func(pid uint32, p *Proc)) error {
	return f.totals.Read(ctx, f.every, fn)
}

// Poll hands every tracked process's totals to fn once.
func (f *Family) Poll(fn func(pid uint32, p *Proc)) error { return f.totals.Poll(fn) }

// Lookup returns pid's totals.
func (f *Family) Lookup(pid uint32) (Proc, bool) { return f.totals.Lookup(pid) }

// Backlog: totals are polled, nothing queues.
func (f *Family) Backlog() (int, uint64) { return f.totals.Backlog() }

// Lost: nothing is lost, the totals are kept in the kernel.
func (f *Family) Lost() (uint64, error) { return 0, nil }

// Close unloads the family.
func (f *Family) Close() error { return f.objs.Close() }
