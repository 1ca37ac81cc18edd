package main

import (
	"math"
	"runtime"
	"slices"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

// defaultWindow is the span the live figures of top and doctor cover.
const defaultWindow = time.Minute

// markWorkerShare is the share of GOMAXPROCS the runtime dedicates to
// background marking while a cycle marks (gcBackgroundUtilization, 25%).
const markWorkerShare = 0.25

// figures are one process's live figures over a window, from its
// snapshot, the cycles the daemon kept and the previous snapshot (top).
type figures struct {
	p      api.Process
	window time.Duration // the span the cycle figures cover

	gcPerSec float64
	// gcCPU estimates the share of the process's CPU capacity (GOMAXPROCS
	// × wall time) the GC took over the window: stop-the-world time on
	// every P, assists, and the dedicated mark workers (a quarter of the
	// Ps while marking) — the runtime's own pacing model, since the
	// process's /cpu/classes/gc figures are not read.
	gcCPU              float64
	pauses             []float64 // seconds, of the cycles in the window, oldest first
	heaps              []float64 // heap at mark termination, same cycles
	pauseP99, pauseMax float64
	worst              api.GCCycle // the cycle of pauseMax
	procs              int64       // GOMAXPROCS used for gcCPU

	gschedP99                     float64
	gschedKnown                   bool
	lockWaitPerSec                float64 // seconds slept for the heap lock per second
	lockKnown                     bool
	releasePerSec                 float64
	releaseKnown                  bool
	allocPerSec                   float64 // bytes/s, between two snapshots
	allocKnown                    bool
	cyclesInWindow, assistInWin   float64
	markSecondsInWin, stwInWindow float64
}

// computeFigures derives p's figures over window ending at now; cycles
// are its kept cycles (oldest first), prev its previous snapshot (nil at
// first) taken dt earlier.
func computeFigures(p api.Process, cycles []api.GCCycle, prev *api.Process, dt time.Duration, now time.Time, window time.Duration) figures {
	f := figures{p: p, window: window}
	end := now
	if p.Exited != nil {
		end = *p.Exited
	}
	from := end.Add(-window)
	if !p.FirstSeen.IsZero() && p.FirstSeen.After(from) {
		from = p.FirstSeen
	}
	f.window = end.Sub(from)
	f.procs = int64(runtime.NumCPU()) // the runtime's default GOMAXPROCS on this host
	if p.Runtime != nil && p.GOMAXPROCS > 0 {
		f.procs = p.GOMAXPROCS
	}
	for _, c := range cycles {
		if c.BeforeProbes || c.Start.Before(from) || c.Start.After(end) {
			continue
		}
		f.cyclesInWindow++
		f.pauses = append(f.pauses, c.PauseSeconds)
		f.heaps = append(f.heaps, float64(c.HeapEndBytes))
		if c.PauseSeconds > f.worst.PauseSeconds {
			f.worst = c
		}
		f.stwInWindow += c.PauseSeconds
		f.assistInWin += c.AssistSeconds
		f.markSecondsInWin += c.MarkSeconds
	}
	f.gcPerSec = p.GCCyclesPerSecond
	if w := f.window.Seconds(); w > 0 {
		// Cycles the daemon did not keep (more than its history in the
		// window) still count in the rate; the CPU share covers the kept.
		P := float64(f.procs)
		f.gcCPU = (f.stwInWindow*P + f.assistInWin + f.markSecondsInWin*markWorkerShare*P) / (w * P)
	}
	if len(f.pauses) > 0 {
		s := slices.Clone(f.pauses)
		slices.Sort(s)
		f.pauseMax = s[len(s)-1]
		f.pauseP99 = s[int(math.Ceil(0.99*float64(len(s))))-1]
	}
	if g := gschedHist(p); g != nil && g.Count > 0 {
		// Since the last refresh when there is one, else since the start.
		f.gschedP99, f.gschedKnown = g.P99Seconds, true
		if prev != nil && gschedHist(*prev) != nil {
			if d, ok := histDelta(*g, *gschedHist(*prev)); ok && d.Count > 0 {
				f.gschedP99 = histQuantile(d, 0.99)
			}
		}
	}
	secs := dt.Seconds()
	if l := p.MheapLock; l != nil {
		// The highest of: since the previous snapshot, the last minute
		// (contended acquisitions a second × the mean wait), and since
		// first seen for a process traced for less than a minute.
		f.lockKnown = true
		if prev != nil && prev.MheapLock != nil && secs > 0 {
			f.lockWaitPerSec = math.Max(0, l.WaitSeconds-prev.MheapLock.WaitSeconds) / secs
		}
		if l.Contended > 0 {
			f.lockWaitPerSec = max(f.lockWaitPerSec, l.ContendedPerSecond*l.WaitSeconds/float64(l.Contended))
		}
		if age := end.Sub(p.FirstSeen); age > 0 && age < time.Minute {
			f.lockWaitPerSec = max(f.lockWaitPerSec, l.WaitSeconds/max(age.Seconds(), 1))
		}
	}
	if m := p.Madvise; m != nil {
		f.releasePerSec, f.releaseKnown = m.ReleasedBytesPerSecond, true
		// The daemon's rate needs samples a second apart; for a process
		// traced for less than its minute, the average since is as good.
		if age := end.Sub(p.FirstSeen); age > 0 && age < time.Minute {
			f.releasePerSec = max(f.releasePerSec, float64(m.ReleasedBytes)/max(age.Seconds(), 1))
		}
	}
	if p.Runtime != nil && prev != nil && prev.Runtime != nil && secs > 0 && p.AllocatedBytes >= prev.AllocatedBytes {
		f.allocPerSec, f.allocKnown = float64(p.AllocatedBytes-prev.AllocatedBytes)/secs, true
	}
	return f
}

func gschedHist(p api.Process) *api.Histogram {
	if p.Sched == nil {
		return nil
	}
	return p.Sched.GoroutineLatency
}

// histDelta is cur - prev for the same buckets (false if they differ or a
// count went back: the process was restarted).
func histDelta(cur, prev api.Histogram) (api.Histogram, bool) {
	if len(cur.Counts) != len(prev.Counts) || len(cur.BucketUpperSeconds) != len(cur.Counts) {
		return api.Histogram{}, false
	}
	d := api.Histogram{BucketUpperSeconds: cur.BucketUpperSeconds, Counts: make([]uint64, len(cur.Counts))}
	for i := range cur.Counts {
		if cur.Counts[i] < prev.Counts[i] {
			return api.Histogram{}, false
		}
		d.Counts[i] = cur.Counts[i] - prev.Counts[i]
		d.Count += d.Counts[i]
	}
	return d, true
}

// histQuantile is the q-quantile of h, interpolated within its bucket
// (the unbounded bucket gives its lower bound).
func histQuantile(h api.Histogram, q float64) float64 {
	if h.Count == 0 {
		return 0
	}
	rank := q * float64(h.Count)
	var seen float64
	lower := 0.0
	for i, c := range h.Counts {
		upper := h.BucketUpperSeconds[i]
		if float64(c) > 0 && seen+float64(c) >= rank {
			if upper < 0 {
				return lower
			}
			return lower + (upper-lower)*(rank-seen)/float64(c)
		}
		seen += float64(c)
		if upper >= 0 {
			lower = upper
		}
	}
	return lower
}

// sparkline draws vs scaled to their maximum, one block a value, the
// last width values.
func sparkline(vs []float64, width int) string {
	if len(vs) > width {
		vs = vs[len(vs)-width:]
	}
	const blocks = "▁▂▃▄▅▆▇█"
	runes := []rune(blocks)
	peak := 0.0
	for _, v := range vs {
		peak = math.Max(peak, v)
	}
	out := make([]rune, len(vs))
	for i, v := range vs {
		j := 0
		if peak > 0 {
			j = int(v / peak * float64(len(runes)-1))
		}
		out[i] = runes[max(0, min(j, len(runes)-1))]
	}
	return string(out)
}

// gcHeaderOnly is a history without cycles, for the header of writeGC.
func gcHeaderOnly(f *figures) api.GCHistory {
	return api.GCHistory{Process: f.p, Cycles: []api.GCCycle{{Seq: 0}}[:0]}
}

func numCPU() int { return runtime.NumCPU() }
