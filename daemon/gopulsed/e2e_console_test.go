package main

// End-to-end tests of the SRE's console (issue 13): fresh answers, ps vs
// ps -a, gc -f, top and doctor against the real daemon and fixtures.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
)

var cliBuild struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// cliBinary builds the gopulse CLI once per test process.
func cliBinary(t *testing.T) string {
	t.Helper()
	cliBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "gopulse-cli")
		if err != nil {
			cliBuild.err = err
			return
		}
		cliBuild.path = filepath.Join(dir, "gopulse")
		cliBuild.out, cliBuild.err = exec.Command("go", "build", "-o", cliBuild.path, "../../tools/gopulse").CombinedOutput()
	})
	if cliBuild.err != nil {
		t.Fatalf("build gopulse: %v\n%s", cliBuild.err, cliBuild.out)
	}
	return cliBuild.path
}

// psJSON runs `gopulse ps -o json` (plus args) and returns the processes.
func psJSON(t *testing.T, d *e2etest.Daemon, args ...string) []api.Process {
	t.Helper()
	out, err := exec.Command(cliBinary(t), append([]string{"--socket", d.Socket, "ps", "-o", "json"}, args...)...).Output()
	if err != nil {
		t.Fatalf("gopulse ps -o json %v: %v", args, err)
	}
	var ps []api.Process
	if err := json.Unmarshal(out, &ps); err != nil {
		t.Fatalf("ps json: %v\n%s", err, out)
	}
	return ps
}

func findPID(ps []api.Process, pid int) (api.Process, bool) {
	for _, p := range ps {
		if p.PID == pid {
			return p, true
		}
	}
	return api.Process{}, false
}

// An answer includes everything the kernel recorded before the request:
// right after the fixture's last cycle (its "final" line is printed after
// runtime.GC returned), with no sleep, `ps -o json` shows every cycle. The
// rings are read every second when nobody asks, so without the drain most
// of these queries came short (2 in 3 on main before issue 13).
func TestFreshAnswers(t *testing.T) {
	d := e2etest.StartDaemon(t)
	bin := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	e2etest.WarmUp(t, d, bin)
	const runs = 25
	short := 0
	for i := range runs {
		f := e2etest.StartFixture(t, bin, nil, "-hold", "-gcloop", strconv.Itoa(1+i%4))
		f.Expect("final")
		p, ok := findPID(psJSON(t, d), f.PID)
		switch {
		case !ok:
			t.Errorf("run %d: pid %d not listed", i, f.PID)
			short++
		case p.GCCycles != f.Final.NumGC:
			t.Errorf("run %d: pid %d: gc_cycles = %d right after its last cycle, runtime NumGC = %d", i, f.PID, p.GCCycles, f.Final.NumGC)
			short++
		}
		f.Finish()
	}
	t.Logf("%d of %d immediate queries complete", runs-short, runs)
}

// `ps` lists the running processes, `ps -a` the exited ones too; the exit
// is seen at once (the discovery ring is drained before the answer).
func TestPSRunningAndAll(t *testing.T) {
	d := e2etest.StartDaemon(t)
	bin := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	e2etest.WarmUp(t, d, bin)
	running := e2etest.StartFixture(t, bin, nil, "-hold", "-gcloop", "2")
	running.Expect("final")
	exited := e2etest.RunFixture(t, bin, nil, "-gcloop", "3")

	ps := psJSON(t, d)
	if _, ok := findPID(ps, running.PID); !ok {
		t.Errorf("ps does not list running pid %d", running.PID)
	}
	if p, ok := findPID(ps, exited.PID); ok {
		t.Errorf("ps lists exited pid %d (exited %v)", exited.PID, p.Exited)
	}
	all := psJSON(t, d, "-a")
	if _, ok := findPID(all, running.PID); !ok {
		t.Errorf("ps -a does not list running pid %d", running.PID)
	}
	if p, ok := findPID(all, exited.PID); !ok || p.Exited == nil || p.GCCycles != exited.Final.NumGC {
		t.Errorf("ps -a: exited pid %d = %+v (listed %v), want exited with %d cycles", exited.PID, p, ok, exited.Final.NumGC)
	}
	out, err := exec.Command(cliBinary(t), "--socket", d.Socket, "ps", "--all", "--sort", "-gc").Output()
	if err != nil {
		t.Fatalf("gopulse ps --all --sort -gc: %v", err)
	}
	t.Logf("gopulse ps --all --sort -gc:\n%s", out)
	running.Finish()
}

// `gc PID -f` streams every cycle of the fixture exactly once, in order,
// as they complete, and ends when the process exits; -o json streams JSON
// lines. Two followers at once (table and JSON) see the same cycles.
func TestGCFollow(t *testing.T) {
	d := e2etest.StartDaemon(t)
	bin := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	e2etest.WarmUp(t, d, bin)
	f := e2etest.StartFixture(t, bin, nil, append([]string{"-wait", "-hold"}, workload...)...)
	e2etest.WaitFor(t, 10*time.Second, "the fixture to be listed", func() bool {
		_, ok := d.Process(t, f.PID)
		return ok
	})
	follow := func(args ...string) (*exec.Cmd, *syncBuffer) {
		// --last 100: the history kept when the follow subscribes (the
		// request drains the readers first, up to 500 ms, while the
		// fixture may already run), then the stream; never a cycle twice.
		cmd := exec.Command(cliBinary(t), append([]string{"--socket", d.Socket, "gc", strconv.Itoa(f.PID), "-f", "--last", "100"}, args...)...)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		return cmd, out
	}
	jsonCmd, jsonOut := follow("-o", "json")
	tableCmd, tableOut := follow()
	// The follow takes the history kept with its subscription, so it
	// matters not whether the cycles start before it is connected.
	f.Proceed()
	f.Expect("final")
	// Before the exit: every cycle was streamed as it completed.
	defer func() {
		if t.Failed() {
			t.Logf("%d cycles; streamed as JSON:\n%s\nas a table:\n%s", f.Final.NumGC, jsonOut, tableOut)
		}
	}()
	e2etest.WaitFor(t, 5*time.Second, "the cycles to be streamed", func() bool {
		return uint64(strings.Count(jsonOut.String(), "\n")) >= f.Final.NumGC
	})
	f.Finish()
	for _, cmd := range []*exec.Cmd{jsonCmd, tableCmd} {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%v: %v", cmd.Args, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v did not end after the process exited", cmd.Args)
		}
	}

	var got []uint64
	for _, line := range strings.Split(strings.TrimSpace(jsonOut.String()), "\n") {
		var c api.GCCycle
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("json line %q: %v", line, err)
		}
		got = append(got, c.Seq)
	}
	if uint64(len(got)) != f.Final.NumGC {
		t.Errorf("streamed %d cycles, the runtime ran %d", len(got), f.Final.NumGC)
	}
	for i, s := range got {
		if s != uint64(i+1) {
			t.Fatalf("cycle %d has seq %d: want 1..%d once each, in order: %v", i, s, f.Final.NumGC, got)
		}
	}
	lines := strings.Split(strings.TrimSpace(tableOut.String()), "\n")
	if uint64(len(lines)) != f.Final.NumGC {
		t.Errorf("table follow printed %d lines, want %d:\n%s", len(lines), f.Final.NumGC, tableOut)
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, fmt.Sprintf("gc %d @", i+1)) {
			t.Errorf("line %d = %q, want gc %d", i, l, i+1)
			break
		}
	}
	t.Logf("%d cycles followed; first lines:\n%s", len(got), strings.Join(lines[:min(3, len(lines))], "\n"))
}

// syncBuffer is a bytes.Buffer written by a command while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tmux runs commands on a private tmux server (its own socket), so tests
// never touch anyone's sessions.
type tmux struct {
	t    *testing.T
	name string
}

func newTmux(t *testing.T) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		testenv.Unavailable(t, "tmux not installed (apt-get install tmux): %v", err)
	}
	tm := &tmux{t: t, name: fmt.Sprintf("gopulse-test-%d", os.Getpid())}
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", tm.name, "kill-server").Run() })
	return tm
}

func (tm *tmux) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", tm.name}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (tm *tmux) capture() string { return tm.run("capture-pane", "-p", "-t", "top") }

// waitScreen waits until ok holds for the pane's text.
func (tm *tmux) waitScreen(what string, ok func(string) bool) string {
	tm.t.Helper()
	var screen string
	deadline := time.Now().Add(15 * time.Second)
	for {
		screen = tm.capture()
		if ok(screen) {
			return screen
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("timed out waiting for %s; screen:\n%s", what, screen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rowIndex is the line of the screen whose first field is pid (-1: none).
func rowIndex(screen string, pid int) int {
	for i, l := range strings.Split(screen, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == strconv.Itoa(pid) {
			return i
		}
	}
	return -1
}

// `top` in a real terminal (tmux): rows appear, refresh, sort by keys,
// and q quits cleanly; `top -b` and `top -o json` print parsable
// snapshots.
func TestTop(t *testing.T) {
	d := e2etest.StartDaemon(t)
	bin := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	e2etest.WarmUp(t, d, bin)
	a := e2etest.StartFixture(t, bin, nil, append([]string{"-hold"}, workload...)...)
	a.Expect("final")
	b := e2etest.StartFixture(t, bin, nil, "-hold", "-gcloop", "2")
	b.Expect("final")
	lo, hi := min(a.PID, b.PID), max(a.PID, b.PID)

	t.Run("batch", func(t *testing.T) {
		out, err := exec.Command(cliBinary(t), "--socket", d.Socket, "top", "-b", "-n", "2", "-d", "0.2", "--sort", "pid").Output()
		if err != nil {
			t.Fatalf("top -b: %v", err)
		}
		snaps := strings.Split(strings.TrimSpace(string(out)), "\n\n")
		if len(snaps) != 2 {
			t.Fatalf("want 2 snapshots, got %d:\n%s", len(snaps), out)
		}
		for _, snap := range snaps {
			lines := strings.Split(snap, "\n")
			if !strings.HasPrefix(lines[0], "gopulse top - ") || !strings.HasPrefix(lines[1], "PID ") {
				t.Fatalf("snapshot without title and header:\n%s", snap)
			}
			hdr := strings.Fields(lines[1])
			col := map[string]int{}
			for i, h := range hdr {
				col[h] = i
			}
			ra, rb := rowIndex(snap, a.PID), rowIndex(snap, b.PID)
			if ra < 0 || rb < 0 {
				t.Fatalf("rows of %d and %d missing:\n%s", a.PID, b.PID, snap)
			}
			if (a.PID < b.PID) != (ra < rb) {
				t.Errorf("not sorted by pid:\n%s", snap)
			}
			row := strings.Fields(lines[ra])
			if len(row) != len(hdr) {
				t.Fatalf("row %q has %d fields, header %d", lines[ra], len(row), len(hdr))
			}
			// The fixture ran its cycles within the window: they count.
			if row[col["PAUSE-MAX"]] == "-" || row[col["GC-CPU"]] == "0%" || row[col["STATE"]] != "running" {
				t.Errorf("pid %d row %q: want pauses, a GC CPU share and running", a.PID, lines[ra])
			}
		}
		t.Logf("top -b:\n%s", snaps[1])

		out, err = exec.Command(cliBinary(t), "--socket", d.Socket, "top", "-o", "json", "-n", "1").Output()
		if err != nil {
			t.Fatalf("top -o json: %v", err)
		}
		var rows []map[string]any
		if err := json.Unmarshal(out, &rows); err != nil {
			t.Fatalf("top -o json: %v\n%s", err, out)
		}
		for _, r := range rows {
			if int(r["pid"].(float64)) == a.PID && !(r["gc_cpu_share"].(float64) > 0) {
				t.Errorf("top -o json row of %d: no gc_cpu_share: %v", a.PID, r)
			}
		}
	})

	t.Run("tmux", func(t *testing.T) {
		tm := newTmux(t)
		exitFile := filepath.Join(t.TempDir(), "exit")
		tm.run("new-session", "-d", "-s", "top", "-x", "200", "-y", "50",
			fmt.Sprintf("%s --socket %s top -d 0.3; echo exit=$? > %s; sleep 30", cliBinary(t), d.Socket, exitFile))
		first := tm.waitScreen("both fixtures' rows", func(s string) bool {
			return rowIndex(s, a.PID) >= 0 && rowIndex(s, b.PID) >= 0
		})
		title := strings.Split(first, "\n")[0]
		tm.waitScreen("a refresh (the title's clock moves)", func(s string) bool {
			return strings.Split(s, "\n")[0] != title
		})
		// From the default (-gc-cpu), three columns left is PID, still
		// descending; r makes it ascending.
		tm.run("send-keys", "-t", "top", "<", "<", "<")
		s := tm.waitScreen("sort by -pid", func(s string) bool { return strings.Contains(s, "sort -pid") })
		if rowIndex(s, hi) > rowIndex(s, lo) {
			t.Errorf("sort -pid: %d below %d:\n%s", hi, lo, s)
		}
		tm.run("send-keys", "-t", "top", "r")
		s = tm.waitScreen("sort by pid", func(s string) bool {
			return strings.Contains(s, "sort pid ") || strings.HasSuffix(strings.Split(s, "\n")[0], "sort pid")
		})
		if rowIndex(s, lo) > rowIndex(s, hi) {
			t.Errorf("sort pid: %d below %d:\n%s", lo, hi, s)
		}
		// Filter to one process, open its detail, go back.
		tm.run("send-keys", "-t", "top", "/", strconv.Itoa(a.PID), "Enter")
		s = tm.waitScreen("the filter", func(s string) bool { return rowIndex(s, b.PID) < 0 && rowIndex(s, a.PID) >= 0 })
		tm.run("send-keys", "-t", "top", "Enter")
		s = tm.waitScreen("the detail view", func(s string) bool { return strings.Contains(s, "pauses  max") && strings.Contains(s, "GC-CPU ") })
		t.Logf("detail:\n%s", s)
		tm.run("send-keys", "-t", "top", "Escape")
		// Resize: the view redraws to the new size.
		tm.run("resize-window", "-t", "top", "-x", "90", "-y", "20")
		tm.waitScreen("a redraw after resize", func(s string) bool { return rowIndex(s, a.PID) >= 0 })
		tm.run("send-keys", "-t", "top", "q")
		e2etest.WaitFor(t, 5*time.Second, "top to quit", func() bool {
			b, err := os.ReadFile(exitFile)
			return err == nil && strings.TrimSpace(string(b)) != ""
		})
		if b, _ := os.ReadFile(exitFile); strings.TrimSpace(string(b)) != "exit=0" {
			t.Errorf("top ended with %q, want exit=0", b)
		}
	})
	a.Finish()
	b.Finish()
}

// doctorJSON runs `gopulse doctor [args] -o json`.
func doctorJSON(t *testing.T, d *e2etest.Daemon, args ...string) []map[string]any {
	t.Helper()
	out, err := exec.Command(cliBinary(t), append([]string{"--socket", d.Socket, "doctor", "-o", "json"}, args...)...).Output()
	if err != nil {
		t.Fatalf("gopulse doctor %v: %v", args, err)
	}
	var fs []map[string]any
	if err := json.Unmarshal(out, &fs); err != nil {
		t.Fatalf("doctor json: %v\n%s", err, out)
	}
	return fs
}

// `doctor` on fixtures built to show each finding, and on a healthy one
// (no finding). The goal-at-limit and GOGC-advice rules need the runtime
// gauges; they are unit-tested in tools/gopulse with api.Runtime values.
func TestDoctor(t *testing.T) {
	d := e2etest.StartDaemon(t, "--probes", "all")
	shape := fixturebuild.Shapes()[0]
	sick := fixturebuild.Build(t, "sick", shape)
	e2etest.WarmUp(t, d, e2etest.Gcload(t, shape))
	tests := []struct {
		name string
		bin  string
		env  []string
		args []string
		// done is the fixture's line once the trouble is over: doctor
		// asks then, with no sleep.
		done     string
		wantRule string // "" = healthy: no finding for the process
	}{
		{"healthy", sick, nil, []string{"-mode", "healthy"}, "done", ""},
		{"gc cpu", sick, nil, []string{"-mode", "gccpu"}, "done", "gc-cpu"},
		{"long stw", sick, []string{"GODEBUG=asyncpreemptoff=1"}, []string{"-mode", "stw"}, "done", "long-stw"},
		{"scavenger churn", sick, nil, []string{"-mode", "churn"}, "done", "scavenger-churn"},
		{"sched latency", sick, nil, []string{"-mode", "sched", "-duration", "3s"}, "done", "sched-latency"},
		{"heap lock", "heaplock", nil, []string{"-workers", "16", "-iters", "3000"}, "final", "heap-lock"},
		// Needs the runtime gauges (api.Runtime): checked once the daemon
		// reads them.
		{"goal at limit", sick, nil, []string{"-mode", "limit"}, "done", "goal-at-limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := tt.bin
			if bin == "heaplock" {
				bin = fixturebuild.Build(t, "heaplock", shape)
			}
			// A first process makes the binary known, so the one diagnosed
			// is traced from its first instruction.
			if tt.bin == sick {
				e2etest.RunFixtureUntil(t, bin, tt.env, "done", "-mode", "healthy")
			}
			f := e2etest.StartFixture(t, bin, tt.env, append([]string{"-hold"}, tt.args...)...)
			f.Expect(tt.done)
			fs := doctorJSON(t, d, strconv.Itoa(f.PID))
			var mine []string
			for _, fd := range fs {
				if pid, ok := fd["pid"].(float64); !ok || int(pid) == f.PID { // no pid: host-wide
					mine = append(mine, fmt.Sprintf("%s %s: %s (try: %s)", fd["severity"], fd["rule"], fd["summary"], fd["knob"]))
				}
			}
			t.Logf("doctor %d:\n%s", f.PID, strings.Join(mine, "\n"))
			found := false
			for _, fd := range fs {
				pid, _ := fd["pid"].(float64)
				if tt.wantRule == "" && int(pid) == f.PID {
					t.Errorf("healthy fixture: finding %v", fd)
				}
				if fd["rule"] == tt.wantRule && int(pid) == f.PID {
					found = true
				}
			}
			if tt.wantRule == "goal-at-limit" && !found {
				if p, _ := d.Process(t, f.PID); p.Runtime == nil {
					t.Logf("this daemon does not read the runtime gauges yet (runtime_error %q): goal-at-limit not checked on a real process", p.RuntimeError)
					found = true
				}
			}
			if tt.wantRule != "" && !found {
				p, _ := d.Process(t, f.PID)
				b, _ := json.Marshal(p)
				t.Errorf("no %s finding for pid %d: %s", tt.wantRule, f.PID, b)
			}
			_ = f.Cmd.Process.Kill()
		})
	}
	// The whole host: the text output, worst first.
	out, err := exec.Command(cliBinary(t), "--socket", d.Socket, "doctor").Output()
	if err != nil {
		t.Fatalf("gopulse doctor: %v", err)
	}
	t.Logf("gopulse doctor:\n%s", out)
}
