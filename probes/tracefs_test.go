package probes

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/gopulse/gopulse/internal/testenv"
)

// The attach path used when cilium/ebpf's tracefs lookup fails (a
// tracefs mount without events/): the program runs on the tracepoint, and
// closing the link stops it.
func TestAttachTracepointByID(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTracefs(); err != nil {
		t.Fatal(err)
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.TracePoint,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	l, err := attachTracepointByID("syscalls", "sys_enter_getppid", prog)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		os.Getppid()
	}
	st, err := prog.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RunCount < 100 {
		t.Errorf("program ran %d times for 100 getppid calls", st.RunCount)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		os.Getppid()
	}
	if after, _ := prog.Stats(); after.RunCount != st.RunCount && after.RunCount > st.RunCount+5 {
		t.Errorf("program still runs after Close: %d -> %d", st.RunCount, after.RunCount)
	}
	if _, err := attachTracepointByID("syscalls", "sys_enter_no_such_call", prog); err == nil {
		t.Error("attached to a tracepoint that does not exist")
	}
}
