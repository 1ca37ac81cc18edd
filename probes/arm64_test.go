package probes_test

import (
	"errors"
	"testing"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/probes"
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
	f, err := probes.FactsFor(b)
	if err != nil {
		t.Fatal(err)
	}
	lock2, err := b.Func("runtime.lock2")
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"rtstate.LocateInCode":    func() error { _, err := rtstate.LocateInCode(b, f); return err },
		"sched.TimeToRunAddr":     func() error { _, err := sched.TimeToRunAddr(b, f.TimeHist); return err },
		"mheaplock.MheapLockAddr": func() error { _, err := mheaplock.MheapLockAddr(b); return err },
		"mheaplock.SpinbitLock":   func() error { _, err := mheaplock.SpinbitLock(b); return err },
		"mheaplock.SleepSites":    func() error { _, err := mheaplock.SleepSites(b, lock2, f); return err },
	} {
		if err := call(); !errors.Is(err, goinspect.ErrArchUnsupported) {
			t.Errorf("%s on %s: err = %v, want ErrArchUnsupported", name, s.Name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
