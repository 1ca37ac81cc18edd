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
