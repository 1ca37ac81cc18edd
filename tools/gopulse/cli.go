package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/sanitize"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // runtime error: daemon unreachable, unknown pid...
	exitUsage = 2 // bad command line
)

const defaultLast = 20

const globalUsage = `Usage: gopulse [--socket PATH] <command> [flags]

gopulse queries gopulsed, the daemon that traces the Go runtime (GC cycles,
pauses...) of every Go process on this host.

Commands:
  ps            list the running traced Go processes (-a: the exited ones too)
  gc PID        show the last GC cycles of a process, gctrace style (-f: follow)
  lock PID      show the heap lock contention of a process (mheaplock family)
  mem PID       show the memory a process returned to the OS (madvise family)
  sched PID     show how a process's threads are scheduled (sched family)
  top           live view of the traced processes (-b: plain snapshots)
  doctor [PID]  diagnose: findings with their numbers and the knob to try
  status        show the daemon's health: probes, binaries, lost events
  help [CMD]    show this help, or a command's

Global flags (also accepted after the command):
  --socket PATH   gopulsed's socket (default $GOPULSE_SOCKET, else ` + api.DefaultSocketPath + `)

Every command takes -o table|json (default table). JSON output is the API's
types, for scripts.

Exit status: 0 ok, 1 error, 2 bad usage.
`

// options are the flags of a command.
type options struct {
	socket string
	output string
	last   int
	all    bool          // ps: exited processes too
	sort   string        // ps: --sort COLUMN
	follow bool          // gc: -f
	batch  bool          // top: -b
	iters  int           // top: -n
	delay  float64       // top: -d, seconds
	window time.Duration // top, doctor: the span of the live figures
}

type command struct {
	name    string
	args    string // positional arguments, for the usage line
	summary string
	nargs   int
	extra   func(fs *flag.FlagSet, o *options) // command-specific flags
	exec    func(ctx context.Context, c *api.Client, o *options, args []string, stdout io.Writer) error
}

var commands = []*command{
	{
		name:    "ps",
		summary: "List the traced Go processes that run: GC cycles, forced cycles, pauses, rate, heap, goal, GOGC, memory limit, goroutines, heap lock, memory released, scheduling, state. -a adds the exited ones.",
		extra: func(fs *flag.FlagSet, o *options) {
			fs.BoolVar(&o.all, "a", false, "list the exited processes too (kept for the daemon's --forget-after)")
			fs.BoolVar(&o.all, "all", false, "same as -a")
			fs.StringVar(&o.sort, "sort", "pid", "sort by `COLUMN` (a header, any case: gc, cycles/s, goal...); -COLUMN for descending")
		},
		exec: execPS,
	},
	{
		name:    "gc",
		args:    "PID",
		summary: "Show the last GC cycles of process PID, oldest first, one gctrace-like line each. With -f, then follow: one line per cycle as it completes (streamed by the daemon), until the process exits or the command is interrupted; -o json streams one JSON object a line.",
		nargs:   1,
		extra: func(fs *flag.FlagSet, o *options) {
			fs.IntVar(&o.last, "last", defaultLast, "show the last `N` cycles (0: all the daemon kept)")
			fs.BoolVar(&o.follow, "f", false, "follow: print each cycle as it completes")
			fs.BoolVar(&o.follow, "follow", false, "same as -f")
		},
		exec: execGC,
	},
	{
		name:    "top",
		summary: "Live full-screen view of the traced Go processes: GC/s, GC CPU share, pause p99 and max, heap, goal and limit, goroutines, goroutine scheduling p99, heap-lock wait, memory released; keys: q quit, arrows/j k select, enter detail (sparklines of pauses and heap), left/right or < > sort column, r reverse, / filter, a exited processes. -b prints plain snapshots instead, as top -b does.",
		extra: func(fs *flag.FlagSet, o *options) {
			fs.BoolVar(&o.batch, "b", false, "batch mode: print plain snapshots (no terminal needed)")
			fs.BoolVar(&o.batch, "batch", false, "same as -b")
			fs.IntVar(&o.iters, "n", 0, "batch mode: stop after `N` snapshots (0: until interrupted)")
			fs.Float64Var(&o.delay, "d", 2, "`SECONDS` between refreshes")
			fs.StringVar(&o.sort, "sort", "-gc-cpu", "sort by `COLUMN` (a header, any case); -COLUMN for descending")
			fs.BoolVar(&o.all, "a", false, "show the exited processes too")
			fs.DurationVar(&o.window, "window", defaultWindow, "span of the pause and GC CPU figures")
		},
		exec: execTop,
	},
	{
		name:    "doctor",
		args:    "[PID]",
		summary: "Diagnose from the figures: each finding with its numbers, severity and the runtime knob to try (GOGC, GOMEMLIMIT, GOMAXPROCS...), worst first; without PID, every running process and the daemon's own trust (lost events, families not running). README lists the rules and thresholds.",
		nargs:   -1,
		extra: func(fs *flag.FlagSet, o *options) {
			fs.DurationVar(&o.window, "window", defaultWindow, "span of the pause and GC CPU figures")
		},
		exec: execDoctor,
	},
	{
		name:    "lock",
		args:    "PID",
		summary: "Show how often process PID's threads slept for the heap lock (runtime.mheap_.lock) and how long, beside the other runtime locks.",
		nargs:   1,
		exec:    execSection(writeLock),
	},
	{
		name:    "mem",
		args:    "PID",
		summary: "Show the memory process PID gave back to the OS (madvise, by advice and by who asked in the runtime) and its RSS.",
		nargs:   1,
		exec:    execSection(writeMem),
	},
	{
		name:    "sched",
		args:    "PID",
		summary: "Show how process PID's OS threads are scheduled: run-queue latency, on/off-CPU time, switches, threads.",
		nargs:   1,
		exec:    execSection(writeSched),
	},
	{
		name:    "status",
		summary: "Show gopulsed's health: version, uptime, probe families, binaries, lost events, attach latency.",
		exec:    execStatus,
	},
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// usageError is a bad command line: exit status 2.
type usageError struct {
	cmd string // the command whose usage applies, "" for global
	msg string
}

func (e *usageError) Error() string { return e.msg }

// run is the whole CLI; main only wires it to the process.
func run(args []string, stdout, stderr io.Writer) int {
	socket := os.Getenv(api.SocketEnv)
	if socket == "" {
		socket = api.DefaultSocketPath
	}

	gfs := flag.NewFlagSet("gopulse", flag.ContinueOnError)
	gfs.SetOutput(io.Discard)
	gfs.StringVar(&socket, "socket", socket, "")
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, globalUsage)
			return exitOK
		}
		return reportUsage(stderr, &usageError{msg: err.Error()})
	}
	rest := gfs.Args()
	if len(rest) == 0 {
		return reportUsage(stderr, &usageError{msg: "missing command"})
	}
	name, rest := rest[0], rest[1:]

	if name == "help" {
		switch {
		case len(rest) == 0:
			fmt.Fprint(stdout, globalUsage)
			return exitOK
		case len(rest) == 1 && lookup(rest[0]) != nil:
			printCommandUsage(stdout, lookup(rest[0]))
			return exitOK
		case len(rest) == 1:
			return reportUsage(stderr, &usageError{msg: fmt.Sprintf("help: unknown command %q", rest[0])})
		default:
			return reportUsage(stderr, &usageError{msg: "help takes at most one command"})
		}
	}

	cmd := lookup(name)
	if cmd == nil {
		return reportUsage(stderr, &usageError{msg: fmt.Sprintf("unknown command %q", name)})
	}
	o := &options{socket: socket}
	fs := newFlagSet(cmd, o)
	pos, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		printCommandUsage(stdout, cmd)
		return exitOK
	}
	if err != nil && strings.HasPrefix(err.Error(), "flag provided but not defined: -") {
		if _, nerr := strconv.Atoi(strings.TrimPrefix(err.Error(), "flag provided but not defined: ")); nerr == nil {
			err = fmt.Errorf("%v (a PID is a positive integer)", err)
		}
	}
	if err == nil {
		err = validate(cmd, o, pos)
	}
	if err != nil {
		return reportUsage(stderr, &usageError{cmd: cmd.name, msg: err.Error()})
	}

	c := api.NewClient(o.socket)
	// Interrupting ends a follow or a live view cleanly (exit 0).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Names come from whatever any local user ran: even if the daemon
	// sent one raw, no control character reaches the terminal.
	out, errOut := sanitize.NewWriter(stdout, o.output == "json"), sanitize.NewWriter(stderr, false)
	defer out.Flush()
	if err := cmd.exec(ctx, c, o, pos, out); err != nil {
		fmt.Fprintf(errOut, "gopulse: %v\n", err)
		return exitError
	}
	return exitOK
}

func newFlagSet(cmd *command, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("gopulse "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.output, "o", "table", "output `format`: table or json")
	fs.StringVar(&o.output, "output", "table", "output `format`, same as -o")
	fs.StringVar(&o.socket, "socket", o.socket, "gopulsed's socket `path`")
	if cmd.extra != nil {
		cmd.extra(fs, o)
	}
	return fs
}

// parseInterspersed parses flags wherever they are among the positional
// arguments ("gc 123 --last 5" as well as "gc --last 5 123"); after "--"
// everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func validate(cmd *command, o *options, pos []string) error {
	switch o.output {
	case "table", "json":
	default:
		return fmt.Errorf("bad output format %q: expected table or json", o.output)
	}
	if o.socket == "" {
		return errors.New("empty --socket path")
	}
	if o.sort != "" && cmd.name == "ps" {
		if _, err := parsePSSort(o.sort); err != nil {
			return err
		}
	}
	if cmd.name == "top" {
		if _, err := parseTopSort(o.sort); err != nil {
			return err
		}
		if !(o.delay >= 0.1) || o.delay > 3600 {
			return fmt.Errorf("bad -d %v: expected seconds between refreshes, 0.1 to 3600", o.delay)
		}
		if o.iters < 0 {
			return fmt.Errorf("bad -n %d: expected a number of snapshots (0: until interrupted)", o.iters)
		}
		if o.window < time.Second || o.window > time.Hour {
			return fmt.Errorf("bad --window %v: expected 1s to 1h", o.window)
		}
	}
	if o.last < 0 {
		return fmt.Errorf("bad --last %d: expected a non-negative number of cycles (0: all kept)", o.last)
	}
	if cmd.nargs < 0 { // an optional PID
		if len(pos) > 1 {
			return fmt.Errorf("%s: too many arguments: %q", cmd.name, strings.Join(pos[1:], " "))
		}
		if len(pos) == 1 {
			if _, err := parsePID(pos[0]); err != nil {
				return err
			}
		}
		if o.window < time.Second || o.window > time.Hour {
			return fmt.Errorf("bad --window %v: expected 1s to 1h", o.window)
		}
		return nil
	}
	if len(pos) != cmd.nargs {
		if cmd.nargs == 0 {
			return fmt.Errorf("%s takes no arguments, got %q", cmd.name, strings.Join(pos, " "))
		}
		if len(pos) < cmd.nargs {
			return fmt.Errorf("%s: missing %s", cmd.name, cmd.args)
		}
		return fmt.Errorf("%s: too many arguments: %q", cmd.name, strings.Join(pos[cmd.nargs:], " "))
	}
	if cmd.nargs == 1 && cmd.args == "PID" {
		if _, err := parsePID(pos[0]); err != nil {
			return err
		}
	}
	return nil
}

func reportUsage(stderr io.Writer, e *usageError) int {
	fmt.Fprintf(stderr, "gopulse: %s\n", e.msg)
	if e.cmd != "" {
		fmt.Fprintf(stderr, "Run 'gopulse %s --help' for usage.\n", e.cmd)
	} else {
		fmt.Fprintln(stderr, "Run 'gopulse help' for usage.")
	}
	return exitUsage
}

func printCommandUsage(w io.Writer, cmd *command) {
	line := "gopulse [--socket PATH] " + cmd.name + " [flags]"
	if cmd.args != "" {
		line += " " + cmd.args
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags:\n", line, cmd.summary)
	fs := newFlagSet(cmd, &options{socket: api.DefaultSocketPath})
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func parsePID(s string) (int, error) {
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad PID %q: expected a process ID, a positive integer", s)
	}
	return pid, nil
}

func execPS(ctx context.Context, c *api.Client, o *options, _ []string, stdout io.Writer) error {
	ps, err := c.Processes(ctx)
	if err != nil {
		return err
	}
	ps = selectPS(ps, o.all)
	by, err := parsePSSort(o.sort)
	if err != nil {
		return err
	}
	sortPS(ps, by)
	if o.output == "json" {
		if ps == nil {
			ps = []api.Process{}
		}
		return writeJSON(stdout, ps)
	}
	return writePS(stdout, ps)
}

func execGC(ctx context.Context, c *api.Client, o *options, args []string, stdout io.Writer) error {
	pid, err := parsePID(args[0])
	if err != nil {
		return err
	}
	if o.follow {
		return followGC(ctx, c, o, pid, stdout)
	}
	h, err := c.GCHistory(ctx, pid, o.last)
	if err != nil {
		return err
	}
	if o.output == "json" {
		if h.Cycles == nil {
			h.Cycles = []api.GCCycle{}
		}
		return writeJSON(stdout, h)
	}
	return writeGC(stdout, h, o.last)
}

// execSection shows one section of a process; with -o json, the whole
// api.Process (the section is its mheap_lock, madvise or sched object).
func execSection(write func(io.Writer, api.Process) error) func(context.Context, *api.Client, *options, []string, io.Writer) error {
	return func(ctx context.Context, c *api.Client, o *options, args []string, stdout io.Writer) error {
		pid, err := parsePID(args[0])
		if err != nil {
			return err
		}
		h, err := c.GCHistory(ctx, pid, 1)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return writeJSON(stdout, h.Process)
		}
		return write(stdout, h.Process)
	}
}

func execStatus(ctx context.Context, c *api.Client, o *options, _ []string, stdout io.Writer) error {
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeJSON(stdout, st)
	}
	return writeStatus(stdout, st)
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// followGC prints pid's cycles as the daemon streams them; a gap in the
// runtime's cycle numbers (events lost in the kernel ring, or dropped for
// a reader too slow) is said in the table output.
func followGC(ctx context.Context, c *api.Client, o *options, pid int, stdout io.Writer) error {
	last := o.last
	if last == 0 {
		last = api.MaxLast
	}
	var prev uint64
	err := c.FollowGC(ctx, pid, last, func(cy api.GCCycle) error {
		if o.output == "json" {
			b, err := json.Marshal(cy)
			if err != nil {
				return err
			}
			_, err = stdout.Write(append(b, '\n'))
			return err
		}
		if prev != 0 && cy.Seq > prev+1 {
			fmt.Fprintf(stdout, "(%d cycles not seen)\n", cy.Seq-prev-1)
		}
		prev = cy.Seq
		_, err := io.WriteString(stdout, gctraceLine(cy)+"\n")
		return err
	})
	if errors.Is(err, context.Canceled) {
		return nil // interrupted: the normal end of a follow
	}
	if ce := (*api.ConnError)(nil); errors.As(err, &ce) && ctx.Err() != nil {
		return nil
	}
	return err
}
