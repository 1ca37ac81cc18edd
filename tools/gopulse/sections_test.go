package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/daemon/api/apitest"
)

func TestSectionCommands(t *testing.T) {
	src := apitest.NewSource()
	hist := api.Histogram{Count: 10, SumSeconds: 0.002, P50Seconds: 100e-6, P90Seconds: 300e-6, P99Seconds: 900e-6,
		BucketUpperSeconds: []float64{65.536e-6, 131.072e-6, 262.144e-6}, Counts: []uint64{0, 6, 4}}
	src.Add(api.Process{PID: 42, Exe: "/bin/heaplock", GoVersion: "go1.26.8",
		MheapLock: &api.MheapLockStats{Method: "spinbit", Contended: 10, WaitSeconds: 0.002, Wait: hist, OtherContended: 3, OtherWaitSeconds: 0.001},
		Madvise: &api.MadviseStats{Advice: []api.AdviceCount{{Advice: "dontneed", Calls: 32, Bytes: 128 << 20}},
			ReleasedBytes: 128 << 20, ReleasedBySource: map[string]uint64{api.SourceFreeOSMemory: 120 << 20, api.SourceBackgroundScavenger: 8 << 20}, RSSBytes: 3 << 20},
		Sched: &api.SchedStats{Threads: 5, RunQueueLatency: hist, VoluntarySwitches: 100, InvoluntarySwitches: 7,
			GoroutineLatency: &api.Histogram{Count: 7, P50Seconds: 150e-9, P90Seconds: 300e-9, P99Seconds: 2e-6,
				BucketUpperSeconds: []float64{0, 64e-9, 128e-9, 192e-9, 256e-9, 320e-9}, Counts: []uint64{0, 1, 1, 2, 2, 1}}},
	})
	src.Add(api.Process{PID: 44, Exe: "/bin/odd", GoVersion: "go1.26.8",
		Sched: &api.SchedStats{Threads: 2, GoroutineLatencyError: "runtime.casgstatus: no sched.timeToRun reference"}})
	src.Add(api.Process{PID: 43, Exe: "/bin/plain", GoVersion: "go1.19.8"})
	sock := apitest.Serve(t, src, nil)
	s := "--socket=" + sock
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{s, "lock", "42"}, []string{"observed via spinbit", "contended acquisitions (slept): 10", "p99 900µs", "other runtime locks: 3 contended, 1ms waited"}},
		{[]string{s, "mem", "42"}, []string{"released to the OS: 128MiB total", "free_os_memory 120MiB", "dontneed", "RSS now 3MiB"}},
		{[]string{s, "sched", "42"}, []string{"OS threads: 5", "100 voluntary, 7 involuntary", "run-queue latency: 10, p50 100µs",
			"goroutine scheduling latency (runnable to running, runtime's own histogram): 7 sampled (1 in 8 transitions), p50 150ns",
			"<= 256ns            4 ####"}},
		{[]string{s, "sched", "44"}, []string{"goroutine scheduling latency: not available: runtime.casgstatus"}},
		{[]string{s, "ps"}, []string{"GSCHED-P99", "2µs"}},
		{[]string{s, "lock", "43"}, []string{"mheaplock family is off"}},
		{[]string{s, "ps"}, []string{"HEAPLOCK-WAIT", "128MiB"}},
	} {
		code, out, errOut := runCLI(c.args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, errOut)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", c.args, w, out)
			}
		}
	}
	code, out, _ := runCLI(s, "sched", "42", "-o", "json")
	var p map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &p) != nil || p["sched"] == nil || p["mheap_lock"] == nil || p["madvise"] == nil {
		t.Errorf("sched -o json: exit %d, %s", code, out)
	}
	if code, _, _ := runCLI(s, "mem", "999"); code != exitError {
		t.Errorf("mem of an unknown pid: exit %d, want %d", code, exitError)
	}
	if code, _, _ := runCLI(s, "sched", "x"); code != exitUsage {
		t.Errorf("sched x: exit %d, want %d", code, exitUsage)
	}
}
