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
)

// now is the clock used for uptimes; tests may replace it.
var now = time.Now

const timeLayout = "2006-01-02 15:04:05 MST"

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

func writePS(w io.Writer, ps []api.Process) error {
	if len(ps) == 0 {
		_, err := fmt.Fprintln(w, "no Go process traced")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "PID\tEXE\tGO\tGC\tFORCED\tTOTAL-PAUSE\tLAST-PAUSE\tCYCLES/S\tSTATE")
	for _, p := range ps {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n",
			p.PID, exeName(p.Exe), orDash(p.GoVersion),
			p.GCCycles, p.GCForcedCycles,
			humanSeconds(p.GCPauseSecondsTotal), humanSeconds(p.GCLastPauseSeconds),
			strconv.FormatFloat(p.GCCyclesPerSecond, 'f', 2, 64), state(p))
	}
	return tw.Flush()
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
	fmt.Fprintf(&b, "  %d GC cycles observed (%d forced), %.2f/s; pause %s total, %s last; assist %s total\n",
		p.GCCycles, p.GCForcedCycles, p.GCCyclesPerSecond,
		humanSeconds(p.GCPauseSecondsTotal), humanSeconds(p.GCLastPauseSeconds),
		humanSeconds(p.GCAssistSecondsTotal))
	if p.OtherSTWCount > 0 {
		fmt.Fprintf(&b, "  %d non-GC stop-the-world pauses, %s total\n", p.OtherSTWCount, humanSeconds(p.OtherSTWSecondsTotal))
	}
	b.WriteString("\n")
	if len(h.Cycles) == 0 {
		b.WriteString("no GC cycle observed yet\n")
	}
	for _, c := range h.Cycles {
		b.WriteString(gctraceLine(c))
		b.WriteString("\n")
	}
	if n := uint64(len(h.Cycles)); n > 0 && n < p.GCCycles {
		if last > 0 && len(h.Cycles) == last {
			fmt.Fprintf(&b, "(last %d of %d observed cycles; --last N for more, 0 for all kept)\n", n, p.GCCycles)
		} else {
			fmt.Fprintf(&b, "(the daemon kept the last %d of %d observed cycles)\n", n, p.GCCycles)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// gctraceLine formats a cycle the way GODEBUG=gctrace=1 would:
//
//	gc 12 @3.402s forced: 0.021+1.3+0.045 ms clock, pause 0.066 ms, assist 0.20 ms, 4->5 MB heap
func gctraceLine(c api.GCCycle) string {
	trigger := c.Trigger
	if trigger == "" {
		if c.Forced {
			trigger = api.TriggerForced
		} else {
			trigger = "?"
		}
	}
	s := fmt.Sprintf("gc %d @%.3fs %s: %s+%s+%s ms clock, pause %s ms, assist %s ms, %d->%d MB heap",
		c.Seq, c.SinceProcessStart, trigger,
		gctraceMS(c.SweepTermSeconds), gctraceMS(c.MarkSeconds), gctraceMS(c.MarkTermSeconds),
		gctraceMS(c.PauseSeconds), gctraceMS(c.AssistSeconds),
		c.HeapStartBytes>>20, c.HeapEndBytes>>20)
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
	fmt.Fprintf(&b, "gopulsed %s, up %s (started %s)\n", orDash(st.Version), uptime(st.Started), fmtTime(st.Started))
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

	b.WriteString("\n")
	if len(st.Families) > 0 {
		tw := newTable(&b)
		fmt.Fprintln(tw, "FAMILY\tEVENTS\tLOST\tHITS")
		for _, f := range st.Families {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", f.Name, f.Events, f.LostEvents, f.Hits)
		}
		tw.Flush()
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func exeName(path string) string {
	if path == "" {
		return "?"
	}
	return filepath.Base(path)
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
