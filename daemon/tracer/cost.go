package tracer

import (
	"context"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// What a family costs the traced programs, for `gopulse status`:
//
//   - a uprobe hit is a trap in the traced thread: int3, the kernel's
//     uprobe dispatch, the BPF program, the single-step or emulation of the
//     displaced instruction, the return. The daemon measures it once at
//     start, on itself (trapTarget called with and without a uprobe), or
//     takes $GOPULSE_TRAP_COST_NS;
//   - a tracepoint hit costs what the kernel measured running its program
//     (run_time_ns), plus a small dispatch cost not counted.
//
// The estimate is uprobe hits/s × trap cost + BPF run time of every
// program per second, in CPU seconds per second. Hit counts and run times
// need kernel.bpf_stats_enabled, which the daemon keeps on while it runs
// (BPF_ENABLE_STATS; it adds two clock reads to every program run).

// TrapCostEnv overrides the measured cost of one uprobe hit, in ns.
const TrapCostEnv = "GOPULSE_TRAP_COST_NS"

// costMeter holds the daemon's cost accounting: the stats switch and the
// trap cost, measured once per daemon.
type costMeter struct {
	once   sync.Once
	mu     sync.Mutex
	ns     float64
	source string
	stats  interface{ Close() error }
	sink   int // keeps the measuring loop's calls alive
}

// start enables BPF run-time stats and measures the trap cost in the
// background, once.
func (c *costMeter) start() {
	c.once.Do(func() {
		if s, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
			c.stats = s // kept for the daemon's life
		}
		if v, err := strconv.ParseFloat(os.Getenv(TrapCostEnv), 64); err == nil && v > 0 {
			c.set(v, "configured")
			return
		}
		c.set(0, "pending")
		go func() {
			if ns, err := c.measure(); err == nil {
				c.set(ns, "measured")
			} else {
				c.set(0, "unavailable: "+err.Error())
			}
		}()
	})
}

func (c *costMeter) set(ns float64, source string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ns, c.source = ns, source
}

func (c *costMeter) trapCost() (float64, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ns, c.source
}

// close turns the stats off again (when no other holder keeps them on).
func (c *costMeter) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stats != nil {
		c.stats.Close()
		c.stats = nil
	}
}

//go:noinline
func trapTarget(i int) int { return i + 1 }

// measure times trapTarget with and without a uprobe (a program that
// returns at once, filtered to this process), alternating, and returns the
// median extra time per call.
func (c *costMeter) measure() (float64, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.Kprobe,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		return 0, err
	}
	defer prog.Close()
	b, err := goinspect.Open("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	fn, err := b.Func("github.com/gopulse/gopulse/daemon/tracer.trapTarget")
	if err != nil {
		b.Close()
		return 0, err
	}
	off, err := b.FileOffset(fn.Entry)
	path := b.AttachPath()
	if err != nil {
		b.Close()
		return 0, err
	}
	ex, err := link.OpenExecutable(path)
	if err != nil {
		b.Close()
		return 0, err
	}
	defer b.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const calls = 5000
	loop := func() time.Duration {
		start := time.Now()
		s := 0
		for i := 0; i < calls; i++ {
			s = trapTarget(s)
		}
		c.mu.Lock()
		c.sink = s
		c.mu.Unlock()
		return time.Since(start)
	}
	var diffs []float64
	for r := 0; r < 5; r++ {
		plain := loop()
		l, err := ex.Uprobe("", prog, &link.UprobeOptions{Address: off, PID: os.Getpid()})
		if err != nil {
			return 0, err
		}
		traced := loop()
		l.Close()
		diffs = append(diffs, float64(traced-plain)/calls)
	}
	slices.Sort(diffs)
	return max(diffs[len(diffs)/2], 0), nil
}

// costSample is a family's counters at one time, with the rates over the
// window that ends there.
type costSample struct {
	at              time.Time
	hits, uhits     uint64
	runNs           uint64
	hitsPS, uhitsPS float64
	bpfPS           float64
}

// rateEvery is the sampler's period: status rates are over the last
// rateEvery. One goroutine (sampleCosts) owns the samples, so every reader
// — the API, the exporter, sd_notify's status line — sees the same rates
// and none of them moves the window of another.
const rateEvery = 5 * time.Second

// counters reads a family's program counters now.
func (l *loaded) counters() costSample {
	s := costSample{at: time.Now()}
	for _, p := range l.f.Programs() {
		if p == nil {
			continue
		}
		st, err := p.Stats()
		if err != nil {
			continue
		}
		s.hits += st.RunCount
		if p.Type() == ebpf.Kprobe { // uprobes are kprobe-type programs
			s.uhits += st.RunCount
		}
		// Every program's own run time counts, the uprobe programs'
		// too: the trap cost was measured with a trivial one (~0.1 µs),
		// the GC family's copies the cycle's books (~5 µs measured).
		s.runNs += uint64(st.Runtime)
	}
	return s
}

// withRates fills now's rates over the time since prev.
func withRates(prev, now costSample) costSample {
	dt := max(now.at.Sub(prev.at).Seconds(), 1e-3)
	now.hitsPS = float64(now.hits-min(prev.hits, now.hits)) / dt
	now.uhitsPS = float64(now.uhits-min(prev.uhits, now.uhits)) / dt
	now.bpfPS = float64(now.runNs-min(prev.runNs, now.runNs)) / 1e9 / dt
	return now
}

// sampleCost takes the family's rate sample; only sampleCosts calls it.
func (l *loaded) sampleCost() {
	now := l.counters()
	l.costMu.Lock()
	defer l.costMu.Unlock()
	prev := l.cost
	if prev.at.IsZero() {
		prev.at = l.started
	}
	l.cost = withRates(prev, now)
}

// sampleCosts samples every running family's counters every rateEvery
// until ctx is done.
func (t *Tracer) sampleCosts(ctx context.Context) error {
	tick := time.NewTicker(rateEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			for _, l := range t.families() {
				l.sampleCost()
			}
		}
	}
}

// costStatus fills a family's cost figures: totals now, rates over the
// sampler's last window (before its first sample: since the family
// started). It changes nothing: any number of readers may call it.
func (l *loaded) costStatus(f *api.FamilyStatus, trapNs float64) {
	now := l.counters()
	l.costMu.Lock()
	rates := l.cost
	l.costMu.Unlock()
	if rates.at.IsZero() {
		rates = withRates(costSample{at: l.started}, now)
	}
	f.Hits = now.hits
	f.UprobeHits = now.uhits
	f.HitsPerSecond = rates.hitsPS
	f.UprobeHitsPerSecond = rates.uhitsPS
	f.BPFSecondsPerSecond = rates.bpfPS
	f.BPFSeconds = float64(now.runNs) / 1e9
	f.EstCostSecondsPerSecond = rates.uhitsPS*trapNs/1e9 + rates.bpfPS
}
