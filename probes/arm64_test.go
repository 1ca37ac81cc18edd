package probes_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/gc"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/mheaplock"
	"github.com/gopulse/gopulse/probes/rtstate"
	"github.com/gopulse/gopulse/probes/sched"
)

// Everything the families find in a binary before attaching is found in
// arm64 code too, on every arm64 shape (stripped ones from the code alone):
// the facts row, the runtime's books (rtstate.Locate), sched.timeToRun,
// mheap_.lock and lock2's sleep sites, the GC family's site. What each
// finds is checked against .symtab and go tool objdump in its own
// package's tests.
func TestInspectARM64(t *testing.T) {
	for _, s := range append(fixturebuild.ARM64Shapes(), fixturebuild.ARM64ReleaseShapes()...) {
		t.Run(s.Name, func(t *testing.T) {
			b := open(t, fixturebuild.Build(t, "gcload", s))
			f, err := probes.FactsFor(b)
			if err != nil {
				t.Fatal(err)
			}
			if f.Arch != goinspect.ARM64 || f.Books != f.ARM64Books {
				t.Errorf("FactsFor gave the %q books", f.Arch)
			}
			lock2, err := b.Func("runtime.lock2")
			if err != nil {
				t.Fatal(err)
			}
			gcmt, err := b.Func("runtime.gcMarkTermination")
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name string
				call func() error
			}{
				{"rtstate.Locate", func() error {
					a, err := rtstate.Locate(b, f)
					if err == nil && a.From != "code" {
						err = fmt.Errorf("found by %s, want the code", a.From)
					}
					return err
				}},
				{"sched.TimeToRunAddr", func() error { _, err := sched.TimeToRunAddr(b, f.TimeHist); return err }},
				{"mheaplock.MheapLockAddr", func() error { _, err := mheaplock.MheapLockAddr(b); return err }},
				{"mheaplock.SpinbitLock", func() error { _, err := mheaplock.SpinbitLock(b); return err }},
				{"mheaplock.SleepSites", func() error {
					if !f.SpinbitMutex {
						return nil
					}
					_, err := mheaplock.SleepSites(b, lock2, f)
					return err
				}},
				{"gc.FlushCall", func() error { _, err := gc.FlushCall(b, gcmt); return err }},
			} {
				if err := c.call(); err != nil {
					t.Errorf("%s: %v", c.name, err)
				}
			}
		})
	}
}

// The GC family's one probe site, the BL runtime.mProf_Flush of
// runtime.gcMarkTermination, is found in arm64 code of every toolchain
// (checked against go tool objdump where .symtab lets it run).
func TestFlushCallARM64(t *testing.T) {
	for _, s := range fixturebuild.ARM64Shapes() {
		t.Run(s.Name, func(t *testing.T) {
			path := fixturebuild.Build(t, "gcload", s)
			b, err := goinspect.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			fn, err := b.Func("runtime.gcMarkTermination")
			if err != nil {
				t.Fatal(err)
			}
			site, err := gc.FlushCall(b, fn)
			if err != nil {
				t.Fatal(err)
			}
			if s.Stripped {
				return
			}
			out, err := exec.Command("go", "tool", "objdump", "-s", `^runtime\.gcMarkTermination$`, path).Output()
			if err != nil {
				t.Fatalf("go tool objdump: %v", err)
			}
			want := fmt.Sprintf("%#x", site)
			found := false
			for _, line := range strings.Split(string(out), "\n") {
				f := strings.Fields(line)
				if len(f) >= 5 && f[1] == want {
					found = f[3] == "CALL" && f[4] == "runtime.mProf_Flush(SB)"
					if !found {
						t.Errorf("site %s is %q", want, line)
					}
				}
			}
			if !found {
				t.Errorf("site %s: not a CALL runtime.mProf_Flush in go tool objdump", want)
			}
		})
	}
}
