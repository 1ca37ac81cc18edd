package sched_test

import (
	"bufio"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/sched"
)

// sched.timeToRun found by disassembly (what stripped binaries need) is
// .symtab's runtime.sched plus DWARF's offset of schedt.timeToRun, on every
// shape, amd64 and arm64 (cross-built, inspected only); on stripped ones
// it is found at all.
func TestTimeToRunAddr(t *testing.T) {
	shapes := append(fixturebuild.Shapes(), fixturebuild.ARM64Shapes()...)
	for _, shape := range append(shapes, fixturebuild.ARM64ReleaseShapes()...) {
		t.Run(shape.Name, func(t *testing.T) {
			path := fixturebuild.Build(t, "pingpong", shape)
			b, err := goinspect.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			facts, err := probes.FactsFor(b)
			if err != nil {
				t.Fatal(err)
			}
			addr, err := sched.TimeToRunAddr(b, facts.TimeHist)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: sched.timeToRun at %#x", b.GoVersion, addr)
			// The other release family's layout is refused, by the code.
			other := probes.FactsTable()[0].TimeHist // Go 1.19's
			if other == facts.TimeHist {
				other = probes.FactsTable()[len(probes.FactsTable())-1].TimeHist
			}
			if _, err := sched.TimeToRunAddr(b, other); err == nil {
				t.Errorf("%s: layout %+v accepted", b.GoVersion, other)
			} else {
				t.Logf("wrong layout refused: %v", err)
			}
			if shape.Stripped {
				return
			}
			off, err := b.DWARFFieldOffset("runtime.schedt", "timeToRun")
			if err != nil {
				t.Fatal(err)
			}
			want := symbol(t, path, "runtime.sched") + uint64(off)
			if addr != want {
				t.Errorf("sched.timeToRun at %#x by disassembly, %#x by .symtab+DWARF", addr, want)
			}
		})
	}
}

func symbol(t *testing.T, path, name string) uint64 {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	syms, err := ef.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name == name {
			return s.Value
		}
	}
	t.Fatalf("%s not in .symtab", name)
	return 0
}

// The goroutine scheduling latency read from outside is the runtime's own
// /sched/latencies:seconds: the same bucket boundaries, and the same counts
// but for the few goroutine switches between the fixture's read and ours.
// On Go 1.19 (inlined record, super-bucket layout) and 1.26/1.27
// (stripped, PIE, cgo).
func TestGoroutineLatencyEqualsRuntime(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	fam, err := sched.New()
	if err != nil {
		t.Fatal(err)
	}
	defer fam.Close()
	for _, shape := range fixturebuild.Shapes() {
		if !shape.Stripped && !shape.PIE && !shape.CGO && shape.Toolchain != "go1.27" {
			continue
		}
		t.Run(shape.Name, func(t *testing.T) {
			bin := fixturebuild.Build(t, "pingpong", shape)
			cmd := exec.Command(bin, "-wait", "-hold", "-histogram", "-pairs", "8", "-rounds", "20000", "-work", "50")
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			pid := uint32(cmd.Process.Pid)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			var bounds []float64
			var counts []uint64
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				switch f[0] {
				case "ready":
					fam.Track(pid)
					if lat := fam.Latency(pid); lat == nil || lat.Err != "" {
						t.Fatalf("not following goroutine latency: %+v", lat)
					}
					_, _ = io.WriteString(stdin, "\n")
				case "hist":
					bounds, counts = parseHist(t, f[1:])
				}
				if bounds != nil {
					break
				}
			}
			if bounds == nil {
				t.Fatal("fixture printed no histogram")
			}
			lat := fam.Latency(pid)
			if lat == nil || lat.Err != "" {
				t.Fatalf("latency: %+v", lat)
			}
			if len(lat.Buckets) != len(bounds) {
				t.Fatalf("%d bucket boundaries, runtime/metrics has %d", len(lat.Buckets), len(bounds))
			}
			for i := range bounds {
				if lat.Buckets[i] != bounds[i] {
					t.Fatalf("boundary %d: %g, runtime/metrics %g", i, lat.Buckets[i], bounds[i])
				}
			}
			var n, diff uint64
			for i, c := range counts {
				n += c
				if lat.Counts[i] < c {
					t.Errorf("bucket %d [%g, %g): read %d, runtime/metrics said %d earlier", i, bounds[i], bounds[i+1], lat.Counts[i], c)
				}
				diff += lat.Counts[i] - c
			}
			t.Logf("%s: %d sampled goroutine transitions, %d more when read from outside; p50 %s p99 %s",
				shape.Name, n, diff, quantile(bounds, counts, n, 0.5), quantile(bounds, counts, n, 0.99))
			if n < 1000 {
				t.Errorf("only %d sampled transitions: the fixture did not exercise the scheduler", n)
			}
			if diff > 50 {
				t.Errorf("%d transitions more than the runtime's own reading: not the same histogram", diff)
			}
			// Exited: the last reading stays, without an error, and the
			// descriptor held is not another process's memory.
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			after := fam.Latency(pid)
			if after == nil || after.Err != "" || len(after.Counts) != len(lat.Counts) {
				t.Errorf("after exit: %+v", after)
			}
			fam.Forget(pid)
			if fam.Latency(pid) != nil {
				t.Error("forgotten process still followed")
			}
		})
	}
}

func parseHist(t *testing.T, kvs []string) (bounds []float64, counts []uint64) {
	t.Helper()
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		for _, x := range strings.Split(v, ",") {
			switch k {
			case "bounds":
				f, err := strconv.ParseFloat(x, 64)
				if err != nil {
					t.Fatal(err)
				}
				bounds = append(bounds, f)
			case "counts":
				c, err := strconv.ParseUint(x, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				counts = append(counts, c)
			}
		}
	}
	if len(bounds) != len(counts)+1 {
		t.Fatalf("%d bounds for %d counts", len(bounds), len(counts))
	}
	return bounds, counts
}

func quantile(bounds []float64, counts []uint64, n uint64, q float64) string {
	var seen uint64
	for i, c := range counts {
		seen += c
		if float64(seen) >= q*float64(n) {
			return strconv.FormatFloat(bounds[i+1]*1e6, 'g', 3, 64) + "µs"
		}
	}
	return "?"
}
