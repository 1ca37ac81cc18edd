// Package probes holds what every probe family shares: the per-Go-version
// facts about the runtime (argument registers, struct offsets) and the one
// attacher that turns a family's declarative Spec into uprobes and
// tracepoints.
package probes

import (
	"fmt"

	"github.com/gopulse/gopulse/probes/goinspect"
)

// Facts are the runtime internals that change between Go versions. Every
// row with Verified set is checked by TestFactsTable against DWARF of a
// real binary built with that toolchain; the others come from reading the
// runtime source of that release and are refined from DWARF at run time
// when the binary has it.
type Facts struct {
	Minor    int  // first Go 1.x release the row applies to
	Verified bool // a test checks this row against a binary of that version
	// WorldStopABI: startTheWorldWithSema(now int64, w worldStop) int64, so
	// its entry has w.reason in RBX and w.startedStopping in RCX (Go 1.22+).
	// Before, it took no worldStop and the runtime timed pauses from
	// work.pauseStart, which equals the markStartTime/now arguments of
	// (*gcControllerState).startCycle/endCycle.
	WorldStopABI bool
	// Offsets in runtime.gcControllerState; 0 when unknown.
	HeapLiveOffset   uint16
	AssistTimeOffset uint16
	// SpinbitMutex: runtime locks are lock_spinbit.go's (Go 1.24+): a
	// contended lock2 sleeps on its M's semaphore (semasleep), not on the
	// lock's own futex as lock_futex.go's did.
	SpinbitMutex bool
	// TimeHist is the layout of runtime.timeHistogram, the type of
	// sched.timeToRun (the data behind /sched/latencies:seconds).
	TimeHist TimeHist
}

// TimeHist describes runtime.timeHistogram: an HDR histogram of
// nanoseconds, counts[] then underflow (then overflow from Go 1.20).
//
// Go 1.19: SuperBuckets super-buckets of 2^SubBucketBits sub-buckets;
// super-bucket 0 counts 0..15 ns one by one, super-bucket s ≥ 1 the values
// whose highest set bit is s+SubBucketBits-1; the last sub-bucket also
// takes everything beyond the range. Go 1.20+: MinBucketBits > 0; bucket 0
// holds values below 2^(MinBucketBits-1), bucket i ≥ 1 those whose highest
// set bit is i+MinBucketBits-2, up to MaxBucketBits (exclusive), each split
// in 2^SubBucketBits; values beyond go to overflow.
type TimeHist struct {
	SubBucketBits uint8
	SuperBuckets  uint8 // Go 1.19 layout; 0 for the Go 1.20+ layout
	MinBucketBits uint8 // Go 1.20+ layout
	MaxBucketBits uint8 // Go 1.20+ layout, exclusive
}

var (
	timeHist119 = TimeHist{SubBucketBits: 4, SuperBuckets: 45}
	timeHist120 = TimeHist{SubBucketBits: 2, MinBucketBits: 9, MaxBucketBits: 48}
)

// Counts is the length of the counts array.
func (h TimeHist) Counts() int {
	if h.SuperBuckets > 0 {
		return int(h.SuperBuckets) << h.SubBucketBits
	}
	return int(h.MaxBucketBits-h.MinBucketBits+1) << h.SubBucketBits
}

// Overflow reports whether the type has an overflow counter after
// underflow.
func (h TimeHist) Overflow() bool { return h.SuperBuckets == 0 }

// Size is the size of the type in bytes.
func (h TimeHist) Size() int {
	n := h.Counts() + 1
	if h.Overflow() {
		n++
	}
	return 8 * n
}

// Valid reports whether the row knows the layout.
func (h TimeHist) Valid() bool { return h.SubBucketBits > 0 }

// factsTable is ordered by Minor. Go 1.19 is the oldest release with the
// register ABI on every function gopulse probes and with the pacer
// functions it reads (startCycle/endCycle with these arguments).
var factsTable = []Facts{
	{Minor: 19, Verified: true, HeapLiveOffset: 136, AssistTimeOffset: 224, TimeHist: timeHist119},
	{Minor: 20, TimeHist: timeHist120},
	{Minor: 22, WorldStopABI: true, TimeHist: timeHist120},
	{Minor: 24, WorldStopABI: true, SpinbitMutex: true, TimeHist: timeHist120},
	{Minor: 26, Verified: true, WorldStopABI: true, HeapLiveOffset: 104, AssistTimeOffset: 192, SpinbitMutex: true, TimeHist: timeHist120},
	{Minor: 27, Verified: true, WorldStopABI: true, HeapLiveOffset: 104, AssistTimeOffset: 192, SpinbitMutex: true, TimeHist: timeHist120},
}

// FactsTable returns a copy of the table, for tests and documentation.
func FactsTable() []Facts { return append([]Facts(nil), factsTable...) }

// MinGoMinor is the oldest Go 1.x release gopulse traces.
const MinGoMinor = 19

// FactsFor returns the facts for a binary: its version's row, with struct
// offsets read from DWARF when the row does not know them (or the release
// is newer than any row) and the binary is not stripped.
func FactsFor(b *goinspect.Binary) (Facts, error) {
	f, err := FactsForVersion(b.Version)
	if err != nil {
		return Facts{}, fmt.Errorf("%s: %w", b.Path, err)
	}
	newest := factsTable[len(factsTable)-1]
	if !f.Verified || b.Version.Minor > newest.Minor {
		f.HeapLiveOffset = dwarfOffset(b, "heapLive")
		f.AssistTimeOffset = dwarfOffset(b, "assistTime")
	}
	return f, nil
}

// FactsForVersion returns the table row for a Go release.
func FactsForVersion(v goinspect.Version) (Facts, error) {
	if v.Major != 1 || v.Minor < MinGoMinor {
		return Facts{}, fmt.Errorf("go%d.%d is older than go1.%d, the oldest release gopulse traces", v.Major, v.Minor, MinGoMinor)
	}
	f := factsTable[0]
	for _, row := range factsTable {
		if row.Minor <= v.Minor {
			f = row
		}
	}
	return f, nil
}

func dwarfOffset(b *goinspect.Binary, field string) uint16 {
	off, err := b.DWARFFieldOffset("runtime.gcControllerState", field)
	if err != nil || off <= 0 || off > 0xffff {
		return 0
	}
	return uint16(off)
}
