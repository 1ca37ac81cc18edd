package main

// The probe families benchmark: for each workload and each --probes
// setting, alternating untraced/traced runs (the daemon stopped for the
// untraced ones), medians; then the daemon's own CPU and RSS while it
// traces 50 Go processes.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

type famWorkload struct {
	name string
	bin  string // fixture program
	args []string
	warm []string // a short run, to get the binary probed
}

var famWorkloads = []famWorkload{
	{"alloc-heavy (gcload, 4 goroutines)", "gcload", []string{"-workers", "4", "-iters", "150000", "-forced", "0"}, []string{"-gcloop", "1"}},
	{"goroutine ping-pong (pingpong, 2 pairs)", "pingpong", []string{"-pairs", "2", "-rounds", "150000", "-work", "50"}, []string{"-pairs", "1", "-rounds", "10"}},
	{"contended allocation (heaplock, 16 goroutines)", "heaplock", []string{"-workers", "16", "-iters", "3000"}, []string{"-workers", "1", "-iters", "10"}},
}

var famSettings = []string{"gc", "madvise", "sched", "mheaplock", "default", "all"}

func runFamilies(dir, daemon string, rounds int) error {
	bins := map[string]string{}
	for _, w := range famWorkloads {
		out := filepath.Join(dir, w.bin)
		cmd := exec.Command("go", "build", "-o", out, "./"+w.bin)
		cmd.Dir, cmd.Stderr = "tools/fixtures", os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", w.bin, err)
		}
		bins[w.bin] = out
	}
	fmt.Printf("\n### Probe families: traced/untraced wall-time ratio (medians of %d alternating pairs)\n\n", rounds)
	fmt.Print("| workload | untraced |")
	for _, s := range famSettings {
		fmt.Printf(" %s |", s)
	}
	fmt.Print("\n|---|---|")
	for range famSettings {
		fmt.Print("---|")
	}
	fmt.Println()
	for _, w := range famWorkloads {
		bin := bins[w.bin]
		fmt.Printf("| %s |", w.name)
		first := true
		for _, setting := range famSettings {
			var plain, traced []float64
			for r := 0; r < rounds; r++ {
				p, err := runFixture(bin, w.args)
				if err != nil {
					return err
				}
				plain = append(plain, p.wall.Seconds())
				t, err := tracedFamilyRun(daemon, dir, setting, bin, w)
				if err != nil {
					return err
				}
				traced = append(traced, t.wall.Seconds())
			}
			if first {
				fmt.Printf(" %.3fs |", median(plain))
				first = false
			}
			fmt.Printf(" %.3f× |", median(traced)/median(plain))
		}
		fmt.Println()
	}
	return daemonFootprint(daemon, dir, bins["gcload"], 50)
}

// tracedFamilyRun starts the daemon with --probes setting, gets the
// binary probed with a short run, runs the workload once, and stops the
// daemon.
func tracedFamilyRun(daemon, dir, setting, bin string, w famWorkload) (result, error) {
	stop, _, err := startBenchDaemon(daemon, dir, setting)
	if err != nil {
		return result{}, err
	}
	defer stop()
	if _, err := runFixture(bin, w.warm); err != nil {
		return result{}, err
	}
	time.Sleep(100 * time.Millisecond)
	return runFixture(bin, w.args)
}

func startBenchDaemon(daemon, dir, setting string) (stop func(), cmd *exec.Cmd, err error) {
	sock := filepath.Join(dir, "gopulse.sock")
	// Errors only: the tables go to stdout, the daemon's notes would
	// interleave with them on a terminal.
	cmd = exec.Command(daemon, "--socket", sock, "--prometheus-listen", "", "--log-level", "error", "--probes", setting)
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "GOPULSE_TRAP_COST_NS=10000") // no self-measurement per start
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	client := api.NewClient(sock)
	for i := 0; i < 200; i++ {
		if _, err := client.Status(context.Background()); err == nil {
			return stop, cmd, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	stop()
	return nil, nil, errors.New("gopulsed did not come up")
}

// daemonFootprint runs n idle-waiting gcload processes plus one busy
// one, all traced with --probes all, and reports the daemon's CPU over 10
// seconds and its RSS.
func daemonFootprint(daemon, dir, gcload string, n int) error {
	stop, cmd, err := startBenchDaemon(daemon, dir, "all")
	if err != nil {
		return err
	}
	defer stop()
	var kids []*exec.Cmd
	defer func() {
		for _, k := range kids {
			_ = k.Process.Kill()
			_ = k.Wait()
		}
	}()
	for i := 0; i < n; i++ {
		k := exec.Command(gcload, "-wait", "-hold")
		in, _ := k.StdinPipe()
		out, _ := k.StdoutPipe()
		if err := k.Start(); err != nil {
			return err
		}
		_ = in // held open: the fixture waits
		go io.Copy(io.Discard, out)
		kids = append(kids, k)
	}
	time.Sleep(2 * time.Second)
	cpu0 := procCPU(cmd.Process.Pid)
	busy := exec.Command(gcload, "-workers", "2", "-iters", "100000000", "-forced", "0")
	if err := busy.Start(); err != nil {
		return err
	}
	time.Sleep(10 * time.Second)
	_ = busy.Process.Kill()
	_ = busy.Wait()
	cpu1 := procCPU(cmd.Process.Pid)
	st, err := api.NewClient(filepath.Join(dir, "gopulse.sock")).Status(context.Background())
	if err != nil {
		return err
	}
	fmt.Printf("\n### Daemon footprint, --probes all, %d idle Go processes + 1 allocating, 10 s\n\n", n)
	fmt.Printf("processes traced: %d; daemon CPU: %.2f%% of one CPU; daemon RSS: %.1f MiB\n",
		st.Processes, (cpu1-cpu0)/10*100, float64(procRSS(cmd.Process.Pid))/(1<<20))
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
