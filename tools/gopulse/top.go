package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

// maxTopProcs bounds the processes whose cycles top fetches per refresh
// (one request each).
const maxTopProcs = 256

// topColumn is one column of top: header, cell and sort key (ok false:
// unknown, shown "-", sorted last).
type topColumn struct {
	name string
	cell func(*figures) string
	num  func(*figures) (float64, bool)
}

func dashUnless(ok bool, s func() string) string {
	if !ok {
		return "-"
	}
	return s()
}

var topColumns = []topColumn{
	{"PID", func(f *figures) string { return strconv.Itoa(f.p.PID) },
		func(f *figures) (float64, bool) { return float64(f.p.PID), true }},
	{"EXE", func(f *figures) string { return exeName(f.p.Exe) }, nil},
	{"GC/S", func(f *figures) string { return strconv.FormatFloat(f.gcPerSec, 'f', 2, 64) },
		func(f *figures) (float64, bool) { return f.gcPerSec, true }},
	{"GC-CPU", func(f *figures) string { return pct(f.gcCPU) },
		func(f *figures) (float64, bool) { return f.gcCPU, true }},
	{"PAUSE-P99", func(f *figures) string {
		return dashUnless(len(f.pauses) > 0, func() string { return humanSeconds(f.pauseP99) })
	},
		func(f *figures) (float64, bool) { return f.pauseP99, len(f.pauses) > 0 }},
	{"PAUSE-MAX", func(f *figures) string {
		return dashUnless(len(f.pauses) > 0, func() string { return humanSeconds(f.pauseMax) })
	},
		func(f *figures) (float64, bool) { return f.pauseMax, len(f.pauses) > 0 }},
	{"HEAP", func(f *figures) string {
		return dashUnless(f.p.Runtime != nil, func() string { return humanBytes(f.p.HeapLiveBytes) })
	}, func(f *figures) (float64, bool) {
		return rtNum(f, func(r *api.Runtime) float64 { return float64(r.HeapLiveBytes) })
	}},
	{"GOAL", func(f *figures) string {
		return dashUnless(f.p.Runtime != nil, func() string { return humanBytes(f.p.GCGoalBytes) })
	}, func(f *figures) (float64, bool) {
		return rtNum(f, func(r *api.Runtime) float64 { return float64(r.GCGoalBytes) })
	}},
	{"LIMIT", func(f *figures) string {
		return dashUnless(f.p.Runtime != nil, func() string { return limitString(f.p.MemoryLimitBytes) })
	}, func(f *figures) (float64, bool) {
		return rtNum(f, func(r *api.Runtime) float64 { return float64(r.MemoryLimitBytes) })
	}},
	{"GOROUTINES", func(f *figures) string {
		return dashUnless(f.p.Runtime != nil, func() string { return strconv.FormatInt(f.p.Goroutines, 10) })
	}, func(f *figures) (float64, bool) {
		return rtNum(f, func(r *api.Runtime) float64 { return float64(r.Goroutines) })
	}},
	{"GSCHED-P99", func(f *figures) string {
		return dashUnless(f.gschedKnown, func() string { return humanSeconds(f.gschedP99) })
	},
		func(f *figures) (float64, bool) { return f.gschedP99, f.gschedKnown }},
	{"HEAPLOCK-WAIT/S", func(f *figures) string {
		return dashUnless(f.lockKnown, func() string { return humanSeconds(f.lockWaitPerSec) })
	}, func(f *figures) (float64, bool) { return f.lockWaitPerSec, f.lockKnown }},
	{"RELEASE/S", func(f *figures) string {
		return dashUnless(f.releaseKnown, func() string { return humanBytes(uint64(f.releasePerSec)) })
	}, func(f *figures) (float64, bool) { return f.releasePerSec, f.releaseKnown }},
	{"STATE", func(f *figures) string { return state(f.p) }, nil},
}

func rtNum(f *figures, get func(*api.Runtime) float64) (float64, bool) {
	if f.p.Runtime == nil {
		return 0, false
	}
	return get(f.p.Runtime), true
}

// pct formats a share as a percentage.
func pct(v float64) string {
	switch {
	case !(v > 0):
		return "0%"
	case v < 0.001:
		return "<0.1%"
	case v < 0.1:
		return strconv.FormatFloat(v*100, 'f', 1, 64) + "%"
	}
	return strconv.FormatFloat(v*100, 'f', 0, 64) + "%"
}

// topColumnIndex finds a column by header (any case).
func topColumnIndex(name string) (int, bool) {
	for i, c := range topColumns {
		if strings.EqualFold(c.name, name) {
			return i, true
		}
	}
	return 0, false
}

// topView is what top shows: which processes, in which order.
type topView struct {
	sortCol int
	desc    bool
	filter  string // substring of the PID, exe or service name
	all     bool   // exited processes too
}

func (v *topView) sortName() string {
	d := ""
	if v.desc {
		d = "-"
	}
	return d + strings.ToLower(topColumns[v.sortCol].name)
}

// apply filters and orders figs.
func (v *topView) apply(figs []figures) []figures {
	out := slices.DeleteFunc(slices.Clone(figs), func(f figures) bool {
		if !v.all && f.p.Exited != nil {
			return true
		}
		if v.filter == "" {
			return false
		}
		return !strings.Contains(strconv.Itoa(f.p.PID), v.filter) &&
			!strings.Contains(strings.ToLower(f.p.Exe), strings.ToLower(v.filter)) &&
			!strings.Contains(strings.ToLower(f.p.ServiceName), strings.ToLower(v.filter))
	})
	col := topColumns[v.sortCol]
	slices.SortStableFunc(out, func(a, b figures) int {
		var c int
		if col.num != nil {
			va, oka := col.num(&a)
			vb, okb := col.num(&b)
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
			c = strings.Compare(col.cell(&a), col.cell(&b))
		}
		if v.desc {
			c = -c
		}
		if c == 0 {
			c = a.p.PID - b.p.PID
		}
		return c
	})
	return out
}

// topSampler fetches snapshots and turns them into figures, keeping the
// previous snapshot for the rates.
type topSampler struct {
	c      *api.Client
	window time.Duration
	all    atomic.Bool // exited processes too (the live view's key toggles it)
	prev   map[int]api.Process
	prevAt time.Time
	now    func() time.Time
}

func newTopSampler(c *api.Client, window time.Duration, all bool) *topSampler {
	s := &topSampler{c: c, window: window, prev: map[int]api.Process{}, now: time.Now}
	s.all.Store(all)
	return s
}

func (s *topSampler) sample(ctx context.Context) ([]figures, error) {
	ps, err := s.c.Processes(ctx)
	if err != nil {
		return nil, err
	}
	at := s.now()
	dt := at.Sub(s.prevAt)
	next := map[int]api.Process{}
	var figs []figures
	for _, p := range ps {
		if !s.all.Load() && p.Exited != nil {
			continue
		}
		var cycles []api.GCCycle
		if len(figs) < maxTopProcs {
			h, err := s.c.GCHistory(ctx, p.PID, 0)
			switch {
			case errors.Is(err, api.ErrNoProcess):
				continue // forgotten since the list
			case err != nil:
				return nil, err
			}
			p, cycles = h.Process, h.Cycles
		}
		var prev *api.Process
		if q, ok := s.prev[p.PID]; ok && q.StartTime.Equal(p.StartTime) {
			prev = &q
		}
		figs = append(figs, computeFigures(p, cycles, prev, dt, at, s.window))
		next[p.PID] = p
	}
	s.prev, s.prevAt = next, at
	return figs, nil
}

// writeTopTable prints figs as a plain table (top -b).
func writeTopTable(w io.Writer, figs []figures) error {
	tw := newTable(w)
	cells := make([]string, len(topColumns))
	for i, c := range topColumns {
		cells[i] = c.name
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
	for i := range figs {
		for j, c := range topColumns {
			cells[j] = c.cell(&figs[i])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func topTitle(at time.Time, shown, total int, v *topView, window time.Duration) string {
	s := fmt.Sprintf("gopulse top - %s - %d of %d processes - window %s - sort %s", at.Format("15:04:05"), shown, total, window, v.sortName())
	if v.filter != "" {
		s += fmt.Sprintf(" - filter %q", v.filter)
	}
	return s
}

// runTopBatch prints a snapshot every delay, n times (0: until
// interrupted), as top -b does.
func runTopBatch(ctx context.Context, s *topSampler, v *topView, n int, delay time.Duration, stdout io.Writer) error {
	for i := 0; n <= 0 || i < n; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
		}
		figs, err := s.sample(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		shown := v.apply(figs)
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		fmt.Fprintln(stdout, topTitle(s.prevAt, len(shown), len(figs), v, s.window))
		if err := writeTopTable(stdout, shown); err != nil {
			return err
		}
	}
	return nil
}

// parseTopSort reads top's --sort: a column, descending with a leading '-'.
func parseTopSort(s string) (topView, error) {
	name, desc := strings.CutPrefix(s, "-")
	i, ok := topColumnIndex(name)
	if !ok {
		var names []string
		for _, c := range topColumns {
			names = append(names, strings.ToLower(c.name))
		}
		return topView{}, fmt.Errorf("bad --sort %q: expected a column (%s), with a leading - for descending", s, strings.Join(names, ", "))
	}
	return topView{sortCol: i, desc: desc}, nil
}

func execTop(ctx context.Context, c *api.Client, o *options, _ []string, stdout io.Writer) error {
	v, err := parseTopSort(o.sort)
	if err != nil {
		return err
	}
	v.all = o.all
	s := newTopSampler(c, o.window, o.all)
	delay := time.Duration(o.delay * float64(time.Second))
	if o.output == "json" {
		return runTopJSON(ctx, s, &v, o.iters, delay, stdout)
	}
	if o.batch {
		return runTopBatch(ctx, s, &v, o.iters, delay, stdout)
	}
	return runTopUI(ctx, s, v, delay)
}

// topRow is one process of `top -o json`, one JSON array a snapshot.
type topRow struct {
	PID                 int      `json:"pid"`
	Exe                 string   `json:"exe"`
	Exited              bool     `json:"exited"`
	WindowSeconds       float64  `json:"window_seconds"`
	GCPerSecond         float64  `json:"gc_cycles_per_second"`
	GCCPUShare          float64  `json:"gc_cpu_share"`
	PauseP99Seconds     *float64 `json:"pause_p99_seconds"`
	PauseMaxSeconds     *float64 `json:"pause_max_seconds"`
	HeapLiveBytes       *uint64  `json:"heap_live_bytes"`
	GCGoalBytes         *uint64  `json:"gc_goal_bytes"`
	MemoryLimitBytes    *int64   `json:"memory_limit_bytes"`
	Goroutines          *int64   `json:"goroutines"`
	GoroutineSchedP99   *float64 `json:"goroutine_schedule_p99_seconds"`
	HeapLockWaitPerSec  *float64 `json:"heaplock_wait_seconds_per_second"`
	ReleasedBytesPerSec *float64 `json:"released_bytes_per_second"`
}

func ptr[T any](v T, ok bool) *T {
	if !ok {
		return nil
	}
	return &v
}

func toTopRow(f *figures) topRow {
	r := topRow{PID: f.p.PID, Exe: f.p.Exe, Exited: f.p.Exited != nil, WindowSeconds: f.window.Seconds(),
		GCPerSecond: f.gcPerSec, GCCPUShare: f.gcCPU,
		PauseP99Seconds: ptr(f.pauseP99, len(f.pauses) > 0), PauseMaxSeconds: ptr(f.pauseMax, len(f.pauses) > 0),
		GoroutineSchedP99: ptr(f.gschedP99, f.gschedKnown), HeapLockWaitPerSec: ptr(f.lockWaitPerSec, f.lockKnown),
		ReleasedBytesPerSec: ptr(f.releasePerSec, f.releaseKnown)}
	if rt := f.p.Runtime; rt != nil {
		r.HeapLiveBytes, r.GCGoalBytes, r.MemoryLimitBytes, r.Goroutines = &rt.HeapLiveBytes, &rt.GCGoalBytes, &rt.MemoryLimitBytes, &rt.Goroutines
	}
	return r
}

// runTopJSON prints one JSON array a snapshot, a line each.
func runTopJSON(ctx context.Context, s *topSampler, v *topView, n int, delay time.Duration, stdout io.Writer) error {
	for i := 0; n <= 0 || i < n; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
		}
		figs, err := s.sample(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		shown := v.apply(figs)
		rows := make([]topRow, len(shown))
		for j := range shown {
			rows[j] = toTopRow(&shown[j])
		}
		b, err := json.Marshal(rows)
		if err != nil {
			return err
		}
		if _, err := stdout.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	return nil
}
