package tracer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/gc"
	"github.com/gopulse/gopulse/probes/madvise"
	"github.com/gopulse/gopulse/probes/mheaplock"
	"github.com/gopulse/gopulse/probes/sched"
)

// tracker is a family whose kernel side only follows the processes user
// space tells it of (tracepoint families: the tracepoints fire for every
// process on the host, and the programs drop the untraced ones first).
type tracker interface {
	Track(pid uint32)
}

// trackFamilies tells the running families of a newly traced process.
func (t *Tracer) trackFamilies(pid int) {
	for _, l := range t.families() {
		if tr, ok := l.f.(tracker); ok {
			tr.Track(uint32(pid))
		}
	}
}

// family is a loaded probe family as the tracer drives it.
type family interface {
	Spec() probes.Spec
	Programs() []*ebpf.Program
	Lost() (uint64, error)
	Backlog() (pending int, consumed uint64)
	// Forget drops the kernel-side state of an exited process.
	Forget(pid uint32)
	Close() error
}

// familyDef is one row of the registry: how to load a family and read its
// events. Adding a family is adding a row.
type familyDef struct {
	name string
	dflt bool // in --probes default
	// needs are the kernel features the family uses (kernel.go): probed
	// before it is loaded, a missing one without fallback keeps it off.
	needs []need
	load  func() (family, error)
	// read consumes f's events until it is closed or ctx is done; count
	// is called once per event.
	read func(ctx context.Context, t *Tracer, f family, count func()) error
}

var registry = []familyDef{
	{
		name: gc.Name, dflt: true, needs: []need{needRingBuffer, needCookies},
		load: func() (family, error) { return gc.New() },
		read: func(ctx context.Context, t *Tracer, f family, count func()) error {
			return f.(*gc.Family).Read(ctx, func(ev *gc.Event) {
				count()
				t.agg.GC(ev)
			})
		},
	},
	{
		// Syscall tracepoints only: no trap in the traced programs.
		name: madvise.Name, dflt: true, needs: []need{needRingBuffer},
		load: func() (family, error) { return madvise.New() },
		read: func(ctx context.Context, t *Tracer, f family, count func()) error {
			return f.(*madvise.Family).Read(ctx, func(ev *madvise.Event) {
				count()
				t.agg.Madvise(ev)
			})
		},
	},
	{
		// Scheduler BTF tracepoints only: no trap in the traced programs.
		name: sched.Name, dflt: true, needs: []need{
			{probe: probes.TracingPrograms},
			{probe: probes.SchedSwitchPrevState,
				fallback: "the switched-out task's state read at the switch (a thread woken meanwhile counts as preempted)"},
		},
		load: func() (family, error) { return sched.New() },
		read: func(ctx context.Context, t *Tracer, f family, count func()) error {
			return f.(*sched.Family).Read(ctx, func(pid uint32, p *sched.Proc, lat *sched.GoLatency) {
				count()
				t.agg.Sched(pid, p, lat)
			})
		},
	},
	{
		// Opt-in: the futex tracepoints run on every futex call of the
		// host, and on Go >= 1.24 each contended runtime lock sleep is a
		// uprobe trap.
		name: mheaplock.Name, needs: []need{needCookies},
		load: func() (family, error) { return mheaplock.New() },
		read: func(ctx context.Context, t *Tracer, f family, count func()) error {
			return f.(*mheaplock.Family).Read(ctx, func(pid uint32, p *mheaplock.Proc, method string) {
				count()
				t.agg.MheapLock(pid, p, method)
			})
		},
	},
}

// FamiliesHelp lists the families for --probes help texts, e.g.
// "gc*, madvise*, sched*, mheaplock (* in default)".
func FamiliesHelp() string {
	var names []string
	for _, d := range registry {
		if d.dflt {
			names = append(names, d.name+"*")
		} else {
			names = append(names, d.name)
		}
	}
	return strings.Join(names, ", ") + " (* in default)"
}

// ParseFamilies turns a --probes value into family names.
func ParseFamilies(s string) ([]string, error) {
	var all, dflt []string
	for _, d := range registry {
		all = append(all, d.name)
		if d.dflt {
			dflt = append(dflt, d.name)
		}
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "default":
			out = append(out, dflt...)
		case f == "all":
			out = append(out, all...)
		case slices.Contains(all, f):
			out = append(out, f)
		default:
			return nil, fmt.Errorf("unknown probe family %q (want default, all, or a comma list of %s)", f, strings.Join(all, ", "))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// loaded is a running family.
type loaded struct {
	def    familyDef
	f      family
	watch  *readerWatch
	events atomic.Uint64
	stop   context.CancelFunc
	done   chan error

	started   time.Time
	fallbacks []string // kernel features missing, with the fallback used
	costMu    sync.Mutex
	cost      costSample // last rate sample, for status (cost.go)
}

// startFamily loads, attaches and starts reading a family. t.famMu held.
func (t *Tracer) startFamily(ctx context.Context, def familyDef) error {
	fit := fitOf(def)
	if !fit.Runs() {
		return fmt.Errorf("kernel lacks %s", strings.Join(fit.Missing, ", "))
	}
	t.cost.start()
	f, err := def.load()
	if err != nil {
		return err
	}
	if err := t.att.AddSpec(f.Spec()); err != nil {
		f.Close()
		return err
	}
	if tr, ok := f.(tracker); ok {
		for _, pid := range t.agg.Running() {
			tr.Track(uint32(pid))
		}
	}
	if len(fit.Fallbacks) > 0 {
		t.log.Info("probe family runs with kernel fallbacks", "probe", def.name, "fallbacks", fit.Fallbacks)
	}
	l := &loaded{def: def, f: f, watch: &readerWatch{name: def.name, src: f}, done: make(chan error, 1), started: time.Now(),
		fallbacks: fit.Fallbacks}
	rctx, stop := context.WithCancel(ctx)
	l.stop = stop
	go func() {
		err := def.read(rctx, t, f, func() { l.events.Add(1) })
		if err != nil {
			// The watchdog sees the backlog grow and restarts us.
			t.log.Error("probe reader stopped", "probe", def.name, "err", err)
		}
		l.done <- err
	}()
	t.fams[def.name] = l
	return nil
}

// tryStartFamily starts a family, recording (and logging) why it could
// not. t.famMu held.
func (t *Tracer) tryStartFamily(ctx context.Context, def familyDef) error {
	if err := t.startFamily(ctx, def); err != nil {
		t.famErrs[def.name] = err.Error()
		t.log.Error("probe family not started", "probe", def.name, "err", err)
		return err
	}
	delete(t.famErrs, def.name)
	return nil
}

// stopFamily detaches and unloads a family. t.famMu held.
func (t *Tracer) stopFamily(name string) error {
	l, ok := t.fams[name]
	if !ok {
		return nil
	}
	delete(t.fams, name)
	t.att.RemoveSpec(name)
	l.stop()
	err := <-l.done
	l.f.Close()
	return err
}

// SetFamilies changes the probe families at run time (SIGHUP), keeping
// every process's figures. It returns the families added and removed.
func (t *Tracer) SetFamilies(names []string) (added, removed []string, err error) {
	t.famMu.Lock()
	defer t.famMu.Unlock()
	var errs []error
	if t.runCtx == nil {
		return nil, nil, fmt.Errorf("tracer not running")
	}
	for name := range t.fams {
		if !slices.Contains(names, name) {
			if err := t.stopFamily(name); err != nil {
				return added, removed, fmt.Errorf("stop %s: %w", name, err)
			}
			removed = append(removed, name)
		}
	}
	for _, def := range registry {
		if _, on := t.fams[def.name]; on || !slices.Contains(names, def.name) {
			continue
		}
		if err := t.tryStartFamily(t.runCtx, def); err != nil {
			errs = append(errs, fmt.Errorf("start %s: %w", def.name, err))
			continue
		}
		added = append(added, def.name)
	}
	for name := range t.famErrs {
		if !slices.Contains(names, name) {
			delete(t.famErrs, name)
		}
	}
	t.cfg.Families = slices.Clone(names)
	slices.Sort(removed)
	return added, removed, errors.Join(errs...)
}

// families returns the running families, by name.
func (t *Tracer) families() []*loaded {
	t.famMu.Lock()
	defer t.famMu.Unlock()
	out := make([]*loaded, 0, len(t.fams))
	for _, def := range registry {
		if l, ok := t.fams[def.name]; ok {
			out = append(out, l)
		}
	}
	return out
}
