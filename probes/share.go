package probes

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// Per-UID shares of a ring buffer (bpf/share.h). Each UID's records are
// charged to a token bucket before they are reserved in the ring; while
// the ring is under pressure (a quarter of it waiting to be read: the
// reader was woken at an eighth and has not caught up), a UID over its
// bucket is refused. Bucket: an eighth of the ring's records at once, a
// thirty-second more each second. So when the reader stalls for T
// seconds, one flooding user holds at most 1/4 + T/32 of the ring (3/8
// after 4 s; measured: with 1/8 per second, two flooding users — the
// attacker and root's builds on the shared test VM — filled the ring in a
// 4 s stall), and two of them leave a quarter to the others; while the
// reader keeps up, nothing is refused at all, whatever the rate. Measured on the
// test VM (2 CPUs shared with other builds, load 20-45): a tight
// runtime.GC() loop runs 80-900 cycles/s, one 1064-byte record each
// (the ring holds 985 of them at 1 MiB, 3942 at 4 MiB); decoding one
// record costs the reader ~85 µs at that load (encoding/binary). A UID
// over its share loses per-cycle records only: the GC totals are the
// runtime's own and the madvise totals are counted before the share is
// asked, so both stay exact.

// shareUIDOther is bpf/share.h's SHARE_UID_OTHER: the bucket of the UIDs
// beyond SHARE_MAX_UIDS.
const shareUIDOther = ^uint32(0)

// ShareOther is the UID reported for the bucket shared by the UIDs beyond
// the map's capacity.
const ShareOther = shareUIDOther

// SetShares sets a collection's ring share and wakeup threshold for a ring
// of ringBytes holding records of recordBytes (the kernel adds an 8-byte
// header to each). Before load.
func SetShares(spec *ebpf.CollectionSpec, ringBytes, recordBytes uint32) error {
	rate, burst := ShareRate(ringBytes, recordBytes)
	interval := uint64(time.Second) / rate
	for name, v := range map[string]uint64{
		"gp_share_interval_ns": interval,
		// GCRA: under pressure, a record passes when the bucket's time
		// is at most this far ahead, i.e. burst records at once.
		"gp_share_burst_ns": (burst - 1) * interval,
		"gp_wake_bytes":     uint64(ringBytes) / 8,
		"gp_pressure_bytes": uint64(ringBytes) / 4,
	} {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("collection has no %s constant (bpf/share.h)", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

// ShareRate is the records per second and the burst SetShares gives each
// UID of a ring (status, README).
func ShareRate(ringBytes, recordBytes uint32) (perSecond, burst uint64) {
	per := uint64(recordBytes+8+7) &^ 7
	records := uint64(ringBytes) / per
	return max(records/32, 1), max(records/8, 1)
}

// Share is one UID's records through a ring: let through, and refused
// over its share.
type Share struct {
	UID     uint32
	Sent    uint64
	Dropped uint64
}

// shareValue is bpf/share.h's struct gp_share (checked against each
// family's bpf2go type by its contract test).
type shareValue struct {
	Tat     uint64
	Sent    uint64
	Dropped uint64
}

// InitShares creates the bucket shared by the UIDs beyond the map's
// capacity, so that a full map never refuses it. After load.
func InitShares(m *ebpf.Map) error {
	if err := m.Update(shareUIDOther, &shareValue{}, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("create the shared bucket of %s: %w", m.String(), err)
	}
	return nil
}

// ReadShares returns every UID's share, by UID.
func ReadShares(m *ebpf.Map) ([]Share, error) {
	var (
		uid uint32
		v   shareValue
		out []Share
	)
	it := m.Iterate()
	for it.Next(&uid, &v) {
		if v.Sent == 0 && v.Dropped == 0 {
			continue
		}
		out = append(out, Share{UID: uid, Sent: v.Sent, Dropped: v.Dropped})
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return out, fmt.Errorf("read %s: %w", m.String(), err)
	}
	slices.SortFunc(out, func(a, b Share) int { return int(int64(a.UID) - int64(b.UID)) })
	return out, nil
}

// SharesDropped sums the records refused over their UID's share.
func SharesDropped(m *ebpf.Map) (uint64, error) {
	s, err := ReadShares(m)
	var n uint64
	for _, v := range s {
		n += v.Dropped
	}
	return n, err
}

// CheckShareType reports whether v, a family's bpf2go type of struct
// gp_share, has the layout ReadShares decodes (the families' contract
// tests).
func CheckShareType(v any) error {
	got, want := reflect.TypeOf(v), reflect.TypeOf(shareValue{})
	var fields []reflect.StructField
	for i := range got.NumField() {
		if f := got.Field(i); f.Type.Size() > 0 { // bpf2go's structs.HostLayout marker
			fields = append(fields, f)
		}
	}
	if got.Size() != want.Size() || len(fields) != want.NumField() {
		return fmt.Errorf("%v: %d bytes, %d fields; want %d, %d", got, got.Size(), len(fields), want.Size(), want.NumField())
	}
	for i, g := range fields {
		w := want.Field(i)
		if g.Name != w.Name || g.Type != w.Type || g.Offset != w.Offset {
			return fmt.Errorf("%v field %d: %s %v at %d; want %s %v at %d", got, i, g.Name, g.Type, g.Offset, w.Name, w.Type, w.Offset)
		}
	}
	return nil
}
