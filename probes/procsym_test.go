package probes

import (
	"os"
	"reflect"
	"strconv"
	"testing"

	"github.com/gopulse/gopulse/probes/goinspect"
)

//go:noinline
func symbolTarget() int { return 42 }

// Two processes of one binary cost one parse of its .gopclntab: the
// threads of this test process stand in for them (/proc/TID/exe is the
// same binary, with its own /proc entry), and both name a function of it.
func TestProcSymbolsOneParsePerBinary(t *testing.T) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) < 2 {
		t.Skipf("%d threads", len(ents))
	}
	var tids []uint32
	for _, e := range ents[:2] {
		tid, _ := strconv.Atoi(e.Name())
		tids = append(tids, uint32(tid))
	}
	pc := uint64(reflect.ValueOf(symbolTarget).Pointer()) + 1 // a return address inside it
	s := NewProcSymbols("/proc")
	for _, tid := range tids {
		if got := s.Resolve(tid, []uint64{pc}); len(got) != 1 || got[0] != "github.com/gopulse/gopulse/probes.symbolTarget" {
			t.Errorf("tid %d: %q", tid, got)
		}
	}
	if n := len(s.bins.m); n != 1 {
		t.Errorf("%d binaries cached for one executable", n)
	}

	var c PerBinary[int]
	parses := 0
	for _, tid := range tids {
		if _, _, err := c.ForPID(tid, func(*goinspect.Binary) (int, error) { parses++; return 0, nil }); err != nil {
			t.Fatal(err)
		}
	}
	if parses != 1 {
		t.Errorf("binary inspected %d times for two processes of it", parses)
	}
	// A process that cannot be read is remembered as such until Forget.
	if got := s.Resolve(1<<30, []uint64{pc}); got != nil {
		t.Errorf("unreadable pid resolved: %q", got)
	}
}
