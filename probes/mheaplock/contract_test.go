package mheaplock

import (
	"testing"

	"github.com/gopulse/gopulse/probes/event"
)

// The sizes the kernel side and user space share, checked against what
// bpf2go generated from bpf/mheaplock.h and bpf/hist.h.
func TestKernelContract(t *testing.T) {
	spec, err := loadMheaplock()
	if err != nil {
		t.Fatal(err)
	}
	var p Proc
	for _, c := range []struct {
		what      string
		got, want uint64
	}{
		{"event.HistBuckets = HIST_BUCKETS", event.HistBuckets, uint64(mheaplockHistContractHIST_BUCKETS)},
		{"len(lock_proc.wait_hist) = HIST_BUCKETS", uint64(len(p.WaitHist)), uint64(mheaplockHistContractHIST_BUCKETS)},
		{"lock_procs = LOCK_MAX_PROCS", uint64(spec.Maps["lock_procs"].MaxEntries), uint64(mheaplockLockContractLOCK_MAX_PROCS)},
		{"lock_waits = LOCK_MAX_THREADS", uint64(spec.Maps["lock_waits"].MaxEntries), uint64(mheaplockLockContractLOCK_MAX_THREADS)},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
		}
	}
}
