// Command bench measures what gopulse costs the programs it traces.
//
// Wall time on VMs swings ±30% run to run, so it reports two figures side
// by side: traced/untraced wall-time ratios (runs alternate, medians of
// many), and an accounting estimate that does not depend on wall time:
// probe hits (kernel run_cnt, with kernel.bpf_stats_enabled=1) × the cost
// of one uprobe hit measured in the same run, over the traced program's
// CPU time.
//
// Run as root: make bench.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/probes/gc"
)

type workload struct {
	name string
	args []string
}

var workloads = []workload{
	{"alloc-heavy (4 goroutines, heap-triggered GC)", []string{"-workers", "4", "-iters", "150000", "-forced", "0"}},
	{"GC storm (runtime.GC back to back)", []string{"-gcloop", "1500"}},
}

func main() {
	rounds := flag.Int("rounds", 7, "alternating untraced/traced pairs per workload")
	famRounds := flag.Int("family-rounds", 5, "alternating untraced/traced pairs per workload and --probes setting (0: skip)")
	flag.Parse()
	benchFamilyRounds = *famRounds
	if err := run(*rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var benchFamilyRounds int

func run(rounds int) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (BPF)")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "gopulse-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	daemon := filepath.Join(dir, "gopulsed")
	gcload := filepath.Join(dir, "gcload")
	trap := filepath.Join(dir, "trapcost")
	for _, b := range []struct{ out, pkg, dir string }{
		{daemon, "./daemon/gopulsed", "."},
		{gcload, "./gcload", "tools/fixtures"},
		{trap, "./trapcost", "tools/fixtures"},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir, cmd.Stderr = b.dir, os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", b.pkg, err)
		}
	}
	restore, err := enableStats()
	if err != nil {
		return err
	}
	defer restore()

	trapNs, bpfNs, err := trapCost(trap)
	if err != nil {
		return fmt.Errorf("trap cost: %w", err)
	}
	fmt.Printf("One uprobe hit on this machine: %.2f µs (of which BPF program %.0f ns), median of 9 runs of 200000 calls.\n\n", trapNs/1000, bpfNs)
	fmt.Println("### GC family (--probes gc): wall time and accounting")
	fmt.Println()
	fmt.Println("| workload | untraced wall (median) | traced wall (median) | ratio | GC cycles/run | probe hits/run | est. cost = hits × hit cost / CPU time |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, w := range workloads {
		var plain, traced []float64
		var cycles, hits, cpu []float64
		for r := 0; r < rounds; r++ {
			p, err := runFixture(gcload, w.args)
			if err != nil {
				return err
			}
			plain = append(plain, p.wall.Seconds())
			t, h, err := tracedRun(daemon, dir, gcload, w.args)
			if err != nil {
				return err
			}
			traced = append(traced, t.wall.Seconds())
			cycles = append(cycles, float64(t.numGC))
			hits = append(hits, float64(h))
			cpu = append(cpu, t.cpu.Seconds())
		}
		mp, mt := median(plain), median(traced)
		est := median(hits) * trapNs / 1e9 / median(cpu)
		fmt.Printf("| %s | %.3fs | %.3fs | %.3f× | %.0f | %.0f | %.3f%% |\n",
			w.name, mp, mt, mt/mp, median(cycles), median(hits), est*100)
	}
	if benchFamilyRounds > 0 {
		return runFamilies(dir, daemon, benchFamilyRounds)
	}
	return nil
}

func enableStats() (func(), error) {
	const p = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return nil, err
	}
	return func() { _ = os.WriteFile(p, old, 0o644) }, nil
}

// trapCost times a trivial Go function with and without a uprobe running
// the GC family's cheapest program, alternating.
func trapCost(bin string) (perHitNs, bpfNs float64, err error) {
	fam, err := gc.New()
	if err != nil {
		return 0, 0, err
	}
	defer fam.Close()
	var prog *ebpf.Program
	for _, p := range fam.Programs() {
		if info, _ := p.Info(); info != nil && strings.HasPrefix(info.Name, "gc_finish") {
			prog = p
		}
	}
	ex, err := link.OpenExecutable(bin)
	if err != nil {
		return 0, 0, err
	}
	const n = 200000
	timeRun := func() (float64, error) {
		out, err := exec.Command(bin, "-n", strconv.Itoa(n)).Output()
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(out))
		ns, err := strconv.ParseFloat(strings.TrimPrefix(f[1], "ns="), 64)
		return ns / n, err
	}
	var without, with []float64
	var runs, runNs uint64
	for i := 0; i < 9; i++ {
		w, err := timeRun()
		if err != nil {
			return 0, 0, err
		}
		without = append(without, w)
		l, err := ex.Uprobe("main.tick", prog, nil)
		if err != nil {
			return 0, 0, err
		}
		before, _ := prog.Stats()
		t, err := timeRun()
		after, _ := prog.Stats()
		l.Close()
		if err != nil {
			return 0, 0, err
		}
		with = append(with, t)
		if before != nil && after != nil {
			runs += after.RunCount - before.RunCount
			runNs += uint64(after.Runtime - before.Runtime)
		}
	}
	if runs > 0 {
		bpfNs = float64(runNs) / float64(runs)
	}
	return median(with) - median(without), bpfNs, nil
}

type result struct {
	wall, cpu time.Duration
	numGC     int
}

func runFixture(bin string, args []string) (result, error) {
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	var r result
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 1 && f[0] == "final" {
			r.numGC, _ = strconv.Atoi(strings.TrimPrefix(f[1], "numgc="))
		}
	}
	if err := cmd.Wait(); err != nil {
		return r, err
	}
	r.wall = time.Since(start)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return r, nil
}

// tracedRun starts the daemon with the GC family, makes the fixture's
// binary known, runs the fixture once more under the probes and stops the
// daemon. hits is the number of GC probe runs during the measured run.
func tracedRun(daemon, dir, bin string, args []string) (result, uint64, error) {
	stop, _, err := startBenchDaemon(daemon, dir, "gc")
	if err != nil {
		return result{}, 0, err
	}
	defer stop()
	if _, err := runFixture(bin, []string{"-gcloop", "1"}); err != nil {
		return result{}, 0, err
	}
	time.Sleep(100 * time.Millisecond) // attach of the new binary
	before := gcHits()
	r, err := runFixture(bin, args)
	return r, gcHits() - before, err
}

// gcHits sums run counts of every loaded GC-family uprobe program (the
// traps; its tracepoint programs cost no trap). Other Go processes on the
// host add to it: run the bench on a quiet machine.
func gcHits() uint64 {
	var n uint64
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return n
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, "gc_") && info.Type == ebpf.Kprobe {
			if st, err := p.Stats(); err == nil {
				n += st.RunCount
			}
		}
		p.Close()
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
