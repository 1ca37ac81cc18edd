package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

// Synthetic processes built to trip each rule (the gauges' rules — goal at
// the limit, GOGC advice — are tested here with api.Runtime values; the
// real fixtures are in daemon/gopulsed's e2e tests).
func TestDoctorRules(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	base := func() api.Process {
		return api.Process{PID: 42, Exe: "/srv/app", FirstSeen: now.Add(-time.Hour), GCCyclesPerSecond: 0.1}
	}
	quiet := []api.GCCycle{{Seq: 1, Start: now.Add(-10 * time.Second), PauseSeconds: 0.0002, MarkSeconds: 0.001, SweepTermSeconds: 0.0001, MarkTermSeconds: 0.0001}}
	busy := func(n int, pause, assist, mark float64) []api.GCCycle {
		var cs []api.GCCycle
		for i := range n {
			cs = append(cs, api.GCCycle{Seq: uint64(i + 1), Start: now.Add(-59*time.Second + time.Duration(i)*time.Second*59/time.Duration(n)),
				PauseSeconds: pause, SweepTermSeconds: pause / 2, MarkTermSeconds: pause / 2, AssistSeconds: assist, MarkSeconds: mark})
		}
		return cs
	}
	rt := func(mut func(*api.Runtime)) *api.Runtime {
		r := &api.Runtime{GOMAXPROCS: 2, GOGCPercent: 100, MemoryLimitBytes: math.MaxInt64,
			HeapLiveBytes: 10 << 20, HeapMarkedBytes: 8 << 20, GCGoalBytes: 16 << 20, Goroutines: 10}
		if mut != nil {
			mut(r)
		}
		return r
	}
	gsched := func(p99 float64, n uint64) *api.SchedStats {
		return &api.SchedStats{GoroutineLatency: &api.Histogram{Count: n, P99Seconds: p99}, RunQueueLatency: api.Histogram{P99Seconds: 0.0001}}
	}
	tests := []struct {
		name     string
		proc     func() api.Process
		cycles   []api.GCCycle
		quota    float64 // CPUs, 0: none
		wantRule string  // "" = no finding
		wantSev  string
		wantIn   []string // substrings of summary + knob
	}{
		{"healthy", func() api.Process { p := base(); p.Runtime = rt(nil); return p }, quiet, 0, "", "", nil},
		{"healthy without gauges", base, quiet, 0, "", "", nil},
		{"gc cpu high, GOGC advice", func() api.Process {
			p := base()
			p.GCCyclesPerSecond = 20
			p.Runtime = rt(nil)
			return p
		}, busy(1200, 0.0005, 0.005, 0.05), 0, ruleGCCPU, sevCritical, []string{"GOGC=", "live heap 8MiB", "GOGC 100"}},
		{"gc cpu high without gauges", func() api.Process { p := base(); p.GCCyclesPerSecond = 10; return p },
			busy(600, 0.0005, 0.005, 0.05), 0, ruleGCCPU, sevWarning, []string{"raise GOGC"}},
		{"goal pinned at the limit", func() api.Process {
			p := base()
			p.Runtime = rt(func(r *api.Runtime) {
				r.MemoryLimitBytes = 100 << 20
				r.GCGoalBytes = 90 << 20
				r.HeapMarkedBytes = 60 << 20
			})
			return p
		}, quiet, 0, ruleGoalAtLimit, sevWarning, []string{"set by the memory limit 100MiB", "GOGC 100 alone would give 120MiB", "raise GOMEMLIMIT"}},
		{"limit set, GOGC sets the goal", func() api.Process {
			p := base()
			p.Runtime = rt(func(r *api.Runtime) {
				r.MemoryLimitBytes = 1 << 30
				r.GCGoalBytes = 16 << 20
				r.HeapMarkedBytes = 8 << 20
			})
			return p
		}, quiet, 0, "", "", nil},
		{"death spiral", func() api.Process {
			p := base()
			p.Runtime = rt(func(r *api.Runtime) {
				r.MemoryLimitBytes = 100 << 20
				r.GCGoalBytes = 100 << 20
				r.HeapMarkedBytes = 90 << 20
				r.GOGCPercent = -1
			})
			return p
		}, quiet, 0, ruleGoalAtLimit, sevCritical, []string{"death spiral", "GOGC is off"}},
		{"scavenger churn", func() api.Process {
			p := base()
			p.Madvise = &api.MadviseStats{ReleasedBytesPerSecond: 10 << 20, RSSBytes: 50 << 20,
				ReleasedBySource: map[string]uint64{api.SourceFreeOSMemory: 5 << 30, api.SourceBackgroundScavenger: 1 << 20}}
			return p
		}, quiet, 0, ruleChurn, sevCritical, []string{"free_os_memory", "debug.FreeOSMemory"}},
		{"long sweep termination", base, append(slices.Clone(quiet), api.GCCycle{Seq: 2, Start: now.Add(-time.Second),
			PauseSeconds: 0.3, SweepTermSeconds: 0.29, MarkTermSeconds: 0.01}), 0, ruleSTW, sevCritical, []string{"sweep termination", "preempted"}},
		{"long mark termination", base, append(slices.Clone(quiet), api.GCCycle{Seq: 2, Start: now.Add(-time.Second),
			PauseSeconds: 0.02, SweepTermSeconds: 0.001, MarkTermSeconds: 0.019}), 0, ruleSTW, sevWarning, []string{"mark termination"}},
		{"non-GC stop-the-world", func() api.Process { p := base(); p.OtherSTWCount, p.OtherSTWSecondsTotal = 4, 0.2; return p },
			quiet, 0, ruleOtherSTW, sevWarning, []string{"ReadMemStats"}},
		{"heap lock", func() api.Process {
			p := base()
			p.MheapLock = &api.MheapLockStats{WaitSeconds: 72, Contended: 72000, ContendedPerSecond: 20}
			return p
		}, quiet, 0, ruleHeapLock, sevWarning, []string{"heap lock", "sync.Pool"}},
		{"sched: GOMAXPROCS over the quota", func() api.Process {
			p := base()
			p.Runtime = rt(func(r *api.Runtime) { r.GOMAXPROCS = 8 })
			p.Sched = gsched(0.08, 1000)
			return p
		}, quiet, 1.5, ruleSched, sevCritical, []string{"GOMAXPROCS 8 is above the CPU quota 1.5", "GOMAXPROCS=2"}},
		{"sched: GOMAXPROCS below the CPUs", func() api.Process {
			p := base()
			p.Runtime = rt(func(r *api.Runtime) { r.GOMAXPROCS = 1 })
			p.Sched = gsched(0.02, 1000)
			return p
		}, quiet, 0, ruleSched, sevWarning, []string{"GOMAXPROCS 1 is below the 2 CPUs"}},
		{"sched: too few samples", func() api.Process { p := base(); p.Sched = gsched(0.5, 10); return p }, quiet, 0, "", "", nil},
		{"runtime gauges unread", func() api.Process { p := base(); p.RuntimeError = "layout refused"; return p }, quiet, 0,
			ruleNoGauges, sevInfo, []string{"layout refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := hostFacts{cpus: 2, quota: func(int) (float64, bool) { return tt.quota, tt.quota > 0 }}
			f := computeFigures(tt.proc(), tt.cycles, nil, 0, now, time.Minute)
			got := diagnose(&f, host)
			if tt.wantRule == "" {
				if len(got) != 0 {
					t.Fatalf("want no finding, got %+v", got)
				}
				return
			}
			i := slices.IndexFunc(got, func(x Finding) bool { return x.Rule == tt.wantRule })
			if i < 0 {
				t.Fatalf("no %s finding in %+v", tt.wantRule, got)
			}
			fd := got[i]
			if fd.Severity != tt.wantSev || fd.PID != 42 {
				t.Errorf("severity %s pid %d, want %s 42", fd.Severity, fd.PID, tt.wantSev)
			}
			for _, w := range tt.wantIn {
				if !strings.Contains(fd.Summary+" | "+fd.Knob, w) {
					t.Errorf("finding lacks %q: %s | %s", w, fd.Summary, fd.Knob)
				}
			}
		})
	}
}

func TestDoctorDaemonRulesAndOrder(t *testing.T) {
	st := api.Status{Ready: false, Families: []api.FamilyStatus{
		{Name: "gc", Events: 990, LostEvents: 10}, {Name: "sched", Error: "no tracepoint"}, {Name: "madvise", Events: 5}}}
	fs := diagnoseDaemon(st)
	fs = append(fs, Finding{Severity: sevCritical, PID: 7, Rule: ruleGCCPU, score: 2}, Finding{Severity: sevCritical, PID: 3, Rule: ruleSTW, score: 5})
	sortFindings(fs)
	var rules []string
	for _, f := range fs {
		rules = append(rules, f.Rule)
	}
	want := []string{ruleSTW, ruleGCCPU, ruleFamily, ruleLost, ruleNotReady}
	if !slices.Equal(rules, want) {
		t.Errorf("order %v, want %v", rules, want)
	}
}

func TestParseCPUMax(t *testing.T) {
	for in, want := range map[string]float64{"150000 100000\n": 1.5, "max 100000\n": 0, "junk": 0, "-1 100": 0} {
		got, ok := parseCPUMax(in)
		if got != want || ok != (want > 0) {
			t.Errorf("parseCPUMax(%q) = %v, %v", in, got, ok)
		}
	}
}
