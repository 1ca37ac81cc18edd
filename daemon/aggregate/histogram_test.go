package aggregate

import (
	"math"
	"testing"
	"time"
)

func TestHistogram(t *testing.T) {
	counts := make([]uint64, 40)
	counts[10] = 50 // [512ns, 1024ns)
	counts[20] = 50 // [~0.5ms, ~1ms)
	h := Histogram(counts, 12345)
	if h.Count != 100 || len(h.Counts) != 21 || h.BucketUpperSeconds[10] != 1024e-9 {
		t.Fatalf("histogram %+v", h)
	}
	if h.P50Seconds < 512e-9 || h.P50Seconds > 1024e-9 {
		t.Errorf("p50 %g not in bucket 10", h.P50Seconds)
	}
	if lo, hi := math.Ldexp(1, 19)/1e9, math.Ldexp(1, 20)/1e9; h.P99Seconds < lo || h.P99Seconds > hi {
		t.Errorf("p99 %g not in bucket 20", h.P99Seconds)
	}
	if e := Histogram(make([]uint64, 40), 0); e.Count != 0 || e.P99Seconds != 0 || len(e.Counts) != 0 {
		t.Errorf("empty histogram %+v", e)
	}
}

func TestCounterRingRate(t *testing.T) {
	var r counterRing
	t0 := time.Unix(1000, 0)
	for i := 0; i <= 120; i++ {
		r.add(t0.Add(time.Duration(i)*time.Second), uint64(i)*100)
	}
	if got := r.rate(t0.Add(120 * time.Second)); math.Abs(got-100) > 5 {
		t.Errorf("rate %g, want ~100/s", got)
	}
	// Samples within a second update the last one: bounded.
	for i := 0; i < 1000; i++ {
		r.add(t0.Add(120*time.Second+time.Duration(i)*time.Microsecond), 12000+uint64(i))
	}
	if r.n > len(r.t) {
		t.Errorf("ring holds %d samples", r.n)
	}
}

// The runtime's histogram form (-Inf, bounds..., +Inf; underflow first).
func TestBoundsHistogram(t *testing.T) {
	inf := math.Inf(1)
	bounds := []float64{-inf, 0, 64e-9, 128e-9, 192e-9, 256e-9, inf}
	for _, c := range []struct {
		name                string
		counts              []uint64
		count               uint64
		buckets             int
		p50lo, p50hi, p99hi float64
		lastUpper           float64
	}{
		{"typical", []uint64{0, 10, 80, 10, 0, 0}, 100, 4, 64e-9, 128e-9, 192e-9, 192e-9},
		{"overflow", []uint64{0, 0, 0, 0, 1, 1}, 2, 6, 192e-9, 256e-9, 256e-9, -1},
		{"underflow only", []uint64{3, 0, 0, 0, 0, 0}, 3, 1, 0, 0, 0, 0},
		{"empty", []uint64{0, 0, 0, 0, 0, 0}, 0, 0, 0, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := BoundsHistogram(bounds, c.counts)
			if h.Count != c.count || len(h.Counts) != c.buckets || len(h.BucketUpperSeconds) != c.buckets {
				t.Fatalf("%+v", h)
			}
			if c.buckets > 0 && h.BucketUpperSeconds[c.buckets-1] != c.lastUpper {
				t.Errorf("last upper bound %g, want %g", h.BucketUpperSeconds[c.buckets-1], c.lastUpper)
			}
			if h.P50Seconds < c.p50lo || h.P50Seconds > c.p50hi || h.P99Seconds > c.p99hi {
				t.Errorf("p50 %g (want in [%g, %g]), p99 %g (want <= %g)", h.P50Seconds, c.p50lo, c.p50hi, h.P99Seconds, c.p99hi)
			}
			if math.IsNaN(h.SumSeconds) || math.IsInf(h.SumSeconds, 0) {
				t.Errorf("sum %g", h.SumSeconds)
			}
		})
	}
	if h := BoundsHistogram(bounds, []uint64{1}); h.Count != 0 {
		t.Errorf("mismatched lengths accepted: %+v", h)
	}
}
