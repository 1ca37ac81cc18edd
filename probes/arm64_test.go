package probes_test

import (
	"errors"
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

// The locators that pattern-match x86 code must refuse an arm64 binary
// (issue 14: their arm64 versions are not written yet), never misdecode it.
func TestX86LocatorsRefuseARM64(t *testing.T) {
	s := fixturebuild.ARM64Shapes()[1] // stripped: what the locators exist for
	b, err := goinspect.Open(fixturebuild.Build(t, "gcload", s))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f, err := probes.FactsForVersion(b.Version)
	if err != nil {
		t.Fatal(err)
	}
	lock2, err := b.Func("runtime.lock2")
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"rtstate.LocateInCode":      func() error { _, err := rtstate.LocateInCode(b, f); return err },
		"sched.TimeToRunAddr":       func() error { _, err := sched.TimeToRunAddr(b, f.TimeHist); return err },
		"mheaplock.MheapLockAddr":   func() error { _, err := mheaplock.MheapLockAddr(b); return err },
		"mheaplock.SpinbitLock":     func() error { _, err := mheaplock.SpinbitLock(b); return err },
		"mheaplock.SleepSites":      func() error { _, err := mheaplock.SleepSites(b, lock2, f); return err },
		"rtstate.Locate (stripped)": func() error { _, err := rtstate.Locate(b, f); return err },
	} {
		if err := call(); !errors.Is(err, goinspect.ErrArchUnsupported) {
			t.Errorf("%s on %s: err = %v, want ErrArchUnsupported", name, s.Name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
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
