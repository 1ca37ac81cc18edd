package tracer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/gc"
)

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
	load func() (family, error)
	// read consumes f's events until it is closed or ctx is done; count
	// is called once per event.
	read func(ctx context.Context, t *Tracer, f family, count func()) error
}

var registry = []familyDef{
	{
		name: gc.Name, dflt: true,
		load: func() (family, error) { return gc.New() },
		read: func(ctx context.Context, t *Tracer, f family, count func()) error {
			return f.(*gc.Family).Read(ctx, func(ev *gc.Event) {
				count()
				t.agg.GC(ev)
			})
		},
	},
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
}

// startFamily loads, attaches and starts reading a family. t.famMu held.
func (t *Tracer) startFamily(ctx context.Context, def familyDef) error {
	f, err := def.load()
	if err != nil {
		return err
	}
	if err := t.att.AddSpec(f.Spec()); err != nil {
		f.Close()
		return err
	}
	l := &loaded{def: def, f: f, watch: &readerWatch{name: def.name, src: f}, done: make(chan error, 1)}
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
		if err := t.startFamily(t.runCtx, def); err != nil {
			return added, removed, fmt.Errorf("start %s: %w", def.name, err)
		}
		added = append(added, def.name)
	}
	t.cfg.Families = slices.Clone(names)
	slices.Sort(removed)
	return added, removed, nil
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
