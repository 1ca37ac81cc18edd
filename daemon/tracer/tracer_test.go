package tracer

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"reflect"
	"testing"
	"time"

	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/daemon/aggregate"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes/discovery"
)

type fakeBacklog struct {
	pending  int
	consumed uint64
}

func (f *fakeBacklog) Backlog() (int, uint64) { return f.pending, f.consumed }

// A reader with unread records and no progress for longer than stallLimit
// is reported; an idle reader (nothing to read) or a slow one is not.
func TestReaderWatch(t *testing.T) {
	src := &fakeBacklog{}
	w := &readerWatch{name: "gc", src: src}
	t0 := time.Now()
	steps := []struct {
		at       time.Duration
		pending  int
		consumed uint64
		stuck    bool
	}{
		{0, 0, 0, false},
		{20 * time.Second, 0, 0, false},  // idle is healthy
		{21 * time.Second, 64, 0, false}, // backlog seen
		{25 * time.Second, 64, 1, false}, // progress
		{30 * time.Second, 64, 1, false}, // no progress: clock starts
		{39 * time.Second, 64, 1, false},
		{41 * time.Second, 64, 1, true}, // > stallLimit without progress
		{42 * time.Second, 0, 1, false}, // drained
	}
	for _, s := range steps {
		src.pending, src.consumed = s.pending, s.consumed
		err := w.check(t0.Add(s.at))
		if (err != nil) != s.stuck {
			t.Errorf("at %v: err = %v, want stuck %v", s.at, err, s.stuck)
		}
	}
}

type clock struct{}

func (clock) Now() time.Time           { return time.Now() }
func (clock) Monotonic() time.Duration { return discovery.Monotonic() }

// Families switched off and on at run time: probes go and come back, and
// what the tracer knew of each process stays.
func TestSetFamiliesAtRunTime(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	agg := aggregate.New(aggregate.Config{History: 10, MaxProcs: 100, ForgetAfter: time.Hour}, clock{})
	tr, err := New(log, Config{Families: []string{"gc"}}, agg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, func() { close(ready) }) }()
	<-ready

	bin := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	run := func() int {
		cmd := exec.Command(bin, "-gcloop", "5")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		return cmd.Process.Pid
	}
	probesOn := func() int {
		n := 0
		for _, b := range tr.Status().Binaries {
			if b.Path == bin {
				n += b.Probes
			}
		}
		return n
	}
	run() // makes the binary known
	waitUntil(t, func() bool { return probesOn() > 0 })
	pid := run()
	waitUntil(t, func() bool { h, err := agg.GCHistory(pid, 0); return err == nil && h.Process.GCCycles == 5 })

	added, removed, err := tr.SetFamilies(nil)
	if err != nil || len(added) != 0 || !reflect.DeepEqual(removed, []string{"gc"}) {
		t.Fatalf("SetFamilies(none) = %v, %v, %v", added, removed, err)
	}
	if n := probesOn(); n != 0 {
		t.Errorf("%d probes left with no family", n)
	}
	if h, err := agg.GCHistory(pid, 0); err != nil || h.Process.GCCycles != 5 {
		t.Errorf("process figures lost by the reload: %+v, %v", h.Process, err)
	}
	added, _, err = tr.SetFamilies([]string{"gc"})
	if err != nil || !reflect.DeepEqual(added, []string{"gc"}) {
		t.Fatalf("SetFamilies(gc) = %v, %v", added, err)
	}
	if probesOn() == 0 {
		t.Errorf("no probes after turning gc back on")
	}
	pid2 := run()
	waitUntil(t, func() bool { h, err := agg.GCHistory(pid2, 0); return err == nil && h.Process.GCCycles == 5 })
	if err := tr.Health(); err != nil {
		t.Errorf("Health: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
