// Command bench measures what gopulse costs the programs it traces.
//
// Wall time on these VMs swings ±30% run to run and there are no hardware
// counters, so it reports probe cost three ways, side by side:
//
//   - traced/untraced wall-time ratios: runs alternate, medians of the
//     per-pair ratios with their interquartile range, so that noise can be
//     told from a slowdown;
//   - the same for the traced program's CPU time (rusage), less noisy;
//   - an accounting estimate that does not depend on timing the traced
//     program at all: the traps the daemon's uprobes took during the run ×
//     the cost of one uprobe hit measured at the start of the same bench
//     run, plus the kernel-measured run time of its other BPF programs
//     (kernel.bpf_stats_enabled=1), over the traced program's CPU time.
//
// Run as root, on a host where no other gopulsed runs: make bench. Flags
// select workloads and settings for a short run (-h).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/gc"
)

// gcWorkloads are the GC family's table: a program with a few GC cycles,
// and the worst case for the GC probes.
func gcWorkloads() []workload {
	return []workload{
		{key: "alloc", name: "alloc-heavy (4 goroutines, heap-triggered GC)", fixture: "gcload",
			args: []string{"-workers", "4", "-iters", "150000", "-forced", "0"}, warm: []string{"-gcloop", "1"}, gcCycles: true},
		{key: "storm", name: "GC storm (runtime.GC back to back)", fixture: "gcload",
			args: []string{"-gcloop", "1500"}, warm: []string{"-gcloop", "1"}, gcCycles: true},
		malloc8(true),
	}
}

// options are the command line's.
type options struct {
	rounds, famRounds int
	workloads         string // comma list of workload keys, or "all"
	settings          string // comma list of --probes settings, or "all"
	footprint         bool
	attachRounds      int
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 7, "alternating untraced/traced pairs per GC-table workload (0: skip the GC table)")
	flag.IntVar(&o.famRounds, "family-rounds", 9, "alternating untraced/traced pairs per workload and --probes setting (0: skip the family tables)")
	flag.StringVar(&o.workloads, "workloads", "all", "comma list of workloads to run: alloc, storm (GC table), pingpong, heaplock (family tables; alloc is in both)")
	flag.StringVar(&o.settings, "settings", "all", "comma list of --probes settings for the family tables: "+strings.Join(famSettings, ", "))
	flag.BoolVar(&o.footprint, "footprint", true, "measure the daemon's own CPU and RSS tracing 50 processes (about 15 s)")
	flag.IntVar(&o.attachRounds, "attach-rounds", 5, "daemons started to measure attach latency (1 and 50 never-seen binaries) and stop time, per kind of uprobe link (0: skip)")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (BPF)")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("memlock: %w", err)
	}
	start := time.Now()
	dir, err := os.MkdirTemp("", "gopulse-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &env{dir: dir, daemon: filepath.Join(dir, "gopulsed"), config: filepath.Join(dir, "gopulsed.yaml")}
	if err := os.WriteFile(e.config, nil, 0o644); err != nil {
		return err
	}
	trap := filepath.Join(dir, "trapcost")
	if err := build(e.daemon, "./daemon/gopulsed", "."); err != nil {
		return err
	}
	if err := build(trap, "./trapcost", "tools/fixtures"); err != nil {
		return err
	}
	bins := map[string]string{}
	for _, w := range append(gcWorkloads(), famWorkloads()...) {
		if _, ok := bins[w.fixture]; ok {
			continue
		}
		bins[w.fixture] = filepath.Join(dir, w.fixture)
		if err := build(bins[w.fixture], "./"+w.fixture, "tools/fixtures"); err != nil {
			return err
		}
	}
	if pids := otherDaemons(); len(pids) > 0 {
		progress("WARNING: other gopulsed running (pids %v): their probes trace the untraced runs too", pids)
	}
	restore, err := enableStats()
	if err != nil {
		return fmt.Errorf("kernel.bpf_stats_enabled: %w", err)
	}
	defer restore()

	trapNs, bpfNs, err := trapCost(trap)
	if err != nil {
		return fmt.Errorf("trap cost: %w", err)
	}
	e.trapNs, e.trivialNs = trapNs, bpfNs
	fmt.Printf("One uprobe hit on this machine: %.2f µs (of which BPF program %.0f ns), median of 9 runs of 200000 calls.\n", trapNs/1000, bpfNs)
	if o.rounds > 0 {
		var ws []workload
		for _, w := range gcWorkloads() {
			if selected(o.workloads, w.key) {
				w.bin = bins[w.fixture]
				ws = append(ws, w)
			}
		}
		if err := e.gcTable(ctx, ws, o.rounds); err != nil {
			return err
		}
	}
	if o.famRounds > 0 {
		if err := e.familyTables(ctx, bins, o); err != nil {
			return err
		}
	}
	if o.rounds > 0 || o.famRounds > 0 {
		printAccountingNote(e.trapNs)
	}
	if e.others > 0 {
		fmt.Printf("\n**Another gopulsed was running during %d of %d untraced runs**: those runs were traced by it, the ratios understate the cost. Re-run on a quiet host.\n", e.others, e.untraced)
	}
	if o.footprint {
		if err := e.daemonFootprint(ctx, bins["gcload"], 50); err != nil {
			return err
		}
	}
	if o.attachRounds > 0 {
		if err := e.attachAndStop(ctx, bins["gcload"], o.attachRounds, 50); err != nil {
			return err
		}
	}
	fmt.Printf("\nBench time: %s.\n", time.Since(start).Round(time.Second))
	return nil
}

func build(out, pkg, dir string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir, cmd.Stderr = dir, os.Stderr
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	return nil
}

// gcTable is the GC family (--probes gc) on gcload: wall and CPU ratios,
// and the accounting, with the fixture's GC cycles as the daemon saw them
// (equal to the fixture's own count when the whole run was traced).
func (e *env) gcTable(ctx context.Context, ws []workload, rounds int) error {
	if len(ws) == 0 {
		return nil
	}
	fmt.Printf("\n### GC family (--probes gc): wall time, CPU time and accounting, %d alternating pairs\n\n", rounds)
	fmt.Println("| workload | wall untraced → traced | wall ratio [IQR] | CPU untraced → traced | CPU ratio [IQR] | GC cycles/run (fixture / seen by daemon) | traps/run | traps/GC cycle | BPF runs/run | est. cost (accounting) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, w := range ws {
		p, err := e.measure(ctx, "gc", w, rounds)
		if err != nil {
			return fmt.Errorf("GC table, %s: %w", w.key, err)
		}
		progress("%s --probes gc (GC table): wall %s", w.key, fmtRatio(p.wallRatios()))
		seen := p.tracedMedian(func(t traced) float64 { return float64(t.gcSeen) })
		// The gc family's traps over the cycles its probe recorded in every
		// traced process during the run (other Go programs on the host
		// run cycles too, and the daemon traces them all).
		perCycle := "-"
		if rec := p.tracedMedian(func(t traced) float64 { return float64(t.delta.gcRecords) }); rec > 0 {
			perCycle = fmt.Sprintf("%.2f", p.tracedMedian(func(t traced) float64 { return float64(t.delta.gcTraps) })/rec)
		}
		fmt.Printf("| %s | %.3fs → %.3fs | %s | %.3fs → %.3fs | %s | %.0f / %.0f | %s | %s | %s | %s |\n", w.name,
			p.plainMedian(wallSec), p.tracedWall(), fmtRatio(p.wallRatios()),
			p.plainMedian(cpuSec), p.tracedCPU(), fmtRatio(p.cpuRatios()),
			p.tracedMedian(func(t traced) float64 { return float64(t.numGC) }),
			seen,
			fmtCount(p.traps()), perCycle,
			fmtCount(p.runs()),
			fmtShare(p.est()))
	}
	return nil
}

// printAccountingNote says what the est. cost columns count, once after
// the tables.
func printAccountingNote(trapNs float64) {
	fmt.Printf(`
Medians over the pairs; [IQR] is the interquartile range of the per-pair ratios traced/untraced, the
pair's two runs in alternating order. GC cycles "seen by daemon" equal to the fixture's own count show
that the whole run was traced.

est. cost (accounting), per traced run, then the median: (traps × %.2f µs, the hit cost measured above,
+ the uprobe programs' own kernel run time beyond the trivial one timed with it, + the kernel run time,
run_time_ns, of the daemon's other BPF programs) / the fixture's CPU time
(rusage); counted between two readings of the bench's own daemon (its status, and the programs it holds
open) just before and after the run. It is conservative: the tracepoint programs (sched_switch and
sched_wakeup, the futex and madvise syscall tracepoints, exec/exit) run for every task on the host,
their cost paid by whichever task hits them, and traps also come from the other Go processes the
daemon traces (itself, the bench); all of it during the run is counted against the fixture. Not
counted: the tracepoints' dispatch outside the program, and the daemon's own user-space CPU (see
its footprint).
`, trapNs/1000)
}

// enableStats turns kernel.bpf_stats_enabled on for trapCost's own
// program (the daemons keep stats on for theirs while they run) and
// returns how to put the old value back.
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
	// Loaded for one link per site: the uprobe below is a plain one.
	fam, err := gc.Load(probes.Env{SingleUprobes: true})
	if err != nil {
		return 0, 0, fmt.Errorf("load the GC family: %w", err)
	}
	defer fam.Close()
	// gc_cycle with no layout for the binary: a map lookup and a count,
	// the cheapest program there is.
	var prog *ebpf.Program
	for _, p := range fam.Programs() {
		if info, _ := p.Info(); info != nil && strings.HasPrefix(info.Name, "gc_cycle") {
			prog = p
		}
	}
	if prog == nil {
		return 0, 0, errors.New("no gc_cycle program in the GC family")
	}
	ex, err := link.OpenExecutable(bin)
	if err != nil {
		return 0, 0, err
	}
	const n = 200000
	timeRun := func() (float64, error) {
		out, err := exec.Command(bin, "-n", strconv.Itoa(n)).Output()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", bin, err)
		}
		f := strings.Fields(string(out))
		if len(f) < 2 {
			return 0, fmt.Errorf("%s: unexpected output %q", bin, out)
		}
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
			return 0, 0, fmt.Errorf("uprobe on main.tick: %w", err)
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

// result is one run of a fixture.
type result struct {
	pid       int
	wall, cpu time.Duration // cpu: user + system, from rusage
	numGC     int           // gcload's own count of its GC cycles
}

func runFixture(bin string, args []string) (result, error) {
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return result{}, fmt.Errorf("start %s: %w", bin, err)
	}
	r := result{pid: cmd.Process.Pid}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 1 && f[0] == "final" {
			r.numGC, _ = strconv.Atoi(strings.TrimPrefix(f[1], "numgc="))
		}
	}
	if err := cmd.Wait(); err != nil {
		return r, fmt.Errorf("%s %s: %w", filepath.Base(bin), strings.Join(args, " "), err)
	}
	r.wall = time.Since(start)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return r, nil
}
