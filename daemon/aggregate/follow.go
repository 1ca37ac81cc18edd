package aggregate

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gopulse/gopulse/daemon/api"
)

// Bounds of the follow subscriptions (`gopulse gc PID -f`).
const (
	// MaxFollowers is how many follows may be open at once, host-wide.
	MaxFollowers = 64
	// FollowBuffer is how many cycles a follow holds for a slow reader;
	// beyond, cycles are dropped for it (and counted), never waited for:
	// the event path must not block on a client.
	FollowBuffer = 1024
)

// ErrTooManyFollowers is returned by Follow over MaxFollowers.
var ErrTooManyFollowers = errors.New("too many GC follows open")

// followers are the open follows, by pid. Its zero value is ready.
type followers struct {
	mu   sync.Mutex
	subs map[int]map[*Follow]struct{}
	n    int
}

// Follow is a subscription to one process's completed GC cycles.
type Follow struct {
	pid     int
	ch      chan api.GCCycle
	dropped atomic.Uint64
	owner   *followers
	closed  bool   // owner.mu
	last    uint64 // owner.mu: the runtime's number of the last cycle it was handed
}

// Cycles delivers the cycles in the order they completed; it is closed by
// Close.
func (f *Follow) Cycles() <-chan api.GCCycle { return f.ch }

// Dropped is the number of cycles not delivered because the reader was
// behind by FollowBuffer cycles.
func (f *Follow) Dropped() uint64 { return f.dropped.Load() }

// Close ends the follow: Cycles still yields what it holds, then closes.
func (f *Follow) Close() {
	o := f.owner
	o.mu.Lock()
	defer o.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	delete(o.subs[f.pid], f)
	if len(o.subs[f.pid]) == 0 {
		delete(o.subs, f.pid)
	}
	o.n--
	close(f.ch)
}

// publish hands c to pid's follows without ever waiting; a.mu is held,
// so cycles reach each follow in the order they were recorded.
func (o *followers) publish(pid int, c api.GCCycle) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for f := range o.subs[pid] {
		if c.Seq <= f.last {
			// Already handed on (in the history it started with, or a
			// reading of the books kept the cycle before its record
			// came): each cycle once, in order.
			continue
		}
		f.last = c.Seq
		select {
		case f.ch <- c:
		default:
			f.dropped.Add(1)
		}
	}
}

// Follow subscribes to pid's GC cycles. It returns, atomically with the
// subscription (so none is missed or repeated), the last cycles kept for
// the process (last <= 0: none). An unknown pid gives an error wrapping
// api.ErrNoProcess.
func (a *Aggregator) Follow(pid, last int) (*Follow, []api.GCCycle, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.procs[pid]
	if !ok {
		return nil, nil, fmt.Errorf("pid %d: %w", pid, api.ErrNoProcess)
	}
	var history []api.GCCycle
	if last > 0 {
		history = append(history, p.cycles...)
		if len(history) > last {
			history = history[len(history)-last:]
		}
	}
	o := &a.follow
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n >= MaxFollowers {
		return nil, nil, fmt.Errorf("pid %d: %w (at most %d)", pid, ErrTooManyFollowers, MaxFollowers)
	}
	if o.subs == nil {
		o.subs = map[int]map[*Follow]struct{}{}
	}
	if o.subs[pid] == nil {
		o.subs[pid] = map[*Follow]struct{}{}
	}
	f := &Follow{pid: pid, ch: make(chan api.GCCycle, FollowBuffer), owner: o}
	if n := len(p.cycles); n > 0 {
		f.last = p.cycles[n-1].Seq
	}
	o.subs[pid][f] = struct{}{}
	o.n++
	return f, history, nil
}

// Gone reports whether pid exited or is no longer tracked: its follows
// get no more cycles once the events in flight are read.
func (a *Aggregator) Gone(pid int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.procs[pid]
	return !ok || p.info.Exited != nil
}
