package probes_test

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/gc"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// Every verified row of the facts table holds for a real binary of that
// Go release: struct offsets equal DWARF's, and the worldStop ABI is there
// exactly when the row says so.
func TestFactsTable(t *testing.T) {
	verified := map[int]probes.Facts{}
	for _, f := range probes.FactsTable() {
		if f.Verified {
			verified[f.Minor] = f
		}
	}
	covered := map[int]bool{}
	for _, shape := range fixturebuild.Shapes() {
		if shape.Stripped {
			continue // no DWARF to check against
		}
		t.Run(shape.Name, func(t *testing.T) {
			b := open(t, fixturebuild.Build(t, "gcload", shape))
			row, ok := verified[b.Version.Minor]
			if !ok {
				t.Fatalf("no verified facts row for %s", b.GoVersion)
			}
			covered[b.Version.Minor] = true
			for _, c := range []struct {
				field string
				want  uint16
			}{{"heapLive", row.HeapLiveOffset}, {"assistTime", row.AssistTimeOffset}} {
				off, err := b.DWARFFieldOffset("runtime.gcControllerState", c.field)
				if err != nil {
					t.Fatal(err)
				}
				if off != int64(c.want) {
					t.Errorf("gcControllerState.%s at %d in %s, table says %d", c.field, off, b.GoVersion, c.want)
				}
			}
			// The timeHistogram layout: counts[] then underflow (then
			// overflow), as the table's TimeHist says.
			under, err := b.DWARFFieldOffset("runtime.timeHistogram", "underflow")
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(row.TimeHist.Counts() * 8); under != want {
				t.Errorf("%s: timeHistogram.underflow at %d, table layout says %d", b.GoVersion, under, want)
			}
			over, err := b.DWARFFieldOffset("runtime.timeHistogram", "overflow")
			if hasOver := err == nil; hasOver != row.TimeHist.Overflow() || hasOver && over != under+8 {
				t.Errorf("%s: timeHistogram.overflow present = %v (at %d), table says %v", b.GoVersion, hasOver, over, row.TimeHist.Overflow())
			}
			_, err = b.DWARFFieldOffset("runtime.worldStop", "startedStopping")
			if hasWS := err == nil; hasWS != row.WorldStopABI {
				t.Errorf("%s: runtime.worldStop present = %v, table WorldStopABI = %v", b.GoVersion, hasWS, row.WorldStopABI)
			}
			got, err := probes.FactsFor(b)
			if err != nil {
				t.Fatal(err)
			}
			if got != row {
				t.Errorf("FactsFor = %+v, want %+v", got, row)
			}
		})
	}
	for minor := range verified {
		if !covered[minor] {
			t.Errorf("verified row go1.%d has no fixture shape checking it", minor)
		}
	}
}

func open(t *testing.T, path string) *goinspect.Binary {
	t.Helper()
	b, err := goinspect.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// The GC family's rows resolve and attach on every binary shape and Go
// version, with the probe count the version's ABI implies; detaching and
// re-adding a family leaves the binary as it was.
func TestAttachGCFamily(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	fam, err := gc.New()
	if err != nil {
		t.Fatal(err)
	}
	defer fam.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	att, err := probes.NewAttacher(log, fam.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	for _, shape := range fixturebuild.Shapes() {
		t.Run(shape.Name, func(t *testing.T) {
			b := open(t, fixturebuild.Build(t, "gcload", shape))
			want := 2 // startCycle, endCycle entries
			facts, err := probes.FactsFor(b)
			if err != nil {
				t.Fatal(err)
			}
			if facts.WorldStopABI {
				f, err := b.Func("runtime.startTheWorldWithSema")
				if err != nil {
					t.Fatal(err)
				}
				rets, err := b.Returns(f)
				if err != nil {
					t.Fatal(err)
				}
				want += 1 + len(rets)
			} else {
				want++ // finishGCTransition entry
			}
			bin, err := att.Attach(b, shape.Name)
			if err != nil {
				t.Fatal(err)
			}
			if bin.Probes != want || len(bin.Errors) != 0 {
				t.Errorf("attached %d probes (errors %v), want %d", bin.Probes, bin.Errors, want)
			}
			again, err := att.Attach(b, shape.Name)
			if err != nil || again != bin {
				t.Errorf("second Attach of the same inode = %p, %v; want the first attachment", again, err)
			}
		})
	}
	n := probeCount(att)
	att.RemoveSpec(gc.Name)
	if got := probeCount(att); got != 0 {
		t.Errorf("%d probes left after RemoveSpec", got)
	}
	if err := att.AddSpec(fam.Spec()); err != nil {
		t.Fatal(err)
	}
	if got := probeCount(att); got != n {
		t.Errorf("%d probes after re-adding the family, want %d", got, n)
	}
}

func probeCount(att *probes.Attacher) int {
	n := 0
	for _, b := range att.Binaries() {
		n += b.Probes
	}
	return n
}

// Versions without a verified row get the ABI of the row below them and
// struct offsets only from DWARF; versions older than the oldest supported
// are refused.
func TestFactsForVersions(t *testing.T) {
	for _, c := range []struct {
		v         goinspect.Version
		worldStop bool
		err       bool
	}{
		{goinspect.Version{Major: 1, Minor: 18}, false, true},
		{goinspect.Version{Major: 1, Minor: 19, Patch: 13}, false, false},
		{goinspect.Version{Major: 1, Minor: 21}, false, false},
		{goinspect.Version{Major: 1, Minor: 22}, true, false},
		{goinspect.Version{Major: 1, Minor: 25, Patch: 3}, true, false},
		{goinspect.Version{Major: 1, Minor: 30}, true, false},
	} {
		t.Run(fmt.Sprint(c.v), func(t *testing.T) {
			f, err := probes.FactsForVersion(c.v)
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want error %v", err, c.err)
			}
			if err == nil && f.WorldStopABI != c.worldStop {
				t.Errorf("WorldStopABI = %v, want %v", f.WorldStopABI, c.worldStop)
			}
		})
	}
}
