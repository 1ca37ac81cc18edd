package tracer

import (
	"context"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

// exitCheckEvery is how often a follow checks whether its process exited.
const exitCheckEvery = 250 * time.Millisecond

// FollowGC implements api.Follower. The follow ends once the process
// exited and the events it recorded before were read (Drain), so the
// stream holds each of its cycles exactly once and then closes.
func (t *Tracer) FollowGC(pid, last int) ([]api.GCCycle, <-chan api.GCCycle, func(), error) {
	f, history, err := t.agg.Follow(pid, last)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer f.Close()
		tick := time.NewTicker(exitCheckEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if t.agg.Gone(pid) {
					t.Drain(ctx)
					if n := f.Dropped(); n > 0 {
						t.log.Warn("gc follow: slow reader, cycles dropped", "pid", pid, "dropped", n)
					}
					return
				}
			}
		}
	}()
	return history, f.Cycles(), cancel, nil
}
