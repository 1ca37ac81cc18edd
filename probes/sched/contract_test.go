package sched

import (
	"testing"

	"github.com/gopulse/gopulse/probes/event"
)

// The sizes the kernel side and user space share, checked against what
// bpf2go generated from bpf/sched.h and bpf/hist.h.
func TestKernelContract(t *testing.T) {
	spec, err := loadSched()
	if err != nil {
		t.Fatal(err)
	}
	var p Proc
	for _, c := range []struct {
		what      string
		got, want uint64
	}{
		{"event.HistBuckets = HIST_BUCKETS", event.HistBuckets, uint64(schedHistContractHIST_BUCKETS)},
		{"len(sched_proc.rq_hist) = HIST_BUCKETS", uint64(len(p.RqHist)), uint64(schedHistContractHIST_BUCKETS)},
		{"sched_procs = SCHED_MAX_PROCS", uint64(spec.Maps["sched_procs"].MaxEntries), uint64(schedSchedContractSCHED_MAX_PROCS)},
		{"sched_threads = SCHED_MAX_THREADS", uint64(spec.Maps["sched_threads"].MaxEntries), uint64(schedSchedContractSCHED_MAX_THREADS)},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
		}
	}
	if maxLatProcs > schedSchedContractSCHED_MAX_PROCS {
		t.Errorf("goroutine latency followed for %d processes, the kernel side tracks %d", maxLatProcs, schedSchedContractSCHED_MAX_PROCS)
	}
}
