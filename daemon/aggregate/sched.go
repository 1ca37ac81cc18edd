package aggregate

import (
	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/event"
)

// The sched family's per-process state.

// Sched records the sched family's totals for a process.
func (a *Aggregator) Sched(ev *event.Sched) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Exited processes too: the kernel side keeps their totals until the
	// process is forgotten, and the last poll may come after the exit.
	p, ok := a.procs[int(ev.Pid)]
	if !ok {
		return
	}
	var goLat *api.Histogram
	var goLatErr string
	if p.ext.sched != nil {
		goLat, goLatErr = p.ext.sched.GoroutineLatency, p.ext.sched.GoroutineLatencyError
	}
	if lat := ev.GoLatency; lat != nil {
		goLatErr = lat.Err
		if lat.Counts != nil {
			h := BoundsHistogram(lat.Buckets, lat.Counts)
			goLat = &h
		}
	}
	p.ext.sched = &api.SchedStats{
		Threads:               int(max(ev.Threads, 0)),
		ThreadsDropped:        ev.ThreadsDropped,
		RunQueueLatency:       Histogram(ev.RunQueue[:], ev.RunQueueNs),
		OnCPUSeconds:          seconds(ev.OnCPUNs),
		OffCPUSeconds:         seconds(ev.OffCPUNs),
		RunQueueSeconds:       seconds(ev.RunQueueNs),
		VoluntarySwitches:     ev.Voluntary,
		InvoluntarySwitches:   ev.Involuntary,
		GoroutineLatency:      goLat,
		GoroutineLatencyError: goLatErr,
	}
}
