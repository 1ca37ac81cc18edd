package discovery

import "testing"

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
