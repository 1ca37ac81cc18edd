// Package apitest provides an in-memory api.Source and a helper that serves
// it on a Unix socket, for the tests of the API's users (the CLI, the
// daemon). It is not used by production code.
package apitest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

// Source is an in-memory api.Source.
type Source struct {
	mu     sync.Mutex
	procs  map[int]api.Process
	cycles map[int][]api.GCCycle
	status api.Status

	// PanicPID makes GCHistory panic for that pid; ErrorPID makes it fail
	// with an error other than ErrNoProcess.
	PanicPID, ErrorPID int
	lastAsked          int
}

// LastAsked returns the last argument GCHistory received.
func (s *Source) LastAsked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAsked
}

// NewSource returns an empty source.
func NewSource() *Source {
	return &Source{procs: map[int]api.Process{}, cycles: map[int][]api.GCCycle{}}
}

// Add registers a process and its cycles (oldest first).
func (s *Source) Add(p api.Process, cycles ...api.GCCycle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs[p.PID] = p
	s.cycles[p.PID] = cycles
}

// SetStatus sets what Status returns.
func (s *Source) SetStatus(st api.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = st
}

// Processes implements api.Source.
func (s *Source) Processes() []api.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := make([]api.Process, 0, len(s.procs))
	for _, p := range s.procs {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].PID < ps[j].PID })
	return ps
}

// GCHistory implements api.Source.
func (s *Source) GCHistory(pid, last int) (api.GCHistory, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastAsked = last
	switch pid {
	case s.PanicPID:
		panic(fmt.Sprintf("apitest: panic for pid %d", pid))
	case s.ErrorPID:
		return api.GCHistory{}, errors.New("apitest: ring buffer on fire")
	}
	p, ok := s.procs[pid]
	if !ok {
		return api.GCHistory{}, fmt.Errorf("pid %d: %w", pid, api.ErrNoProcess)
	}
	c := s.cycles[pid]
	if last > 0 && len(c) > last {
		c = c[len(c)-last:]
	}
	return api.GCHistory{Process: p, Cycles: append([]api.GCCycle(nil), c...)}, nil
}

// Status implements api.Source.
func (s *Source) Status() api.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Serve serves src on a fresh socket in t.TempDir() until the test ends and
// returns the socket's path. Logs go to log (nil: discarded).
func Serve(t testing.TB, src api.Source, log *slog.Logger) string {
	t.Helper()
	// Keep the path short: sun_path holds 107 bytes.
	dir, err := os.MkdirTemp("", "gopulse")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "gopulse.sock")
	ln, err := api.Listen(path, api.DefaultSocketMode)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.NewServer(src, log).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return path
}

// Fixture fills src with a few processes, cycles and a status, and returns
// them for comparison.
func Fixture(src *Source) ([]api.Process, map[int][]api.GCCycle, api.Status) {
	base := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	exited := base.Add(90 * time.Second)
	procs := []api.Process{
		{
			PID: 1234, Exe: "/usr/local/bin/gcload", GoVersion: "go1.22.3", PIE: true,
			StartTime: base, FirstSeen: base.Add(time.Second),
			GCCycles: 42, GCForcedCycles: 3,
			GCPauseSecondsTotal: 0.0012, GCLastPauseSeconds: 0.000066,
			GCCyclesPerSecond: 0.5, GCAssistSecondsTotal: 0.0034,
			OtherSTWCount: 2, OtherSTWSecondsTotal: 0.0011,
		},
		{
			PID: 77, Exe: "/opt/app/server", GoVersion: "go1.21.0", Static: true, Stripped: true,
			StartTime: base, FirstSeen: base, Exited: &exited,
			GCCycles: 7, GCPauseSecondsTotal: 2.5, GCLastPauseSeconds: 0.25, GCCyclesPerSecond: 0.07,
		},
	}
	cycles := map[int][]api.GCCycle{1234: nil, 77: nil}
	for i := 1; i <= 30; i++ {
		c := api.GCCycle{
			Seq: uint64(i), Trigger: api.TriggerHeap, Start: base.Add(time.Duration(i) * time.Second),
			SinceProcessStart: float64(i) + 0.402,
			SweepTermSeconds:  21e-6, MarkSeconds: 1.3e-3, MarkTermSeconds: 45e-6,
			PauseSeconds: 66e-6, AssistSeconds: 0.2e-3,
			HeapStartBytes: 4 << 20, HeapEndBytes: 5<<20 + 12345,
		}
		if i%10 == 2 {
			c.Trigger, c.Forced = api.TriggerForced, true
		}
		if i == 1 {
			c.Partial = true
		}
		cycles[1234] = append(cycles[1234], c)
	}
	cycles[77] = append(cycles[77], api.GCCycle{Seq: 7, Trigger: api.TriggerTime, SinceProcessStart: 120, PauseSeconds: 0.25})
	for _, p := range procs {
		src.Add(p, cycles[p.PID]...)
	}
	st := api.Status{
		Ready:   true,
		Version: "0.1.0-test", Started: base, Probes: []string{"gc", "stw"},
		Processes: 2, ProcessesDropped: 1,
		Binaries: []api.BinaryStatus{
			{Path: "/usr/local/bin/gcload", GoVersion: "go1.22.3", Processes: 1, Probes: 6},
			{Path: "/opt/app/server", GoVersion: "go1.21.0", Processes: 1, Probes: 4, Errors: []string{"stw: symbol runtime.stopTheWorldWithSema not found"}},
		},
		Families:             []api.FamilyStatus{{Name: "gc", Events: 1000, LostEvents: 2, Hits: 3000}, {Name: "stw", Events: 10}},
		AttachLatencySeconds: []float64{0.0012, 0.0034},
	}
	src.SetStatus(st)
	return procs, cycles, st
}
