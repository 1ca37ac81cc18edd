package probes

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
)

// Totals reads per-process totals that a family keeps in a BPF hash map
// (tgid → V), for families whose figures are counters rather than events:
// nothing queues, so nothing is lost.
type Totals[V any] struct {
	name     string
	m        *ebpf.Map
	consumed atomic.Uint64
	drains   chan chan struct{} // Drain requests, served by Read
}

// NewTotals reads m; name labels errors.
func NewTotals[V any](name string, m *ebpf.Map) *Totals[V] {
	return &Totals[V]{name: name, m: m, drains: make(chan chan struct{}, maxDrains)}
}

// Poll hands every process's totals to fn once.
func (t *Totals[V]) Poll(fn func(pid uint32, v *V)) error {
	var pid uint32
	var v V
	it := t.m.Iterate()
	for it.Next(&pid, &v) {
		fn(pid, &v)
		t.consumed.Add(1)
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return fmt.Errorf("read %s totals: %w", t.name, err)
	}
	return nil
}

// Read polls every period until ctx is done.
func (t *Totals[V]) Read(ctx context.Context, every time.Duration, fn func(pid uint32, v *V)) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := t.Poll(fn); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case d := <-t.drains:
			// Polled now for a Drain, and for the ones already queued:
			// the poll starts after they were (later ones get the next).
			waiting := []chan struct{}{d}
			for n := len(t.drains); n > 0; n-- {
				waiting = append(waiting, <-t.drains)
			}
			err := t.Poll(fn)
			for _, d := range waiting {
				close(d)
			}
			if err != nil {
				return err
			}
		}
	}
}

// Drain returns once Read has handed fn the totals as they are now (or
// ctx is done), so that an API answer is current, not up to a poll
// period old.
func (t *Totals[V]) Drain(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case t.drains <- done:
	case <-ctx.Done():
		return fmt.Errorf("drain %s totals: %w", t.name, ctx.Err())
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain %s totals: %w", t.name, ctx.Err())
	}
}

// Lookup returns pid's totals.
func (t *Totals[V]) Lookup(pid uint32) (V, bool) {
	var v V
	err := t.m.Lookup(pid, &v)
	return v, err == nil
}

// Backlog: totals are polled, nothing queues; consumed counts reads.
func (t *Totals[V]) Backlog() (int, uint64) { return 0, t.consumed.Load() }

// Each hands every entry of a per-process map to fn, without counting it
// as consumed (status reads it; Poll is the reader's).
func Each[V any](m *ebpf.Map, fn func(pid uint32, v *V)) error {
	var pid uint32
	var v V
	it := m.Iterate()
	for it.Next(&pid, &v) {
		fn(pid, &v)
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return fmt.Errorf("read %s: %w", m.String(), err)
	}
	return nil
}
