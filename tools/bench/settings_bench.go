package main

// The probe families benchmark: for each workload and each --probes
// setting, alternating untraced/traced runs (the daemon stopped for the
// untraced ones); wall time, CPU time and the accounting estimate of each;
// then the daemon's own CPU and RSS while it traces 50 Go processes.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// famWorkloads are the probe families' tables: GC, scheduling and heap
// lock pressure, one each.
func famWorkloads() []workload {
	return []workload{
		{key: "alloc", name: "alloc-heavy (gcload, 4 goroutines)", fixture: "gcload",
			args: []string{"-workers", "4", "-iters", "150000", "-forced", "0"}, warm: []string{"-gcloop", "1"}},
		{key: "pingpong", name: "goroutine ping-pong (pingpong, 2 pairs)", fixture: "pingpong",
			args: []string{"-pairs", "2", "-rounds", "600000", "-work", "50"}, warm: []string{"-pairs", "1", "-rounds", "10"}},
		{key: "heaplock", name: "contended allocation (heaplock, 16 goroutines)", fixture: "heaplock",
			args: []string{"-workers", "16", "-iters", "3000"}, warm: []string{"-workers", "1", "-iters", "10"}},
		malloc8(false),
	}
}

// malloc8 is the tiny-heap allocation workload (like the runtime's
// BenchmarkMalloc8): hundreds of GC cycles a second at the minimum heap.
func malloc8(gcTable bool) workload {
	return workload{key: "malloc8", name: "tiny-heap allocation (malloc8, like BenchmarkMalloc8)", fixture: "malloc8",
		args: []string{"-n", "60000000"}, warm: []string{"-n", "1000"}, gcCycles: gcTable}
}

var famSettings = []string{"gc", "madvise", "sched", "mheaplock", "default", "all"}

// familyTables measures every selected workload under every selected
// --probes setting, then prints three tables over the same runs: wall
// time, CPU time, accounting.
func (e *env) familyTables(ctx context.Context, bins map[string]string, o options) error {
	var ws []workload
	for _, w := range famWorkloads() {
		if selected(o.workloads, w.key) {
			w.bin = bins[w.fixture]
			ws = append(ws, w)
		}
	}
	var settings []string
	for _, s := range famSettings {
		if selected(o.settings, s) {
			settings = append(settings, s)
		}
	}
	if len(ws) == 0 || len(settings) == 0 {
		return nil
	}
	cells := make([][]pairs, len(ws))
	for i := range ws {
		cells[i] = make([]pairs, len(settings))
	}
	// Rounds outermost: each round measures one pair of every cell, so a
	// drift of the host over the bench's minutes falls on every setting
	// alike instead of on whichever cells ran during it.
	start, n, total := time.Now(), 0, o.famRounds*len(ws)*len(settings)
	for r := 0; r < o.famRounds; r++ {
		for i, w := range ws {
			for j, setting := range settings {
				if err := e.measurePair(ctx, setting, w, r, &cells[i][j]); err != nil {
					return fmt.Errorf("families, %s --probes %s: %w", w.key, setting, err)
				}
				n++
				el := time.Since(start)
				left := time.Duration(float64(el) / float64(n) * float64(total-n))
				p := cells[i][j]
				progress("round %d/%d %s --probes %s: wall %s, est. %s so far; %s elapsed, about %s left", r+1, o.famRounds, w.key, setting,
					fmtRatio(p.wallRatios()), fmtShare(p.est()),
					el.Round(time.Second), left.Round(time.Second))
			}
		}
	}
	header := func(title, first string) {
		fmt.Printf("\n### %s\n\n| workload |", title)
		if first != "" {
			fmt.Printf(" %s |", first)
		}
		for _, s := range settings {
			fmt.Printf(" %s |", s)
		}
		fmt.Print("\n|---|")
		if first != "" {
			fmt.Print("---|")
		}
		for range settings {
			fmt.Print("---|")
		}
		fmt.Println()
	}
	// The untraced column is over all the row's untraced runs: every
	// setting had its own, of the same workload.
	allPlain := func(row []pairs, f func(result) float64) float64 {
		var xs []float64
		for _, p := range row {
			for _, r := range p.plain {
				xs = append(xs, f(r))
			}
		}
		return median(xs)
	}

	header(fmt.Sprintf("Probe families: traced/untraced wall-time ratio, median of %d alternating pairs [interquartile range of the per-pair ratios]", o.famRounds), "untraced wall (all the row's runs)")
	for i, w := range ws {
		fmt.Printf("| %s | %.3fs |", w.name, allPlain(cells[i], wallSec))
		for _, p := range cells[i] {
			fmt.Printf(" %s |", fmtRatio(p.wallRatios()))
		}
		fmt.Println()
	}

	header("Probe families: the traced program's CPU time (user + system), median untraced → traced, and the traced/untraced ratio [IQR]", "untraced CPU (all the row's runs)")
	for i, w := range ws {
		fmt.Printf("| %s | %.3fs |", w.name, allPlain(cells[i], cpuSec))
		for _, p := range cells[i] {
			fmt.Printf(" %.3fs → %.3fs, %s |", p.plainMedian(cpuSec), p.tracedCPU(), fmtRatio(p.cpuRatios()))
		}
		fmt.Println()
	}

	header("Probe families: est. cost (accounting), % of the traced program's CPU time · traps/run · BPF program runs/run", "")
	for i, w := range ws {
		fmt.Printf("| %s |", w.name)
		for _, p := range cells[i] {
			fmt.Printf(" %s · %s traps · %s runs |",
				fmtShare(p.est()),
				fmtCount(p.traps()),
				fmtCount(p.runs()))
		}
		fmt.Println()
	}
	return nil
}

// daemonFootprint runs n idle-waiting gcload processes plus one busy
// one, all traced with --probes all, and reports the daemon's CPU over 10
// seconds and its RSS.
func (e *env) daemonFootprint(ctx context.Context, gcload string, n int) error {
	d, err := e.startDaemon(ctx, "all")
	if err != nil {
		return err
	}
	defer d.stop()
	var kids []*exec.Cmd
	defer func() {
		for _, k := range kids {
			_ = k.Process.Kill()
			_ = k.Wait()
		}
	}()
	for i := 0; i < n; i++ {
		k := exec.Command(gcload, "-wait", "-hold")
		if _, err := k.StdinPipe(); err != nil { // held open: the fixture waits
			return err
		}
		out, err := k.StdoutPipe()
		if err != nil {
			return err
		}
		if err := k.Start(); err != nil {
			return fmt.Errorf("start %s: %w", gcload, err)
		}
		go io.Copy(io.Discard, out)
		kids = append(kids, k)
	}
	// Measure from once the n processes are traced, not during their
	// attach.
	for deadline := time.Now().Add(30 * time.Second); ; {
		ps, err := d.client.Processes(ctx)
		if err != nil {
			return fmt.Errorf("processes: %w", err)
		}
		traced := 0
		for _, p := range ps {
			if p.Exe == gcload && p.Exited == nil {
				traced++
			}
		}
		if traced >= n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("daemon traces %d of the %d processes after 30 s", traced, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	pid := d.cmd.Process.Pid
	cpu0 := procCPU(pid)
	busy := exec.Command(gcload, "-workers", "2", "-iters", "100000000", "-forced", "0")
	if err := busy.Start(); err != nil {
		return fmt.Errorf("start %s: %w", gcload, err)
	}
	time.Sleep(10 * time.Second)
	_ = busy.Process.Kill()
	_ = busy.Wait()
	cpu1 := procCPU(pid)
	st, err := d.client.Status(ctx)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	fmt.Printf("\n### Daemon footprint, --probes all, %d idle Go processes + 1 allocating, 10 s\n\n", n)
	fmt.Printf("processes traced: %d; daemon CPU: %.2f%% of one CPU; daemon RSS: %.1f MiB\n",
		st.Processes, (cpu1-cpu0)/10*100, float64(procRSS(pid))/(1<<20))
	return nil
}

func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func procRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
