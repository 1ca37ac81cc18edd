package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

// Severities of a finding, worst first.
const (
	sevCritical = "critical"
	sevWarning  = "warning"
	sevInfo     = "info"
)

func sevRank(s string) int {
	switch s {
	case sevCritical:
		return 3
	case sevWarning:
		return 2
	}
	return 1
}

// Rule names (the "rule" of a finding; README's doctor table).
const (
	ruleGCCPU       = "gc-cpu"
	ruleGoalAtLimit = "goal-at-limit"
	ruleChurn       = "scavenger-churn"
	ruleSTW         = "long-stw"
	ruleOtherSTW    = "long-non-gc-stw"
	ruleHeapLock    = "heap-lock"
	ruleSched       = "sched-latency"
	ruleLost        = "lost-events"
	ruleFamily      = "family-not-running"
	ruleNotReady    = "daemon-not-ready"
	ruleNoGauges    = "runtime-unread"
)

// Thresholds of the rules; README's doctor table gives each with its
// reason.
const (
	gcCPUWarn, gcCPUCrit = 0.10, 0.25 // share of GOMAXPROCS × wall time
	gcCPUTarget          = 0.05       // what the GOGC advice aims at
	gcCPUMinCycles       = 3
	maxAdvisedGOGC       = 1000

	goalBelowGOGC     = 0.95 // goal / GOGC's goal: the limit, not GOGC, sets the goal
	liveNearLimitCrit = 0.80 // live heap / limit: little room left, death spiral

	churnMinBytes = 64 << 20 // released over the last minute (or since first seen)
	churnRSSWarn  = 2.0      // released / RSS
	churnRSSCrit  = 8.0

	stwWarn, stwCrit = 0.010, 0.100 // seconds, longest pause in the window

	lockWarn, lockCrit = 0.005, 0.050 // seconds slept for the heap lock per second

	schedWarn, schedCrit = 0.010, 0.050 // goroutine scheduling p99, seconds
	schedMinSamples      = 50
	runqBusy             = 0.005 // thread run-queue p99 that means saturated CPUs
)

// Finding is one diagnosis of `gopulse doctor`.
type Finding struct {
	Severity string `json:"severity"`
	// PID is 0 for a finding about the host or the daemon.
	PID  int    `json:"pid,omitempty"`
	Exe  string `json:"exe,omitempty"`
	Rule string `json:"rule"`
	// Summary says what was seen, with its numbers; Knob what to try.
	Summary string             `json:"summary"`
	Knob    string             `json:"knob"`
	Figures map[string]float64 `json:"figures"`
	// score orders findings of one severity: how far past the threshold.
	score float64
}

// hostFacts is what the rules need from the host.
type hostFacts struct {
	cpus int
	// quota returns pid's cgroup CPU quota in CPUs (false: none).
	quota func(pid int) (float64, bool)
}

func finding(sev string, f *figures, rule string, score float64, figs map[string]float64, knob, format string, args ...any) Finding {
	return Finding{Severity: sev, PID: f.p.PID, Exe: f.p.Exe, Rule: rule, Summary: fmt.Sprintf(format, args...),
		Knob: knob, Figures: figs, score: score}
}

func over(v, warn, crit float64) string {
	switch {
	case v >= crit:
		return sevCritical
	case v >= warn:
		return sevWarning
	}
	return ""
}

// diagnose applies the per-process rules to f.
func diagnose(f *figures, host hostFacts) []Finding {
	var out []Finding
	rt := f.p.Runtime
	win := f.window.Round(time.Millisecond)

	// GC CPU share high: with a small live heap for the allocation rate,
	// the goal (live × (1+GOGC/100)) is reached again and again.
	if sev := over(f.gcCPU, gcCPUWarn, gcCPUCrit); sev != "" && f.cyclesInWindow >= gcCPUMinCycles {
		figs := map[string]float64{"gc_cpu_share": f.gcCPU, "gc_cycles_per_second": f.gcPerSec, "window_seconds": f.window.Seconds()}
		why := ""
		knob := "raise GOGC (GOGC=200 halves the cycles for twice the heap headroom), or set GOMEMLIMIT to the memory the process may use and raise GOGC (or GOGC=off) under it"
		if rt != nil {
			figs["heap_live_bytes"], figs["gc_goal_bytes"], figs["gogc_percent"] = float64(rt.HeapLiveBytes), float64(rt.GCGoalBytes), float64(rt.GOGCPercent)
			why = fmt.Sprintf("; live heap %s, goal %s, GOGC %s", humanBytes(rt.HeapMarkedBytes), humanBytes(rt.GCGoalBytes), gogcString(rt.GOGCPercent))
			if f.allocKnown {
				figs["allocated_bytes_per_second"] = f.allocPerSec
				why += fmt.Sprintf(", allocating %s/s", humanBytes(uint64(f.allocPerSec)))
			}
			if rt.GOGCPercent > 0 {
				// The cycles' cost scales as 1/GOGC at a given live heap
				// and allocation rate.
				g := min(maxAdvisedGOGC, int64(math.Ceil(float64(rt.GOGCPercent)*f.gcCPU/gcCPUTarget/50))*50)
				goal := float64(rt.HeapMarkedBytes) * (1 + float64(g)/100)
				figs["advised_gogc_percent"] = float64(g)
				knob = fmt.Sprintf("GOGC=%d (about %s of GC CPU; heap goal ≈ %s), or GOMEMLIMIT=<memory you can afford> with a high GOGC", g, pct(gcCPUTarget), humanBytes(uint64(goal)))
			}
		}
		out = append(out, finding(sev, f, ruleGCCPU, f.gcCPU/gcCPUWarn, figs, knob,
			"GC used %s of the CPU over %s (%d cycles, %.1f/s)%s: the live heap is small for the allocation rate",
			pct(f.gcCPU), win, int(f.cyclesInWindow), f.gcPerSec, why))
	}

	// Heap goal pinned at the memory limit: the limit, not GOGC, sets
	// the goal (the runtime keeps the goal below the limit minus its
	// non-heap memory, so the goal never reaches the limit itself).
	if rt != nil && rt.MemoryLimitBytes > 0 && rt.MemoryLimitBytes != math.MaxInt64 {
		limit := float64(rt.MemoryLimitBytes)
		live := float64(max(rt.HeapMarkedBytes, rt.HeapLiveBytes)) / limit
		gogcGoal := math.Inf(1) // GOGC off: only the limit
		if rt.GOGCPercent >= 0 {
			gogcGoal = float64(rt.HeapMarkedBytes) * (1 + float64(rt.GOGCPercent)/100)
		}
		if rt.HeapMarkedBytes > 0 && float64(rt.GCGoalBytes) < goalBelowGOGC*gogcGoal {
			sev := sevWarning
			if live >= liveNearLimitCrit || f.gcCPU >= gcCPUCrit {
				sev = sevCritical
			}
			knob := "raise GOMEMLIMIT or shrink the live heap; keep GOGC on (GOGC=off leaves the limit as the only brake)"
			gogc := "GOGC is off"
			if rt.GOGCPercent < 0 {
				knob = "GOGC is off: the limit is the only brake; raise GOMEMLIMIT or turn GOGC back on (e.g. GOGC=100) so the goal stays below the limit"
			} else {
				gogc = fmt.Sprintf("GOGC %d alone would give %s", rt.GOGCPercent, humanBytes(uint64(gogcGoal)))
			}
			out = append(out, finding(sev, f, ruleGoalAtLimit, 1+live, map[string]float64{
				"gc_goal_bytes": float64(rt.GCGoalBytes), "memory_limit_bytes": limit, "heap_live_bytes": float64(rt.HeapLiveBytes),
				"heap_marked_bytes": float64(rt.HeapMarkedBytes), "gc_cpu_share": f.gcCPU,
			}, knob, "heap goal %s is set by the memory limit %s (%s), with a live heap of %s (%.0f%% of the limit): as the live heap nears the limit, the GC runs back to back (death spiral)",
				humanBytes(rt.GCGoalBytes), limitString(rt.MemoryLimitBytes), gogc, humanBytes(max(rt.HeapMarkedBytes, rt.HeapLiveBytes)), live*100))
		}
	}

	// Memory released and faulted back: the window's releases are a
	// multiple of an RSS that does not shrink.
	if m := f.p.Madvise; m != nil && f.releaseKnown && f.p.Exited == nil && m.RSSBytes > 0 {
		released := f.releasePerSec * 60 // the daemon's last-minute rate
		span := "the last minute"
		if age := time.Since(f.p.FirstSeen); age < time.Minute {
			released, span = float64(m.ReleasedBytes), fmt.Sprintf("%s traced", age.Round(time.Millisecond))
		}
		share := released / float64(m.RSSBytes)
		if sev := over(share, churnRSSWarn, churnRSSCrit); sev != "" && released >= churnMinBytes {
			src, most := "", uint64(0)
			for k, v := range m.ReleasedBySource {
				if v > most || (v == most && k < src) {
					src, most = k, v
				}
			}
			knob := "raise GOMEMLIMIT if set (the scavenger returns memory to stay under it), or GOGC, so the heap keeps what it reuses"
			switch src {
			case api.SourceFreeOSMemory:
				knob = "debug.FreeOSMemory is called repeatedly: drop the calls (the memory is faulted back at the next allocations)"
			case api.SourceBackgroundScavenger:
				knob = "the background scavenger releases what the heap needs again: raise GOMEMLIMIT above the memory in use (or unset it)"
			case api.SourceAllocation:
				knob = "allocations release memory to stay under the limit or goal: raise GOMEMLIMIT or GOGC"
			}
			out = append(out, finding(sev, f, ruleChurn, share, map[string]float64{
				"released_bytes": released, "released_bytes_per_second": f.releasePerSec, "rss_bytes": float64(m.RSSBytes),
			}, knob, "released %s to the OS over %s (mostly by %s), %.1f× its RSS of %s: the memory is faulted back in",
				humanBytes(uint64(released)), span, orDash(src), share, humanBytes(m.RSSBytes)))
		}
	}

	// Long stop-the-world pauses, and the phase.
	if sev := over(f.pauseMax, stwWarn, stwCrit); sev != "" {
		w := f.worst
		phase, knob := "sweep termination", "stopping the world waits for every goroutine to reach a safe point: look for code that cannot be preempted (tight loops with GODEBUG=asyncpreemptoff=1, long cgo calls or syscalls) and for threads waiting for a CPU (GOMAXPROCS above the CPUs the process gets)"
		if w.MarkTermSeconds > w.SweepTermSeconds {
			phase, knob = "mark termination", "mark termination finishes every P's marking: lower GOMAXPROCS if above the CPUs the process gets, fewer finalizers and very deep goroutine stacks"
		}
		out = append(out, finding(sev, f, ruleSTW, f.pauseMax/stwWarn, map[string]float64{
			"pause_max_seconds": f.pauseMax, "pause_p99_seconds": f.pauseP99,
			"sweep_term_seconds": w.SweepTermSeconds, "mark_term_seconds": w.MarkTermSeconds, "window_seconds": f.window.Seconds(),
		}, knob, "stop-the-world pause of %s in gc %d (%s: sweep termination %s, mark termination %s); p99 %s over %s",
			humanSeconds(f.pauseMax), w.Seq, phase, humanSeconds(w.SweepTermSeconds), humanSeconds(w.MarkTermSeconds), humanSeconds(f.pauseP99), win))
	}
	if n := f.p.OtherSTWCount; n > 0 {
		avg := f.p.OtherSTWSecondsTotal / float64(n)
		if sev := over(avg, stwWarn, stwCrit); sev != "" {
			out = append(out, finding(sev, f, ruleOtherSTW, avg/stwWarn, map[string]float64{
				"other_stw_count": float64(n), "other_stw_seconds_total": f.p.OtherSTWSecondsTotal,
			}, "find who stops the world: runtime.ReadMemStats (use runtime/metrics), GOMAXPROCS changes, heap or goroutine profiles",
				"%d stop-the-world pauses outside the GC, %s on average", n, humanSeconds(avg)))
		}
	}

	// Heap lock contention.
	if f.lockKnown {
		if sev := over(f.lockWaitPerSec, lockWarn, lockCrit); sev != "" {
			out = append(out, finding(sev, f, ruleHeapLock, f.lockWaitPerSec/lockWarn, map[string]float64{
				"heaplock_wait_seconds_per_second": f.lockWaitPerSec, "contended_per_second": f.p.MheapLock.ContendedPerSecond,
			}, "allocations over 32 KiB take the heap lock: reuse large buffers (sync.Pool), allocate fewer of them from many goroutines at once, or lower GOMAXPROCS",
				"threads slept %s per second for the heap lock (%.0f contended acquisitions/s)", humanSeconds(f.lockWaitPerSec), f.p.MheapLock.ContendedPerSecond))
		}
	}

	// Goroutine scheduling latency, against GOMAXPROCS and the CPU quota.
	if g := gschedHist(f.p); f.gschedKnown && g != nil && g.Count >= schedMinSamples {
		if sev := over(f.gschedP99, schedWarn, schedCrit); sev != "" {
			figs := map[string]float64{"goroutine_schedule_p99_seconds": f.gschedP99, "host_cpus": float64(host.cpus)}
			procs := "GOMAXPROCS unknown"
			var P float64
			if rt != nil && rt.GOMAXPROCS > 0 {
				P = float64(rt.GOMAXPROCS)
				figs["gomaxprocs"] = P
				procs = fmt.Sprintf("GOMAXPROCS %d", rt.GOMAXPROCS)
			}
			quota, hasQuota := 0.0, false
			if host.quota != nil {
				quota, hasQuota = host.quota(f.p.PID)
			}
			cpus := float64(host.cpus)
			if hasQuota {
				figs["cpu_quota"] = quota
				procs += fmt.Sprintf(", CPU quota %.2g", quota)
				cpus = min(cpus, quota)
			}
			runq := 0.0
			if s := f.p.Sched; s != nil {
				runq = s.RunQueueLatency.P99Seconds
				figs["runqueue_p99_seconds"] = runq
			}
			knob := "too many runnable goroutines for the Ps: bound the concurrency (worker pools), or raise GOMAXPROCS if CPUs are idle"
			switch {
			case P > 0 && hasQuota && P > math.Ceil(quota):
				knob = fmt.Sprintf("GOMAXPROCS %d is above the CPU quota %.2g: the threads are throttled; set GOMAXPROCS=%d (Go 1.25+ does it from the quota)", int(P), quota, int(math.Ceil(quota)))
			case runq >= runqBusy:
				knob = fmt.Sprintf("threads wait %s (p99) for a CPU: the CPUs are saturated; lower GOMAXPROCS or the host's load", humanSeconds(runq))
			case P > 0 && P < cpus:
				knob = fmt.Sprintf("GOMAXPROCS %d is below the %.0f CPUs available and the threads get CPU at once: raise GOMAXPROCS", int(P), cpus)
			}
			out = append(out, finding(sev, f, ruleSched, f.gschedP99/schedWarn, figs, knob,
				"runnable goroutines waited %s (p99) for a P (%s, %d host CPUs; thread run-queue p99 %s)",
				humanSeconds(f.gschedP99), procs, host.cpus, humanSeconds(runq)))
		}
	}

	// Trust: figures that are missing.
	if f.p.RuntimeError != "" {
		out = append(out, finding(sevInfo, f, ruleNoGauges, 0, nil, "see gopulsed's log; the GC and probe figures stay valid",
			"the runtime's own gauges (goal, GOGC, limit, goroutines) are not read: %s", f.p.RuntimeError))
	}
	return out
}

// diagnoseDaemon applies the rules about the figures' trust.
func diagnoseDaemon(st api.Status) []Finding {
	var out []Finding
	if !st.Ready {
		out = append(out, Finding{Severity: sevInfo, Rule: ruleNotReady, Summary: "gopulsed is still attaching to the processes found at its start",
			Knob: "wait a few seconds and ask again"})
	}
	for _, fam := range st.Families {
		switch {
		case fam.Error != "":
			out = append(out, Finding{Severity: sevWarning, Rule: ruleFamily, score: 1,
				Summary: fmt.Sprintf("probe family %s is enabled but not running: %s; its figures are missing", fam.Name, fam.Error),
				Knob:    "see gopulse status and gopulsed's log (a kernel without the tracepoint, say); SIGHUP after a fix",
				Figures: map[string]float64{}})
		case fam.LostEvents > 0:
			share := float64(fam.LostEvents) / float64(fam.LostEvents+fam.Events)
			out = append(out, Finding{Severity: sevWarning, Rule: ruleLost, score: share,
				Summary: fmt.Sprintf("probe family %s lost %d events (%.2g%% of them): its per-event figures (cycles' phases, pauses) miss some; cycle counts stay exact", fam.Name, fam.LostEvents, share*100),
				Knob:    "the ring buffer overflowed, or a user was over its share of it while the daemon lagged: fewer traced processes or a lower event rate; gopulse status names the users",
				Figures: map[string]float64{"lost_events": float64(fam.LostEvents), "events": float64(fam.Events)}})
		}
	}
	return out
}

// sortFindings puts the worst first: severity, then how far past the
// threshold, then PID.
func sortFindings(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		if c := cmp.Compare(sevRank(b.Severity), sevRank(a.Severity)); c != 0 {
			return c
		}
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.PID, b.PID)
	})
}

// cgroupQuota reads pid's CPU quota (cgroup v2 cpu.max, the tightest of
// its cgroup and their parents) in CPUs.
func cgroupQuota(pid int) (float64, bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	dir := ""
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			dir = path.Clean("/" + rest) // never above /sys/fs/cgroup
		}
	}
	if dir == "" {
		return 0, false
	}
	best, found := 0.0, false
	for d := dir; ; d = path.Dir(d) {
		b, err := os.ReadFile(path.Join("/sys/fs/cgroup", d, "cpu.max"))
		if err == nil && len(b) < 128 {
			if q, ok := parseCPUMax(string(b)); ok && (!found || q < best) {
				best, found = q, true
			}
		}
		if d == "/" {
			break
		}
	}
	return best, found
}

// parseCPUMax reads "QUOTA PERIOD" ("max PERIOD": no quota).
func parseCPUMax(s string) (float64, bool) {
	f := strings.Fields(s)
	if len(f) != 2 || f[0] == "max" {
		return 0, false
	}
	q, err1 := strconv.ParseFloat(f[0], 64)
	p, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0, false
	}
	return q / p, true
}

// doctorSample is the pause between doctor's two snapshots, for the rates
// that need two (allocation, heap-lock wait).
const doctorSample = time.Second

func execDoctor(ctx context.Context, c *api.Client, o *options, args []string, stdout io.Writer) error {
	pid := 0
	if len(args) == 1 {
		var err error
		if pid, err = parsePID(args[0]); err != nil {
			return err
		}
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	s := newTopSampler(c, o.window, false)
	var figs []figures
	if pid != 0 {
		figs, err = samplePID(ctx, c, s, pid)
	} else {
		if _, err = s.sample(ctx); err == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(doctorSample):
			}
			figs, err = s.sample(ctx)
		}
	}
	if err != nil {
		return err
	}
	host := hostFacts{cpus: numCPU(), quota: cgroupQuota}
	var out []Finding
	for i := range figs {
		out = append(out, diagnose(&figs[i], host)...)
	}
	out = append(out, diagnoseDaemon(st)...)
	sortFindings(out)
	if o.output == "json" {
		if out == nil {
			out = []Finding{}
		}
		return writeJSON(stdout, out)
	}
	return writeFindings(stdout, out, len(figs), o.window)
}

// samplePID takes two snapshots of one process, doctorSample apart (one
// if it exited: it has no rates).
func samplePID(ctx context.Context, c *api.Client, s *topSampler, pid int) ([]figures, error) {
	h, err := c.GCHistory(ctx, pid, 0)
	if err != nil {
		return nil, err
	}
	at := time.Now()
	if h.Process.Exited != nil {
		return []figures{computeFigures(h.Process, h.Cycles, nil, 0, at, s.window)}, nil
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(doctorSample):
	}
	h2, err := c.GCHistory(ctx, pid, 0)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	prev := &h.Process
	if !prev.StartTime.Equal(h2.Process.StartTime) {
		prev = nil // another process under the same PID
	}
	return []figures{computeFigures(h2.Process, h2.Cycles, prev, now.Sub(at), now, s.window)}, nil
}

func writeFindings(w io.Writer, fs []Finding, procs int, window time.Duration) error {
	var b strings.Builder
	if len(fs) == 0 {
		fmt.Fprintf(&b, "no finding: %d process(es) checked over the last %s\n", procs, window)
	}
	for _, f := range fs {
		who := "host"
		if f.PID != 0 {
			who = fmt.Sprintf("pid %d (%s)", f.PID, exeName(f.Exe))
		}
		fmt.Fprintf(&b, "%-8s  %s  %s: %s\n", strings.ToUpper(f.Severity), who, f.Rule, f.Summary)
		fmt.Fprintf(&b, "          try: %s\n", f.Knob)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
