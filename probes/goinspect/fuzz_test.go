package goinspect_test

import (
	"debug/elf"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopulse/gopulse/internal/fuzzbound"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// Every parser of goinspect on arbitrary input: no panic, and within the
// parse budget (fuzzbound.Within: ≤ 64 MiB allocated, ≤ 1 s of CPU),
// whatever the input claims. Seeds: real binaries of each shape (amd64,
// arm64) and the forged ones of each class of issue 12. `make fuzz` runs
// each target for $(FUZZTIME); plain `go test` runs the seeds.

// FuzzOpen opens data as a file extended by sparseMiB MiB of hole (so
// that a header's claim can lie within the file, as in a sparse forged
// binary), then asks it for everything the probe families do.
func FuzzOpen(f *testing.F) {
	f.Add([]byte{}, uint16(0))
	f.Add([]byte("\x7fELF"), uint16(0))
	f.Add([]byte("#!/bin/sh\n"), uint16(0))
	for _, p := range fuzzbound.Fixtures(f) {
		good, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(good, uint16(0))
		f.Add(good[:4096], uint16(0))
	}
	for _, c := range fuzzbound.Crafted(f) {
		f.Add(c.Bytes(f), c.SparseMiB)
	}
	if tiny, err := os.ReadFile("/bin/true"); err == nil && len(tiny) < 64<<10 {
		f.Add(tiny, uint16(0))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, sparseMiB uint16) {
		p := filepath.Join(dir, "input")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		// At most 1 GiB of hole: enough for any claim to matter. Emptied
		// after each input: a fuzzing worker stopped at the end of its time
		// leaves its temporary directory behind.
		if err := os.Truncate(p, int64(len(data))+int64(sparseMiB%1024)<<20); err != nil {
			t.Fatal(err)
		}
		defer os.Truncate(p, 0)
		fuzzbound.Within(t, "Open and inspect", func() {
			b, err := goinspect.Open(p)
			if err != nil {
				return
			}
			defer b.Close()
			for _, name := range append(probedFuncs, "runtime.gcMarkTermination", "runtime.lock2", "runtime.casgstatus") {
				if fn, err := b.Func(name); err == nil {
					_, _ = b.Returns(fn)
					_, _ = b.FileOffset(fn.Entry)
					_, _ = b.Code(fn)
					_, _ = b.CodeARM64(fn)
				}
			}
			_ = b.Funcs()
			_, _ = b.Symbols("runtime.memstats", "runtime.work", "runtime.gcController")
			_, _ = b.DWARFFieldOffset("runtime.gcControllerState", "heapLive")
			if bytes, cpu := b.ParseCost(); bytes > goinspect.MaxParseBytes || cpu > 2*goinspect.MaxParseCPU {
				t.Errorf("parse cost %d bytes, %v", bytes, cpu)
			}
		})
	})
}

// FuzzPclntab reads data as a .gopclntab (Go 1.18+ and older headers).
func FuzzPclntab(f *testing.F) {
	for _, p := range fuzzbound.Fixtures(f) {
		ef, err := elf.Open(p)
		if err != nil {
			f.Fatal(err)
		}
		if s := ef.Section(".gopclntab"); s != nil {
			if data, err := s.Data(); err == nil {
				f.Add(data, goinspect.ARM64 == archOf(ef))
				f.Add(data[:min(len(data), 4096)], goinspect.ARM64 == archOf(ef))
			}
		}
		ef.Close()
	}
	f.Fuzz(func(t *testing.T, data []byte, arm64 bool) {
		arch := goinspect.AMD64
		if arm64 {
			arch = goinspect.ARM64
		}
		fuzzbound.Within(t, "pclntab", func() {
			_, _ = goinspect.PclntabForTest(arch, data, 0x401000)
		})
	})
}

func archOf(ef *elf.File) goinspect.Arch {
	if ef.Machine == elf.EM_AARCH64 {
		return goinspect.ARM64
	}
	return goinspect.AMD64
}

// FuzzDecode decodes code as one function (x86 or arm64) and takes its
// RETs as Returns does: within the budget, and never more RET sites than
// the cap.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0xc3}, false)
	f.Add(make([]byte, 4096), true)
	rets := make([]byte, 4096)
	for i := range rets {
		rets[i] = 0xc3
	}
	f.Add(rets, false)
	armRets := make([]byte, 0, 4096)
	for len(armRets) < 4096 {
		armRets = append(armRets, 0xc0, 0x03, 0x5f, 0xd6) // RET
	}
	f.Add(armRets, true)
	for _, p := range fuzzbound.Fixtures(f) {
		b, err := goinspect.Open(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, name := range []string{"runtime.gcMarkTermination", "runtime.lock2", "runtime.casgstatus", "runtime.typesEqual"} {
			fn, err := b.Func(name)
			if err != nil {
				continue
			}
			data, _ := os.ReadFile(p)
			if off, err := b.FileOffset(fn.Entry); err == nil && off+(fn.End-fn.Entry) <= uint64(len(data)) {
				f.Add(data[off:off+(fn.End-fn.Entry)], b.Arch == goinspect.ARM64)
			}
		}
		b.Close()
	}
	f.Fuzz(func(t *testing.T, code []byte, arm64 bool) {
		arch := goinspect.AMD64
		if arm64 {
			arch = goinspect.ARM64
		}
		fn := goinspect.Func{Name: "runtime.fuzz", Entry: 0x401000, End: 0x401000 + uint64(len(code))}
		fuzzbound.Within(t, "decode", func() {
			_, rets, err := goinspect.DecodeForTest(arch, fn, code)
			if err == nil && len(rets) > goinspect.MaxSitesPerFunc {
				t.Errorf("%d RET sites accepted, cap %d", len(rets), goinspect.MaxSitesPerFunc)
			}
		})
	})
}

// FuzzVersion parses the Go version strings buildinfo hands on.
func FuzzVersion(f *testing.F) {
	for _, s := range []string{"go1.26.8", "go1.22rc1", "go1.20", "go1.26.8 X:nodwarf5", "devel go1.27-abcdef Tue", "go1.99999999999.1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fuzzbound.Within(t, "version", func() {
			v, err := goinspect.ParseVersion(s)
			if err == nil && (v.Major < 0 || v.Minor < 0 || v.Patch < 0) {
				t.Errorf("ParseVersion(%q) = %v", s, v)
			}
		})
	})
}
