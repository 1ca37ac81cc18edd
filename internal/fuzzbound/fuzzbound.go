// Package fuzzbound holds what the parsers' fuzz targets share: the check
// that one call stayed within goinspect's parse budget (memory allocated,
// CPU time), and the seeds — real fixture binaries of every shape and
// forged ones of each class of issue 12 (huge claimed sections,
// compressed sections, functions of thousands of RETs under a runtime
// function's name).
package fuzzbound

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/forgeelf"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// Slack over MaxParseCPU for what the budget's check granularity lets
// through (a check every 1024 units of work, each well under 1 ms).
const cpuSlack = 100 * time.Millisecond

// Within runs fn and fails t if it allocated more than
// goinspect.MaxParseBytes (the heap's cumulative allocation, TotalAlloc:
// what was freed counts too) or used more than goinspect.MaxParseCPU of
// its thread's CPU time (plus the check's granularity).
func Within(t testing.TB, what string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cpu0 := threadCPU()
	fn()
	cpu := threadCPU() - cpu0
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > goinspect.MaxParseBytes {
		t.Errorf("%s: allocated %.1f MiB, bound %d MiB", what, float64(alloc)/(1<<20), goinspect.MaxParseBytes>>20)
	}
	if cpu > goinspect.MaxParseCPU+cpuSlack {
		t.Errorf("%s: %v of CPU, bound %v", what, cpu, goinspect.MaxParseCPU)
	}
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// Fixtures returns real binaries: gcload in the amd64 shapes that need no
// C compiler or old toolchain to be fast to get, and the arm64 ones.
func Fixtures(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, s := range append(fixturebuild.Shapes(), fixturebuild.ARM64Shapes()...) {
		switch s.Name {
		case "go1.26-static", "go1.26-stripped", "go1.26-pie", "go1.19-static", "go1.26-arm64-static", "go1.26-arm64-stripped":
			out = append(out, fixturebuild.Build(t, "gcload", s))
		}
	}
	return out
}

// Forge builds the forge fixture (tools/fixtures/forge, Go 1.26 static).
func Forge(t testing.TB) string {
	t.Helper()
	return fixturebuild.Build(t, "forge", fixturebuild.Shapes()[0])
}

// A Forged binary is a crafted file: its bytes, and how many MiB of hole
// to extend it by (a sparse file: what a section claims lies within it).
type Forged struct {
	Name      string
	Path      string
	Len       int64 // bytes before the hole
	SparseMiB uint16
}

// Crafted writes one forged binary of each class into dir:
//   - sparse-pclntab: gcload whose .gopclntab claims 512 MiB, in a sparse
//     file that holds the claim (the binary of issue 12);
//   - sparse-pclntab-nfunc: the same claiming 1 GiB, with a header counting
//     64M functions (a 512 MiB function table, as far as the header says);
//   - sparse-symtab: the same for .symtab;
//   - compressed-pclntab: .gopclntab flagged compressed, its header
//     claiming 4 GiB, pointing at a zlib stream of 256 MiB of zeros;
//   - compressed-debug-info: the same for .debug_info;
//   - rets-gcmarktermination: forge with its 4096-RET function named
//     runtime.gcMarkTermination;
//   - bigrets-gcstart: forge with its 960 KiB of RETs named runtime.gcStart;
//   - semas-lock2: forge with its 2048 sleep sites named runtime.lock2
//     (and the function they call, runtime.semasleep).
//
// They are made once and kept beside the fixtures (fixturebuild.CacheDir,
// keyed by the source binaries): inflating the zlib streams costs seconds,
// and every fuzzing worker process asks for them. Callers must not modify
// them.
func Crafted(t testing.TB) []Forged {
	t.Helper()
	gcload := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	forge := Forge(t)
	classes := []struct {
		name   string
		src    string
		sparse uint16
		edit   func(p string) error
	}{
		{"sparse-pclntab", gcload, 512, func(p string) error { return forgeelf.ClaimSize(p, ".gopclntab", 512<<20) }},
		{"sparse-pclntab-nfunc", gcload, 1024, func(p string) error {
			if err := forgeelf.ClaimSize(p, ".gopclntab", 1<<30); err != nil {
				return err
			}
			return forgeelf.SetFuncCount(p, 1<<26)
		}},
		{"sparse-symtab", gcload, 512, func(p string) error { return forgeelf.ClaimSize(p, ".symtab", 512<<20) }},
		{"compressed-pclntab", gcload, 0, func(p string) error { return forgeelf.Compress(p, ".gopclntab", 4<<30, 256<<20) }},
		{"compressed-debug-info", gcload, 0, func(p string) error { return forgeelf.Compress(p, ".debug_info", 4<<30, 256<<20) }},
		{"rets-gcmarktermination", forge, 0, func(p string) error {
			return forgeelf.SwapNames(p, "main.rets", "runtime.gcMarkTermination")
		}},
		{"bigrets-gcstart", forge, 0, func(p string) error { return forgeelf.SwapNames(p, "main.bigrets", "runtime.gcStart") }},
		{"semas-lock2", forge, 0, func(p string) error {
			if err := forgeelf.SwapNames(p, "main.semas", "runtime.lock2"); err != nil {
				return err
			}
			return forgeelf.SwapNames(p, "main.fakesleep", "runtime.semasleep")
		}},
	}
	// The fixtures' names carry their toolchain and source hashes.
	dir := filepath.Join(fixturebuild.CacheDir(), fmt.Sprintf("forged-v%d-%s-%s", craftVersion, filepath.Base(gcload), filepath.Base(forge)))
	if _, err := os.Stat(dir); err != nil {
		tmp, err := os.MkdirTemp(fixturebuild.CacheDir(), ".forged-*")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		for _, c := range classes {
			p := filepath.Join(tmp, c.name)
			if err := forgeelf.Copy(c.src, p); err != nil {
				t.Fatal(err)
			}
			if err := c.edit(p); err != nil {
				t.Fatalf("forge %s: %v", c.name, err)
			}
		}
		// Another process may have won the race: its copy is as good.
		if err := os.Rename(tmp, dir); err != nil {
			if _, serr := os.Stat(dir); serr != nil {
				t.Fatal(err)
			}
		}
	}
	var out []Forged
	for _, c := range classes {
		p := filepath.Join(dir, c.name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		n := fi.Size()
		if c.sparse > 0 {
			src, err := os.Stat(c.src)
			if err != nil {
				t.Fatal(err)
			}
			n = src.Size()
		}
		out = append(out, Forged{Name: c.name, Path: p, Len: n, SparseMiB: c.sparse})
	}
	return out
}

// craftVersion changes when what Crafted makes changes.
const craftVersion = 1

// Bytes returns a forged binary's file content without its hole (the
// fuzz target re-creates it from SparseMiB).
func (f Forged) Bytes(t testing.TB) []byte {
	t.Helper()
	r, err := os.Open(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := make([]byte, f.Len)
	if _, err := r.ReadAt(data, 0); err != nil {
		t.Fatal(err)
	}
	return data
}
