// Package sched is the sched probe family: how the OS threads of traced Go
// processes are scheduled (run-queue latency, on/off-CPU time, voluntary
// and involuntary switches, threads), from the kernel's sched_switch and
// sched_wakeup BTF tracepoints, and how long their goroutines wait to run,
// from the runtime's own histogram (golat.go). No uprobe: the traced
// programs take no trap; the cost is a BPF program run (~100-300 ns) per
// context switch and wakeup on the host, most of them a hash-map miss.
package sched

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/catalog"
	"github.com/gopulse/gopulse/probes/event"
)

// Name of the family, as --probes spells it.
const Name = catalog.Sched

// HistBuckets is the number of power-of-two buckets of the histograms:
// bucket i counts durations in [2^(i-1), 2^i) ns.
const HistBuckets = event.HistBuckets

// Proc is the kernel side's running totals for one process (the kernel's
// record; Read hands on event.Sched).
type Proc = schedSchedProc

// Event is what the family hands on per process and poll.
type Event = event.Sched

// Family is the loaded sched family.
type Family struct {
	objs   schedObjects
	totals *probes.Totals[Proc]
	every  time.Duration
	bins   probes.PerBinary[latBin] // and its ProcRoot for /proc/PID/mem

	// untracked counts processes Track could not add: sched_procs full
	// (sized to --max-pids, which the tracer never exceeds).
	untracked atomic.Uint64

	mu  sync.Mutex
	lat map[uint32]*latReader // goroutine latency, per tracked process
	// latErr says why a tracked process has no goroutine latency.
	latErr map[uint32]string
}

// maxLatProcs bounds the processes whose memory is held open (one
// descriptor each).
const maxLatProcs = 4096

// New loads the family's programs, for a host whose procfs is /proc.
func New() (*Family, error) { return Load(probes.Env{}) }

// Load loads the family's programs.
func Load(env probes.Env) (*Family, error) {
	f := &Family{every: time.Second, lat: map[uint32]*latReader{}, latErr: map[uint32]string{}}
	f.bins.ProcRoot = env.Proc()
	spec, err := loadSched()
	if err != nil {
		return nil, fmt.Errorf("load sched spec: %w", err)
	}
	// Before Linux 5.18 sched_switch has no prev_state argument: the
	// program reads the state from the task (bpf/sched.bpf.c).
	prevState := probes.SchedSwitchPrevState()
	if prevState.Err != nil {
		return nil, fmt.Errorf("sched: probe %s: %w", prevState.Name, prevState.Err)
	}
	var arg uint8
	if prevState.Have {
		arg = 1
	}
	if err := spec.Variables["sched_prev_state_arg"].Set(arg); err != nil {
		return nil, fmt.Errorf("sched: set sched_prev_state_arg: %w", err)
	}
	// Sized from the configuration before load; one process may hold a
	// quarter of the thread map at most.
	threads := env.Threads()
	if err := probes.SetMaxEntries(spec, map[string]uint32{"sched_procs": env.Procs(), "sched_threads": threads}); err != nil {
		return nil, fmt.Errorf("sched: %w", err)
	}
	if err := spec.Variables["sched_max_proc_threads"].Set(int64(threads / 4)); err != nil {
		return nil, fmt.Errorf("sched: set sched_max_proc_threads: %w", err)
	}
	if err := spec.LoadAndAssign(&f.objs, nil); err != nil {
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
			// Resets a traced process's figures when it runs a new program.
			{Name: "sched_process_exec", Program: f.objs.SchedExec},
		},
	}
}

// Programs returns the programs, for run counts.
func (f *Family) Programs() []*ebpf.Program {
	return []*ebpf.Program{f.objs.SchedSwitch, f.objs.SchedWakeup, f.objs.SchedWakeupNew, f.objs.SchedExit, f.objs.SchedExec}
}

// Track starts following pid's threads and goroutine latency. An entry
// already there is kept: the kernel side zeroed it when the process's
// program started (sched_exec), so it holds this program's figures only.
func (f *Family) Track(pid uint32) {
	var zero Proc
	if err := f.objs.SchedProcs.Update(pid, &zero, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		f.untracked.Add(1)
	}
	if err := f.trackLatency(pid); err != nil {
		f.mu.Lock()
		if len(f.latErr) < maxLatProcs {
			f.latErr[pid] = err.Error()
		}
		f.mu.Unlock()
	}
}

// trackLatency finds sched.timeToRun in pid's binary (cached per binary)
// and address space (PIE), and opens its memory.
func (f *Family) trackLatency(pid uint32) error {
	// Track comes once per process image: after an exec the old reader
	// reads a gone address space, so it is replaced.
	f.forgetLatency(pid)
	f.mu.Lock()
	full := len(f.lat) >= maxLatProcs
	f.mu.Unlock()
	if full {
		return fmt.Errorf("goroutine latency not read: %d processes already followed", maxLatProcs)
	}
	lb, bias, err := f.bins.ForPID(pid, inspectLatency)
	if err != nil {
		return err
	}
	r, err := openLatReader(f.bins.ProcRoot, pid, lb.addr+bias, lb.layout, lb.buckets)
	if err != nil {
		return err
	}
	f.mu.Lock()
	old := f.lat[pid]
	f.lat[pid] = r
	delete(f.latErr, pid)
	f.mu.Unlock()
	if old != nil {
		old.close()
	}
	return nil
}

// Forget drops an exited process's kernel-side state and closes its memory.
func (f *Family) Forget(pid uint32) {
	_ = f.objs.SchedProcs.Delete(pid)
	f.forgetLatency(pid)
}

func (f *Family) forgetLatency(pid uint32) {
	f.mu.Lock()
	r := f.lat[pid]
	delete(f.lat, pid)
	delete(f.latErr, pid)
	f.mu.Unlock()
	if r != nil {
		r.close()
	}
}

// latency returns pid's goroutine latency now, nil when the family does
// not follow pid.
func (f *Family) latency(pid uint32) *GoLatency {
	f.mu.Lock()
	r, ok := f.lat[pid]
	reason, failed := f.latErr[pid]
	f.mu.Unlock()
	switch {
	case ok:
		return r.sample()
	case failed:
		return &GoLatency{Err: reason}
	}
	return nil
}

// Read polls the per-process totals and goroutine latencies every second
// and hands each to fn, until ctx is done. ev.GoLatency is nil for a
// process the family does not follow.
func (f *Family) Read(ctx context.Context, fn func(ev *Event)) error {
	return f.totals.Read(ctx, f.every, f.toEvent(fn))
}

// Poll hands every tracked process's figures to fn once.
func (f *Family) Poll(fn func(ev *Event)) error {
	return f.totals.Poll(f.toEvent(fn))
}

// toEvent turns the kernel's record into the domain event, with the
// goroutine latency read now.
func (f *Family) toEvent(fn func(*Event)) func(uint32, *Proc) {
	var ev Event
	return func(pid uint32, p *Proc) {
		ev = Event{
			Pid: pid, RunQueue: p.RqHist, RunQueueNs: p.RqNs, OnCPUNs: p.OnCpuNs, OffCPUNs: p.OffCpuNs,
			Voluntary: p.Voluntary, Involuntary: p.Involuntary, Threads: p.Threads, ThreadsDropped: p.ThreadsDropped,
			GoLatency: f.latency(pid),
		}
		fn(&ev)
	}
}

// Latency reads pid's goroutine latency once (tests, tools).
func (f *Family) Latency(pid uint32) *GoLatency { return f.latency(pid) }

// Lookup returns pid's totals.
func (f *Family) Lookup(pid uint32) (Proc, bool) { return f.totals.Lookup(pid) }

// Drain returns once Read has handed fn the totals as they are now (see
// probes.Totals.Drain).
func (f *Family) Drain(ctx context.Context) error { return f.totals.Drain(ctx) }

// Backlog: totals are polled, nothing queues.
func (f *Family) Backlog() (int, uint64) { return f.totals.Backlog() }

// Lost: the totals are kept in the kernel, so nothing queues to be lost;
// what is counted here is the threads whose state could not be kept
// (sched_threads full, or their process at its thread bound: their
// switches are not timed) and the processes not tracked (sched_procs
// full).
func (f *Family) Lost() (uint64, error) {
	var n uint64
	err := probes.Each(f.objs.SchedProcs, func(_ uint32, p *Proc) { n += p.ThreadsDropped })
	return n + f.untracked.Load(), err
}

// Close unloads the family and closes the processes' memory.
func (f *Family) Close() error {
	f.mu.Lock()
	for pid, r := range f.lat {
		r.close()
		delete(f.lat, pid)
	}
	f.mu.Unlock()
	return f.objs.Close()
}
