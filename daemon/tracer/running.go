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

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/catalog"
)

// The running families: started, stopped and switched at run time.

// loaded is a running family.
type loaded struct {
	name   string
	f      family
	watch  *readerWatch
	events atomic.Uint64
	stop   context.CancelFunc
	done   chan error

	started   time.Time
	fallbacks []string // kernel features missing, with the fallback used
	costMu    sync.Mutex
	cost      costSample // the sampler's last sample (sampleCost), read by status (cost.go)
}

// startFamily loads, attaches and starts reading a family. t.famMu held.
func (t *Tracer) startFamily(ctx context.Context, name string) error {
	def, ok := registry[name]
	if !ok {
		return fmt.Errorf("probe family %q has no code", name)
	}
	var fit KernelFit
	for _, fam := range catalog.Families() {
		if fam.Name == name {
			fit = fitOf(fam)
		}
	}
	if !fit.Runs() {
		return fmt.Errorf("kernel lacks %s", strings.Join(fit.Missing, ", "))
	}
	if len(fit.Fallbacks) > 0 {
		t.log.Info("probe family runs with kernel fallbacks", "probe", name, "fallbacks", fit.Fallbacks)
	}
	t.cost.start()
	f, run, err := def.open(probes.Env{ProcRoot: t.cfg.ProcRoot, MaxPIDs: t.cfg.MaxPIDs, MaxBinaries: t.cfg.MaxBinaries}, t.agg)
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
	l := &loaded{name: name, f: f, watch: &readerWatch{name: name, src: f}, done: make(chan error, 1), started: time.Now(),
		fallbacks: fit.Fallbacks}
	rctx, stop := context.WithCancel(ctx)
	l.stop = stop
	go func() {
		err := run(rctx, func() { l.events.Add(1) })
		if err != nil {
			// The watchdog sees the backlog grow and restarts us.
			t.log.Error("probe reader stopped", "probe", name, "err", err)
		}
		l.done <- err
	}()
	t.fams[name] = l
	return nil
}

// tryStartFamily starts a family, recording (and logging) why it could
// not. t.famMu held.
func (t *Tracer) tryStartFamily(ctx context.Context, name string) error {
	if err := t.startFamily(ctx, name); err != nil {
		t.famErrs[name] = err.Error()
		t.log.Error("probe family not started", "probe", name, "err", err)
		return err
	}
	delete(t.famErrs, name)
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
	for _, cf := range catalog.Families() {
		if _, on := t.fams[cf.Name]; on || !slices.Contains(names, cf.Name) {
			continue
		}
		if err := t.tryStartFamily(t.runCtx, cf.Name); err != nil {
			errs = append(errs, fmt.Errorf("start %s: %w", cf.Name, err))
			continue
		}
		added = append(added, cf.Name)
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
	for _, cf := range catalog.Families() {
		if l, ok := t.fams[cf.Name]; ok {
			out = append(out, l)
		}
	}
	return out
}
