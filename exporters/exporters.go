// Package exporters sends the daemon's per-process figures to fleet
// tooling: OpenTelemetry metrics pushed over OTLP, and a Prometheus
// endpoint for scraping. Nothing here runs in the BPF hot path: figures
// come from the aggregator.
//
// Both run on the OpenTelemetry Go SDK, each with its own MeterProvider
// (so that either can be reconfigured at run time without touching the
// other). Totals are asynchronous instruments read from the aggregator at
// collection time; the per-cycle histograms are kept here, per process,
// by ObserveCycle, and handed to the readers by a metric Producer, so
// that a process the aggregator forgot stops being exported at once (the
// SDK's synchronous instruments never forget an attribute set). Nothing
// is queued for a collector that is down: each push exports the current
// cumulative figures, and a failed one is dropped after its retries.
package exporters

import (
	"context"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/exporters/exportconfig"
)

// The export settings live in the leaf package exportconfig, so that the
// configuration (and genconfig, which prints it) does not link the
// OpenTelemetry SDK; these names keep the exporters' own API whole.
type Config = exportconfig.Config

// Protocols of OTLPProtocol.
const (
	ProtocolGRPC = exportconfig.ProtocolGRPC
	ProtocolHTTP = exportconfig.ProtocolHTTP
)

// DefaultPrometheusListen is exportconfig.DefaultPrometheusListen.
const DefaultPrometheusListen = exportconfig.DefaultPrometheusListen

// Defaults returns the configuration before environment and flags.
func Defaults() Config { return exportconfig.Defaults() }

// FromEnv overlays the standard OTEL_* environment (exportconfig.FromEnv).
func FromEnv(base Config, getenv func(string) string) (Config, error) {
	return exportconfig.FromEnv(base, getenv)
}

func otlpTarget(c Config) (*url.URL, bool, error) { return exportconfig.Target(c) }

// Source is what the exporters read, the daemon's aggregator and status.
type Source interface {
	Processes() []api.Process
	Status() api.Status
}

// Exporter owns the OpenTelemetry pipeline.
type Exporter struct {
	src Source
	log *slog.Logger
	st  *state

	otlpErrors atomic.Uint64
	promErrors atomic.Uint64

	mu      sync.Mutex // guards what follows
	cfg     Config
	version string
	running bool
	ctx     context.Context
	otlp    *otlpPipeline
	prom    *promPipeline
}

// New builds the pipeline; Run starts it.
func New(cfg Config, src Source, log *slog.Logger) (*Exporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Exporter{cfg: cfg, src: src, log: log, st: newState(cfg.PerService, cfg.MaxProcesses)}, nil
}

// ObserveCycle records one completed GC cycle of a process (histograms).
// It is called from the event path and must not block: it updates a few
// counters under a mutex that collections hold only briefly.
func (e *Exporter) ObserveCycle(p api.Process, c api.GCCycle) {
	if e == nil {
		return
	}
	e.st.observe(p, c)
}

// view is the current export view (shared by the readers of one
// collection).
func (e *Exporter) view(now time.Time) *view {
	// A process whose events came before the daemon learnt who it is (or
	// that exited before it could) has no identity to export yet.
	procs := e.src.Processes()
	known := procs[:0:0]
	for _, p := range procs {
		if p.Exe != "" {
			known = append(known, p)
		}
	}
	return e.st.reconcile(known, now)
}

// reconcileEvery drops the state of forgotten processes even when nothing
// collects (no endpoint configured).
const reconcileEvery = 15 * time.Second

// shutdownFlush bounds the last push when the daemon stops.
const shutdownFlush = 5 * time.Second

// Run serves and pushes until ctx is done, then pushes a last time and
// stops, within the push timeout. Exporter failures are logged and
// counted, never returned: tracing goes on without them.
func (e *Exporter) Run(ctx context.Context) error {
	e.mu.Lock()
	e.version = e.src.Status().Version
	e.running, e.ctx = true, ctx
	e.apply(Config{}, e.cfg)
	e.mu.Unlock()

	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			e.mu.Lock()
			e.running = false
			// One last push, but a daemon being stopped does not wait
			// long for a collector that is down.
			e.stopOTLP(min(e.cfg.Timeout, shutdownFlush))
			e.stopProm()
			e.mu.Unlock()
			return nil
		case now := <-t.C:
			e.view(now)
		}
	}
}

// Reconfigure applies new export settings at run time (SIGHUP) without
// losing cumulative figures: they live in the aggregator and in the
// exporter's state, not in the pipelines, which are rebuilt as needed.
func (e *Exporter) Reconfigure(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.cfg
	e.cfg = cfg
	e.st.setMode(cfg.PerService, cfg.MaxProcesses)
	if e.running {
		e.apply(old, cfg)
	}
	return nil
}

// apply starts, stops or restarts the pipelines whose settings changed;
// e.mu held.
func (e *Exporter) apply(old, cfg Config) {
	if !otlpSame(old, cfg) || e.otlp == nil && cfg.OTLPEndpoint != "" {
		e.stopOTLP(old.Timeout)
		if cfg.OTLPEndpoint != "" {
			p, err := e.startOTLP(cfg)
			if err != nil {
				e.otlpErrors.Add(1)
				e.log.Error("OTLP export not started", "endpoint", cfg.OTLPEndpoint, "err", err)
			} else {
				e.otlp = p
				e.log.Info("OTLP export", "endpoint", cfg.OTLPEndpoint, "protocol", cfg.OTLPProtocol, "interval", cfg.Interval)
			}
		}
	}
	if old.PrometheusListen != cfg.PrometheusListen || old.PrometheusWebConfig != cfg.PrometheusWebConfig || old.HostName != cfg.HostName ||
		e.prom == nil && cfg.PrometheusListen != "" {
		e.stopProm()
		if cfg.PrometheusListen != "" {
			p, err := e.startProm(cfg)
			if err != nil {
				e.promErrors.Add(1)
				e.log.Error("Prometheus endpoint not started", "listen", cfg.PrometheusListen, "err", err)
			} else {
				e.prom = p
			}
		}
	}
}

func otlpSame(a, b Config) bool {
	if len(a.OTLPHeaders) != len(b.OTLPHeaders) {
		return false
	}
	for k, v := range a.OTLPHeaders {
		if w, ok := b.OTLPHeaders[k]; !ok || w != v {
			return false
		}
	}
	return a.OTLPEndpoint == b.OTLPEndpoint && a.OTLPProtocol == b.OTLPProtocol && a.OTLPInsecure == b.OTLPInsecure &&
		a.OTLPCertificate == b.OTLPCertificate && a.OTLPClientCertificate == b.OTLPClientCertificate &&
		a.OTLPClientKey == b.OTLPClientKey && a.OTLPCompression == b.OTLPCompression &&
		a.Interval == b.Interval && a.Timeout == b.Timeout && a.HostName == b.HostName
}
