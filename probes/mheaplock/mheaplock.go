// Package mheaplock is the mheaplock probe family: how often threads of a
// traced Go process had to sleep for the heap lock (runtime.mheap_.lock)
// and how long they slept, beside the same figures for the runtime's other
// internal locks. Only the contended path is observed; see
// bpf/mheaplock.bpf.c and probes/README.md.
package mheaplock

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/catalog"
	"github.com/gopulse/gopulse/probes/event"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// Name of the family, as --probes spells it.
const Name = catalog.MheapLock

// Methods (api.MheapLockStats.Method).
const (
	MethodFutex   = event.LockMethodFutex
	MethodSpinbit = event.LockMethodSpinbit
)

// Proc is the kernel side's running totals for one process (the kernel's
// record; Read hands on event.MheapLock).
type Proc = mheaplockLockProc

// Event is what the family hands on per process and poll.
type Event = event.MheapLock

// Family is the loaded mheaplock family.
type Family struct {
	objs   mheaplockObjects
	totals *probes.Totals[Proc]
	bins   probes.PerBinary[binFacts]
	// cookies: the kernel has BPF attach cookies; else the lock2 site's
	// constants come from objs.GpCookies (bpf/cookie.h).
	cookies bool
	// untracked counts processes Track could not add: lock_procs full.
	untracked atomic.Uint64
	// multi: the uprobe program is loaded for uprobe_multi links.
	multi bool
}

type binFacts struct {
	mheap   uint64 // link-time address of mheap_.lock.key
	spinbit bool
}

// New loads the family's programs, for a host whose procfs is /proc.
func New() (*Family, error) { return Load(probes.Env{}) }

// Load loads the family's programs.
func Load(env probes.Env) (*Family, error) {
	f := &Family{}
	f.bins.ProcRoot = env.Proc()
	spec, err := loadMheaplock()
	if err != nil {
		return nil, fmt.Errorf("load mheaplock spec: %w", err)
	}
	if f.cookies, err = probes.SetCookieMode(spec); err != nil {
		return nil, fmt.Errorf("mheaplock: %w", err)
	}
	// Sized from the configuration before load.
	if err := probes.SetMaxEntries(spec, map[string]uint32{"lock_procs": env.Procs(), "lock_waits": env.Threads()}); err != nil {
		return nil, fmt.Errorf("mheaplock: %w", err)
	}
	if f.multi, err = probes.SetUprobeMode(spec, env); err != nil {
		return nil, fmt.Errorf("mheaplock: %w", err)
	}
	if err := spec.LoadAndAssign(&f.objs, nil); err != nil {
		return nil, fmt.Errorf("load mheaplock programs: %w", err)
	}
	f.totals = probes.NewTotals[Proc](Name, f.objs.LockProcs)
	return f, nil
}

// Spec: the futex tracepoints, and on spin-bit runtimes a uprobe at each
// `CALL runtime.semasleep` of runtime.lock2 (its sleep path only).
func (f *Family) Spec() probes.Spec {
	var cookieMap *ebpf.Map
	if !f.cookies {
		cookieMap = f.objs.GpCookies
	}
	return probes.Spec{
		Family:    Name,
		CookieMap: cookieMap,
		Multi:     f.multi,
		Uprobes: []probes.Uprobe{{
			Symbol: "runtime.lock2", Entry: f.objs.LockSleep, Sites: SleepSites,
			When: func(fa probes.Facts) bool { return fa.SpinbitMutex },
		}},
		Tracepoints: []probes.Tracepoint{
			{Name: "syscalls:sys_enter_futex", Program: f.objs.LockFutexEnter},
			{Name: "syscalls:sys_exit_futex", Program: f.objs.LockFutexExit},
			// A new program in a traced process drops its entry (the
			// lock's address was the old program's); Track makes the new
			// one. A thread's exit drops its wait.
			{Name: "sched_process_exec", Program: f.objs.LockExec},
			{Name: "sched_process_exit", Program: f.objs.LockThreadExit},
		},
	}
}

// Programs returns the programs, for run counts.
func (f *Family) Programs() []*ebpf.Program {
	return []*ebpf.Program{f.objs.LockSleep, f.objs.LockFutexEnter, f.objs.LockFutexExit, f.objs.LockExec, f.objs.LockThreadExit}
}

// Track starts observing pid: it finds mheap_.lock in its binary (cached
// per binary) and in its address space (PIE).
func (f *Family) Track(pid uint32) {
	_ = f.TrackErr(pid)
}

// TrackErr is Track, reporting why a process cannot be observed.
func (f *Family) TrackErr(pid uint32) error {
	bf, bias, err := f.bins.ForPID(pid, inspect)
	if err != nil {
		return err
	}
	p := Proc{MheapAddr: bf.mheap + bias}
	if bf.spinbit {
		p.Spinbit = 1
	}
	// An entry already there is this program's (the kernel side deletes
	// the entry at exec, lock_exec): kept, with what it counted.
	err = f.objs.LockProcs.Update(pid, &p, ebpf.UpdateNoExist)
	if errors.Is(err, ebpf.ErrKeyExist) {
		return nil
	}
	if err != nil {
		f.untracked.Add(1)
	}
	return err
}

func inspect(b *goinspect.Binary) (binFacts, error) {
	var bf binFacts
	var err error
	if bf.mheap, err = MheapLockAddr(b); err != nil {
		return bf, err
	}
	bf.spinbit, err = SpinbitLock(b)
	return bf, err
}

// Method says how pid's contention is observed, "" if it is not.
func (f *Family) Method(pid uint32) string {
	var p Proc
	if err := f.objs.LockProcs.Lookup(pid, &p); err != nil {
		return ""
	}
	if p.Spinbit != 0 {
		return MethodSpinbit
	}
	return MethodFutex
}

// Forget drops an exited process's kernel-side state.
func (f *Family) Forget(pid uint32) { _ = f.objs.LockProcs.Delete(pid) }

// Drain returns once Read has handed fn the totals as they are now (see
// probes.Totals.Drain).
func (f *Family) Drain(ctx context.Context) error { return f.totals.Drain(ctx) }

// Read polls the per-process totals every second and hands each to fn.
func (f *Family) Read(ctx context.Context, fn func(ev *Event)) error {
	return f.totals.Read(ctx, time.Second, toEvent(fn))
}

// Poll hands every tracked process's totals to fn once.
func (f *Family) Poll(fn func(ev *Event)) error {
	return f.totals.Poll(toEvent(fn))
}

// toEvent turns the kernel's record into the domain event, naming the
// lock implementation the kernel side recorded.
func toEvent(fn func(*Event)) func(uint32, *Proc) {
	var ev Event
	return func(pid uint32, p *Proc) {
		ev = Event{
			Pid: pid, Method: MethodFutex, Contended: p.Contended, WaitNs: p.WaitNs, WaitHist: p.WaitHist,
			OtherContended: p.OtherContended, OtherWaitNs: p.OtherWaitNs, Dropped: p.Dropped,
		}
		if p.Spinbit != 0 {
			ev.Method = MethodSpinbit
		}
		fn(&ev)
	}
}

// Lookup returns pid's totals.
func (f *Family) Lookup(pid uint32) (Proc, bool) { return f.totals.Lookup(pid) }

// Backlog: totals are polled, nothing queues.
func (f *Family) Backlog() (int, uint64) { return f.totals.Backlog() }

// Lost: the totals are kept in the kernel, so nothing queues to be lost;
// what is counted here is the sleeps not timed (lock_waits full) and the
// processes not tracked (lock_procs full).
func (f *Family) Lost() (uint64, error) {
	var n uint64
	err := probes.Each(f.objs.LockProcs, func(_ uint32, p *Proc) { n += p.Dropped })
	return n + f.untracked.Load(), err
}

// Close unloads the family.
func (f *Family) Close() error { return f.objs.Close() }
