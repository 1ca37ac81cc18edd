package goinspect_test

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// probedFuncs are the runtime functions gopulse attaches to.
var probedFuncs = []string{
	"runtime.startTheWorldWithSema",
	"runtime.(*gcControllerState).startCycle",
	"runtime.(*gcControllerState).endCycle",
	"runtime.gcStart",
	"runtime.mallocgc",
}

// extraShapes cover how runtime.text is found beyond the shared shapes:
// PIE+cgo (pointers only in RELA addends, C code before Go code), and the
// Go 1.19 layout of those cases.
var extraShapes = []fixturebuild.Shape{
	{Name: "go1.26-cgo-pie-stripped", Toolchain: "go1.26", CGO: true, PIE: true, Stripped: true},
	{Name: "go1.26-cgo-pie", Toolchain: "go1.26", CGO: true, PIE: true},
	{Name: "go1.19-cgo", Toolchain: "go1.19", CGO: true},
	{Name: "go1.19-pie", Toolchain: "go1.19", PIE: true},
}

func TestShapes(t *testing.T) {
	for _, s := range append(fixturebuild.Shapes(), extraShapes...) {
		t.Run(s.Name, func(t *testing.T) {
			path := fixturebuild.Build(t, "gcload", s)
			b, err := goinspect.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			checkBinary(t, b, s)
		})
	}
}

func checkBinary(t *testing.T, b *goinspect.Binary, s fixturebuild.Shape) {
	t.Helper()
	if !strings.HasPrefix(b.GoVersion, s.Toolchain+".") {
		t.Errorf("GoVersion = %q, want %s.x", b.GoVersion, s.Toolchain)
	}
	want, err := goinspect.ParseVersion(s.Toolchain)
	if err != nil {
		t.Fatal(err)
	}
	if b.Version.Major != want.Major || b.Version.Minor != want.Minor {
		t.Errorf("Version = %v, want %d.%d", b.Version, want.Major, want.Minor)
	}
	if b.PIE != s.PIE {
		t.Errorf("PIE = %v, want %v", b.PIE, s.PIE)
	}
	// Go's internal linker gives PIE binaries an interpreter too.
	if wantStatic := !s.CGO && !s.PIE; b.Static != wantStatic {
		t.Errorf("Static = %v, want %v", b.Static, wantStatic)
	}
	if b.Stripped != s.Stripped {
		t.Errorf("Stripped = %v, want %v", b.Stripped, s.Stripped)
	}
	if b.CGO != s.CGO {
		t.Errorf("CGO = %v, want %v", b.CGO, s.CGO)
	}
	fi, err := os.Stat(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	if id := statID(t, fi); id != b.ID {
		t.Errorf("ID = %+v, want %+v", b.ID, id)
	}

	ef, err := elf.Open(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	var syms map[string]elf.Symbol
	if !s.Stripped {
		all, err := ef.Symbols()
		if err != nil {
			t.Fatal(err)
		}
		syms = make(map[string]elf.Symbol, len(all))
		for _, sym := range all {
			syms[sym.Name] = sym
		}
	}
	text := ef.Section(".text")
	raw, err := os.ReadFile(b.Path)
	if err != nil {
		t.Fatal(err)
	}

	for _, name := range probedFuncs {
		fn, err := b.Func(name)
		if err != nil {
			t.Errorf("Func: %v", err)
			continue
		}
		if fn.Name != name || fn.End <= fn.Entry {
			t.Errorf("Func(%s) = %+v", name, fn)
		}
		if syms != nil {
			sym, ok := syms[name]
			if !ok {
				t.Errorf("%s not in .symtab", name)
			} else if sym.Value != fn.Entry || fn.End < sym.Value+sym.Size {
				t.Errorf("%s: pclntab [%#x,%#x), .symtab %#x size %d", name, fn.Entry, fn.End, sym.Value, sym.Size)
			}
		}
		off, err := b.FileOffset(fn.Entry)
		if err != nil {
			t.Errorf("FileOffset(%s): %v", name, err)
			continue
		}
		// Cross-check against the section headers, an independent mapping.
		if wantOff := text.Offset + (fn.Entry - text.Addr); off != wantOff {
			t.Errorf("FileOffset(%s) = %#x, want %#x", name, off, wantOff)
		}
		rets, err := b.Returns(fn)
		if err != nil {
			t.Errorf("Returns(%s): %v", name, err)
			continue
		}
		if len(rets) == 0 {
			t.Errorf("Returns(%s): no RET", name)
		}
		for _, r := range rets {
			ro, err := b.FileOffset(r)
			if err != nil {
				t.Fatalf("FileOffset(ret %#x): %v", r, err)
			}
			if r < fn.Entry || r >= fn.End || (raw[ro] != 0xc3 && raw[ro] != 0xc2) {
				t.Errorf("%s: RET at %#x (byte %#x) outside function or not a RET", name, r, raw[ro])
			}
		}
		t.Logf("%s entry=%#x off=%#x rets=%d", name, fn.Entry, off, len(rets))
	}
	if _, err := b.Func("runtime.noSuchFunction"); !errors.Is(err, goinspect.ErrNoFunc) {
		t.Errorf("Func(missing) error = %v, want ErrNoFunc", err)
	}

	off, err := b.DWARFFieldOffset("runtime.gcControllerState", "heapLive")
	if s.Stripped {
		if err == nil {
			t.Errorf("DWARFFieldOffset on stripped binary = %d, want error", off)
		}
	} else {
		if err != nil || off <= 0 {
			t.Errorf("DWARFFieldOffset(heapLive) = %d, %v", off, err)
		}
		if _, err := b.DWARFFieldOffset("runtime.gcControllerState", "noSuchField"); err == nil {
			t.Error("DWARFFieldOffset(noSuchField) succeeded")
		}
		if _, err := b.DWARFFieldOffset("runtime.noSuchType", "x"); err == nil {
			t.Error("DWARFFieldOffset(noSuchType) succeeded")
		}
	}
}

// Without section headers (sstrip, some packers) the table, runtime.text
// and build info must still be found from the program headers.
func TestNoSectionHeaders(t *testing.T) {
	for _, s := range []fixturebuild.Shape{fixturebuild.Shapes()[0], extraShapes[0]} {
		t.Run(s.Name, func(t *testing.T) {
			path := fixturebuild.Build(t, "gcload", s)
			orig, err := goinspect.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer orig.Close()
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// e_shoff (0x28, 8 bytes), e_shnum (0x3c), e_shstrndx (0x3e).
			copy(data[0x28:0x30], make([]byte, 8))
			copy(data[0x3c:0x40], make([]byte, 4))
			mod := filepath.Join(t.TempDir(), "gcload")
			if err := os.WriteFile(mod, data, 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := goinspect.Open(mod)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for _, name := range probedFuncs {
				want, _ := orig.Func(name)
				got, err := b.Func(name)
				if err != nil || got != want {
					t.Errorf("Func(%s) = %+v, %v; want %+v", name, got, err, want)
				}
			}
		})
	}
}

func TestNotGo(t *testing.T) {
	for _, p := range []string{"/bin/true", "/bin/sh"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		b, err := goinspect.Open(p)
		if err == nil {
			b.Close()
			t.Errorf("Open(%s) succeeded", p)
			continue
		}
		if !errors.Is(err, goinspect.ErrNotGo) || !strings.Contains(err.Error(), p) {
			t.Errorf("Open(%s) = %v, want ErrNotGo with the path", p, err)
		}
	}
}

func TestMalformed(t *testing.T) {
	good, err := os.ReadFile(fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0]))
	if err != nil {
		t.Fatal(err)
	}
	garbage := pseudoRandom(8192)
	elfHeaderGarbage := append(append([]byte{}, good[:64]...), garbage[:4096]...)
	absurdHeader := append([]byte{}, good[:4096]...)
	copy(absurdHeader[0x28:], []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}) // e_shoff far away
	badPclntab := append([]byte{}, good...)
	if ef, err := elf.NewFile(bytes.NewReader(good)); err == nil {
		if s := ef.Section(".gopclntab"); s != nil {
			copy(badPclntab[s.Offset+8:], garbage[:256])
		}
	}

	cases := []struct {
		name    string
		data    []byte
		wantELF bool // must wrap ErrNotELF
	}{
		{"empty", nil, true},
		{"random", garbage, true},
		{"truncated-4KiB", good[:4096], true},
		{"truncated-half", good[:len(good)/2], true},
		{"elf-header-garbage", elfHeaderGarbage, true},
		{"absurd-shoff", absurdHeader, true},
		{"text-file", []byte("#!/bin/sh\necho hi\n"), true},
		{"garbage-pclntab", badPclntab, false},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name)
			if err := os.WriteFile(p, c.data, 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := goinspect.Open(p)
			if err == nil {
				// A corrupt pclntab may still parse; it must then behave.
				defer b.Close()
				if c.wantELF {
					t.Fatalf("Open succeeded")
				}
				for _, name := range probedFuncs {
					if fn, err := b.Func(name); err == nil {
						_, _ = b.Returns(fn)
					}
				}
				return
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the path", err)
			}
			if c.wantELF && !errors.Is(err, goinspect.ErrNotELF) {
				t.Errorf("error %v does not wrap ErrNotELF", err)
			}
			t.Logf("%v", err)
		})
	}
	if _, err := goinspect.Open(filepath.Join(dir, "does-not-exist")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want ErrNotExist", err)
	}
	if _, err := goinspect.Open(dir); err == nil {
		t.Error("Open(directory) succeeded")
	}
}

func TestClose(t *testing.T) {
	b, err := goinspect.Open(fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0]))
	if err != nil {
		t.Fatal(err)
	}
	fn, err := b.Func("runtime.gcStart")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Returns(fn); err == nil {
		t.Error("Returns after Close succeeded")
	}
	if _, err := b.FileOffset(fn.Entry); err == nil {
		t.Error("FileOffset after Close succeeded")
	}
	if _, err := b.DWARFFieldOffset("runtime.gcControllerState", "heapLive"); err == nil {
		t.Error("DWARFFieldOffset after Close succeeded")
	}
}

func TestReturnsRejectsUndecodable(t *testing.T) {
	b, err := goinspect.Open(fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fn, err := b.Func("runtime.gcStart")
	if err != nil {
		t.Fatal(err)
	}
	// A range outside any segment, and one absurdly large.
	if _, err := b.Returns(goinspect.Func{Name: "x", Entry: 0x10, End: 0x20}); err == nil {
		t.Error("Returns outside segments succeeded")
	}
	if _, err := b.Returns(goinspect.Func{Name: "x", Entry: fn.Entry, End: fn.Entry + 1<<30}); err == nil {
		t.Error("Returns over 1 GiB succeeded")
	}
	if _, err := b.Returns(goinspect.Func{Name: "x", Entry: fn.Entry, End: fn.Entry}); err == nil {
		t.Error("Returns on empty range succeeded")
	}
}

func pseudoRandom(n int) []byte {
	out := make([]byte, n)
	x := uint32(2463534242)
	for i := range out {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		out[i] = byte(x)
	}
	return out
}

func goCommandBinary(tb testing.TB) string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		tb.Skipf("go env GOROOT: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "pkg", "tool", "linux_amd64", "compile")
}

func TestBigBinary(t *testing.T) {
	p := goCommandBinary(t)
	b, err := goinspect.Open(p)
	if err != nil {
		t.Skipf("no big Go binary: %v", err)
	}
	defer b.Close()
	for _, name := range probedFuncs {
		fn, err := b.Func(name)
		if err != nil {
			t.Error(err)
			continue
		}
		if _, err := b.Returns(fn); err != nil {
			t.Error(err)
		}
	}
	t.Logf("%s: %d functions", p, b.NumFuncs())
}

func BenchmarkOpen(b *testing.B) {
	bins := map[string]string{
		"fixture": fixturebuild.Build(b, "gcload", fixturebuild.Shapes()[0]),
		"compile": goCommandBinary(b),
	}
	for name, p := range bins {
		fi, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(fi.Size())
			for b.Loop() {
				bin, err := goinspect.Open(p)
				if err != nil {
					b.Fatal(err)
				}
				bin.Close()
			}
		})
	}
}

// Linkers such as lld leave RELA-relocated words zero in the file; the
// moduledata pointers must then come from the relocation addends.
func TestPointersOnlyInRelocations(t *testing.T) {
	s := extraShapes[1] // go1.26-cgo-pie, unstripped for the symbols
	path := fixturebuild.Build(t, "gcload", s)
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	syms, err := ef.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var md uint64
	want := map[string]uint64{}
	for _, sym := range syms {
		if sym.Name == "runtime.firstmoduledata" {
			md = sym.Value
		}
		want[sym.Name] = sym.Value
	}
	var fileOff uint64
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && md >= p.Vaddr && md < p.Vaddr+p.Filesz {
			fileOff = p.Off + md - p.Vaddr
		}
	}
	if md == 0 || fileOff == 0 {
		t.Fatal("runtime.firstmoduledata not found")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []uint64{0, 8, 160, 176} { // pcHeader, funcnametab, minpc, text
		copy(data[fileOff+field:], make([]byte, 8))
	}
	mod := filepath.Join(t.TempDir(), "gcload")
	if err := os.WriteFile(mod, data, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := goinspect.Open(mod)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, name := range probedFuncs {
		fn, err := b.Func(name)
		if err != nil || fn.Entry != want[name] {
			t.Errorf("Func(%s) = %#x, %v; want %#x", name, fn.Entry, err, want[name])
		}
	}
}

// TestMutations corrupts a real binary where the parser looks (ELF and
// program headers, section headers, .gopclntab, moduledata, DWARF) and
// checks nothing panics: FuzzOpen's small seeds rarely get that deep.
func TestMutations(t *testing.T) {
	for _, s := range []fixturebuild.Shape{fixturebuild.Shapes()[0], extraShapes[1]} {
		t.Run(s.Name, func(t *testing.T) {
			good, err := os.ReadFile(fixturebuild.Build(t, "gcload", s))
			if err != nil {
				t.Fatal(err)
			}
			ef, err := elf.NewFile(bytes.NewReader(good))
			if err != nil {
				t.Fatal(err)
			}
			type region struct {
				off, size uint64
				dwarf     bool // parsing DWARF is slow; only do it when corrupted
			}
			regions := []region{{0, 64, false}, {64, 56 * uint64(len(ef.Progs)), false}}
			shoff := uint64(len(good)) - 64*uint64(len(ef.Sections))
			regions = append(regions, region{shoff, 64 * uint64(len(ef.Sections)), false})
			for _, name := range []string{".gopclntab", ".go.module", ".debug_info", ".rela.dyn"} {
				if sec := ef.Section(name); sec != nil && sec.Type != elf.SHT_NOBITS {
					regions = append(regions, region{sec.Offset, min(sec.Size, 4096), name == ".debug_info"})
				}
			}
			rnd := pseudoRandom(1 << 16)
			p := filepath.Join(t.TempDir(), "mutant")
			data := make([]byte, len(good))
			for i := 0; i < 300; i++ {
				copy(data, good)
				r := regions[i%len(regions)]
				for j := 0; j < 1+i%8; j++ {
					k := (i*64 + j*8) % (len(rnd) - 8)
					at := r.off + binary.LittleEndian.Uint64(rnd[k:])%r.size
					data[at] = rnd[k+7]
				}
				if err := os.WriteFile(p, data, 0o755); err != nil {
					t.Fatal(err)
				}
				b, err := goinspect.Open(p)
				if err != nil {
					continue
				}
				for _, name := range probedFuncs {
					if fn, err := b.Func(name); err == nil {
						_, _ = b.Returns(fn)
						_, _ = b.FileOffset(fn.Entry)
					}
				}
				if r.dwarf {
					_, _ = b.DWARFFieldOffset("runtime.gcControllerState", "heapLive")
				}
				b.Close()
			}
		})
	}
}
