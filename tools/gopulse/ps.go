package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/gopulse/gopulse/daemon/api"
)

// psColumn is one column of `gopulse ps`: its header, its cell, and the
// value it sorts by (--sort NAME, the header in any case).
type psColumn struct {
	name string
	cell func(api.Process) string
	// num is the numeric sort key; ok false when the figure is unknown
	// (shown "-"), which sorts last whatever the direction. Nil for a
	// column sorted by its text.
	num func(api.Process) (v float64, ok bool)
}

func known(v float64) (float64, bool) { return v, true }

// rt returns the runtime gauges' key, unknown while they are not read.
func rt(f func(*api.Runtime) float64) func(api.Process) (float64, bool) {
	return func(p api.Process) (float64, bool) {
		if p.Runtime == nil {
			return 0, false
		}
		return f(p.Runtime), true
	}
}

var psColumns = []psColumn{
	{name: "PID", cell: func(p api.Process) string { return strconv.Itoa(p.PID) },
		num: func(p api.Process) (float64, bool) { return known(float64(p.PID)) }},
	{name: "EXE", cell: func(p api.Process) string { return exeName(p.Exe) }},
	{name: "GO", cell: func(p api.Process) string { return orDash(p.GoVersion) }},
	{name: "GC", cell: func(p api.Process) string { return strconv.FormatUint(p.GCCycles, 10) },
		num: func(p api.Process) (float64, bool) { return known(float64(p.GCCycles)) }},
	{name: "FORCED", cell: func(p api.Process) string { return strconv.FormatUint(p.GCForcedCycles, 10) },
		num: func(p api.Process) (float64, bool) { return known(float64(p.GCForcedCycles)) }},
	{name: "TOTAL-PAUSE", cell: func(p api.Process) string { return humanSeconds(p.GCPauseSecondsTotal) },
		num: func(p api.Process) (float64, bool) { return known(p.GCPauseSecondsTotal) }},
	{name: "LAST-PAUSE", cell: func(p api.Process) string { return humanSeconds(p.GCLastPauseSeconds) },
		num: func(p api.Process) (float64, bool) { return known(p.GCLastPauseSeconds) }},
	{name: "CYCLES/S", cell: func(p api.Process) string { return strconv.FormatFloat(p.GCCyclesPerSecond, 'f', 2, 64) },
		num: func(p api.Process) (float64, bool) { return known(p.GCCyclesPerSecond) }},
	{name: "HEAP", cell: func(p api.Process) string {
		if p.Runtime == nil {
			return "-"
		}
		return humanBytes(p.HeapLiveBytes)
	}, num: rt(func(r *api.Runtime) float64 { return float64(r.HeapLiveBytes) })},
	{name: "GOAL", cell: func(p api.Process) string {
		if p.Runtime == nil {
			return "-"
		}
		return humanBytes(p.GCGoalBytes)
	}, num: rt(func(r *api.Runtime) float64 { return float64(r.GCGoalBytes) })},
	{name: "GOGC", cell: func(p api.Process) string {
		if p.Runtime == nil {
			return "-"
		}
		return gogcString(p.GOGCPercent)
	}, num: rt(func(r *api.Runtime) float64 {
		if r.GOGCPercent < 0 {
			return math.Inf(1) // off: the most memory-hungry setting
		}
		return float64(r.GOGCPercent)
	})},
	{name: "LIMIT", cell: func(p api.Process) string {
		if p.Runtime == nil {
			return "-"
		}
		return limitString(p.MemoryLimitBytes)
	}, num: rt(func(r *api.Runtime) float64 { return float64(r.MemoryLimitBytes) })},
	{name: "GOROUTINES", cell: func(p api.Process) string {
		if p.Runtime == nil {
			return "-"
		}
		return strconv.FormatInt(p.Goroutines, 10)
	}, num: rt(func(r *api.Runtime) float64 { return float64(r.Goroutines) })},
	{name: "HEAPLOCK-WAIT", cell: func(p api.Process) string {
		if p.MheapLock == nil {
			return "-"
		}
		return humanSeconds(p.MheapLock.WaitSeconds)
	}, num: func(p api.Process) (float64, bool) {
		if p.MheapLock == nil {
			return 0, false
		}
		return p.MheapLock.WaitSeconds, true
	}},
	{name: "RELEASED", cell: func(p api.Process) string {
		if p.Madvise == nil {
			return "-"
		}
		return humanBytes(p.Madvise.ReleasedBytes)
	}, num: func(p api.Process) (float64, bool) {
		if p.Madvise == nil {
			return 0, false
		}
		return float64(p.Madvise.ReleasedBytes), true
	}},
	{name: "RSS", cell: func(p api.Process) string {
		if p.Madvise == nil || p.Exited != nil {
			return "-"
		}
		return humanBytes(p.Madvise.RSSBytes)
	}, num: func(p api.Process) (float64, bool) {
		if p.Madvise == nil || p.Exited != nil {
			return 0, false
		}
		return float64(p.Madvise.RSSBytes), true
	}},
	{name: "RUNQ-P99", cell: func(p api.Process) string {
		if p.Sched == nil {
			return "-"
		}
		return humanSeconds(p.Sched.RunQueueLatency.P99Seconds)
	}, num: func(p api.Process) (float64, bool) {
		if p.Sched == nil {
			return 0, false
		}
		return p.Sched.RunQueueLatency.P99Seconds, true
	}},
	{name: "GSCHED-P99", cell: func(p api.Process) string {
		if v, ok := gschedP99(p); ok {
			return humanSeconds(v)
		}
		return "-"
	}, num: gschedP99},
	{name: "THREADS", cell: func(p api.Process) string {
		if p.Sched == nil {
			return "-"
		}
		return strconv.Itoa(p.Sched.Threads)
	}, num: func(p api.Process) (float64, bool) {
		if p.Sched == nil {
			return 0, false
		}
		return float64(p.Sched.Threads), true
	}},
	{name: "STATE", cell: state},
}

func gschedP99(p api.Process) (float64, bool) {
	if p.Sched == nil || p.Sched.GoroutineLatency == nil || p.Sched.GoroutineLatency.Count == 0 {
		return 0, false
	}
	return p.Sched.GoroutineLatency.P99Seconds, true
}

func gogcString(pct int64) string {
	if pct < 0 {
		return "off"
	}
	return strconv.FormatInt(pct, 10)
}

func limitString(b int64) string {
	if b == math.MaxInt64 || b < 0 {
		return "none"
	}
	return humanBytes(uint64(b))
}

// psSort is a parsed --sort: a column, descending with a leading '-'.
type psSort struct {
	col  *psColumn
	desc bool
}

// parsePSSort reads --sort COLUMN or -COLUMN (descending); column names
// are the headers, in any case.
func parsePSSort(s string) (psSort, error) {
	name, desc := strings.CutPrefix(s, "-")
	for i := range psColumns {
		if strings.EqualFold(psColumns[i].name, name) {
			return psSort{col: &psColumns[i], desc: desc}, nil
		}
	}
	var names []string
	for _, c := range psColumns {
		names = append(names, strings.ToLower(c.name))
	}
	return psSort{}, fmt.Errorf("bad --sort %q: expected a column (%s), with a leading - for descending", s, strings.Join(names, ", "))
}

// sortPS orders ps by the column, PID breaking ties; unknown figures last.
func sortPS(ps []api.Process, by psSort) {
	slices.SortStableFunc(ps, func(a, b api.Process) int {
		var c int
		if by.col.num != nil {
			va, oka := by.col.num(a)
			vb, okb := by.col.num(b)
			switch {
			case oka != okb:
				if oka {
					return -1
				}
				return 1
			case oka:
				c = cmp.Compare(va, vb)
			}
		} else {
			c = strings.Compare(by.col.cell(a), by.col.cell(b))
		}
		if by.desc {
			c = -c
		}
		if c == 0 {
			c = a.PID - b.PID
		}
		return c
	})
}

// selectPS keeps the running processes unless all.
func selectPS(ps []api.Process, all bool) []api.Process {
	if all {
		return ps
	}
	return slices.DeleteFunc(ps, func(p api.Process) bool { return p.Exited != nil })
}

func writePS(w io.Writer, ps []api.Process) error {
	if len(ps) == 0 {
		_, err := fmt.Fprintln(w, "no Go process traced")
		return err
	}
	tw := newTable(w)
	cells := make([]string, len(psColumns))
	for i, c := range psColumns {
		cells[i] = c.name
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
	for _, p := range ps {
		for i, c := range psColumns {
			cells[i] = c.cell(p)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}
