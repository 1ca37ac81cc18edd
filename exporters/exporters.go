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
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

// Protocols of OTLPProtocol.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// Config of the exporters. Zero values disable what they configure.
type Config struct {
	OTLPEndpoint          string            // e.g. http://127.0.0.1:4317 (grpc) or http://127.0.0.1:4318 (http/protobuf); "" disables OTLP
	OTLPProtocol          string            // "grpc" or "http/protobuf"
	OTLPHeaders           map[string]string // extra request headers (auth)
	OTLPInsecure          bool              // plaintext (no TLS)
	OTLPCertificate       string            // CA bundle for TLS
	OTLPClientCertificate string            // client certificate (mTLS), PEM file
	OTLPClientKey         string            // its key, PEM file
	OTLPCompression       string            // "gzip" or "none" ("" is none)
	Interval              time.Duration     // push interval
	Timeout               time.Duration     // push timeout (retries included)

	// PrometheusListen is the address of the /metrics endpoint; "" disables.
	PrometheusListen string

	// PerService aggregates series per service instead of per PID, for
	// hosts with many short-lived Go processes.
	PerService bool
	// MaxProcesses caps the processes (services with PerService)
	// exported as separate series; 0 is no cap.
	MaxProcesses int
	HostName     string
}

// DefaultPrometheusListen is the scrape address when none is configured:
// all interfaces, so that the fleet's Prometheus can scrape every host, on
// 9464, the port the OpenTelemetry Prometheus exporters use by convention.
// Firewall it, or set 127.0.0.1:9464 for a local agent.
const DefaultPrometheusListen = ":9464"

// Defaults returns the configuration before environment and flags.
func Defaults() Config {
	return Config{OTLPProtocol: ProtocolGRPC, Interval: 60 * time.Second, Timeout: 10 * time.Second,
		PrometheusListen: DefaultPrometheusListen, MaxProcesses: 4096}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch c.OTLPProtocol {
	case ProtocolGRPC, ProtocolHTTP:
	case "":
		if c.OTLPEndpoint != "" {
			return errors.New("OTLP protocol not set: want grpc or http/protobuf")
		}
	default:
		return fmt.Errorf("OTLP protocol %q: want grpc or http/protobuf", c.OTLPProtocol)
	}
	if c.OTLPEndpoint != "" {
		if _, _, err := otlpTarget(c); err != nil {
			return err
		}
		if c.Interval <= 0 || c.Timeout <= 0 {
			return fmt.Errorf("export interval %v and timeout %v must be positive", c.Interval, c.Timeout)
		}
	}
	if c.MaxProcesses < 0 {
		return fmt.Errorf("max exported processes %d: want >= 0", c.MaxProcesses)
	}
	if c.PrometheusListen != "" {
		if _, _, err := net.SplitHostPort(c.PrometheusListen); err != nil {
			return fmt.Errorf("prometheus listen address %q: %w", c.PrometheusListen, err)
		}
	}
	return nil
}

// otlpTarget resolves the endpoint: a URL (http:// means plaintext), or a
// bare host:port. With http/protobuf a URL without a path gets
// /v1/metrics.
func otlpTarget(c Config) (*url.URL, bool, error) {
	raw := c.OTLPEndpoint
	if !strings.Contains(raw, "://") {
		scheme := "https"
		if c.OTLPInsecure {
			scheme = "http"
		}
		raw = scheme + "://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, false, fmt.Errorf("OTLP endpoint %q: want http(s)://host:port[/path]", c.OTLPEndpoint)
	}
	if c.OTLPProtocol == ProtocolHTTP && (u.Path == "" || u.Path == "/") {
		u.Path = "/v1/metrics"
	}
	return u, u.Scheme == "http" || c.OTLPInsecure, nil
}

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
	if old.PrometheusListen != cfg.PrometheusListen || old.HostName != cfg.HostName || e.prom == nil && cfg.PrometheusListen != "" {
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
