package hostile_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
)

// saturationRSSLimit is issue #12's bound on the daemon's memory while
// every CPU is busy and 300+ processes force 1000 GC cycles a second.
const saturationRSSLimit = 200 << 20

// TestSaturation: 300 Go processes of three never-seen binaries (Go 1.26
// static, PIE, 1.19 — so inspection runs while the exec storm does), 1000
// GC cycles a second among them for 20 s, and every CPU busy with programs
// the daemon does not trace. Every process must be identified, each one's
// cycle count and forced count must afterwards equal its runtime's own,
// and the daemon's peak RSS must stay under 200 MiB.
func TestSaturation(t *testing.T) {
	const (
		procs    = 300
		totalGCs = 1000.0 // a second, across all
		duration = 20 * time.Second
	)
	var bins []string
	for _, s := range fixturebuild.Shapes() {
		if len(bins) < 3 {
			bins = append(bins, e2etest.Gcload(t, s))
		}
	}
	d := e2etest.StartDaemon(t)

	// Every CPU busy, by programs that are not Go (not traced).
	for range runtime.NumCPU() {
		burn := exec.Command("/bin/sh", "-c", "while :; do :; done")
		if err := burn.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = burn.Process.Kill(); _ = burn.Wait() })
	}

	var peak hwm
	stop := make(chan struct{})
	var stopOnce sync.Once
	var sampler sync.WaitGroup
	sampler.Go(func() { peak.sample(t, d.Cmd.Process.Pid, stop) })
	// Also when the test fails: the sampler must not outlive it.
	t.Cleanup(func() { stopOnce.Do(func() { close(stop) }); sampler.Wait() })

	rate := strconv.FormatFloat(totalGCs/procs, 'f', 3, 64)
	fixtures := make([]*e2etest.Fixture, procs)
	started := time.Now()
	for i := range fixtures {
		fixtures[i] = e2etest.StartFixture(t, bins[i%len(bins)], nil,
			"-gcrate", rate, "-duration", duration.String(), "-hold")
	}
	t.Logf("%d processes started in %v", procs, time.Since(started).Round(time.Millisecond))
	var wg sync.WaitGroup
	for _, f := range fixtures {
		wg.Go(func() { f.Expect("final") })
	}
	wg.Wait()
	t.Logf("all done after %v", time.Since(started).Round(time.Millisecond))

	// Held (not exited): each one's figures are final and still listed.
	var total uint64
	e2etest.WaitFor(t, 60*time.Second, "every process's exact cycle count", func() bool {
		ps, err := d.Client.Processes(context.Background())
		if err != nil {
			t.Fatalf("ps: %v", err)
		}
		byPID := map[int]int{}
		for i, p := range ps {
			byPID[p.PID] = i
		}
		var missing, wrong []string
		total = 0
		for _, f := range fixtures {
			i, ok := byPID[f.PID]
			if !ok {
				missing = append(missing, strconv.Itoa(f.PID))
				continue
			}
			p := ps[i]
			total += p.GCCycles
			if p.GCCycles != uint64(f.Final.NumGC) || p.GCForcedCycles != uint64(f.Final.Forced) {
				wrong = append(wrong, fmt.Sprintf("%d: %d/%d cycles/forced (%d recorded, error %q), runtime %d/%d",
					f.PID, p.GCCycles, p.GCForcedCycles, p.GCCyclesRecorded, p.RuntimeError, f.Final.NumGC, f.Final.Forced))
			}
		}
		if len(missing)+len(wrong) > 0 {
			t.Logf("not yet: %d not identified %v; %d inexact %v", len(missing), head(missing), len(wrong), head(wrong))
			return false
		}
		return true
	})
	stopOnce.Do(func() { close(stop) })
	sampler.Wait()
	st, err := d.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d cycles over %d processes, all exact; daemon peak RSS %d MiB (VmHWM), inspections dropped %d, user-share dropped %d, processes dropped %d",
		total, procs, peak.max>>20, st.InspectionsDropped, st.UserShareDropped, st.ProcessesDropped)
	if peak.max > saturationRSSLimit {
		t.Errorf("daemon peak RSS %d MiB, want < %d MiB", peak.max>>20, saturationRSSLimit>>20)
	}
	for _, f := range fixtures {
		f.Proceed()
	}
}

func head(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

// hwm is the daemon's peak resident set (the kernel's VmHWM).
type hwm struct {
	max int64
}

func (h *hwm) sample(t *testing.T, pid int, stop <-chan struct{}) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if v := statusKB(pid, "VmHWM:"); v<<10 > h.max {
			h.max = v << 10
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// statusKB reads a "kB" line of /proc/PID/status; 0 if absent.
func statusKB(pid int, key string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb
		}
	}
	return 0
}
