package probes_test

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/gc"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// Every verified row of the facts table holds for real binaries of that
// Go release (every release from 1.19 to 1.27 the toolchains here can
// build), amd64 and arm64 builds (FactsFor gives each its architecture's
// books; the arm64 ones are cross-built and only inspected): each offset of the runtime's books equals DWARF's, the
// timeHistogram layout is DWARF's, and the worldStop type exists exactly
// when the row says so.
func TestFactsTable(t *testing.T) {
	verified := map[int]probes.Facts{}
	for _, f := range probes.FactsTable() {
		if f.Verified {
			verified[f.Minor] = f
		}
	}
	covered := map[goinspect.Arch]map[int]bool{goinspect.AMD64: {}, goinspect.ARM64: {}}
	shapes := append(fixturebuild.Shapes(), fixturebuild.ReleaseShapes()...)
	shapes = append(shapes, fixturebuild.ARM64Shapes()...)
	shapes = append(shapes, fixturebuild.ARM64ReleaseShapes()...)
	for _, shape := range shapes {
		if shape.Stripped {
			continue // no DWARF to check against
		}
		t.Run(shape.Name, func(t *testing.T) {
			path := fixturebuild.Build(t, "books", shape)
			b := open(t, path)
			row, ok := verified[b.Version.Minor]
			if !ok {
				t.Fatalf("no verified facts row for %s", b.GoVersion)
			}
			row, err := row.ForArch(b.Arch)
			if err != nil {
				t.Fatal(err)
			}
			covered[b.Arch][b.Version.Minor] = true
			d := dwarfOf(t, path)
			bk := row.Books
			gFree := []string{"schedt.gFree.n", "schedt.gFree.stack.size"}
			pGFree := "p.gFree.n"
			if d.has("p.gFree.size") {
				pGFree = "p.gFree.size"
			}
			for _, c := range []struct {
				path string
				want uint32
			}{
				{"workType.tSweepTerm", bk.WorkTSweepTerm}, {"workType.tMark", bk.WorkTMark},
				{"workType.tMarkTerm", bk.WorkTMarkTerm}, {"workType.tEnd", bk.WorkTEnd},
				{"workType.pauseNS", bk.WorkPauseNS}, {"workType.heap0", bk.WorkHeap0},
				{"workType.heap1", bk.WorkHeap1}, {"workType.heap2", bk.WorkHeap2},
				{"workType.userForced", bk.WorkUserForced},
				{"mstats.last_gc_unix", bk.MemLastGCUnix}, {"mstats.pause_total_ns", bk.MemPauseTotalNS},
				{"mstats.pause_ns", bk.MemPauseNS}, {"mstats.pause_end", bk.MemPauseEnd},
				{"mstats.numgc", bk.MemNumGC}, {"mstats.numforcedgc", bk.MemNumForcedGC},
				{"mstats.last_gc_nanotime", bk.MemLastGCNanotime}, {"mstats.heapStats", bk.MemHeapStats},
				{"heapStatsDelta.inStacks", bk.HeapStatsInStacks},
				{"gcControllerState.gcPercent", bk.CtlGCPercent}, {"gcControllerState.memoryLimit", bk.CtlMemoryLimit},
				{"gcControllerState.heapMinimum", bk.CtlHeapMinimum}, {"gcControllerState.gcPercentHeapGoal", bk.CtlGCPercentHeapGoal},
				{"gcControllerState.sweepDistMinTrigger", bk.CtlSweepDistMinTrigger}, {"gcControllerState.triggered", bk.CtlTriggered},
				{"gcControllerState.heapLive", bk.CtlHeapLive}, {"gcControllerState.heapMarked", bk.CtlHeapMarked},
				{"gcControllerState.assistTime", bk.CtlAssistTime}, {"gcControllerState.heapInUse", bk.CtlHeapInUse},
				{"gcControllerState.heapFree", bk.CtlHeapFree}, {"gcControllerState.totalAlloc", bk.CtlTotalAlloc},
				{"gcControllerState.totalFree", bk.CtlTotalFree}, {"gcControllerState.mappedReady", bk.CtlMappedReady},
				{"schedt.ngsys", bk.SchedNGsys}, {"schedt.timeToRun", bk.SchedTimeToRun},
				{pGFree, bk.PGFreeN},
			} {
				if got := d.offset(t, c.path); got != c.want {
					t.Errorf("%s: %s at %d, facts row says %d", b.GoVersion, c.path, got, c.want)
				}
			}
			if d.has(gFree[1]) {
				if got := d.offset(t, gFree[1]); got != bk.SchedGFree1 || d.offset(t, "schedt.gFree.noStack.size") != bk.SchedGFree2 {
					t.Errorf("%s: sched.gFree sizes at %d, %d; row says %d, %d", b.GoVersion, d.offset(t, gFree[1]), d.offset(t, "schedt.gFree.noStack.size"), bk.SchedGFree1, bk.SchedGFree2)
				}
			} else if got := d.offset(t, gFree[0]); got != bk.SchedGFree1 || bk.SchedGFree2 != 0 {
				t.Errorf("%s: sched.gFree.n at %d; row says %d (and %d)", b.GoVersion, got, bk.SchedGFree1, bk.SchedGFree2)
			}
			if d.has("schedt.stwTotalTimeOther") != (bk.SchedSTWOther != 0) || d.has("schedt.stwTotalTimeOther") && d.offset(t, "schedt.stwTotalTimeOther") != bk.SchedSTWOther {
				t.Errorf("%s: sched.stwTotalTimeOther: DWARF has %v, row says %d", b.GoVersion, d.has("schedt.stwTotalTimeOther"), bk.SchedSTWOther)
			}
			if got := d.size(t, "heapStatsDelta"); got != bk.HeapStatsDeltaSize {
				t.Errorf("%s: heapStatsDelta is %d bytes, row says %d", b.GoVersion, got, bk.HeapStatsDeltaSize)
			}
			if got := d.size(t, "gcControllerState"); got != bk.CtlSize {
				t.Errorf("%s: gcControllerState is %d bytes, row says %d", b.GoVersion, got, bk.CtlSize)
			}
			// The timeHistogram layout: counts[] then underflow (then
			// overflow), as the table's TimeHist says.
			under := d.offset(t, "timeHistogram.underflow")
			if want := uint32(row.TimeHist.Counts() * 8); under != want {
				t.Errorf("%s: timeHistogram.underflow at %d, table layout says %d", b.GoVersion, under, want)
			}
			if hasOver := d.has("timeHistogram.overflow"); hasOver != row.TimeHist.Overflow() || hasOver && d.offset(t, "timeHistogram.overflow") != under+8 {
				t.Errorf("%s: timeHistogram.overflow present = %v, table says %v", b.GoVersion, hasOver, row.TimeHist.Overflow())
			}
			if hasWS := d.has("worldStop.reason"); hasWS != row.WorldStopABI {
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
		for arch, c := range covered {
			if !c[minor] {
				t.Errorf("verified row go1.%d has no %s fixture shape checking it", minor, arch)
			}
		}
	}
}

// dwarfTypes are a binary's runtime struct types, for nested field paths
// ("schedt.gFree.stack.size").
type dwarfTypes map[string]*dwarf.StructType

func dwarfOf(t *testing.T, path string) dwarfTypes {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		t.Fatal(err)
	}
	out := dwarfTypes{}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			return out
		}
		if e.Tag == dwarf.TagStructType {
			if n, ok := e.Val(dwarf.AttrName).(string); ok && strings.HasPrefix(n, "runtime.") {
				if ty, err := d.Type(e.Offset); err == nil {
					if st, ok := ty.(*dwarf.StructType); ok {
						out[strings.TrimPrefix(n, "runtime.")] = st
					}
				}
			}
		}
		if e.Tag != dwarf.TagCompileUnit && e.Children {
			r.SkipChildren()
		}
	}
}

func (d dwarfTypes) lookup(path string) (off int64, ty dwarf.Type, ok bool) {
	parts := strings.Split(path, ".")
	st := d[parts[0]]
	if st == nil {
		return 0, nil, false
	}
	ty = st
	for _, p := range parts[1:] {
		for {
			td, ok := ty.(*dwarf.TypedefType)
			if !ok {
				break
			}
			ty = td.Type
		}
		s, isStruct := ty.(*dwarf.StructType)
		if !isStruct {
			return 0, nil, false
		}
		found := false
		for _, f := range s.Field {
			if f.Name == p {
				off, ty, found = off+f.ByteOffset, f.Type, true
				break
			}
		}
		if !found {
			return 0, nil, false
		}
	}
	return off, ty, true
}

func (d dwarfTypes) has(path string) bool { _, _, ok := d.lookup(path); return ok }

func (d dwarfTypes) offset(t *testing.T, path string) uint32 {
	t.Helper()
	off, _, ok := d.lookup(path)
	if !ok {
		t.Errorf("DWARF has no %s", path)
	}
	return uint32(off)
}

func (d dwarfTypes) size(t *testing.T, name string) uint32 {
	t.Helper()
	st := d[name]
	if st == nil {
		t.Errorf("DWARF has no %s", name)
		return 0
	}
	return uint32(st.Size())
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

// The GC family's one row resolves and attaches on every binary shape and
// Go version, one probe per binary, with uprobe_multi links and with one
// link per site; detaching and re-adding a family leaves the binary as it
// was.
func TestAttachGCFamily(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name  string
		env   probes.Env
		multi bool
	}{
		{name: "uprobe_multi", multi: true},
		{name: "per-site", env: probes.Env{SingleUprobes: true}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			if mode.multi && !probes.UprobeMulti().Have {
				testenv.Unavailable(t, "kernel without uprobe_multi links (Linux 6.6)")
			}
			fam, err := gc.Load(mode.env)
			if err != nil {
				t.Fatal(err)
			}
			defer fam.Close()
			if got := fam.Spec().Multi; got != mode.multi {
				t.Fatalf("Spec().Multi = %v, want %v", got, mode.multi)
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			att, err := probes.NewAttacher(log, fam.Spec())
			if err != nil {
				t.Fatal(err)
			}
			defer att.Close()
			for _, shape := range fixturebuild.Shapes() {
				t.Run(shape.Name, func(t *testing.T) {
					b := open(t, fixturebuild.Build(t, "gcload", shape))
					want := 1 // one site per binary: one trap per cycle
					bin, err := att.Attach(b, shape.Name)
					if err != nil {
						t.Fatal(err)
					}
					if bin.Probes != want || len(bin.Errors) != 0 {
						t.Errorf("attached %d probes (errors %v), want %d", bin.Probes, bin.Errors, want)
					}
					again, err := att.Attach(b, shape.Name)
					if err != nil || again.ID != bin.ID || again.Probes != bin.Probes {
						t.Errorf("second Attach of the same inode = %+v, %v; want the first attachment", again, err)
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
		})
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

// ForArch gives amd64 and arm64 binaries their architecture's books (the
// same before Go 1.21, when arm64's cache-line padding grew to 128 bytes)
// and refuses any other architecture.
func TestFactsForArch(t *testing.T) {
	for _, row := range probes.FactsTable() {
		amd, err := row.ForArch(goinspect.AMD64)
		if err != nil || amd.Books != row.Books || amd.Arch != goinspect.AMD64 {
			t.Errorf("go1.%d amd64: %+v, %v", row.Minor, amd.Books, err)
		}
		arm, err := row.ForArch(goinspect.ARM64)
		if err != nil || arm.Books != row.ARM64Books || arm.Arch != goinspect.ARM64 {
			t.Errorf("go1.%d arm64: %+v, %v", row.Minor, arm.Books, err)
		}
		if same := row.Books == row.ARM64Books; same != (row.Minor < 21) {
			t.Errorf("go1.%d: arm64 books equal amd64's = %v", row.Minor, same)
		}
		if _, err := row.ForArch("riscv64"); !errors.Is(err, goinspect.ErrArchUnsupported) {
			t.Errorf("go1.%d riscv64: err = %v, want ErrArchUnsupported", row.Minor, err)
		}
	}
}
