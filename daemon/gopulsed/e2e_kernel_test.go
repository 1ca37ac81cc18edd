package main

// The fallbacks for kernels older than the host's, exercised on the host:
// what a 5.10 kernel makes the daemon do must give the figures the newer
// path gives.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
)

// Two daemons trace the same processes, one with attach cookies, one as on
// a kernel without them (per-probe constants looked up in a map keyed by
// the executable and the probe's offset): each cycle's figures, read by
// both programs at the same probe hits, are identical, and the heap
// figures (the ones that need the constants) are there. Every shape
// (static, PIE, cgo: the code start differs) and toolchain.
func TestNoAttachCookiesSameFigures(t *testing.T) {
	withCookies := e2etest.StartDaemon(t, "--probes", "gc,mheaplock")
	without := e2etest.StartDaemonEnv(t, []string{probes.NoCookiesEnv + "=1"}, "--probes", "gc,mheaplock")
	for _, shape := range fixturebuild.Shapes() {
		t.Run(shape.Name, func(t *testing.T) {
			bin := fixturebuild.Build(t, "gcload", shape)
			e2etest.WarmUp(t, withCookies, bin)
			e2etest.WarmUp(t, without, bin)
			run := e2etest.RunFixture(t, bin, nil, workload...)
			a := checkCycles(t, withCookies, run.PID, run.Final)
			b := checkCycles(t, without, run.PID, run.Final)
			if a.GCCycles != b.GCCycles || a.GCPauseSecondsTotal != b.GCPauseSecondsTotal {
				t.Errorf("cookies: %d cycles, %gs paused; without: %d cycles, %gs paused", a.GCCycles, a.GCPauseSecondsTotal, b.GCCycles, b.GCPauseSecondsTotal)
			}
			ha, hb := history(t, withCookies, run.PID), history(t, without, run.PID)
			if len(ha) != len(hb) {
				t.Fatalf("cookies: %d cycles in the history, without: %d", len(ha), len(hb))
			}
			for i := range ha {
				ca, cb := ha[i], hb[i]
				if ca.Seq != cb.Seq || ca.HeapStartBytes != cb.HeapStartBytes || ca.HeapEndBytes != cb.HeapEndBytes ||
					ca.AssistSeconds != cb.AssistSeconds || ca.PauseSeconds != cb.PauseSeconds {
					t.Errorf("cycle %d: cookies %s; without %s", i, cycleFigures(ca), cycleFigures(cb))
				}
				if ca.HeapStartBytes == 0 || ca.HeapEndBytes == 0 {
					t.Errorf("cycle %d: no heap figures: %s", ca.Seq, cycleFigures(ca))
				}
			}
			if n := len(hb); n > 0 {
				t.Logf("%d cycles identical; last: %s", n, cycleFigures(hb[n-1]))
			}
		})
	}
	// The heaplock fixture: the mheaplock site's register and displacement
	// come from the map too; a wrong one would count no mheap_.lock
	// contention at all.
	t.Run("mheaplock", func(t *testing.T) {
		bin := fixturebuild.Build(t, "heaplock", fixturebuild.Shapes()[0])
		gate := func(pid int) { waitTracked(t, withCookies, bin)(pid); waitTracked(t, without, bin)(pid) }
		r := runKV(t, bin, gate, "-workers", "16", "-iters", "1000")
		time.Sleep(1500 * time.Millisecond)
		pa, _ := withCookies.Process(t, r.pid)
		pb, _ := without.Process(t, r.pid)
		if pa.MheapLock == nil || pb.MheapLock == nil {
			t.Fatalf("mheap lock figures: cookies %v, without %v", pa.MheapLock, pb.MheapLock)
		}
		a, b := *pa.MheapLock, *pb.MheapLock
		t.Logf("cookies: %d contended, %d other; without: %d contended, %d other", a.Contended, a.OtherContended, b.Contended, b.OtherContended)
		if a.Contended != b.Contended || a.OtherContended != b.OtherContended {
			t.Errorf("contended acquisitions differ")
		}
		if b.Contended == 0 {
			t.Errorf("no mheap_.lock contention seen without cookies")
		}
	})
}

func history(t *testing.T, d *e2etest.Daemon, pid int) []api.GCCycle {
	t.Helper()
	h, err := d.Client.GCHistory(context.Background(), pid, 0)
	if err != nil {
		t.Fatalf("gc history: %v", err)
	}
	var out []api.GCCycle
	for _, c := range h.Cycles {
		if !c.BeforeProbes {
			out = append(out, c)
		}
	}
	return out
}

func cycleFigures(c api.GCCycle) string {
	return fmt.Sprintf("seq %d heap %d->%d assist %gs pause %gs", c.Seq, c.HeapStartBytes, c.HeapEndBytes, c.AssistSeconds, c.PauseSeconds)
}

// --check-kernel on the host: every family runs, with no fallback; as on a
// kernel without attach cookies, gc and mheaplock name the fallback.
func TestCheckKernel(t *testing.T) {
	testenv.RequireRoot(t)
	bin := e2etest.DaemonBinary(t)
	for _, c := range []struct {
		name     string
		env      []string
		fallback bool
	}{
		{name: "host"},
		{name: "no-cookies", env: []string{probes.NoCookiesEnv + "=1"}, fallback: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(bin, "--check-kernel", "--probes", "all")
			cmd.Env = append(os.Environ(), c.env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("gopulsed --check-kernel: %v\n%s", err, out)
			}
			for _, fam := range []string{"gc", "madvise", "sched", "mheaplock"} {
				if !regexp.MustCompile(`(?m)^` + fam + ` +runs`).Match(out) {
					t.Errorf("%s does not run:\n%s", fam, out)
				}
			}
			if got := strings.Count(string(out), "without bpf_get_attach_cookie"); c.fallback && got != 2 || !c.fallback && got != 0 {
				t.Errorf("%d families name the attach cookie fallback:\n%s", got, out)
			}
			t.Logf("\n%s", out)
		})
	}
}
