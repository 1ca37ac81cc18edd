package main

// Alternating untraced/traced runs, and the figures drawn from them.

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
)

// workload is one fixture run with given flags.
type workload struct {
	key      string // what -workloads selects it by
	name     string
	fixture  string   // package under tools/fixtures
	bin      string   // the built fixture, set once built
	args     []string // the measured run
	warm     []string // a short run, to get the binary probed
	gcCycles bool     // the fixture prints its GC cycle count (gcload)
}

// pairs is the outcome of alternating untraced/traced runs of one
// workload under one --probes setting; plain[i] and traced[i] are a pair.
type pairs struct {
	plain  []result
	traced []traced
}

// measure runs rounds untraced/traced pairs. Which of the two runs first
// alternates from pair to pair, so that a drift over the cell (page cache,
// another process ending) does not fall on one side only.
func (e *env) measure(ctx context.Context, setting string, w workload, rounds int) (pairs, error) {
	var p pairs
	for i := 0; i < rounds; i++ {
		if err := e.measurePair(ctx, setting, w, i, &p); err != nil {
			return p, err
		}
	}
	return p, nil
}

// measurePair adds pair number i to p; odd pairs run traced first.
func (e *env) measurePair(ctx context.Context, setting string, w workload, i int, p *pairs) error {
	for _, isTraced := range [2]bool{i%2 == 1, i%2 == 0} {
		if !isTraced {
			r, err := e.untracedRun(w)
			if err != nil {
				return err
			}
			p.plain = append(p.plain, r)
			continue
		}
		t, err := e.tracedRun(ctx, setting, w)
		if err != nil {
			return err
		}
		p.traced = append(p.traced, t)
	}
	return nil
}

func (e *env) untracedRun(w workload) (result, error) {
	e.untraced++
	if len(otherDaemons()) > 0 {
		e.others++
	}
	r, err := runFixture(w.bin, w.args)
	if err != nil {
		return r, fmt.Errorf("%s: %w", w.key, err)
	}
	return r, nil
}

func (p pairs) ratios(f func(result) float64) []float64 {
	var rs []float64
	for i := range min(len(p.plain), len(p.traced)) {
		if d := f(p.plain[i]); d > 0 {
			rs = append(rs, f(p.traced[i].result)/d)
		}
	}
	return rs
}

func (p pairs) wallRatios() []float64 {
	return p.ratios(func(r result) float64 { return r.wall.Seconds() })
}
func (p pairs) cpuRatios() []float64 {
	return p.ratios(func(r result) float64 { return r.cpu.Seconds() })
}

// plainMedian and tracedMedian are medians of a figure over the untraced
// and the traced runs.
func (p pairs) plainMedian(f func(result) float64) float64 {
	var xs []float64
	for _, r := range p.plain {
		xs = append(xs, f(r))
	}
	return median(xs)
}

func (p pairs) tracedMedian(f func(traced) float64) float64 {
	var xs []float64
	for _, t := range p.traced {
		xs = append(xs, f(t))
	}
	return median(xs)
}

// Medians over the traced runs of what the tables show.
func (p pairs) tracedWall() float64 {
	return p.tracedMedian(func(t traced) float64 { return t.wall.Seconds() })
}
func (p pairs) tracedCPU() float64 {
	return p.tracedMedian(func(t traced) float64 { return t.cpu.Seconds() })
}
func (p pairs) est() float64 { return p.tracedMedian(func(t traced) float64 { return t.estShare }) }
func (p pairs) traps() float64 {
	return p.tracedMedian(func(t traced) float64 { return float64(t.delta.uprobeHits) })
}
func (p pairs) runs() float64 {
	return p.tracedMedian(func(t traced) float64 { return float64(t.delta.hits) })
}

func wallSec(r result) float64 { return r.wall.Seconds() }
func cpuSec(r result) float64  { return r.cpu.Seconds() }

// quantile is the q-quantile of xs, interpolated linearly between order
// statistics (so the median of an even count is the mean of the middle
// two); 0 for no data.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

func median(xs []float64) float64 { return quantile(xs, 0.5) }

// fmtRatio prints the median of per-pair ratios and their interquartile
// range: a range that straddles 1.00× is noise, one above it a slowdown.
func fmtRatio(rs []float64) string {
	if len(rs) == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.3f× [%.2f–%.2f]", median(rs), quantile(rs, 0.25), quantile(rs, 0.75))
}

// fmtCount prints a per-run count compactly.
func fmtCount(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.1fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.0fk", x/1e3)
	default:
		return fmt.Sprintf("%.0f", x)
	}
}

// fmtShare prints a fraction of the traced program's CPU time.
func fmtShare(x float64) string {
	switch {
	case x >= 0.1:
		return fmt.Sprintf("%.0f%%", x*100)
	case x >= 0.001:
		return fmt.Sprintf("%.2f%%", x*100)
	default:
		return fmt.Sprintf("%.3f%%", x*100)
	}
}

// selected reports whether key is in the comma list sel ("all": every key).
func selected(sel, key string) bool {
	if sel == "all" {
		return true
	}
	for _, s := range strings.Split(sel, ",") {
		if strings.TrimSpace(s) == key {
			return true
		}
	}
	return false
}

// progress notes on stderr what was measured, for a run that takes minutes.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
