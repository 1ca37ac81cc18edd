package aggregate

import (
	"math"

	"github.com/gopulse/gopulse/daemon/api"
)

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
