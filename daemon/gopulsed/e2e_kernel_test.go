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

// Daemons trace the same processes, one with the host's kernel features
// (attach cookies, uprobe_multi links) and others as on older kernels:
// without attach cookies (per-probe constants looked up in a map keyed by
// the executable and the probe's offset, which the program computes from
// its ip: the same under a multi link), without uprobe_multi links (one
// link per site), without either. Each cycle's figures, read by every
// program at the same probe hits, are identical, and the heap figures (the
// ones that need the constants) are there. Every shape (static, PIE, cgo:
// the code start differs) and toolchain.
func TestKernelFallbacksSameFigures(t *testing.T) {
	ref := e2etest.StartDaemon(t, "--probes", "gc,mheaplock")
	const cookieFallback, multiFallback = "bpf_get_attach_cookie", "uprobe_multi links"
	fallbacks := []struct {
		name  string
		d     *e2etest.Daemon
		named []string // the fallbacks status lists for gc and mheaplock
	}{
		{"no-cookies", e2etest.StartDaemonEnv(t, []string{probes.NoCookiesEnv + "=1"}, "--probes", "gc,mheaplock"),
			[]string{cookieFallback}},
		{"no-multi", e2etest.StartDaemonEnv(t, []string{probes.NoUprobeMultiEnv + "=1"}, "--probes", "gc,mheaplock"),
			[]string{multiFallback}},
		{"neither", e2etest.StartDaemonEnv(t, []string{probes.NoCookiesEnv + "=1", probes.NoUprobeMultiEnv + "=1"}, "--probes", "gc,mheaplock"),
			[]string{cookieFallback, multiFallback}},
	}
	// Status's kernel_fallbacks name what each daemon runs without (the
	// host's path: nothing).
	t.Run("status", func(t *testing.T) {
		check := func(name string, d *e2etest.Daemon, want []string) {
			st, err := d.Client.Status(context.Background())
			if err != nil {
				t.Fatalf("%s: status: %v", name, err)
			}
			seen := 0
			for _, f := range st.Families {
				if f.Name != "gc" && f.Name != "mheaplock" {
					continue
				}
				seen++
				joined := strings.Join(f.KernelFallbacks, "; ")
				if len(f.KernelFallbacks) != len(want) {
					t.Errorf("%s, %s: kernel_fallbacks %q, want %d naming %q", name, f.Name, joined, len(want), want)
				}
				for _, w := range want {
					if !strings.Contains(joined, w) {
						t.Errorf("%s, %s: kernel_fallbacks %q do not name %s", name, f.Name, joined, w)
					}
				}
			}
			if seen != 2 {
				t.Errorf("%s: %d of gc and mheaplock in status", name, seen)
			}
		}
		check("host", ref, nil)
		for _, fb := range fallbacks {
			check(fb.name, fb.d, fb.named)
		}
	})
	for _, shape := range fixturebuild.Shapes() {
		t.Run(shape.Name, func(t *testing.T) {
			bin := fixturebuild.Build(t, "gcload", shape)
			e2etest.WarmUp(t, ref, bin)
			for _, fb := range fallbacks {
				e2etest.WarmUp(t, fb.d, bin)
			}
			run := e2etest.RunFixture(t, bin, nil, workload...)
			a := checkCycles(t, ref, run.PID, run.Final)
			ha := history(t, ref, run.PID)
			for _, fb := range fallbacks {
				b := checkCycles(t, fb.d, run.PID, run.Final)
				if a.GCCycles != b.GCCycles || a.GCPauseSecondsTotal != b.GCPauseSecondsTotal {
					t.Errorf("host: %d cycles, %gs paused; %s: %d cycles, %gs paused", a.GCCycles, a.GCPauseSecondsTotal, fb.name, b.GCCycles, b.GCPauseSecondsTotal)
				}
				hb := history(t, fb.d, run.PID)
				if len(ha) != len(hb) {
					t.Fatalf("host: %d cycles in the history, %s: %d", len(ha), fb.name, len(hb))
				}
				for i := range ha {
					ca, cb := ha[i], hb[i]
					if ca.Seq != cb.Seq || ca.HeapStartBytes != cb.HeapStartBytes || ca.HeapEndBytes != cb.HeapEndBytes ||
						ca.AssistSeconds != cb.AssistSeconds || ca.PauseSeconds != cb.PauseSeconds {
						t.Errorf("cycle %d: host %s; %s %s", i, cycleFigures(ca), fb.name, cycleFigures(cb))
					}
					if cb.HeapStartBytes == 0 || cb.HeapEndBytes == 0 {
						t.Errorf("%s, cycle %d: no heap figures: %s", fb.name, cb.Seq, cycleFigures(cb))
					}
				}
				if n := len(hb); n > 0 {
					t.Logf("%s: %d cycles identical; last: %s", fb.name, n, cycleFigures(hb[n-1]))
				}
			}
		})
	}
	// The heaplock fixture: the mheaplock site's register and displacement
	// come from the link's cookie or the map; a wrong one would count no
	// mheap_.lock contention at all.
	t.Run("mheaplock", func(t *testing.T) {
		bin := fixturebuild.Build(t, "heaplock", fixturebuild.Shapes()[0])
		gate := func(pid int) {
			waitTracked(t, ref, bin)(pid)
			for _, fb := range fallbacks {
				waitTracked(t, fb.d, bin)(pid)
			}
		}
		r := runKV(t, bin, gate, "-workers", "16", "-iters", "1000")
		time.Sleep(1500 * time.Millisecond)
		pa, _ := ref.Process(t, r.pid)
		if pa.MheapLock == nil {
			t.Fatalf("no mheap lock figures on the host's path")
		}
		a := *pa.MheapLock
		for _, fb := range fallbacks {
			pb, _ := fb.d.Process(t, r.pid)
			if pb.MheapLock == nil {
				t.Errorf("%s: no mheap lock figures", fb.name)
				continue
			}
			b := *pb.MheapLock
			t.Logf("host: %d contended, %d other; %s: %d contended, %d other", a.Contended, a.OtherContended, fb.name, b.Contended, b.OtherContended)
			if a.Contended != b.Contended || a.OtherContended != b.OtherContended {
				t.Errorf("%s: contended acquisitions differ", fb.name)
			}
			if b.Contended == 0 {
				t.Errorf("%s: no mheap_.lock contention seen", fb.name)
			}
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
// kernel without attach cookies or without uprobe_multi links, gc and
// mheaplock name the fallback.
func TestCheckKernel(t *testing.T) {
	testenv.RequireRoot(t)
	bin := e2etest.DaemonBinary(t)
	for _, c := range []struct {
		name    string
		env     []string
		cookies bool // the attach cookie fallback is named
		multi   bool // the uprobe_multi fallback is named
	}{
		{name: "host"},
		{name: "no-cookies", env: []string{probes.NoCookiesEnv + "=1"}, cookies: true},
		{name: "no-multi", env: []string{probes.NoUprobeMultiEnv + "=1"}, multi: true},
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
			for _, fb := range []struct {
				text string
				want bool
			}{{"without bpf_get_attach_cookie", c.cookies}, {"without uprobe_multi links", c.multi}} {
				if got := strings.Count(string(out), fb.text); fb.want && got != 2 || !fb.want && got != 0 {
					t.Errorf("%d families name %q:\n%s", got, fb.text, out)
				}
			}
			t.Logf("\n%s", out)
		})
	}
}
