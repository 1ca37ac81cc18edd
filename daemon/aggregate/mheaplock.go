package aggregate

import (
	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/event"
)

// The mheaplock family's per-process state.

type lockState struct {
	stats     api.MheapLockStats
	contended counterRing
}

// MheapLock records the mheaplock family's totals for a process.
func (a *Aggregator) MheapLock(ev *event.MheapLock) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.procs[int(ev.Pid)]
	if !ok {
		return
	}
	l := p.ext.lock
	if l == nil {
		l = &lockState{}
		p.ext.lock = l
	}
	l.stats = api.MheapLockStats{
		Method:           ev.Method,
		Contended:        ev.Contended,
		WaitSeconds:      seconds(ev.WaitNs),
		Wait:             Histogram(ev.WaitHist[:], ev.WaitNs),
		OtherContended:   ev.OtherContended,
		OtherWaitSeconds: seconds(ev.OtherWaitNs),
		Dropped:          ev.Dropped,
	}
	l.contended.add(a.clock.Now(), ev.Contended)
}
