package main

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/sanitize"
)

// now is the clock used for uptimes; tests may replace it.
var now = time.Now

const timeLayout = "2006-01-02 15:04:05 MST"

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writeGC prints a process's GC history; last is how many cycles were asked
// for (0: all kept).
func writeGC(w io.Writer, h api.GCHistory, last int) error {
	p := h.Process
	var b strings.Builder
	fmt.Fprintf(&b, "PID %d  %s  %s", p.PID, exeName(p.Exe), orDash(p.GoVersion))
	if shape := binaryShape(p); shape != "" {
		fmt.Fprintf(&b, "  (%s)", shape)
	}
	if p.Exe != "" && p.Exe != exeName(p.Exe) {
		fmt.Fprintf(&b, "\n  %s", p.Exe)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  started %s, traced since %s, %s\n", fmtTime(p.StartTime), fmtTime(p.FirstSeen), stateLong(p))
	fmt.Fprintf(&b, "  %d GC cycles (%d forced), %.2f/s; pause %s total, %s last; assist %s total (observed cycles)\n",
		p.GCCycles, p.GCForcedCycles, p.GCCyclesPerSecond,
		humanSeconds(p.GCPauseSecondsTotal), humanSeconds(p.GCLastPauseSeconds),
		humanSeconds(p.GCAssistSecondsTotal))
	if r := p.Runtime; r != nil {
		fmt.Fprintf(&b, "  heap %s live, goal %s, GOGC %s, limit %s; %d goroutines, GOMAXPROCS %d; %s used\n",
			humanBytes(r.HeapLiveBytes), humanBytes(r.GCGoalBytes), gogcString(r.GOGCPercent), limitString(r.MemoryLimitBytes),
			r.Goroutines, r.GOMAXPROCS, humanBytes(r.MemoryUsedBytes))
	} else if p.RuntimeError != "" {
		fmt.Fprintf(&b, "  runtime books not read: %s\n", p.RuntimeError)
	}
	if p.OtherSTWCount > 0 {
		fmt.Fprintf(&b, "  %d non-GC stop-the-world pauses, %s total\n", p.OtherSTWCount, humanSeconds(p.OtherSTWSecondsTotal))
	}
	b.WriteString("\n")
	if len(h.Cycles) == 0 {
		b.WriteString("no GC cycle yet\n")
	}
	for _, c := range h.Cycles {
		b.WriteString(gctraceLine(c))
		b.WriteString("\n")
	}
	if n := uint64(len(h.Cycles)); n > 0 && n < p.GCCycles {
		if last > 0 && len(h.Cycles) == last {
			fmt.Fprintf(&b, "(last %d of %d cycles; --last N for more, 0 for all kept)\n", n, p.GCCycles)
		} else {
			fmt.Fprintf(&b, "(the daemon kept the last %d of %d cycles)\n", n, p.GCCycles)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// gctraceLine formats a cycle the way GODEBUG=gctrace=1 would:
//
//	gc 12 @3.402s forced: 0.021+1.3+0.045 ms clock, pause 0.066 ms, assist 0.20 ms, 4->5 MB heap
func gctraceLine(c api.GCCycle) string {
	if c.BeforeProbes {
		// Only the runtime's pause ring remembers it.
		return fmt.Sprintf("gc %d (before the probes) ended %s, pause %s ms", c.Seq, c.End.Local().Format("15:04:05.000"), gctraceMS(c.PauseSeconds))
	}
	trigger := c.Trigger
	if trigger == "" {
		if c.Forced {
			trigger = api.TriggerForced
		} else {
			trigger = "?"
		}
	}
	s := fmt.Sprintf("gc %d @%.3fs %s: %s+%s+%s ms clock, pause %s ms, assist %s ms, %d->%d->%d MB, %d MB goal",
		c.Seq, c.SinceProcessStart, trigger,
		gctraceMS(c.SweepTermSeconds), gctraceMS(c.MarkSeconds), gctraceMS(c.MarkTermSeconds),
		gctraceMS(c.PauseSeconds), gctraceMS(c.AssistSeconds),
		c.HeapStartBytes>>20, c.HeapEndBytes>>20, c.HeapMarkedBytes>>20, c.NextGoalBytes>>20)
	if c.Partial {
		s += " (partial)"
	}
	return s
}

// gctraceMS formats seconds as milliseconds like the runtime's fmtNSAsMS:
// whole milliseconds from 10ms up, else two significant digits with at most
// three decimals (0.021, 0.20, 1.3).
func gctraceMS(sec float64) string {
	if !(sec > 0) || math.IsInf(sec, 0) {
		return "0"
	}
	ns := uint64(math.Round(sec * 1e9))
	if ns >= 10e6 {
		return strconv.FormatUint(ns/1e6, 10)
	}
	x := ns / 1e3
	if x == 0 {
		return "0"
	}
	dec := 3
	for x >= 100 {
		x /= 10
		dec--
	}
	s := strconv.FormatUint(x, 10)
	if dec == 0 {
		return s
	}
	for len(s) <= dec {
		s = "0" + s
	}
	return s[:len(s)-dec] + "." + s[len(s)-dec:]
}

// humanSeconds formats a duration in seconds with about three significant
// digits and a unit: 850ns, 66µs, 1.3ms, 2.45s, 1h2m3s.
func humanSeconds(sec float64) string {
	switch {
	case math.IsNaN(sec) || math.IsInf(sec, 0):
		return "?"
	case sec == 0:
		return "0"
	case sec < 0:
		return "-" + humanSeconds(-sec)
	case sec < 1e-6:
		return strconv.FormatFloat(sec*1e9, 'f', 0, 64) + "ns"
	case sec < 1e-3:
		return sig3(sec*1e6) + "µs"
	case sec < 1:
		return sig3(sec*1e3) + "ms"
	case sec < 60:
		return sig3(sec) + "s"
	default:
		return time.Duration(sec * float64(time.Second)).Round(time.Second).String()
	}
}

// sig3 formats v (in [1, 1000)) with three significant digits, without
// trailing zeros.
func sig3(v float64) string {
	prec := 2
	switch {
	case v >= 100:
		prec = 0
	case v >= 10:
		prec = 1
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func writeStatus(w io.Writer, st api.Status) error {
	var b strings.Builder
	starting := ""
	if !st.Ready {
		starting = "; starting: attaching to the processes found at start"
	}
	fmt.Fprintf(&b, "gopulsed %s, up %s (started %s)%s\n", orDash(st.Version), uptime(st.Started), fmtTime(st.Started), starting)
	probes := "none"
	if len(st.Probes) > 0 {
		probes = strings.Join(st.Probes, ", ")
	}
	fmt.Fprintf(&b, "probe families: %s\n", probes)
	fmt.Fprintf(&b, "processes: %d traced, %d dropped (over --max-pids)\n", st.Processes, st.ProcessesDropped)
	if n := len(st.AttachLatencySeconds); n > 0 {
		lats := make([]string, n)
		lo, hi := math.Inf(1), math.Inf(-1)
		for i, l := range st.AttachLatencySeconds {
			lats[i] = humanSeconds(l)
			lo, hi = math.Min(lo, l), math.Max(hi, l)
		}
		fmt.Fprintf(&b, "attach latency (last %d binaries): %s (min %s, max %s)\n",
			n, strings.Join(lats, " "), humanSeconds(lo), humanSeconds(hi))
	} else {
		b.WriteString("attach latency: no binary attached yet\n")
	}

	b.WriteString("\n")
	if len(st.Binaries) == 0 {
		b.WriteString("no Go binary probed\n")
	} else {
		tw := newTable(&b)
		fmt.Fprintln(tw, "BINARY\tGO\tPROCESSES\tPROBES\tERRORS")
		for _, bin := range st.Binaries {
			errs := "-"
			if len(bin.Errors) > 0 {
				errs = strings.Join(bin.Errors, "; ")
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", orDash(bin.Path), orDash(bin.GoVersion), bin.Processes, bin.Probes, errs)
		}
		tw.Flush()
	}
	if len(st.Refused) > 0 {
		b.WriteString("\nrefused (no probes):\n")
		tw := newTable(&b)
		fmt.Fprintln(tw, "BINARY\tGO\tWHY")
		for _, bin := range st.Refused {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", orDash(bin.Path), orDash(bin.GoVersion), strings.Join(bin.Errors, "; "))
		}
		tw.Flush()
	}

	b.WriteString("\n")
	if len(st.Families) > 0 {
		tw := newTable(&b)
		fmt.Fprintln(tw, "FAMILY\tEVENTS\tLOST\tHITS\tHITS/S\tTRAPS/S\tTRAPS/GC\tEST-COST")
		for _, f := range st.Families {
			if f.Error != "" {
				fmt.Fprintf(tw, "%s\tNOT RUNNING: %s\n", f.Name, f.Error)
				continue
			}
			perGC := "-"
			if f.UprobeHitsPerGCCycle > 0 {
				perGC = strconv.FormatFloat(f.UprobeHitsPerGCCycle, 'f', 2, 64)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", f.Name, f.Events, f.LostEvents, f.Hits,
				strconv.FormatFloat(f.HitsPerSecond, 'f', 0, 64), strconv.FormatFloat(f.UprobeHitsPerSecond, 'f', 0, 64),
				perGC, costString(f.EstCostSecondsPerSecond))
		}
		tw.Flush()
		for _, f := range st.Families {
			for _, fb := range f.KernelFallbacks {
				fmt.Fprintf(&b, "%s on this kernel: without %s\n", f.Name, fb)
			}
		}
		// Per-UID shares of the rings: only the UIDs that lost records
		// over their share (the list is in -o json).
		for _, f := range st.Families {
			for _, u := range f.UIDShares {
				if u.Dropped == 0 {
					continue
				}
				uid := strconv.FormatInt(u.UID, 10)
				if u.UID < 0 {
					uid = "beyond the 4096th"
				}
				fmt.Fprintf(&b, "%s ring (%s, %d records/s per uid): uid %s over its share, %d of %d records dropped\n",
					f.Name, humanBytes(uint64(f.RingBytes)), f.RingSharePerSecond, uid, u.Dropped, u.Dropped+u.Sent)
			}
		}
		trap := "not measured yet"
		if st.TrapCostNs > 0 {
			trap = fmt.Sprintf("%s per uprobe hit (%s)", humanSeconds(st.TrapCostNs/1e9), st.TrapCostSource)
		} else if st.TrapCostSource != "" {
			trap = st.TrapCostSource
		}
		fmt.Fprintf(&b, "\ntrap cost: %s. EST-COST = traps/s x trap cost + BPF run time/s, in CPU time per second across\n"+
			"the traced programs (1%% = 10ms of one CPU per second). Hit counts need kernel.bpf_stats_enabled (on while gopulsed runs).\n", trap)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func exeName(path string) string {
	if path == "" {
		return "?"
	}
	// Also what the full-screen view draws, past the output Writer.
	return sanitize.Name(filepath.Base(path))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func state(p api.Process) string {
	if p.Exited != nil {
		return "exited"
	}
	return "running"
}

func stateLong(p api.Process) string {
	if p.Exited != nil {
		return "exited " + fmtTime(*p.Exited)
	}
	return "running"
}

func binaryShape(p api.Process) string {
	var s []string
	if p.PIE {
		s = append(s, "pie")
	}
	if p.Static {
		s = append(s, "static")
	}
	if p.Stripped {
		s = append(s, "stripped")
	}
	return strings.Join(s, ", ")
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "?"
	}
	return t.Local().Format(timeLayout)
}

func uptime(started time.Time) string {
	if started.IsZero() {
		return "?"
	}
	d := now().Sub(started)
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String()
}

// costString formats CPU seconds per second as a percentage of one CPU.
func costString(v float64) string {
	if !(v > 0) {
		return "0"
	}
	pct := v * 100
	switch {
	case pct < 0.001:
		return "<0.001%"
	case pct < 1:
		return strconv.FormatFloat(pct, 'f', 3, 64) + "%"
	}
	return strconv.FormatFloat(pct, 'f', 1, 64) + "%"
}

// humanBytes formats a byte count with a binary unit: 512B, 4.0KiB, 130MiB.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + "B"
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return sig3(v) + []string{"KiB", "MiB", "GiB", "TiB", "PiB"}[i]
}

func histLine(h api.Histogram) string {
	if h.Count == 0 {
		return "none"
	}
	return fmt.Sprintf("%d, p50 %s, p90 %s, p99 %s, total %s", h.Count,
		humanSeconds(h.P50Seconds), humanSeconds(h.P90Seconds), humanSeconds(h.P99Seconds), humanSeconds(h.SumSeconds))
}

// pow2 folds a histogram's buckets into power-of-two ones by upper bound
// (a bucket with upper bound u in (2^(j-1), 2^j] ns goes to 2^j ns).
func pow2(h api.Histogram) api.Histogram {
	out := h
	out.BucketUpperSeconds, out.Counts = nil, nil
	idx := map[float64]int{}
	for i, c := range h.Counts {
		up := h.BucketUpperSeconds[i]
		if j := api.Pow2Bucket(up); j > 0 {
			up = math.Ldexp(1, j) / 1e9
		}
		j, ok := idx[up]
		if !ok {
			j = len(out.Counts)
			idx[up] = j
			out.BucketUpperSeconds = append(out.BucketUpperSeconds, up)
			out.Counts = append(out.Counts, 0)
		}
		out.Counts[j] += c
	}
	return out
}

// histBars draws a histogram's buckets, one line each.
func histBars(b *strings.Builder, h api.Histogram) {
	var peak uint64
	for _, c := range h.Counts {
		peak = max(peak, c)
	}
	if peak == 0 {
		return
	}
	first := 0
	for first < len(h.Counts) && h.Counts[first] == 0 {
		first++
	}
	for i := first; i < len(h.Counts); i++ {
		up := "+Inf"
		if h.BucketUpperSeconds[i] >= 0 {
			up = humanSeconds(h.BucketUpperSeconds[i])
		}
		n := int(h.Counts[i] * 40 / peak)
		if h.Counts[i] > 0 && n == 0 {
			n = 1
		}
		fmt.Fprintf(b, "    <= %-7s %10d %s\n", up, h.Counts[i], strings.Repeat("#", n))
	}
}

func sectionHeader(b *strings.Builder, p api.Process) {
	fmt.Fprintf(b, "PID %d  %s  %s  %s\n", p.PID, exeName(p.Exe), orDash(p.GoVersion), stateLong(p))
}

func writeLock(w io.Writer, p api.Process) error {
	var b strings.Builder
	sectionHeader(&b, p)
	l := p.MheapLock
	if l == nil {
		b.WriteString("no heap-lock figures: the mheaplock family is off (gopulsed --probes ...,mheaplock) or has not seen this process\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	fmt.Fprintf(&b, "runtime.mheap_.lock (observed via %s):\n", l.Method)
	fmt.Fprintf(&b, "  contended acquisitions (slept): %d, %.2f/s\n", l.Contended, l.ContendedPerSecond)
	fmt.Fprintf(&b, "  wait: %s\n", histLine(l.Wait))
	histBars(&b, l.Wait)
	fmt.Fprintf(&b, "other runtime locks: %d contended, %s waited\n", l.OtherContended, humanSeconds(l.OtherWaitSeconds))
	_, err := io.WriteString(w, b.String())
	return err
}

func writeMem(w io.Writer, p api.Process) error {
	var b strings.Builder
	sectionHeader(&b, p)
	m := p.Madvise
	if m == nil {
		b.WriteString("no madvise figures: the madvise family is off or this process made no madvise call yet\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	fmt.Fprintf(&b, "released to the OS: %s total, %s/s (last minute); RSS now %s\n",
		humanBytes(m.ReleasedBytes), humanBytes(uint64(m.ReleasedBytesPerSecond)), humanBytes(m.RSSBytes))
	if len(m.ReleasedBySource) > 0 {
		var parts []string
		for _, k := range []string{api.SourceBackgroundScavenger, api.SourceAllocation, api.SourceFreeOSMemory, api.SourceOther, api.SourceUnknown} {
			if v, ok := m.ReleasedBySource[k]; ok {
				parts = append(parts, k+" "+humanBytes(v))
			}
		}
		fmt.Fprintf(&b, "  by who asked: %s\n", strings.Join(parts, ", "))
	}
	tw := newTable(&b)
	fmt.Fprintln(tw, "  ADVICE\tCALLS\tBYTES")
	for _, a := range m.Advice {
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", a.Advice, a.Calls, humanBytes(a.Bytes))
	}
	tw.Flush()
	if m.Errors > 0 {
		fmt.Fprintf(&b, "  failed calls: %d\n", m.Errors)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeSched(w io.Writer, p api.Process) error {
	var b strings.Builder
	sectionHeader(&b, p)
	s := p.Sched
	if s == nil {
		b.WriteString("no scheduling figures: the sched family is off or has not seen this process yet\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	fmt.Fprintf(&b, "OS threads: %d; on CPU %s, off CPU (blocked) %s, waiting to run %s\n", s.Threads,
		humanSeconds(s.OnCPUSeconds), humanSeconds(s.OffCPUSeconds), humanSeconds(s.RunQueueSeconds))
	fmt.Fprintf(&b, "switches: %d voluntary, %d involuntary (preempted)\n", s.VoluntarySwitches, s.InvoluntarySwitches)
	fmt.Fprintf(&b, "run-queue latency: %s\n", histLine(s.RunQueueLatency))
	histBars(&b, s.RunQueueLatency)
	switch g := s.GoroutineLatency; {
	case g != nil:
		// The runtime's histogram has no sum and ~160 fine buckets: print
		// quantiles and power-of-two bars.
		line := "none"
		if g.Count > 0 {
			line = fmt.Sprintf("%d sampled (1 in 8 transitions), p50 %s, p90 %s, p99 %s", g.Count,
				humanSeconds(g.P50Seconds), humanSeconds(g.P90Seconds), humanSeconds(g.P99Seconds))
		}
		fmt.Fprintf(&b, "goroutine scheduling latency (runnable to running, runtime's own histogram): %s\n", line)
		histBars(&b, pow2(*g))
	case s.GoroutineLatencyError != "":
		fmt.Fprintf(&b, "goroutine scheduling latency: not available: %s\n", s.GoroutineLatencyError)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
