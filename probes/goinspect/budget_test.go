package goinspect

import (
	"errors"
	"strings"
	"testing"
)

// The budget refuses past its bounds, for good: a claim (need) is refused
// without being charged, a charge past MaxParseBytes fails, and once
// refused every later charge and tick fails with the same reason; a loop
// that keeps ticking is stopped once its thread has spent MaxParseCPU.
func TestBudget(t *testing.T) {
	g := &budget{}
	g.begin()
	defer g.end()
	if err := g.need(MaxParseBytes+1, "a section"); !errors.Is(err, ErrBudget) || !strings.Contains(err.Error(), "a section claims 64.0 MiB") {
		t.Errorf("need past the budget: %v", err)
	}
	if b, _ := g.used(); b != 0 {
		t.Errorf("need charged %d bytes", b)
	}
	g = &budget{}
	if err := g.charge(MaxParseBytes-10, "most"); err != nil {
		t.Fatal(err)
	}
	err := g.charge(11, "the rest")
	if !errors.Is(err, ErrBudget) {
		t.Fatalf("charge past the budget: %v", err)
	}
	if err2 := g.charge(1, "more"); err2 != err {
		t.Errorf("after a refusal: %v, want the same %v", err2, err)
	}

	g = &budget{}
	g.begin()
	defer g.end()
	var n int
	for n = 0; n < 1<<32; n++ {
		if err = g.tick(); err != nil {
			break
		}
	}
	_, cpu := g.used()
	if !errors.Is(err, ErrBudget) || cpu < MaxParseCPU || cpu > MaxParseCPU+MaxParseCPU/10 {
		t.Errorf("a busy loop stopped after %d ticks, %v of CPU: %v", n, cpu, err)
	}
	t.Logf("%v after %d ticks", err, n)
}
