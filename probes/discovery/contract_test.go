package discovery

import (
	"testing"
	"unsafe"

	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
)

// The event kinds and sizes the kernel side and user space share, checked
// against what bpf2go generated from bpf/discovery.h.
func TestKernelContract(t *testing.T) {
	spec, err := loadDisc()
	if err != nil {
		t.Fatal(err)
	}
	var ev discDiscEvent
	for _, c := range []struct {
		what      string
		got, want uint64
	}{
		{"Exec = DISC_EVENT_EXEC", uint64(Exec), uint64(discDiscEventKindDISC_EVENT_EXEC)},
		{"Exit = DISC_EVENT_EXIT", uint64(Exit), uint64(discDiscEventKindDISC_EVENT_EXIT)},
		{"len(disc_event.filename) = DISC_FILENAME_LEN", uint64(len(ev.Filename)), uint64(discDiscContractDISC_FILENAME_LEN)},
		{"proc_events ring = DISC_RING_BYTES", uint64(spec.Maps["proc_events"].MaxEntries), uint64(discDiscContractDISC_RING_BYTES)},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
		}
	}
}

// The per-UID shares of exec events (bpf/share.h): the bucket's layout is
// what probes.ReadShares decodes, and the map has room for every UID with
// a bucket of its own plus the shared one.
func TestShareContract(t *testing.T) {
	if err := probes.CheckShareType(discGpShare{}); err != nil {
		t.Error(err)
	}
	spec, err := loadDisc()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := spec.Maps["proc_shares"].MaxEntries, uint32(discShareContractSHARE_MAX_UIDS)+1; got != want {
		t.Errorf("proc_shares: %d entries, want SHARE_MAX_UIDS+1 = %d", got, want)
	}
}

// Loaded, the shares map holds the bucket of the UIDs beyond its capacity
// and the ring's share is an eighth of its exec events at once.
func TestSharesLoaded(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	d, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var v discGpShare
	if err := d.objs.ProcShares.Lookup(probes.ShareOther, &v); err != nil {
		t.Errorf("no shared bucket: %v", err)
	}
	bytes, perSecond, burst := d.RingSize()
	records := uint64(bytes) / uint64(unsafe.Sizeof(discDiscEvent{})+8)
	if bytes != uint32(discDiscContractDISC_RING_BYTES) || burst != records/8 || perSecond != records/32 {
		t.Errorf("ring %d bytes, share %d/s, burst %d; want %d bytes, %d/s, %d", bytes, perSecond, burst,
			discDiscContractDISC_RING_BYTES, records/32, records/8)
	}
}
