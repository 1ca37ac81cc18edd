package tracer

import (
	"context"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes"
)

type noPrograms struct{}

func (noPrograms) Spec() probes.Spec           { return probes.Spec{} }
func (noPrograms) Programs() []*ebpf.Program   { return nil }
func (noPrograms) Lost() (uint64, error)       { return 0, nil }
func (noPrograms) Backlog() (int, uint64)      { return 0, 0 }
func (noPrograms) Forget(uint32)               {}
func (noPrograms) Drain(context.Context) error { return nil }
func (noPrograms) Close() error                { return nil }

// Reading status changes no rate: the API, the exporter and sd_notify
// read the sampler's window, none of them moves it.
func TestCostStatusHasNoSideEffect(t *testing.T) {
	l := &loaded{name: "x", f: noPrograms{}, started: time.Now().Add(-time.Minute)}
	l.cost = costSample{at: time.Now(), hitsPS: 42, uhitsPS: 7, bpfPS: 0.5}
	before := l.cost
	for i := 0; i < 3; i++ {
		var f api.FamilyStatus
		l.costStatus(&f, 1000)
		if f.HitsPerSecond != 42 || f.UprobeHitsPerSecond != 7 || f.BPFSecondsPerSecond != 0.5 {
			t.Fatalf("read %d: rates %+v, want the sampler's", i, f)
		}
		if want := 7*1000/1e9 + 0.5; f.EstCostSecondsPerSecond != want {
			t.Errorf("est. cost %g, want %g", f.EstCostSecondsPerSecond, want)
		}
	}
	if l.cost != before {
		t.Errorf("status moved the sample: %+v -> %+v", before, l.cost)
	}
	// Only the sampler moves it.
	l.sampleCost()
	if l.cost.at.Equal(before.at) {
		t.Error("sampleCost took no sample")
	}
}

func TestWithRates(t *testing.T) {
	t0 := time.Unix(100, 0)
	got := withRates(costSample{at: t0, hits: 10, uhits: 4, runNs: 1e9}, costSample{at: t0.Add(2 * time.Second), hits: 30, uhits: 8, runNs: 3e9})
	if got.hitsPS != 10 || got.uhitsPS != 2 || got.bpfPS != 1 {
		t.Errorf("rates %+v", got)
	}
	// Counters that went back (a family reloaded) give 0, not a wrap.
	if got := withRates(costSample{at: t0, hits: 30}, costSample{at: t0.Add(time.Second), hits: 10}); got.hitsPS != 0 {
		t.Errorf("counter reset: %g/s", got.hitsPS)
	}
}
