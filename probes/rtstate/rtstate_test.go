package rtstate_test

import (
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/rtstate"
)

// The books read from a live process's memory equal the runtime's own
// figures on every shape and toolchain: cycle and pause totals exactly,
// the heap goal within 1%, GOGC and the memory limit as set by the
// environment and at run time, goroutines within 2, GOMAXPROCS exactly;
// the books are found in the code (no .symtab) where .symtab finds them.
func TestBooksEqualRuntime(t *testing.T) {
	testenv.RequireRoot(t)
	for _, shape := range fixturebuild.Shapes() {
		t.Run(shape.Name, func(t *testing.T) {
			bin := fixturebuild.Build(t, "books", shape)
			f := e2etest.StartFixture(t, bin, []string{"GOGC=150", "GOMEMLIMIT=3GiB"})
			b, err := goinspect.Open(fmt.Sprintf("/proc/%d/exe", f.PID))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			facts, err := probes.FactsFor(b)
			if err != nil {
				t.Fatal(err)
			}
			addrs, err := rtstate.Locate(b, facts)
			if err != nil {
				t.Fatal(err)
			}
			if addrs.From != "code" {
				t.Errorf("books found by %s, want the code", addrs.From)
			}
			if !b.Stripped {
				sym, err := rtstate.FromSymtab(b)
				if err != nil {
					t.Fatal(err)
				}
				sym.From = addrs.From
				if sym != addrs {
					t.Errorf("found in code %+v, .symtab says %+v", addrs, sym)
				}
			}
			checkBooks(t, f, b, facts, addrs)
		})
	}
}

// checkBooks reads the books of the fixture f (binary b, found at addrs)
// from its memory and compares them with the runtime's own figures as the
// fixture changes them.
func checkBooks(t *testing.T, f *e2etest.Fixture, b *goinspect.Binary, facts probes.Facts, addrs rtstate.Addrs) {
	bias, err := b.LoadBias("/proc", f.PID)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", f.PID))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	r, err := rtstate.NewReader(mem, addrs.Add(bias), facts)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		want := f.Stats()
		got, err := r.Read()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if int64(got.NumGC) != want["numgc"] || int64(got.NumForcedGC) != want["forced"] || int64(got.PauseTotalNs) != want["pause_total_ns"] {
			t.Errorf("%s: numgc/forced/pause %d/%d/%d, runtime says %d/%d/%d", what, got.NumGC, got.NumForcedGC, got.PauseTotalNs, want["numgc"], want["forced"], want["pause_total_ns"])
		}
		if d := math.Abs(float64(got.HeapGoal)-float64(want["goal"])) / float64(want["goal"]); d > 0.01 {
			t.Errorf("%s: goal %d, runtime says %d", what, got.HeapGoal, want["goal"])
		}
		if int64(got.GCPercent) != want["gogc"] || got.MemoryLimit != want["limit"] {
			t.Errorf("%s: gogc %d limit %d, runtime says %d %d", what, got.GCPercent, got.MemoryLimit, want["gogc"], want["limit"])
		}
		if d := int64(got.Goroutines) - want["goroutines"]; d < -2 || d > 2 {
			t.Errorf("%s: %d goroutines, runtime says %d", what, got.Goroutines, want["goroutines"])
		}
		if int64(got.GOMAXPROCS) != want["gomaxprocs"] {
			t.Errorf("%s: GOMAXPROCS %d, runtime says %d", what, got.GOMAXPROCS, want["gomaxprocs"])
		}
		// The runtime's count of other stops (Go 1.22+): the
		// fixture's own ReadMemStats is one, before it counts.
		if w := want["stw_other"]; got.OtherSTW != w && (w < 0 || got.OtherSTW < w || got.OtherSTW > w+1) {
			t.Errorf("%s: %d other stops of the world, runtime says %d", what, got.OtherSTW, w)
		}
		if got.NumGC > 0 && got.Last.Seq != got.NumGC {
			t.Errorf("%s: last cycle %d, numgc %d", what, got.Last.Seq, got.NumGC)
		}
		t.Logf("%s: %+v (runtime: %v)", what, got, want)
	}
	check("at start (env GOGC=150 GOMEMLIMIT=3GiB)")
	f.Do("alloc 64")
	f.Do("gc 3")
	f.Do("spawn 20")
	check("after cycles")
	f.Do("gogc 50")
	f.Do("limit 100000000")
	check("SetGCPercent(50), SetMemoryLimit(1e8)")
	f.Do("gogc -1")
	check("GC off")

	s, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := r.PauseRing(s.NumGC)
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, p := range ring {
		sum += p.PauseNs
	}
	if len(ring) != int(s.NumGC) || sum != s.PauseTotalNs {
		t.Errorf("pause ring: %d cycles summing to %d ns; numgc %d, pause_total_ns %d", len(ring), sum, s.NumGC, s.PauseTotalNs)
	}
}
