package main

import (
	"math"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

func TestComputeFigures(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var cycles []api.GCCycle
	// 100 cycles in the last 50 s, one 10 ms pause among 1 ms ones; one
	// old cycle outside the window.
	cycles = append(cycles, api.GCCycle{Seq: 1, Start: now.Add(-2 * time.Minute), PauseSeconds: 5})
	for i := range 100 {
		c := api.GCCycle{Seq: uint64(i + 2), Start: now.Add(-50*time.Second + time.Duration(i)*500*time.Millisecond),
			PauseSeconds: 0.001, AssistSeconds: 0.002, MarkSeconds: 0.004, HeapEndBytes: uint64(i) << 20}
		if i == 50 {
			c.PauseSeconds = 0.010
		}
		cycles = append(cycles, c)
	}
	p := api.Process{PID: 1, FirstSeen: now.Add(-time.Hour), GCCyclesPerSecond: 2,
		Runtime: &api.Runtime{GOMAXPROCS: 4, AllocatedBytes: 3 << 20}}
	prev := p
	prev.Runtime = &api.Runtime{GOMAXPROCS: 4, AllocatedBytes: 1 << 20}
	f := computeFigures(p, cycles, &prev, 2*time.Second, now, time.Minute)
	if f.cyclesInWindow != 100 || f.window != time.Minute {
		t.Errorf("cycles in window %v over %v, want 100 over 1m", f.cyclesInWindow, f.window)
	}
	if f.pauseMax != 0.010 || f.pauseP99 != 0.001 {
		t.Errorf("pause max %v p99 %v, want 10ms and 1ms (1 of 100 is above the p99)", f.pauseMax, f.pauseP99)
	}
	// (0.1099 s STW × 4 + 0.2 s assist + 0.4 s mark × 0.25 × 4) / (60 s × 4)
	want := (0.109*4 + 0.2 + 0.4*0.25*4) / 240
	if math.Abs(f.gcCPU-want) > 1e-9 {
		t.Errorf("gc CPU %v, want %v", f.gcCPU, want)
	}
	if !f.allocKnown || f.allocPerSec != 1<<20 {
		t.Errorf("alloc rate %v (%v), want 1MiB/s", f.allocPerSec, f.allocKnown)
	}
	// Traced for 10 s only: the window shrinks to it.
	p.FirstSeen = now.Add(-10 * time.Second)
	if f := computeFigures(p, cycles, nil, 0, now, time.Minute); f.window != 10*time.Second || f.cyclesInWindow != 20 {
		t.Errorf("short trace: %v cycles over %v, want 20 over 10s", f.cyclesInWindow, f.window)
	}
}

func TestHistQuantileAndDelta(t *testing.T) {
	h := api.Histogram{BucketUpperSeconds: []float64{0.001, 0.002, -1}, Counts: []uint64{50, 50, 0}, Count: 100}
	if q := histQuantile(h, 0.5); q != 0.001 {
		t.Errorf("p50 %v, want 1ms", q)
	}
	if q := histQuantile(h, 0.99); math.Abs(q-0.00198) > 1e-12 {
		t.Errorf("p99 %v, want 1.98ms", q)
	}
	prev := api.Histogram{BucketUpperSeconds: h.BucketUpperSeconds, Counts: []uint64{50, 0, 0}, Count: 50}
	d, ok := histDelta(h, prev)
	if !ok || d.Count != 50 || histQuantile(d, 0.5) != 0.0015 {
		t.Errorf("delta %+v %v", d, ok)
	}
	if _, ok := histDelta(prev, h); ok {
		t.Error("a count going back must not give a delta")
	}
}

func TestSparkline(t *testing.T) {
	if s := sparkline([]float64{0, 1, 2, 4, 8}, 10); s != "▁▁▂▄█" {
		t.Errorf("sparkline %q", s)
	}
	if s := sparkline([]float64{1, 2, 3}, 2); []rune(s)[1] != '█' || len([]rune(s)) != 2 {
		t.Errorf("cut sparkline %q", s)
	}
}
