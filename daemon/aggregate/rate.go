package aggregate

import "time"

// counterRing keeps (time, cumulative value) samples, at most one per
// second, for a rate over the last minute.
type counterRing struct {
	t    [64]time.Time
	v    [64]uint64
	n    int
	next int
}

func (r *counterRing) add(now time.Time, v uint64) {
	if r.n > 1 {
		// Within a second of the sample before the last, the last moves
		// on: the one before stays as the anchor of a rate in the first
		// second too.
		last := (r.next + len(r.t) - 1) % len(r.t)
		prev := (r.next + len(r.t) - 2) % len(r.t)
		if now.Sub(r.t[prev]) < time.Second {
			r.t[last], r.v[last] = now, v
			return
		}
	}
	r.t[r.next], r.v[r.next] = now, v
	r.next = (r.next + 1) % len(r.t)
	if r.n < len(r.t) {
		r.n++
	}
}

// rate is the increase per second over the last minute: from the oldest
// sample in the window to now.
func (r *counterRing) rate(now time.Time) float64 {
	if r.n < 2 {
		return 0
	}
	last := (r.next + len(r.t) - 1) % len(r.t)
	for i := 0; i < r.n-1; i++ {
		j := (r.next + len(r.t) - r.n + i) % len(r.t)
		if now.Sub(r.t[j]) <= rateWindow {
			dt := max(now.Sub(r.t[j]).Seconds(), 1)
			return float64(r.v[last]-r.v[j]) / dt
		}
	}
	return 0
}
