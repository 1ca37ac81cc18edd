package tracer

import (
	"context"

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/daemon/aggregate"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/catalog"
	"github.com/gopulse/gopulse/probes/gc"
	"github.com/gopulse/gopulse/probes/madvise"
	"github.com/gopulse/gopulse/probes/mheaplock"
	"github.com/gopulse/gopulse/probes/sched"
)

// The registry: which code runs each family of probes/catalog, and which
// method of the aggregator takes its events. Adding a family is a row
// here and one in probes/catalog (TestRegistryMatchesCatalog); adding a
// figure to a family touches no row.
var registry = map[string]familyDef{
	catalog.GC:      row(gc.Load, (*aggregate.Aggregator).GC, needRingBuffer, needCookies, needUprobeMulti),
	catalog.Madvise: row(madvise.Load, (*aggregate.Aggregator).Madvise, needRingBuffer),
	// Scheduler BTF tracepoints only: no trap in the traced programs.
	catalog.Sched: row(sched.Load, (*aggregate.Aggregator).Sched,
		need{probe: probes.TracingPrograms},
		need{probe: probes.SchedSwitchPrevState,
			fallback: "the switched-out task's state read at the switch (a thread woken meanwhile counts as preempted)"}),
	catalog.MheapLock: row(mheaplock.Load, (*aggregate.Aggregator).MheapLock, needCookies, needUprobeMulti),
}

// family is a loaded probe family as the tracer drives it.
type family interface {
	Spec() probes.Spec
	Programs() []*ebpf.Program
	Lost() (uint64, error)
	Backlog() (pending int, consumed uint64)
	// Drain returns once the reader has handed on what the kernel side
	// recorded before the call.
	Drain(ctx context.Context) error
	// Forget drops the kernel-side state of an exited process.
	Forget(pid uint32)
	Close() error
}

// eventReader is a family that hands on domain events of type E
// (probes/event) until ctx is done or it is closed.
type eventReader[E any] interface {
	family
	Read(ctx context.Context, emit func(E)) error
}

// tracker is a family whose kernel side only follows the processes user
// space tells it of (tracepoint families: the tracepoints fire for every
// process on the host, and the programs drop the untraced ones first).
type tracker interface {
	Track(pid uint32)
}

// sharer is a family whose records go through a ring shared per UID
// (bpf/share.h): status shows each UID's records let through and refused.
type sharer interface {
	Shares() ([]probes.Share, error)
	RingSize() (bytes uint32, perSecond, burst uint64)
}

// runFunc reads a loaded family's events into the aggregator until ctx is
// done; count is called once per event.
type runFunc func(ctx context.Context, count func()) error

// counted is an event that says whether it counts as an event in status
// (the GC family's readings of the runtime's books do not).
type counted interface{ Counts() bool }

// familyDef is one row of the registry.
type familyDef struct {
	// needs are the kernel features the family uses (kernel.go): probed
	// before it is loaded, a missing one without fallback keeps it off.
	needs []need
	// open loads the family and returns it with its reading loop.
	open func(env probes.Env, agg *aggregate.Aggregator) (family, runFunc, error)
}

// row makes a registry row from a family's loader and the aggregator's
// method for its events; the typed link between the two is made here,
// once, so the tracer needs no type assertion per family.
func row[F eventReader[E], E any](load func(probes.Env) (F, error), apply func(*aggregate.Aggregator, E), needs ...need) familyDef {
	return familyDef{needs: needs, open: func(env probes.Env, agg *aggregate.Aggregator) (family, runFunc, error) {
		f, err := load(env)
		if err != nil {
			return nil, nil, err
		}
		return f, func(ctx context.Context, count func()) error {
			return f.Read(ctx, func(ev E) {
				if c, ok := any(ev).(counted); !ok || c.Counts() {
					count()
				}
				apply(agg, ev)
			})
		}, nil
	}}
}

// trackFamilies tells the running families of a newly traced process.
func (t *Tracer) trackFamilies(pid int) {
	for _, l := range t.families() {
		if tr, ok := l.f.(tracker); ok {
			tr.Track(uint32(pid))
		}
	}
}
