package hostile_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/fuzzbound"
	"github.com/gopulse/gopulse/internal/testenv"
)

// Forged binaries of each class of issue 12, each run as a process while
// the real daemon (every family on) traces an ordinary fixture:
//
//   - sparse-pclntab: a 2.5 MB gcload whose .gopclntab section header
//     claims 512 MiB, in a sparse file that holds the claim (it runs
//     normally: the loader and the runtime never read section headers);
//   - sparse-pclntab-nfunc: the same claiming 1 GiB, its header counting
//     64M functions (a 512 MiB function table);
//   - sparse-symtab: the 512 MiB claim by .symtab;
//   - compressed-pclntab, compressed-debug-info: the section flagged
//     compressed, claiming 4 GiB, pointing at a zlib stream of 256 MiB of
//     zeros appended to the file;
//   - rets-gcmarktermination, bigrets-gcstart: the forge fixture with its
//     function of 4096 RETs, or 960 KiB of RETs, renamed in .gopclntab to
//     a runtime function the daemon decodes (what an attacker who cannot
//     make the compiler emit runtime.X does: write the body under another
//     name, then swap the names in the table);
//   - semas-lock2: the forge fixture's function of 2048 `LOCK CMPXCHG;
//     CALL` pairs renamed runtime.lock2 (and its callee runtime.semasleep):
//     2048 heap-lock sleep sites, 2048 uprobes before the caps.
//
// For each: the daemon decides (refuses it with its reason in status, or
// traces it), its peak RSS (VmHWM) grows by at most 128 MiB — the 64 MiB
// parse budget and the GC's headroom over it — and it spends at most 2 s
// of CPU on it (a parse is bounded to 1 s; the tracer and the attacher
// may each open the file). Afterwards the ordinary fixture's cycle counts
// are exactly the runtime's.
func TestForgedBinaries(t *testing.T) {
	testenv.RequireRoot(t)
	crafted := fuzzbound.Crafted(t)
	d := e2etest.StartDaemon(t, "--probes", "all")
	daemon := d.Cmd.Process.Pid

	normal := filepath.Join(t.TempDir(), "gcload-normal")
	data, err := os.ReadFile(fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0]))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(normal, data, 0o755); err != nil {
		t.Fatal(err)
	}
	f := e2etest.StartFixture(t, normal, nil, "-wait", "-hold", "-workers", "4", "-iters", "60000", "-forced", "6")
	d.WaitBinary(t, normal)

	hwm0 := binProcStatus(t, daemon, "VmHWM:")
	t.Logf("daemon before the forged binaries: VmHWM %d MiB, VmRSS %d MiB", hwm0>>20, binProcStatus(t, daemon, "VmRSS:")>>20)
	for _, c := range crafted {
		t.Run(c.Name, func(t *testing.T) {
			cpu0, hwmBefore := binDaemonCPU(t, daemon), binProcStatus(t, daemon, "VmHWM:")
			start := time.Now()
			args := []string{"-wait"} // gcload: waits on stdin; forge: reads commands
			if strings.Contains(c.Name, "rets") || strings.Contains(c.Name, "semas") {
				args = nil
			}
			p := e2etest.StartFixture(t, c.Path, nil, args...)
			var verdict string
			e2etest.WaitFor(t, 30*time.Second, "the daemon's verdict on "+c.Name, func() bool {
				verdict = binVerdict(t, d, c.Path, p.PID)
				return verdict != ""
			})
			took := time.Since(start)
			// Let a late second parse (a family's per-process cache) run.
			time.Sleep(300 * time.Millisecond)
			cpu := binDaemonCPU(t, daemon) - cpu0
			hwm := binProcStatus(t, daemon, "VmHWM:")
			t.Logf("%s: %s after %v; daemon CPU %v, VmHWM %d → %d MiB", c.Name, verdict, took.Round(time.Millisecond), cpu, hwmBefore>>20, hwm>>20)
			if hwm-hwm0 > 128<<20 {
				t.Errorf("daemon peak RSS grew by %d MiB (bound 128 MiB)", (hwm-hwm0)>>20)
			}
			if cpu > 2*time.Second {
				t.Errorf("daemon spent %v of CPU on %s (bound 2s)", cpu, c.Name)
			}
			if want := binWantReason[c.Name]; want != "" && !strings.Contains(verdict, want) {
				t.Errorf("verdict %q, want a reason containing %q", verdict, want)
			}
			_ = p.Cmd.Process.Kill()
		})
	}

	// The daemon kept serving, and the ordinary fixture's figures are
	// exact: the runtime's own cycle count, and its forced cycles.
	f.Proceed()
	f.Expect("final")
	var got api.Process
	e2etest.WaitFor(t, 10*time.Second, "the ordinary fixture's cycles", func() bool {
		p, ok := d.Process(t, f.PID)
		got = p
		return ok && p.GCCycles >= f.Final.NumGC
	})
	if got.GCCycles != f.Final.NumGC || got.GCForcedCycles != f.Final.Forced {
		t.Errorf("ordinary fixture: gc_cycles %d forced %d, runtime says %d forced %d", got.GCCycles, got.GCForcedCycles, f.Final.NumGC, f.Final.Forced)
	}
	if pause := got.GCPauseSecondsTotal * 1e9; math.Abs(pause-float64(f.Final.PauseNs)) > 0.15*float64(f.Final.PauseNs) {
		t.Errorf("ordinary fixture: pause total %.0f ns, runtime says %d ns", pause, f.Final.PauseNs)
	}
	f.Finish()
	t.Logf("daemon after all: VmHWM %d MiB, VmRSS %d MiB; ordinary fixture: %d cycles (%d forced), exact", binProcStatus(t, daemon, "VmHWM:")>>20, binProcStatus(t, daemon, "VmRSS:")>>20, got.GCCycles, got.GCForcedCycles)
	out, err := exec.Command("ps", "-o", "nlwp=,rss=", "-p", strconv.Itoa(daemon)).Output()
	t.Logf("daemon threads, RSS KiB: %s %v", strings.TrimSpace(string(out)), err)
}

// binWantReason is what the refusal must say, for the classes the daemon
// must refuse (the others it may trace: their lies are in what it does not
// read — the rest of a .gopclntab that claims 512 MiB, .symtab and
// DWARF, as the books are found in the code — or
// refuse one family: a gcMarkTermination without its mProf_Flush call; a
// gcStart of 960 KiB is refused by the code locator, and the books are
// then found in .symtab).
var binWantReason = map[string]string{
	"sparse-pclntab-nfunc": ".gopclntab function table: 512.0 MiB more would pass the 64.0 MiB parse budget",
	"compressed-pclntab":   "section .gopclntab is compressed",
	"semas-lock2":          "2048 CALL runtime.semasleep sites in runtime.lock2, cap 256 per function",
}

// binVerdict returns the daemon's verdict on the binary at path run by pid:
// "refused: REASONS", "traced: N probes (errors: ...)", or "" while it has
// none.
func binVerdict(t *testing.T, d *e2etest.Daemon, path string, pid int) string {
	t.Helper()
	st, err := d.Client.Status(context.Background())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, b := range st.Refused {
		if b.Path == path {
			return "refused: " + strings.Join(b.Errors, "; ")
		}
	}
	for _, b := range st.Binaries {
		if strings.TrimSuffix(b.Path, " (deleted)") == path && b.Probes > 0 {
			if p, ok := d.Process(t, pid); ok && p.Exited == nil {
				return fmt.Sprintf("traced: %d probes (errors: %s)", b.Probes, strings.Join(b.Errors, "; "))
			}
		}
	}
	return ""
}

// binProcStatus returns a "kB" field of /proc/PID/status in bytes.
func binProcStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// binDaemonCPU is the process's user+system CPU time (/proc/PID/stat, in
// clock ticks of 10 ms).
func binDaemonCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
