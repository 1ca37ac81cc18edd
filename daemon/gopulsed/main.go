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
	"syscall"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sync/errgroup"

	"github.com/gopulse/gopulse/daemon/aggregate"
	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/daemon/discovery"
	"github.com/gopulse/gopulse/daemon/tracer"
	"github.com/gopulse/gopulse/exporters"
)

type options struct {
	socket      string
	probes      string
	history     int
	maxPIDs     int
	maxBinaries int
	forgetAfter time.Duration
	procRoot    string
	logLevel    string
	logFormat   string
	export      exporters.Config
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("gopulsed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.socket, "socket", "/run/gopulse/gopulse.sock", "Unix socket of the query API (mode 0660)")
	fs.StringVar(&o.probes, "probes", "default", "probe families: default, all, or a comma list (gc)")
	fs.IntVar(&o.history, "history", 100, "GC cycles kept per process")
	fs.IntVar(&o.maxPIDs, "max-pids", 4096, "Go processes tracked at once; more are counted as dropped")
	fs.IntVar(&o.maxBinaries, "max-binaries", 1024, "Go executables (inodes) probed at once")
	fs.DurationVar(&o.forgetAfter, "forget-after", 5*time.Minute, "how long an exited process stays listed")
	fs.StringVar(&o.procRoot, "proc", "/proc", "procfs mount point")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	// Export settings: defaults, then the standard OTEL_* environment,
	// then flags given explicitly.
	def := exporters.Defaults()
	var otlpEndpoint, otlpProtocol, promListen string
	var otlpInsecure, perService bool
	var interval time.Duration
	var maxExport int
	fs.StringVar(&otlpEndpoint, "otlp-endpoint", "", "OTLP collector URL, e.g. http://127.0.0.1:4317 (empty: OTEL_EXPORTER_OTLP_ENDPOINT, else no push)")
	fs.StringVar(&otlpProtocol, "otlp-protocol", def.OTLPProtocol, "grpc or http/protobuf (else OTEL_EXPORTER_OTLP_PROTOCOL)")
	fs.BoolVar(&otlpInsecure, "otlp-insecure", false, "push without TLS")
	fs.DurationVar(&interval, "export-interval", def.Interval, "OTLP push interval (else OTEL_METRIC_EXPORT_INTERVAL)")
	fs.StringVar(&promListen, "prometheus-listen", def.PrometheusListen, "address of the Prometheus /metrics endpoint (empty disables)")
	fs.BoolVar(&perService, "export-per-service", false, "export series per service instead of per PID")
	fs.IntVar(&maxExport, "export-max-processes", def.MaxProcesses, "processes exported as separate series")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	exp, err := exporters.FromEnv(def, os.Getenv)
	if err != nil {
		return o, err
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "otlp-endpoint":
			exp.OTLPEndpoint = otlpEndpoint
		case "otlp-protocol":
			exp.OTLPProtocol = otlpProtocol
		case "otlp-insecure":
			exp.OTLPInsecure = otlpInsecure
		case "export-interval":
			exp.Interval = interval
		case "prometheus-listen":
			exp.PrometheusListen = promListen
		case "export-per-service":
			exp.PerService = perService
		case "export-max-processes":
			exp.MaxProcesses = maxExport
		}
	})
	exp.HostName, _ = os.Hostname()
	o.export = exp
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.history < 1 || o.history > 100000 {
		return o, fmt.Errorf("--history %d: want 1..100000", o.history)
	}
	if o.maxPIDs < 1 || o.maxBinaries < 1 {
		return o, errors.New("--max-pids and --max-binaries must be positive")
	}
	return o, nil
}

func newLogger(o options, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", o.logLevel, err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
}

type systemClock struct{}

func (systemClock) Now() time.Time           { return time.Now() }
func (systemClock) Monotonic() time.Duration { return discovery.Monotonic() }

func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(o, stderr)
	if err != nil {
		return err
	}
	families, err := tracer.ParseFamilies(o.probes)
	if err != nil {
		return fmt.Errorf("--probes: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raise memlock limit: %w", err)
	}
	var exp *exporters.Exporter
	agg := aggregate.New(aggregate.Config{
		History: o.history, MaxProcs: o.maxPIDs, ForgetAfter: o.forgetAfter,
		OnCycle: func(p api.Process, c api.GCCycle) { exp.ObserveCycle(p, c) },
	}, systemClock{})
	tr, err := tracer.New(log, tracer.Config{ProcRoot: o.procRoot, Families: families, MaxBinaries: o.maxBinaries}, agg)
	if err != nil {
		return err
	}
	defer tr.Close()
	if exp, err = exporters.New(o.export, tr, log); err != nil {
		return err
	}

	ln, err := api.Listen(o.socket, 0o660)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return tr.Run(ctx, func() { log.Info("ready", "socket", o.socket, "probes", families) })
	})
	g.Go(func() error { return api.NewServer(tr, log).Serve(ctx, ln) })
	g.Go(func() error { return exp.Run(ctx) })
	err = g.Wait()
	log.Info("stopped")
	return err
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gopulsed:", err)
		os.Exit(1)
	}
}
