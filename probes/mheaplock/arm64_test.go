package mheaplock_test

import (
	"debug/elf"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/mheaplock"
)

// On arm64 builds (cross-built, only inspected): mheap_ is found in the
// code where .symtab says it is; lock2 is spin-bit exactly when the facts
// say so; each sleep site is a `CALL runtime.semasleep` in go tool objdump
// and its cookie reads lock2's argument from the slot `MOVD R0, N(RSP)`
// spills it to. A stripped build must give what the unstripped build of
// the same toolchain gives (the linker lays both out alike).
func TestLocateARM64(t *testing.T) {
	for _, shape := range append(fixturebuild.ARM64Shapes(), fixturebuild.ARM64ReleaseShapes()...) {
		t.Run(shape.Name, func(t *testing.T) {
			path := fixturebuild.Build(t, "books", shape)
			ref := path
			if shape.Stripped {
				unstripped := shape
				unstripped.Stripped = false
				unstripped.Name += "-unstripped"
				ref = fixturebuild.Build(t, "books", unstripped)
			}
			b := open(t, path)
			addr, err := mheaplock.MheapLockAddr(b)
			if err != nil {
				t.Fatal(err)
			}
			if want := symbol(t, ref, "runtime.mheap_"); addr != want {
				t.Errorf("mheap_.lock at %#x by disassembly, runtime.mheap_ at %#x in .symtab", addr, want)
			}
			spin, err := mheaplock.SpinbitLock(b)
			if err != nil {
				t.Fatal(err)
			}
			facts, err := probes.FactsFor(b)
			if err != nil {
				t.Fatal(err)
			}
			if spin != facts.SpinbitMutex {
				t.Errorf("%s: lock2 is spin-bit = %v, facts say %v", b.GoVersion, spin, facts.SpinbitMutex)
			}
			if !spin {
				return
			}
			fn, err := b.Func("runtime.lock2")
			if err != nil {
				t.Fatal(err)
			}
			sites, err := mheaplock.SleepSites(b, fn, facts)
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("go", "tool", "objdump", "-s", `^runtime\.lock2$`, ref).Output()
			if err != nil {
				t.Fatalf("go tool objdump: %v", err)
			}
			for _, s := range sites {
				if reg := s.Cookie & 0xff; reg != 31 || s.Cookie&0x100 == 0 {
					t.Errorf("site %#x: cookie %#x does not read SP+slot", s.Addr, s.Cookie)
				}
				slot := int32(s.Cookie >> 32)
				if !strings.Contains(string(out), fmt.Sprintf("MOVD R0, %d(RSP)", slot)) {
					t.Errorf("site %#x: no spill of R0 to %d(RSP) in go tool objdump", s.Addr, slot)
				}
				want := fmt.Sprintf("%#x", s.Addr)
				found := false
				for _, line := range strings.Split(string(out), "\n") {
					f := strings.Fields(line)
					if len(f) >= 5 && f[1] == want {
						found = f[3] == "CALL" && f[4] == "runtime.semasleep(SB)"
					}
				}
				if !found {
					t.Errorf("site %s: not a CALL runtime.semasleep in go tool objdump", want)
				}
			}
			t.Logf("%s: mheap_ %#x, lock2 sleep sites %+v", b.GoVersion, addr, sites)
		})
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
	t.Fatalf("%s: no %s in .symtab", path, name)
	return 0
}
