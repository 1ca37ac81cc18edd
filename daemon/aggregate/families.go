package aggregate

import (
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/madvise"
	"github.com/gopulse/gopulse/probes/mheaplock"
	"github.com/gopulse/gopulse/probes/sched"
)

// procExt is what the optional families (madvise, sched, mheaplock) know
// of a process. Bounded: fixed-size arrays and rings.
type procExt struct {
	madv  *madvState
	sched *api.SchedStats
	lock  *lockState
}

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

type madvState struct {
	calls, bytes [madvise.Slots]uint64
	bySource     map[string]uint64
	released     counterRing
}

// Madvise records one event of the madvise family.
func (a *Aggregator) Madvise(ev *madvise.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.procs[int(ev.Pid)]
	if !ok {
		return
	}
	m := p.ext.madv
	if m == nil {
		m = &madvState{bySource: map[string]uint64{}}
		p.ext.madv = m
	}
	if ev.Ret != 0 {
		return
	}
	slot := int(ev.Advice)
	if slot < 0 || slot >= madvise.Slots {
		slot = madvise.Slots - 1
	}
	// The kernel side's running totals: exact even when events were lost.
	m.calls[slot] = max(m.calls[slot], ev.Calls)
	m.bytes[slot] = max(m.bytes[slot], ev.Bytes)
	if madvise.Releases(ev.Advice) {
		if len(m.bySource) < 16 {
			m.bySource[ev.Source] += ev.Len
		}
		m.released.add(a.clock.Now(), m.releasedTotal())
	}
}

func (m *madvState) releasedTotal() uint64 {
	var n uint64
	for slot, b := range m.bytes {
		if madvise.Releases(int32(slot)) {
			n += b
		}
	}
	return n
}

func (m *madvState) stats(pid int, exited bool, now time.Time) *api.MadviseStats {
	s := &api.MadviseStats{ReleasedBySource: map[string]uint64{}}
	for slot := range m.calls {
		if m.calls[slot] > 0 {
			s.Advice = append(s.Advice, api.AdviceCount{Advice: madvise.AdviceName(int32(slot)), Calls: m.calls[slot], Bytes: m.bytes[slot]})
		}
	}
	for k, v := range m.bySource {
		s.ReleasedBySource[k] = v
	}
	s.ReleasedBytes = m.releasedTotal()
	if !exited {
		s.ReleasedBytesPerSecond = m.released.rate(now)
		s.RSSBytes = rss(pid)
	}
	return s
}

// rss reads a process's resident set from procfs.
func rss(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// Sched records the sched family's totals for a process.
// lat is the goroutine latency read with the totals, nil if not followed.
func (a *Aggregator) Sched(pid uint32, k *sched.Proc, lat *sched.GoLatency) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Exited processes too: the kernel side keeps their totals until the
	// process is forgotten, and the last poll may come after the exit.
	p, ok := a.procs[int(pid)]
	if !ok {
		return
	}
	var goLat *api.Histogram
	var goLatErr string
	if p.ext.sched != nil {
		goLat, goLatErr = p.ext.sched.GoroutineLatency, p.ext.sched.GoroutineLatencyError
	}
	if lat != nil {
		goLatErr = lat.Err
		if lat.Counts != nil {
			h := BoundsHistogram(lat.Buckets, lat.Counts)
			goLat = &h
		}
	}
	p.ext.sched = &api.SchedStats{
		Threads:               int(max(k.Threads, 0)),
		RunQueueLatency:       Histogram(k.RqHist[:], k.RqNs),
		OnCPUSeconds:          seconds(k.OnCpuNs),
		OffCPUSeconds:         seconds(k.OffCpuNs),
		RunQueueSeconds:       seconds(k.RqNs),
		VoluntarySwitches:     k.Voluntary,
		InvoluntarySwitches:   k.Involuntary,
		GoroutineLatency:      goLat,
		GoroutineLatencyError: goLatErr,
	}
}

type lockState struct {
	stats     api.MheapLockStats
	contended counterRing
}

// MheapLock records the mheaplock family's totals for a process.
func (a *Aggregator) MheapLock(pid uint32, k *mheaplock.Proc, method string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.procs[int(pid)]
	if !ok {
		return
	}
	l := p.ext.lock
	if l == nil {
		l = &lockState{}
		p.ext.lock = l
	}
	l.stats = api.MheapLockStats{
		Method:           method,
		Contended:        k.Contended,
		WaitSeconds:      seconds(k.WaitNs),
		Wait:             Histogram(k.WaitHist[:], k.WaitNs),
		OtherContended:   k.OtherContended,
		OtherWaitSeconds: seconds(k.OtherWaitNs),
	}
	l.contended.add(a.clock.Now(), k.Contended)
}

// extSnapshot fills the optional sections of a process's public view; a.mu
// is held.
func (p *proc) extSnapshot(info *api.Process, now time.Time) {
	exited := info.Exited != nil
	if m := p.ext.madv; m != nil {
		info.Madvise = m.stats(info.PID, exited, now)
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

// Histogram turns power-of-two buckets of nanoseconds (bucket i: values in
// [2^(i-1), 2^i)) into the API's form, with quantiles interpolated within
// the buckets.
func Histogram(counts []uint64, sumNs uint64) api.Histogram {
	h := api.Histogram{SumSeconds: seconds(sumNs)}
	last := -1
	for i, c := range counts {
		h.Count += c
		if c > 0 {
			last = i
		}
	}
	for i := 0; i <= last; i++ {
		up := math.Ldexp(1, i) / 1e9
		if i == len(counts)-1 {
			up = -1
		}
		h.BucketUpperSeconds = append(h.BucketUpperSeconds, up)
		h.Counts = append(h.Counts, counts[i])
	}
	h.P50Seconds = quantile(counts, h.Count, 0.50)
	h.P90Seconds = quantile(counts, h.Count, 0.90)
	h.P99Seconds = quantile(counts, h.Count, 0.99)
	return h
}

func quantile(counts []uint64, total uint64, q float64) float64 {
	if total == 0 {
		return 0
	}
	v, ok := interpolate(counts, total, q, func(i int) (lo, hi float64) {
		if i == 0 {
			return 0, 1e-9
		}
		return math.Ldexp(1, i-1) / 1e9, math.Ldexp(1, i) / 1e9
	})
	if !ok {
		return math.Ldexp(1, len(counts)-1) / 1e9
	}
	return v
}

// interpolate returns the q-quantile of counts, linear within the bucket
// holding it, whose edges are edges(i); ok is false when the rank lies
// beyond every bucket.
func interpolate(counts []uint64, total uint64, q float64, edges func(i int) (lo, hi float64)) (v float64, ok bool) {
	rank := q * float64(total)
	var seen float64
	for i, c := range counts {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			lo, hi := edges(i)
			return lo + (hi-lo)*(rank-seen)/float64(c), true
		}
		seen += float64(c)
	}
	return 0, false
}

// BoundsHistogram turns a histogram in runtime/metrics form (boundaries in
// seconds, len(counts)+1 of them, possibly -Inf first and +Inf last) into
// the API's form: buckets by upper bound (-1 for +Inf, the underflow
// bucket's 0 for -Inf..0), trimmed after the last non-empty one, quantiles
// interpolated within the buckets, and a sum estimated from bucket
// midpoints.
func BoundsHistogram(bounds []float64, counts []uint64) api.Histogram {
	var h api.Histogram
	if len(bounds) != len(counts)+1 {
		return h
	}
	// lo/hi of bucket i clamped to finite values: -Inf → 0, +Inf → lo.
	edges := func(i int) (lo, hi float64) {
		lo, hi = bounds[i], bounds[i+1]
		if math.IsInf(lo, -1) {
			lo = math.Min(0, hi)
		}
		if math.IsInf(hi, 1) {
			hi = lo
		}
		return lo, hi
	}
	last := -1
	for i, c := range counts {
		h.Count += c
		if c > 0 {
			last = i
			lo, hi := edges(i)
			h.SumSeconds += float64(c) * (lo + hi) / 2
		}
	}
	for i := 0; i <= last; i++ {
		up := bounds[i+1]
		if math.IsInf(up, 1) {
			up = -1
		}
		h.BucketUpperSeconds = append(h.BucketUpperSeconds, up)
		h.Counts = append(h.Counts, counts[i])
	}
	q := func(f float64) float64 {
		v, _ := interpolate(counts, h.Count, f, edges)
		return v
	}
	if h.Count > 0 {
		h.P50Seconds, h.P90Seconds, h.P99Seconds = q(0.50), q(0.90), q(0.99)
	}
	return h
}
