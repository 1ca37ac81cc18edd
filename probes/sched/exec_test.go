package sched

import (
	"log/slog"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
)

// A traced process that execs another program starts from zero in the
// kernel (sched_exec): figures left by the previous program (here
// planted) are gone, and the new program's are counted from the exec.
func TestTotalsResetAtExec(t *testing.T) {
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

	later := testenv.ExecLater(t, gcload, "-gcloop", "20")
	pid := uint32(later.PID)
	f.Track(pid)
	planted := Proc{OnCpuNs: 1 << 50, OffCpuNs: 1 << 50, Voluntary: 1 << 30, Involuntary: 1 << 30, Threads: 1000}
	if err := f.objs.SchedProcs.Update(pid, &planted, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	later.Exec()
	if err := later.Wait(); err != nil {
		t.Fatal(err)
	}
	p, ok := f.Lookup(pid)
	if !ok {
		t.Fatal("entry gone")
	}
	if p.OnCpuNs >= planted.OnCpuNs || p.OffCpuNs >= planted.OffCpuNs || p.Voluntary >= planted.Voluntary ||
		p.Involuntary >= planted.Involuntary || p.Threads >= 100 {
		t.Errorf("the previous program's figures carried over: %+v", p)
	}
	if p.OnCpuNs == 0 || p.Voluntary+p.Involuntary == 0 {
		t.Errorf("the new program's figures not counted: %+v", p)
	}
	t.Logf("after exec: on CPU %d ns, %d voluntary, %d involuntary switches, %d threads left, %d dropped",
		p.OnCpuNs, p.Voluntary, p.Involuntary, p.Threads, p.ThreadsDropped)
}
