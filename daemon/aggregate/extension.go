package aggregate

import (
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

// procExt is what the optional families (madvise, sched, mheaplock) know
// of a process. Bounded: fixed-size arrays and rings.
type procExt struct {
	madv  *madvState
	sched *api.SchedStats
	lock  *lockState
}

// extSnapshot fills the optional sections of a process's public view; a.mu
// is held, so no file I/O here (withIO adds it after).
func (p *proc) extSnapshot(info *api.Process, now time.Time) {
	exited := info.Exited != nil
	if m := p.ext.madv; m != nil {
		info.Madvise = m.stats(exited, now)
	}
	if s := p.ext.sched; s != nil {
		c := *s
		info.Sched = &c
	}
	if l := p.ext.lock; l != nil {
		c := l.stats
		if !exited {
			c.ContendedPerSecond = l.contended.rate(now)
		}
		info.MheapLock = &c
	}
}
