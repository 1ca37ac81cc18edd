package aggregate

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

func seqs(cs []api.GCCycle) []uint64 {
	var s []uint64
	for _, c := range cs {
		s = append(s, c.Seq)
	}
	return s
}

func TestFollow(t *testing.T) {
	clk := &fakeClock{now: boot.Add(time.Hour)}
	a := New(Config{History: 4, MaxProcs: 10, ForgetAfter: time.Minute}, clk)
	a.Register(Meta{PID: 7, Exe: "/bin/x"})
	a.Register(Meta{PID: 8, Exe: "/bin/y"})
	n := uint64(0)
	next := func(pid int) {
		n++
		clk.now = clk.now.Add(10 * time.Millisecond)
		a.GC(cycle(pid, uint32(n), clk.now, false))
	}
	for range 6 {
		next(7)
	}

	tests := []struct {
		name     string
		last     int
		wantHist int
	}{
		{"no history", 0, 0},
		{"last 2", 2, 2},
		{"more than kept", 100, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept, _ := a.GCHistory(7, 0)
			f, hist, err := a.Follow(7, tt.last)
			if err != nil {
				t.Fatal(err)
			}
			want := seqs(kept.Cycles)[len(kept.Cycles)-tt.wantHist:]
			if got := seqs(hist); !slices.Equal(got, want) {
				t.Errorf("history %v, want %v", got, want)
			}
			start := n
			next(8) // another process: not delivered
			next(7)
			next(7)
			f.Close()
			f.Close() // idempotent
			var got []uint64
			for c := range f.Cycles() {
				got = append(got, c.Seq)
			}
			if len(got) != 2 || got[0] != start+2 || got[1] != start+3 {
				t.Errorf("followed %v, want [%d %d]", got, start+2, start+3)
			}
		})
	}

	// A reader that does not read: the event path never blocks, the
	// overflow is counted, and what was kept is the oldest, in order.
	f, _, err := a.Follow(7, 0)
	if err != nil {
		t.Fatal(err)
	}
	first := n + 1
	done := make(chan struct{})
	go func() {
		for range FollowBuffer + 10 {
			next(7)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the event path blocked on a follow nobody reads")
	}
	if f.Dropped() != 10 {
		t.Errorf("dropped %d, want 10", f.Dropped())
	}
	f.Close()
	i := uint64(0)
	for c := range f.Cycles() {
		if c.Seq != first+i {
			t.Fatalf("cycle %d has seq %d, want %d", i, c.Seq, first+i)
		}
		i++
	}
	if i != FollowBuffer {
		t.Errorf("delivered %d, want %d", i, FollowBuffer)
	}

	if _, _, err := a.Follow(99, 0); !errors.Is(err, api.ErrNoProcess) {
		t.Errorf("unknown pid: %v", err)
	}
	var open []*Follow
	for range MaxFollowers {
		f, _, err := a.Follow(8, 0)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, f)
	}
	if _, _, err := a.Follow(8, 0); !errors.Is(err, ErrTooManyFollowers) {
		t.Errorf("over the cap: %v", err)
	}
	open[0].Close()
	if f, _, err := a.Follow(8, 0); err != nil {
		t.Errorf("after a close: %v", err)
	} else {
		f.Close()
	}
	if a.Gone(7) {
		t.Error("running pid 7 reported gone")
	}
	a.Exited(7)
	if !a.Gone(7) || !a.Gone(99) {
		t.Error("exited or unknown pid not reported gone")
	}
}
