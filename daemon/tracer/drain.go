package tracer

import (
	"context"
	"sync"
	"time"
)

// drainTimeout bounds how long a query waits for the readers to hand on
// what the kernel recorded before it. A healthy reader empties a full ring
// (256 KiB) in well under that; a stuck one only delays the answer.
const drainTimeout = 500 * time.Millisecond

// Drain implements api.Drainer: it returns once every running reader
// (discovery's, for exits, and each family's) has handed the aggregator
// what the kernel side recorded before the call, or after drainTimeout.
// Without it an answer could be up to probes.PollEvery old: records are
// submitted without a wakeup, to save the traced programs a wakeup each.
func (t *Tracer) Drain(ctx context.Context) {
	t.famMu.Lock()
	running := t.runCtx != nil
	t.famMu.Unlock()
	if !running {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	drainers := []interface {
		Drain(context.Context) error
	}{t.disc}
	for _, l := range t.families() {
		drainers = append(drainers, l.f)
	}
	var wg sync.WaitGroup
	for _, d := range drainers {
		wg.Go(func() {
			if err := d.Drain(ctx); err != nil {
				t.log.Debug("answer may miss recent events", "err", err)
			}
		})
	}
	wg.Wait()
}
