package madvise

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/event"
)

// The numbers the kernel side and user space share, checked against what
// bpf2go generated from bpf/madvise.h (enum madv_contract) and against the
// kernel's own uapi (golang.org/x/sys/unix): a change on one side fails
// here, not in a figure.
func TestKernelContract(t *testing.T) {
	spec, err := loadMadvise()
	if err != nil {
		t.Fatal(err)
	}
	var ev madviseMadvEvent
	var tot madviseMadvTotals
	for _, c := range []struct {
		what      string
		got, want uint64
	}{
		{"event.AdviceSlots = MADV_SLOTS", event.AdviceSlots, uint64(madviseMadvContractMADV_SLOTS)},
		{"len(madv_totals.calls) = MADV_SLOTS", uint64(len(tot.Calls)), uint64(madviseMadvContractMADV_SLOTS)},
		{"len(madv_totals.bytes) = MADV_SLOTS", uint64(len(tot.Bytes)), uint64(madviseMadvContractMADV_SLOTS)},
		{"len(madv_event.stack) = MADV_STACK_DEPTH", uint64(len(ev.Stack)), uint64(madviseMadvContractMADV_STACK_DEPTH)},
		{"madv_events ring = MADV_RING_BYTES", uint64(spec.Maps["madv_events"].MaxEntries), uint64(madviseMadvContractMADV_RING_BYTES)},
		{"madv_procs = MADV_MAX_PROCS", uint64(spec.Maps["madv_procs"].MaxEntries), uint64(madviseMadvContractMADV_MAX_PROCS)},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
		}
	}
	// Which advices release memory: event.Releases and the kernel side's
	// mask (the stack is walked for exactly these).
	mask := uint64(madviseMadvContractMADV_RELEASE_MASK)
	for adv := int32(-2); adv < 40; adv++ {
		kernel := adv >= 0 && adv < 32 && mask>>adv&1 == 1
		if got := event.Releases(adv); got != kernel {
			t.Errorf("advice %d (%s): event.Releases %v, kernel side %v", adv, event.AdviceName(adv), got, kernel)
		}
		// The slot user space reads an advice's totals from is the one
		// the kernel side counts it in (madv_exit).
		want := int(adv)
		if adv < 0 || adv >= int32(madviseMadvContractMADV_SLOTS) {
			want = int(madviseMadvContractMADV_SLOTS) - 1
		}
		if got := event.AdviceSlot(adv); got != want {
			t.Errorf("advice %d: slot %d, kernel side %d", adv, got, want)
		}
	}
	// Advice numbers are Linux's.
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"NORMAL", event.AdvNormal, unix.MADV_NORMAL}, {"RANDOM", event.AdvRandom, unix.MADV_RANDOM},
		{"SEQUENTIAL", event.AdvSequential, unix.MADV_SEQUENTIAL}, {"WILLNEED", event.AdvWillNeed, unix.MADV_WILLNEED},
		{"DONTNEED", event.AdvDontNeed, unix.MADV_DONTNEED}, {"FREE", event.AdvFree, unix.MADV_FREE},
		{"REMOVE", event.AdvRemove, unix.MADV_REMOVE}, {"DONTFORK", event.AdvDontFork, unix.MADV_DONTFORK},
		{"DOFORK", event.AdvDoFork, unix.MADV_DOFORK}, {"MERGEABLE", event.AdvMergeable, unix.MADV_MERGEABLE},
		{"UNMERGEABLE", event.AdvUnmergable, unix.MADV_UNMERGEABLE}, {"HUGEPAGE", event.AdvHugePage, unix.MADV_HUGEPAGE},
		{"NOHUGEPAGE", event.AdvNoHugePage, unix.MADV_NOHUGEPAGE}, {"DONTDUMP", event.AdvDontDump, unix.MADV_DONTDUMP},
		{"DODUMP", event.AdvDoDump, unix.MADV_DODUMP}, {"WIPEONFORK", event.AdvWipeOnFork, unix.MADV_WIPEONFORK},
		{"KEEPONFORK", event.AdvKeepOnFork, unix.MADV_KEEPONFORK}, {"COLD", event.AdvCold, unix.MADV_COLD},
		{"PAGEOUT", event.AdvPageOut, unix.MADV_PAGEOUT}, {"POPULATE_READ", event.AdvPopulateR, unix.MADV_POPULATE_READ},
		{"POPULATE_WRITE", event.AdvPopulateW, unix.MADV_POPULATE_WRITE}, {"COLLAPSE", event.AdvCollapse, unix.MADV_COLLAPSE}, {"DONTNEED_LOCKED", event.AdvDontNeedLk, unix.MADV_DONTNEED_LOCKED},
	} {
		if c.got != c.want {
			t.Errorf("MADV_%s: %d, Linux %d", c.name, c.got, c.want)
		}
	}
}

// The per-UID shares (bpf/share.h): the bucket's layout is what
// probes.ReadShares decodes, and the map has room for every UID with a
// bucket of its own plus the shared one.
func TestShareContract(t *testing.T) {
	if err := probes.CheckShareType(madviseGpShare{}); err != nil {
		t.Error(err)
	}
	spec, err := loadMadvise()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := spec.Maps["madv_shares"].MaxEntries, uint32(madviseShareContractSHARE_MAX_UIDS)+1; got != want {
		t.Errorf("madv_shares: %d entries, want SHARE_MAX_UIDS+1 = %d", got, want)
	}
}
