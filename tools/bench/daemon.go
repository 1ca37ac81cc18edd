package main

// A traced run: start gopulsed with one --probes setting, wait until the
// fixture's binary is probed, take the daemon's counters, run the fixture,
// take them again, stop the daemon.
//
// Why not a fixed sleep before the measured run: the daemon's API answers
// as soon as the socket is up, before the families are loaded and the
// processes running at start are attached (its "ready"); the warm run's
// exec is only handled after that. On a busy 2-core VM the gap reached
// 1.7 s, so a measured run started 100 ms after the warm one could end
// before any probe was on the binary: 0 hits, and a "traced" wall time
// that was in fact untraced.
//
// Why not the kernel's list of every loaded program: other gopulsed
// instances (e2e tests, a stale daemon) load programs of the same names,
// and their run counts were added in (116 hits instead of 58 with two
// daemons). The hits come from the bench's own daemon's status instead,
// and the BPF run time from the programs that daemon holds open
// (/proc/PID/fdinfo).

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

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes"
)

// env is what every measurement needs: where the binaries are, and the
// cost of one uprobe hit measured at the start of this bench run.
type env struct {
	dir       string // scratch directory, holds the daemon's socket
	daemon    string // gopulsed binary
	config    string // an empty configuration file for it
	trapNs    float64
	trivialNs float64 // the BPF run time of the trivial program trapNs was measured with
	// others counts untraced runs during which another gopulsed was
	// running (its probes then traced the "untraced" run), out of all.
	others, untraced int
}

// benchDaemon is one gopulsed started by the bench.
type benchDaemon struct {
	cmd    *exec.Cmd
	client *api.Client
}

// startDaemon starts gopulsed with --probes setting and returns once its
// API answers; that is not yet "probes attached" (see waitAttached).
func (e *env) startDaemon(ctx context.Context, setting string) (*benchDaemon, error) {
	// Errors only: the tables go to stdout, the daemon's notes would
	// interleave with them on a terminal.
	return e.startDaemonWith(ctx, setting, daemonOpts{logLevel: "error", logFormat: "auto", stderr: os.Stderr})
}

// daemonOpts are what a measurement may change in how the daemon runs.
type daemonOpts struct {
	logLevel, logFormat string    // --log-level, --log-format
	stderr              io.Writer // its log
	env                 []string  // extra environment, KEY=VALUE
}

func (e *env) startDaemonWith(ctx context.Context, setting string, o daemonOpts) (*benchDaemon, error) {
	sock := filepath.Join(e.dir, "gopulse.sock")
	cmd := exec.Command(e.daemon, "--config", e.config, "--socket", sock, "--prometheus-listen", "",
		"--log-level", o.logLevel, "--log-format", o.logFormat, "--probes", setting)
	cmd.Stderr = o.stderr
	// Nothing from the host's configuration (an installed
	// /etc/gopulse/gopulse.yaml, OTEL_* export settings) changes what the
	// bench's daemon does.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GOPULSE_TRAP_COST_NS=10000") // no self-measurement per start
	cmd.Env = append(cmd.Env, o.env...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start gopulsed --probes %s: %w", setting, err)
	}
	d := &benchDaemon{cmd: cmd, client: api.NewClient(sock)}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := d.client.Status(ctx); err == nil {
			return d, nil
		} else if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("gopulsed --probes %s did not answer: %w", setting, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// stop stops the daemon and waits for it to exit: closing its uprobes
// takes a while (an RCU grace period each), and the next untraced run must
// not start while they are still there.
func (d *benchDaemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	_ = d.cmd.Wait()
}

// errNotProbed: the daemon did not list the binary in time.
var errNotProbed = errors.New("binary not probed")

// waitAttached polls the daemon until it lists bin among its probed
// binaries, which happens only once its families are loaded and its
// initial scan is done. A family that failed to start, or to attach to
// bin, fails the run: the setting would not measure what it says.
func (d *benchDaemon) waitAttached(ctx context.Context, bin string, timeout time.Duration) error {
	names := []string{bin}
	if r, err := filepath.EvalSymlinks(bin); err == nil && r != bin {
		names = append(names, r) // the daemon names it by /proc/PID/exe
	}
	deadline := time.Now().Add(timeout)
	for {
		st, err := d.client.Status(ctx)
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		for _, f := range st.Families {
			if f.Error != "" {
				return fmt.Errorf("family %s did not start: %s", f.Name, f.Error)
			}
		}
		for _, b := range st.Binaries {
			for _, n := range names {
				if b.Path != n {
					continue
				}
				if len(b.Errors) > 0 {
					return fmt.Errorf("%s not fully probed: %s", bin, strings.Join(b.Errors, "; "))
				}
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w after %s", bin, errNotProbed, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counters are the daemon's cumulative probe figures at one time.
type counters struct {
	hits        uint64 // runs of all its programs (status, every family)
	uprobeHits  uint64 // of those, uprobes: each a trap in a traced thread
	otherRunNs  uint64 // kernel run_time_ns of its non-uprobe programs
	uprobeRunNs uint64 // kernel run_time_ns of its uprobe programs
	gcRecords   uint64 // GC cycles of every traced process the gc family's probe recorded (events + lost)
	gcTraps     uint64 // the gc family's uprobe hits
}

func (d *benchDaemon) counters(ctx context.Context) (counters, error) {
	var c counters
	st, err := d.client.Status(ctx)
	if err != nil {
		return c, fmt.Errorf("status: %w", err)
	}
	for _, f := range st.Families {
		c.hits += f.Hits
		c.uprobeHits += f.UprobeHits
		if f.Name == "gc" {
			c.gcRecords, c.gcTraps = f.Events+f.LostEvents, f.UprobeHits
		}
	}
	// The status gives run time only as a recent rate; the cumulative
	// figure is in the fdinfo of the program fds the daemon holds.
	progs, err := heldPrograms(d.cmd.Process.Pid)
	if err != nil {
		return c, err
	}
	for _, p := range progs {
		if p.typ != ebpf.Kprobe { // uprobes are kprobe-type programs
			c.otherRunNs += p.runNs
		} else {
			c.uprobeRunNs += p.runNs
		}
	}
	return c, nil
}

func (c counters) sub(before counters) counters {
	return counters{
		hits:        c.hits - min(before.hits, c.hits),
		uprobeHits:  c.uprobeHits - min(before.uprobeHits, c.uprobeHits),
		otherRunNs:  c.otherRunNs - min(before.otherRunNs, c.otherRunNs),
		uprobeRunNs: c.uprobeRunNs - min(before.uprobeRunNs, c.uprobeRunNs),
		gcRecords:   c.gcRecords - min(before.gcRecords, c.gcRecords),
		gcTraps:     c.gcTraps - min(before.gcTraps, c.gcTraps),
	}
}

// costNs is the accounting estimate of what the probes cost during the
// interval: every trap at the trap cost measured by this bench, plus the
// run time the kernel measured for the other programs.
func (c counters) costNs(trapNs, trivialNs float64) float64 {
	// The hit cost was measured with a trivial program (trivialNs of
	// it); the uprobe programs' own run time is counted as the kernel
	// measured it (the GC family's copies four windows of the books).
	extra := float64(c.uprobeRunNs) - float64(c.uprobeHits)*trivialNs
	return float64(c.uprobeHits)*trapNs + max(extra, 0) + float64(c.otherRunNs)
}

type heldProgram struct {
	typ   ebpf.ProgramType
	runNs uint64
	runs  uint64
}

// heldPrograms reads the BPF programs process pid holds open, by program
// ID, from /proc/PID/fdinfo (the kernel keeps run_time_ns and run_cnt
// while kernel.bpf_stats_enabled is on).
func heldPrograms(pid int) (map[uint32]heldProgram, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, fmt.Errorf("programs of gopulsed: %w", err)
	}
	progs := map[uint32]heldProgram{}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err != nil || l != "anon_inode:bpf-prog" {
			continue
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		var id uint32
		var p heldProgram
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "prog_id":
				id = uint32(n)
			case "prog_type":
				p.typ = ebpf.ProgramType(n)
			case "run_time_ns":
				p.runNs = n
			case "run_cnt":
				p.runs = n
			}
		}
		f.Close()
		if id != 0 {
			progs[id] = p // one program may be open under several fds
		}
	}
	return progs, nil
}

// traced is one traced run of a fixture and what the daemon counted
// during it.
type traced struct {
	result
	delta  counters
	gcSeen int // GC cycles of the fixture the daemon saw; -1 unknown
	// estShare is the accounting estimate, as a fraction of the
	// fixture's CPU time.
	estShare float64
}

// tracedRun starts the daemon with --probes setting, gets w's binary
// probed with a short run, waits until it is, runs w once between two
// readings of the daemon's counters, and stops the daemon.
func (e *env) tracedRun(ctx context.Context, setting string, w workload) (traced, error) {
	d, err := e.startDaemon(ctx, setting)
	if err != nil {
		return traced{}, err
	}
	defer d.stop()
	// The warm run's exec makes the daemon probe the binary. Should its
	// exec event be lost (the daemon then finds processes by rescanning
	// /proc, and this one is gone by then), another warm run does it.
	for attempt := 1; ; attempt++ {
		if _, err := runFixture(w.bin, w.warm); err != nil {
			return traced{}, fmt.Errorf("warm run of %s: %w", w.bin, err)
		}
		err := d.waitAttached(ctx, w.bin, 5*time.Second)
		if err == nil {
			break
		}
		if !errors.Is(err, errNotProbed) || attempt == 6 {
			return traced{}, fmt.Errorf("--probes %s: %w", setting, err)
		}
	}
	before, err := d.counters(ctx)
	if err != nil {
		return traced{}, err
	}
	r, err := runFixture(w.bin, w.args)
	if err != nil {
		return traced{}, fmt.Errorf("%s: %w", w.key, err)
	}
	after, err := d.counters(ctx)
	if err != nil {
		return traced{}, err
	}
	t := traced{result: r, delta: after.sub(before), gcSeen: -1}
	if r.cpu > 0 {
		t.estShare = t.delta.costNs(e.trapNs, e.trivialNs) / float64(r.cpu.Nanoseconds())
	}
	if w.gcCycles {
		t.gcSeen = d.gcCyclesSeen(ctx, r)
	}
	return t, nil
}

// gcCyclesSeen is the number of the fixture's GC cycles whose record the
// daemon's probe delivered (its totals are the runtime's own whatever the
// probes saw): equal to the fixture's own count when the whole run was
// traced. Cycle events reach the daemon through a ring buffer read every
// probes.PollEvery (no wakeup per record), so the last may land up to that
// long after the fixture exited.
func (d *benchDaemon) gcCyclesSeen(ctx context.Context, r result) int {
	seen := -1
	for deadline := time.Now().Add(probes.PollEvery + time.Second); time.Now().Before(deadline); {
		h, err := d.client.GCHistory(ctx, r.pid, 1)
		if err == nil {
			seen = int(h.Process.GCCyclesRecorded)
			if seen >= r.numGC {
				break
			}
		} else if errors.Is(err, api.ErrNoProcess) {
			seen = 0
		}
		time.Sleep(20 * time.Millisecond)
	}
	return seen
}

// otherDaemons lists running gopulsed processes (zombies aside): when one
// runs, the bench's "untraced" runs are traced by it.
func otherDaemons() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || end+3 > len(s) {
			continue
		}
		if s[open+1:end] == "gopulsed" && s[end+2] != 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids
}
