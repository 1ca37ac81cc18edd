package madvise

import (
	"bufio"
	"log/slog"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
)

// A traced process that execs another program starts from zero in the
// kernel (madv_exec), before the new program's first call: totals left by
// the previous program (here planted) are gone, and the new program's own
// calls are counted from its first one, before user space tracks it again.
func TestTotalsResetAtExec(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	memfree := fixturebuild.Build(t, "memfree", fixturebuild.Shapes()[0])
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

	// A shell that waits, then becomes memfree.
	later := testenv.ExecLater(t, memfree, "-mb", "8")
	pid := uint32(later.PID)
	f.Track(pid)
	var planted madviseMadvTotals
	planted.Calls[AdvDontNeed], planted.Bytes[AdvDontNeed], planted.Errors = 1_000_000, 1<<40, 7
	if err := f.objs.MadvProcs.Update(pid, &planted, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	later.Exec()
	sc := bufio.NewScanner(later.Stdout)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "freed") {
	}
	if err := later.Wait(); err != nil {
		t.Fatal(err)
	}
	// Untracked (Forget is the tracer's, after the exit): the entry stands.
	calls, bytes, errs, dropped, ok := f.Totals(pid)
	if !ok {
		t.Fatal("entry gone")
	}
	if calls[AdvDontNeed] >= planted.Calls[AdvDontNeed] || bytes[AdvDontNeed] >= planted.Bytes[AdvDontNeed] || errs >= planted.Errors {
		t.Errorf("the previous program's totals carried over: %d DONTNEED calls, %d bytes, %d errors", calls[AdvDontNeed], bytes[AdvDontNeed], errs)
	}
	var n uint64
	for _, c := range calls {
		n += c
	}
	if n == 0 || calls[AdvNormal] != 1 {
		t.Errorf("the new program's calls not counted from its first: %d calls, %d MADV_NORMAL (its marker)", n, calls[AdvNormal])
	}
	t.Logf("after exec: %d calls (%d DONTNEED, %d bytes), %d errors, %d dropped", n, calls[AdvDontNeed], bytes[AdvDontNeed], errs, dropped)
}
