package hostile_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
)

// A PID reused within --forget-after by a different Go program: the new
// process gets a fresh entry (its own start time, not exited, its own
// binary) whose figures are its own only — the kernel side's per-PID
// totals (madvise, sched, mheaplock) were reset at its exec, not carried
// over from the process that had the PID before.
//
// The PID is forced in the host's PID namespace (ns_last_pid = P-1 before
// the fork, retried until the kernel hands out P): the daemon keys
// processes by the PIDs BPF reports, which are the initial namespace's, so
// a PID reused only inside a container's namespace (NSpid's last field) is
// a new host PID and no reuse at all for the daemon.
func TestPIDReusedByAnotherProgram(t *testing.T) {
	d := e2etest.StartDaemon(t, "--probes", "all", "--forget-after", "10m")
	dir := fairWorldDir(t)
	firstBin := fairCopy(t, fixturebuild.Build(t, "memfree", fixturebuild.Shapes()[0]), filepath.Join(dir, "first"))
	secondBin := fairCopy(t, fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0]), filepath.Join(dir, "second"))
	w := e2etest.StartFixture(t, firstBin, nil, "-wait", "-hold", "-mb", "1")
	d.WaitBinary(t, firstBin)
	w.Proceed()
	w.Expect("freed")
	w.Finish()
	e2etest.WarmUp(t, d, secondBin)

	// The first program: 128 MiB touched (CPU time) and given back
	// (madvise), seen by the daemon before it exits.
	first := e2etest.StartFixture(t, firstBin, nil, "-wait", "-hold", "-mb", "128")
	pid := first.PID
	first.Proceed()
	first.Expect("freed")
	var firstReleased uint64
	var firstOnCPU float64
	e2etest.WaitFor(t, 10*time.Second, "the first program's madvise figures", func() bool {
		p, ok := d.Process(t, pid)
		if !ok || p.Madvise == nil || p.Sched == nil {
			return false
		}
		firstReleased, firstOnCPU = p.Madvise.ReleasedBytes, p.Sched.OnCPUSeconds
		return firstReleased >= 128<<20
	})
	first.Finish()
	e2etest.WaitFor(t, 10*time.Second, "the first program's exit", func() bool {
		p, ok := d.Process(t, pid)
		return ok && p.Exited != nil
	})
	firstEntry, _ := d.Process(t, pid)

	// The second program at the same PID, within --forget-after.
	second := pidReuseStart(t, secondBin, pid)
	e2etest.WaitFor(t, 10*time.Second, "the second program's entry", func() bool {
		p, ok := d.Process(t, pid)
		return ok && p.Exited == nil && strings.HasSuffix(p.Exe, "/second")
	})
	second.Proceed()
	second.Expect("final")
	ownStart := pidReuseStartTime(t, pid)
	ownCPU := pidReuseCPU(t, pid)
	e2etest.WaitFor(t, 10*time.Second, "the second program's cycles", func() bool {
		p, ok := d.Process(t, pid)
		return ok && p.GCCycles == second.Final.NumGC
	})
	p, _ := d.Process(t, pid)
	if p.Exited != nil {
		t.Errorf("the new process inherited the exited flag (%v)", p.Exited)
	}
	if !p.StartTime.Equal(ownStart) || p.StartTime.Equal(firstEntry.StartTime) {
		t.Errorf("start time %v, want its own %v (the first program's was %v)", p.StartTime, ownStart, firstEntry.StartTime)
	}
	if p.GCCycles != second.Final.NumGC {
		t.Errorf("%d GC cycles, the runtime says %d", p.GCCycles, second.Final.NumGC)
	}
	if p.Madvise != nil && p.Madvise.ReleasedBytes >= firstReleased {
		t.Errorf("madvise: %d bytes released, the first program's %d carried over", p.Madvise.ReleasedBytes, firstReleased)
	}
	// Its on-CPU time is at most its own (utime+stime, 10 ms ticks), never
	// the first program's added.
	if p.Sched == nil {
		t.Errorf("no sched figures")
	} else if p.Sched.OnCPUSeconds > ownCPU+0.05 {
		t.Errorf("sched: %.3f s on CPU, its own is %.3f s (the first program's %.3f s carried over?)", p.Sched.OnCPUSeconds, ownCPU, firstOnCPU)
	}
	if p.MheapLock == nil {
		t.Errorf("no mheaplock figures: the lock's entry was not made anew for the new program")
	}
	var released uint64
	if p.Madvise != nil {
		released = p.Madvise.ReleasedBytes
	}
	t.Logf("pid %d: first program %d bytes released, %.3f s on CPU; second (started %v) %d cycles, %d bytes released, %.3f s on CPU (own %.3f s)",
		pid, firstReleased, firstOnCPU, p.StartTime, p.GCCycles, released, p.Sched.OnCPUSeconds, ownCPU)
	second.Finish()
}

// pidReuseStart starts bin (as a -wait -hold gcload) at host PID pid:
// ns_last_pid set to pid-1 right before the fork, retried while another
// fork on the host takes the PID first.
func pidReuseStart(t *testing.T, bin string, pid int) *e2etest.Fixture {
	t.Helper()
	// The fork comes from this thread: no other thread of ours is made
	// between the write and the clone by our own code.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for attempt := 1; attempt <= 200; attempt++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Fatalf("force the PID: %v", err)
		}
		f := e2etest.StartFixture(t, bin, nil, "-wait", "-hold", "-gcloop", "3")
		if f.PID == pid {
			t.Logf("PID %d reused at attempt %d", pid, attempt)
			return f
		}
		_ = f.Cmd.Process.Kill()
		_ = f.Cmd.Wait()
	}
	t.Fatalf("PID %d never handed out again in 200 attempts", pid)
	return nil
}

// pidReuseStartTime is pid's start time as the daemon computes it (boot
// time + starttime from /proc/PID/stat).
func pidReuseStartTime(t *testing.T, pid int) time.Time {
	t.Helper()
	f := pidReuseStat(t, pid)
	ticks, _ := strconv.ParseFloat(f[19], 64)
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	var btime float64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, _ = strconv.ParseFloat(v, 64)
		}
	}
	return time.Unix(0, int64((btime+ticks/100)*1e9))
}

// pidReuseCPU is pid's utime+stime in seconds.
func pidReuseCPU(t *testing.T, pid int) float64 {
	t.Helper()
	f := pidReuseStat(t, pid)
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

// pidReuseStat is /proc/PID/stat's fields after the command name (field
// 3, state, is [0]).
func pidReuseStat(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}
