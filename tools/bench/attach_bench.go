package main

// Attach latency and stop time (issue #12's goals, figures and not test
// assertions: a shared 2-core VM swings too much for a timed test):
//
//   - one never-seen binary exec'd on a quiet host: exec → its probes
//     attached, as the daemon measures it (its "binary attached" log line,
//     latency_ms: from the exec event's kernel timestamp);
//   - n never-seen binaries exec'd at once: the last one's latency;
//   - the daemon's stop with every family on and all those binaries still
//     attached: SIGTERM → process exit.
//
// "Never seen" is a fresh copy of the gcload fixture (a new inode: the
// daemon caches by inode), made before the clock starts. Each mode of
// uprobe links is measured: uprobe_multi links (one link per family,
// program and binary) where the kernel has them, and the per-site links
// older kernels get (forced with GOPULSE_NO_UPROBE_MULTI=1).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/gc"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/mheaplock"
)

// attachRun is one daemon's figures.
type attachRun struct {
	one       float64 // seconds, exec → attached, one binary alone
	manyMax   float64 // the last of n exec'd at once
	manyMed   float64 // their median
	stop      float64 // SIGTERM → exit
	probes    int     // uprobe sites on the binaries at stop
	links     int     // uprobe links (or multi links) at stop, from the daemon's fds
	binsAtEnd int
}

// attachedLine is what the bench reads of the daemon's JSON log.
type attachedLine struct {
	Msg       string  `json:"msg"`
	Exe       string  `json:"exe"`
	LatencyMs float64 `json:"latency_ms"`
	Probes    int     `json:"probes"`
	Err       string  `json:"err"`
}

func (e *env) attachAndStop(ctx context.Context, gcload string, rounds, n int) error {
	modes := []struct {
		name string
		env  []string
	}{
		{"uprobe_multi (one link per family, program and binary)", nil},
		{"per-site links (GOPULSE_NO_UPROBE_MULTI=1, kernels < 6.6)", []string{probes.NoUprobeMultiEnv + "=1"}},
	}
	if !probes.UprobeMulti().Have {
		modes = modes[1:]
		progress("this kernel has no uprobe_multi links: per-site links only")
	}
	if err := e.attacherAlone(gcload, rounds, n, 4); err != nil {
		return err
	}
	runs := make([][]attachRun, len(modes))
	// Rounds outermost, as the family tables: a drift of the host falls on
	// both modes alike.
	for r := 0; r < rounds; r++ {
		for i, m := range modes {
			ar, err := e.attachRun(ctx, gcload, n, m.env, r)
			if err != nil {
				return fmt.Errorf("attach latency, %s: %w", m.name, err)
			}
			progress("attach round %d/%d, %s: one %.1f ms, %d at once: last %.1f ms; stop %.0f ms (%d binaries, %d sites, %d links)",
				r+1, rounds, m.name, ar.one*1000, n, ar.manyMax*1000, ar.stop*1000, ar.binsAtEnd, ar.probes, ar.links)
			runs[i] = append(runs[i], ar)
		}
	}
	fmt.Printf("\n### Attach latency and stop time, --probes all: median of %d daemons [min–max]\n\n", rounds)
	fmt.Printf("| uprobe links | 1 never-seen binary, exec → attached | %d never-seen binaries exec'd at once: the last (median of the %d) | stop, SIGTERM → exit (those %d binaries and the host's other Go binaries attached) | binaries / sites / links at stop |\n", n, n, n+1)
	fmt.Println("|---|---|---|---|---|")
	for i, m := range modes {
		col := func(f func(attachRun) float64) []float64 {
			var xs []float64
			for _, ar := range runs[i] {
				xs = append(xs, f(ar))
			}
			return xs
		}
		ms := func(xs []float64) string {
			return fmt.Sprintf("%.1f ms [%.1f–%.1f]", median(xs)*1000, slices.Min(xs)*1000, slices.Max(xs)*1000)
		}
		fmt.Printf("| %s | %s | %s (%.1f ms) | %s | %.0f / %.0f / %.0f |\n", m.name,
			ms(col(func(a attachRun) float64 { return a.one })),
			ms(col(func(a attachRun) float64 { return a.manyMax })),
			median(col(func(a attachRun) float64 { return a.manyMed }))*1000,
			ms(col(func(a attachRun) float64 { return a.stop })),
			median(col(func(a attachRun) float64 { return float64(a.binsAtEnd) })),
			median(col(func(a attachRun) float64 { return float64(a.probes) })),
			median(col(func(a attachRun) float64 { return float64(a.links) })))
	}
	fmt.Printf(`
Goals (issue #12): one never-seen binary within 50 ms, %d at once all within 500 ms, stop within 1 s.
Latency is the daemon's own (exec event's kernel time → probes on the inode); each binary is a fresh
copy of the gcload fixture, so every one is inspected and attached anew.
`, n)
	return nil
}

// attachRun starts one daemon (--probes all), execs one fresh binary, then
// n at once, and stops the daemon with them all attached.
func (e *env) attachRun(ctx context.Context, gcload string, n int, extraEnv []string, round int) (attachRun, error) {
	var ar attachRun
	dir, err := os.MkdirTemp(e.dir, "attach")
	if err != nil {
		return ar, err
	}
	defer os.RemoveAll(dir)
	paths := make([]string, n+1)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("gcload-%d-%d", round, i))
		if err := copyFile(gcload, paths[i]); err != nil {
			return ar, err
		}
	}
	if paths[0], err = filepath.EvalSymlinks(paths[0]); err != nil {
		return ar, err
	}
	dir = filepath.Dir(paths[0])
	for i := range paths {
		paths[i] = filepath.Join(dir, filepath.Base(paths[i]))
	}

	pr, pw := io.Pipe()
	defer pw.Close()
	lines := make(chan attachedLine, 4*n+16)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var l attachedLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			if l.Msg == "binary attached" || l.Msg == "binary not traced" {
				select {
				case lines <- l:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	d, err := e.startDaemonWith(ctx, "all", daemonOpts{logLevel: "info", logFormat: "json", stderr: pw, env: extraEnv})
	if err != nil {
		return ar, err
	}
	stopped := false
	defer func() {
		if !stopped {
			d.stop()
		}
	}()
	var kids []*exec.Cmd
	defer func() {
		for _, k := range kids {
			_ = k.Process.Kill()
			_ = k.Wait()
		}
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := d.client.Status(ctx)
		if err != nil {
			return ar, fmt.Errorf("status: %w", err)
		}
		if st.Ready {
			for _, f := range st.Families {
				if f.Error != "" {
					return ar, fmt.Errorf("family %s did not start: %s", f.Name, f.Error)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			return ar, fmt.Errorf("daemon not ready after 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := func(path string) error {
		k := exec.Command(path, "-wait", "-hold")
		if _, err := k.StdinPipe(); err != nil { // held open: the fixture waits
			return err
		}
		if err := k.Start(); err != nil {
			return fmt.Errorf("start %s: %w", path, err)
		}
		kids = append(kids, k)
		return nil
	}
	wait := func(want []string) ([]float64, error) {
		left := map[string]bool{}
		for _, p := range want {
			left[p] = true
		}
		var lats []float64
		timeout := time.After(60 * time.Second)
		for len(left) > 0 {
			select {
			case l := <-lines:
				if !left[l.Exe] {
					continue
				}
				if l.Msg != "binary attached" {
					return nil, fmt.Errorf("%s not traced: %s", l.Exe, l.Err)
				}
				delete(left, l.Exe)
				lats = append(lats, l.LatencyMs/1000)
			case <-timeout:
				return nil, fmt.Errorf("%d of %d binaries not attached after 60 s", len(left), len(want))
			}
		}
		return lats, nil
	}
	// A quiet host: the daemon has just settled after its start.
	time.Sleep(300 * time.Millisecond)
	if err := start(paths[0]); err != nil {
		return ar, err
	}
	lats, err := wait(paths[:1])
	if err != nil {
		return ar, err
	}
	ar.one = lats[0]
	time.Sleep(300 * time.Millisecond)
	for _, p := range paths[1:] {
		if err := start(p); err != nil {
			return ar, err
		}
	}
	if lats, err = wait(paths[1:]); err != nil {
		return ar, err
	}
	ar.manyMax, ar.manyMed = slices.Max(lats), median(lats)
	st, err := d.client.Status(ctx)
	if err != nil {
		return ar, fmt.Errorf("status: %w", err)
	}
	for _, b := range st.Binaries {
		ar.probes += b.Probes
	}
	ar.binsAtEnd = len(st.Binaries)
	ar.links = countLinks(d.cmd.Process.Pid)
	t0 := time.Now()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	err = d.cmd.Wait()
	ar.stop = time.Since(t0).Seconds()
	stopped = true
	if err != nil {
		return ar, fmt.Errorf("gopulsed exited with %v after SIGTERM", err)
	}
	return ar, nil
}

// countLinks counts the BPF links and perf events (a uprobe link on a
// kernel without BPF links for it is a perf event) process pid holds.
func countLinks(pid int) int {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return 0
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && (l == "anon_inode:bpf_link" || l == "anon_inode:[perf_event]") {
			n++
		}
	}
	return n
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// attacherAlone times the attacher by itself, without the daemon's event
// loop: n never-seen binaries (fresh copies of gcload) inspected and
// attached with gc and mheaplock loaded, by 1 goroutine and by workers
// goroutines (what the tracer's worker pool will do), then detached.
// Median of rounds, per kind of uprobe link.
func (e *env) attacherAlone(gcload string, rounds, n, workers int) error {
	type mode struct {
		name string
		env  probes.Env
	}
	modes := []mode{{"per-site links", probes.Env{SingleUprobes: true}}}
	if probes.UprobeMulti().Have {
		modes = append([]mode{{"uprobe_multi", probes.Env{}}}, modes...)
	}
	fmt.Printf("\n### The attacher alone: %d never-seen binaries inspected and attached (gc, mheaplock), median of %d [min–max]\n\n", n, rounds)
	fmt.Printf("| uprobe links | 1 goroutine | %d goroutines | detach all |\n|---|---|---|---|\n", workers)
	for _, m := range modes {
		var serial, parallel, detach []float64
		for r := 0; r < rounds; r++ {
			for _, w := range []int{1, workers} {
				took, det, err := e.attachBatch(gcload, m.env, n, w, r)
				if err != nil {
					return fmt.Errorf("attacher alone, %s: %w", m.name, err)
				}
				if w == 1 {
					serial = append(serial, took)
				} else {
					parallel = append(parallel, took)
				}
				detach = append(detach, det)
			}
		}
		ms := func(xs []float64) string {
			return fmt.Sprintf("%.0f ms [%.0f–%.0f]", median(xs)*1000, slices.Min(xs)*1000, slices.Max(xs)*1000)
		}
		fmt.Printf("| %s | %s | %s | %s |\n", m.name, ms(serial), ms(parallel), ms(detach))
		progress("attacher alone, %s: 1 goroutine %s, %d goroutines %s", m.name, ms(serial), workers, ms(parallel))
	}
	return nil
}

// attachBatch attaches n fresh copies of gcload with w goroutines and
// returns how long that took and how long detaching them all (Close)
// took.
func (e *env) attachBatch(gcload string, env probes.Env, n, w, round int) (attach, detach float64, err error) {
	dir, err := os.MkdirTemp(e.dir, "alone")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	paths := make([]string, n)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("gcload-%d-%d-%d", round, w, i))
		if err := copyFile(gcload, paths[i]); err != nil {
			return 0, 0, err
		}
	}
	gcf, err := gc.Load(env)
	if err != nil {
		return 0, 0, err
	}
	defer gcf.Close()
	mhl, err := mheaplock.Load(env)
	if err != nil {
		return 0, 0, err
	}
	defer mhl.Close()
	att, err := probes.NewAttacher(slog.New(slog.NewTextHandler(io.Discard, nil)), gcf.Spec(), mhl.Spec())
	if err != nil {
		return 0, 0, err
	}
	defer att.Close()
	next := make(chan string, n)
	for _, p := range paths {
		next <- p
	}
	close(next)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				b, err := goinspect.Open(p)
				if err != nil {
					errs <- err
					continue
				}
				if _, err := att.Attach(b, p); err != nil {
					errs <- fmt.Errorf("%s: %w", p, err)
				}
				b.Close()
			}
		}()
	}
	wg.Wait()
	attach = time.Since(start).Seconds()
	close(errs)
	for err := range errs {
		return 0, 0, err
	}
	start = time.Now()
	att.Close()
	return attach, time.Since(start).Seconds(), nil
}
