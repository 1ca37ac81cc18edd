package mheaplock

import (
	"log/slog"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
)

// A traced process that execs another program loses its entry in the
// kernel (lock_exec): the lock's address and the totals were the previous
// program's; Track makes the new program's.
func TestEntryDroppedAtExec(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	gcload := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	f, err := Load(probes.Env{MaxPIDs: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	att, err := probes.NewAttacher(slog.New(slog.DiscardHandler), f.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()

	later := testenv.ExecLater(t, gcload, "-wait", "-gcloop", "1")
	pid := uint32(later.PID)
	planted := Proc{MheapAddr: 0xdead000, Contended: 1 << 30, WaitNs: 1 << 50}
	if err := f.objs.LockProcs.Update(pid, &planted, ebpf.UpdateNoExist); err != nil {
		t.Fatal(err)
	}
	later.Exec()
	buf := make([]byte, 64)
	_, _ = later.Stdout.Read(buf) // "ready": the new program runs
	if _, ok := f.Lookup(pid); ok {
		t.Errorf("the previous program's entry survived its exec")
	}
	// The tracer then tracks the new program: a fresh entry with its lock.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f.TrackErr(pid)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("track the new program: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p, ok := f.Lookup(pid)
	if !ok || p.MheapAddr == planted.MheapAddr || p.Contended >= planted.Contended {
		t.Errorf("the new program's entry: %+v, %v", p, ok)
	}
	later.Exec()
}
