// Command gopulsed traces the Go runtime of every Go process on the host
// and serves what it sees on a Unix socket. main only wires parts together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/gopulse/gopulse/daemon/aggregate"
	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/daemon/config"
	"github.com/gopulse/gopulse/daemon/service"
	"github.com/gopulse/gopulse/daemon/tracer"
	"github.com/gopulse/gopulse/exporters"
	"github.com/gopulse/gopulse/probes/discovery"
)

type systemClock struct{}

func (systemClock) Now() time.Time           { return time.Now() }
func (systemClock) Monotonic() time.Duration { return discovery.Monotonic() }

// statusEvery is how often the status line systemctl shows is refreshed.
const statusEvery = 10 * time.Second

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// Take SIGHUP before anything else: its default action would end us.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	fset := flag.NewFlagSet("gopulsed", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fl, err := config.Parse(args, fset)
	if err != nil {
		return err
	}
	cfg, err := config.Load(fl, os.Getenv)
	if err != nil {
		return err
	}
	families, err := cfg.Families()
	if err != nil {
		return fmt.Errorf("probes: %w", err)
	}
	if fl.CheckOnly {
		src := fl.ConfigPath
		if _, err := os.Stat(src); err != nil {
			src += " (absent: defaults)"
		}
		fmt.Fprintf(stdout, "configuration OK: %s\n", src)
		for _, l := range cfg.Describe() {
			fmt.Fprintf(stdout, "  %s\n", l)
		}
		return nil
	}
	if fl.CheckKernel {
		return checkKernel(stdout, families)
	}
	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("log level %q: %w", cfg.LogLevel, err)
	}
	log, err := service.NewLogger(cfg.LogFormat, level, stderr)
	if err != nil {
		return err
	}
	notify := service.NewNotifier(log)
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raise memlock limit: %w", err)
	}
	var exp *exporters.Exporter
	agg := aggregate.New(aggregate.Config{
		History: cfg.History, MaxProcs: cfg.MaxPIDs, ForgetAfter: cfg.ForgetAfter, ProcRoot: cfg.ProcRoot,
		OnCycle: func(p api.Process, c api.GCCycle) { exp.ObserveCycle(p, c) },
	}, systemClock{})
	tr, err := tracer.New(log, tracer.Config{ProcRoot: cfg.ProcRoot, Families: families, MaxBinaries: cfg.MaxBinaries, MaxPIDs: cfg.MaxPIDs,
		MaxBinariesPerUser: cfg.MaxBinariesPerUser, MaxPIDsPerUser: cfg.MaxPIDsPerUser}, agg)
	if err != nil {
		return err
	}
	defer tr.Close()
	if exp, err = exporters.New(cfg.Export, tr, log); err != nil {
		return err
	}

	ln, activated, err := service.Listener(log, cfg.Socket, api.SocketGroup)
	if err != nil {
		return err
	}
	srv := api.NewServer(tr, log)
	srv.RequirePeerGroup(api.SocketGroup, cfg.ProcRoot)

	ready := make(chan struct{})
	var readyOnce sync.Once
	wdInterval := service.WatchdogInterval()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return tr.Run(ctx, func() {
			readyOnce.Do(func() {
				log.Info("ready", "socket", ln.Addr().String(), "socket_activated", activated, "probes", families,
					"config", fl.ConfigPath, "watchdog", wdInterval*2)
				notify.Ready(statusLine(tr.Status()))
				close(ready)
			})
		})
	})
	g.Go(func() error { return srv.Serve(ctx, ln) })
	g.Go(func() error { return exp.Run(ctx) })
	g.Go(func() error {
		// Until the probes are attached (systemd's TimeoutStartSec= bounds
		// that), the event loop has not turned yet: feed the watchdog
		// unconditionally; from then on only while the tracer is healthy.
		started := false
		service.Watchdog(ctx, notify, log, wdInterval, func() error {
			if !started {
				select {
				case <-ready:
					started = true
				default:
					return nil
				}
			}
			return tr.Health()
		})
		return nil
	})
	g.Go(func() error {
		if !waitReady(ctx, ready) {
			return nil
		}
		service.Every(ctx, statusEvery, func() {
			if tr.Health() == nil {
				notify.Status(statusLine(tr.Status()))
			}
		})
		return nil
	})
	g.Go(func() error {
		if !waitReady(ctx, ready) {
			return nil
		}
		r := &reloader{fl: fl, running: cfg, log: log, level: level, tr: tr, exp: exp, notify: notify}
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				r.reload()
			}
		}
	})
	<-ctx.Done()
	notify.Stopping()
	log.Info("stopping")
	err = g.Wait()
	log.Info("stopped")
	return err
}

// statusLine is the STATUS= systemctl status shows.
func statusLine(st api.Status) string {
	var events, lost uint64
	for _, f := range st.Families {
		events += f.Events
		lost += f.LostEvents
	}
	line := fmt.Sprintf("tracing %s in %s; probes %s; %d events, %d lost",
		service.Plural(st.Processes, "Go process", "Go processes"),
		service.Plural(len(st.Binaries), "binary", "binaries"),
		strings.Join(st.Probes, ","), events, lost)
	if st.ProcessesDropped > 0 {
		line += fmt.Sprintf("; %d processes dropped (max_pids)", st.ProcessesDropped)
	}
	return line
}

// reloader applies a SIGHUP: it reads the configuration again (file,
// environment, the same flags) and applies what can change at run time.
type reloader struct {
	fl      *config.Flags
	running config.Config
	log     *slog.Logger
	level   *slog.LevelVar
	tr      *tracer.Tracer
	exp     *exporters.Exporter
	notify  *service.Notifier
}

func (r *reloader) reload() {
	r.notify.Reloading()
	defer func() { r.notify.Ready(statusLine(r.tr.Status())) }()
	r.log.Info("SIGHUP: reloading the configuration", "config", r.fl.ConfigPath)
	loaded, err := config.Load(r.fl, os.Getenv)
	if err != nil {
		r.log.Error("reload failed, the running configuration stays", "err", err)
		return
	}
	changes := config.Diff(r.running, loaded)
	if len(changes) == 0 {
		r.log.Info("reload: nothing changed")
		return
	}
	next := r.running
	exportChanged := false
	var restart []string
	for _, c := range changes {
		if !c.Live {
			restart = append(restart, c.Key)
			r.log.Warn("reload: this change needs a restart (systemctl restart gopulsed)", "key", c.Key, "running", c.Old, "configured", c.New)
			continue
		}
		switch {
		case c.Key == "probes":
			names, err := loaded.Families()
			if err != nil {
				r.log.Error("reload: probes", "err", err)
				continue
			}
			added, removed, err := r.tr.SetFamilies(names)
			if err != nil {
				r.log.Error("reload: changing the probe families failed", "key", c.Key, "added", added, "removed", removed, "err", err)
				continue
			}
			next.Probes = loaded.Probes
			r.log.Info("reload: probe families changed", "key", c.Key, "old", c.Old, "new", c.New, "added", added, "removed", removed)
		case c.Key == "log.level":
			if err := r.level.UnmarshalText([]byte(loaded.LogLevel)); err != nil {
				r.log.Error("reload: log level", "err", err)
				continue
			}
			next.LogLevel = loaded.LogLevel
			r.log.Info("reload: log level changed", "key", c.Key, "old", c.Old, "new", c.New)
		case strings.HasPrefix(c.Key, "export."):
			exportChanged = true
			r.log.Info("reload: export setting changed", "key", c.Key, "old", c.Old, "new", c.New)
		}
	}
	if exportChanged {
		if err := r.exp.Reconfigure(loaded.Export); err != nil {
			r.log.Error("reload: the exporters refused the new settings; the running ones stay", "err", err)
		} else {
			next.Export = loaded.Export
		}
	}
	r.running = next
	if len(restart) > 0 {
		r.log.Warn("reload: done; some changes wait for a restart", "needs_restart", restart)
	} else {
		r.log.Info("reload: done")
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gopulsed:", err)
		os.Exit(1)
	}
}

// waitReady waits for the probes to be attached; false if ctx ended first.
func waitReady(ctx context.Context, ready <-chan struct{}) bool {
	select {
	case <-ctx.Done():
		return false
	case <-ready:
		return true
	}
}

// checkKernel prints every family's fit on this kernel (feature probes, as
// at start) and fails when one of the configured families cannot run.
func checkKernel(stdout io.Writer, families []string) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raise memlock limit: %w", err)
	}
	var u unix.Utsname
	release := "unknown"
	if err := unix.Uname(&u); err == nil {
		release = unix.ByteSliceToString(u.Release[:])
	}
	fmt.Fprintf(stdout, "kernel %s\n", release)
	var cannot []string
	for _, k := range tracer.CheckKernel() {
		fmt.Fprintln(stdout, k)
		if !k.Runs() && slices.Contains(families, k.Family) {
			cannot = append(cannot, k.Family)
		}
	}
	if len(cannot) > 0 {
		return fmt.Errorf("configured probe families cannot run on this kernel: %s", strings.Join(cannot, ", "))
	}
	fmt.Fprintf(stdout, "verdict: the configured families (%s) can run\n", strings.Join(families, ", "))
	return nil
}
