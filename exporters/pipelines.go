package exporters

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
)

// resource describes the daemon: the per-process identity is in data-point
// attributes (see README.md). OTEL_RESOURCE_ATTRIBUTES and
// OTEL_SERVICE_NAME of the daemon's environment win.
func (e *Exporter) resource(cfg Config) *resource.Resource {
	attrs := resource.WithAttributes(semconv.ServiceName("gopulsed"), semconv.ServiceVersion(e.version),
		semconv.HostName(cfg.HostName))
	r, err := resource.New(context.Background(), resource.WithSchemaURL(semconv.SchemaURL), resource.WithTelemetrySDK(),
		attrs, resource.WithFromEnv())
	if err != nil {
		e.log.Warn("OpenTelemetry resource", "err", err) // partial: still usable
	}
	if r == nil {
		r, _ = resource.New(context.Background(), resource.WithSchemaURL(semconv.SchemaURL), attrs)
	}
	return r
}

func (e *Exporter) meter(mp *sdkmetric.MeterProvider) metric.Meter {
	return mp.Meter(ScopeName, metric.WithInstrumentationVersion(e.version), metric.WithSchemaURL(semconv.SchemaURL))
}

// otlpPipeline is the push side: a periodic reader over an OTLP exporter.
type otlpPipeline struct {
	mp *sdkmetric.MeterProvider
}

// startOTLP builds the push pipeline; e.mu held.
func (e *Exporter) startOTLP(cfg Config) (*otlpPipeline, error) {
	exp, err := newOTLPExporter(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	counted := &countingExporter{Exporter: exp, errs: &e.otlpErrors, e: e, endpoint: cfg.OTLPEndpoint}
	reader := sdkmetric.NewPeriodicReader(counted, sdkmetric.WithInterval(cfg.Interval),
		sdkmetric.WithTimeout(cfg.Timeout), sdkmetric.WithProducer(producer{e}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(e.resource(cfg)))
	if err := e.register(e.meter(mp)); err != nil {
		_ = mp.Shutdown(context.Background())
		return nil, err
	}
	return &otlpPipeline{mp: mp}, nil
}

// stopOTLP flushes (one last push) and shuts the pipeline down within
// timeout; e.mu held.
func (e *Exporter) stopOTLP(timeout time.Duration) {
	if e.otlp == nil {
		return
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := e.otlp.mp.Shutdown(ctx); err != nil {
		e.log.Warn("OTLP export shutdown", "err", err)
	}
	e.otlp = nil
}

// retryConfig: a push retries transient failures with exponential
// backoff, within the push timeout (the reader's deadline bounds it).
func retryConfig(timeout time.Duration) (initial, max, elapsed time.Duration) {
	return 500 * time.Millisecond, 5 * time.Second, timeout
}

func newOTLPExporter(ctx context.Context, cfg Config) (sdkmetric.Exporter, error) {
	u, insecure, err := otlpTarget(cfg)
	if err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	if !insecure {
		if tlsCfg, err = tlsConfig(cfg); err != nil {
			return nil, err
		}
	}
	initial, max, elapsed := retryConfig(cfg.Timeout)
	switch cfg.OTLPProtocol {
	case ProtocolGRPC:
		opts := []otlpmetricgrpc.Option{
			otlpmetricgrpc.WithEndpoint(u.Host),
			otlpmetricgrpc.WithTimeout(cfg.Timeout),
			otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: true, InitialInterval: initial, MaxInterval: max, MaxElapsedTime: elapsed}),
			// Reconnect soon after a collector comes back, not after
			// gRPC's default backoff of up to two minutes.
			otlpmetricgrpc.WithDialOption(grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 500 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
				MinConnectTimeout: 5 * time.Second,
			})),
		}
		if len(cfg.OTLPHeaders) > 0 {
			opts = append(opts, otlpmetricgrpc.WithHeaders(cfg.OTLPHeaders))
		}
		if insecure {
			opts = append(opts, otlpmetricgrpc.WithInsecure())
		} else {
			opts = append(opts, otlpmetricgrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
		}
		if cfg.OTLPCompression == "gzip" {
			opts = append(opts, otlpmetricgrpc.WithCompressor("gzip"))
		}
		return otlpmetricgrpc.New(ctx, opts...)
	case ProtocolHTTP:
		opts := []otlpmetrichttp.Option{
			otlpmetrichttp.WithEndpoint(u.Host),
			otlpmetrichttp.WithURLPath(u.Path),
			otlpmetrichttp.WithTimeout(cfg.Timeout),
			otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: true, InitialInterval: initial, MaxInterval: max, MaxElapsedTime: elapsed}),
		}
		if len(cfg.OTLPHeaders) > 0 {
			opts = append(opts, otlpmetrichttp.WithHeaders(cfg.OTLPHeaders))
		}
		if insecure {
			opts = append(opts, otlpmetrichttp.WithInsecure())
		} else {
			opts = append(opts, otlpmetrichttp.WithTLSClientConfig(tlsCfg))
		}
		if cfg.OTLPCompression == "gzip" {
			opts = append(opts, otlpmetrichttp.WithCompression(otlpmetrichttp.GzipCompression))
		} else {
			opts = append(opts, otlpmetrichttp.WithCompression(otlpmetrichttp.NoCompression))
		}
		return otlpmetrichttp.New(ctx, opts...)
	}
	return nil, fmt.Errorf("OTLP protocol %q: want grpc or http/protobuf", cfg.OTLPProtocol)
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.OTLPCertificate != "" {
		pem, err := os.ReadFile(cfg.OTLPCertificate)
		if err != nil {
			return nil, fmt.Errorf("OTLP CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("OTLP CA certificate %s: no PEM certificate in it", cfg.OTLPCertificate)
		}
		t.RootCAs = pool
	}
	if cfg.OTLPClientCertificate != "" || cfg.OTLPClientKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.OTLPClientCertificate, cfg.OTLPClientKey)
		if err != nil {
			return nil, fmt.Errorf("OTLP client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// countingExporter counts and logs failed pushes (logging only when the
// state changes, not at every interval of an outage).
type countingExporter struct {
	sdkmetric.Exporter
	errs     *atomic.Uint64
	e        *Exporter
	endpoint string
	failing  atomic.Bool
}

func (c *countingExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	err := c.Exporter.Export(ctx, rm)
	if err != nil {
		c.errs.Add(1)
		if !c.failing.Swap(true) {
			c.e.log.Warn("OTLP push failed; retrying at each interval", "endpoint", c.endpoint, "err", err)
		}
	} else if c.failing.Swap(false) {
		c.e.log.Info("OTLP push works again", "endpoint", c.endpoint)
	}
	return err
}

// promPipeline is the scrape side: the OpenTelemetry Prometheus exporter
// on a registry of its own (never the global one), served on /metrics.
type promPipeline struct {
	mp        *sdkmetric.MeterProvider
	srv       *http.Server
	webConfig string // exporter-toolkit web configuration file, "" for none
	cancel    context.CancelFunc
	done      chan struct{}
}

// promRetry is how long the endpoint waits before trying again to listen
// on an address in use.
const promRetry = 10 * time.Second

// startProm builds the scrape pipeline and serves it in the background;
// e.mu held. A failure to listen is logged and retried, never fatal.
func (e *Exporter) startProm(cfg Config) (*promPipeline, error) {
	// A web configuration that does not load must not fall back to an
	// open endpoint: refused here, logged by the caller.
	if err := web.Validate(cfg.PrometheusWebConfig); err != nil {
		return nil, fmt.Errorf("web configuration %s: %w", cfg.PrometheusWebConfig, err)
	}
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithProducer(producer{e}))
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(e.resource(cfg)))
	if err := e.register(e.meter(mp)); err != nil {
		_ = mp.Shutdown(context.Background())
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		EnableOpenMetrics: true, // on request (Accept), text format otherwise
		ErrorHandling:     promhttp.ContinueOnError,
		ErrorLog:          promLogger{e},
		Timeout:           30 * time.Second,
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "gopulsed: metrics at /metrics")
	})
	ctx, cancel := context.WithCancel(e.ctx)
	p := &promPipeline{mp: mp, cancel: cancel, done: make(chan struct{}), webConfig: cfg.PrometheusWebConfig,
		srv: &http.Server{Addr: cfg.PrometheusListen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go p.serve(ctx, e)
	return p, nil
}

func (p *promPipeline) serve(ctx context.Context, e *Exporter) {
	defer close(p.done)
	for {
		ln, err := net.Listen("tcp", p.srv.Addr)
		if err == nil {
			e.log.Info("Prometheus endpoint", "listen", ln.Addr().String())
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = p.srv.Shutdown(sctx)
			}()
			// exporter-toolkit serves TLS and checks basic auth as the
			// file says (re-read on each connection and request, so
			// certificates and passwords rotate without a reload); plain
			// HTTP without it.
			flags := &web.FlagConfig{WebConfigFile: &p.webConfig}
			if err := web.Serve(ln, p.srv, flags, e.log.With("endpoint", "prometheus")); !errors.Is(err, http.ErrServerClosed) {
				e.promErrors.Add(1)
				e.log.Error("Prometheus endpoint", "err", err)
			}
			return
		}
		e.promErrors.Add(1)
		e.log.Error("Prometheus endpoint: cannot listen; will retry", "listen", p.srv.Addr, "err", err, "retry", promRetry)
		select {
		case <-ctx.Done():
			return
		case <-time.After(promRetry):
		}
	}
}

// stopProm closes the endpoint; e.mu held.
func (e *Exporter) stopProm() {
	if e.prom == nil {
		return
	}
	e.prom.cancel()
	<-e.prom.done
	_ = e.prom.mp.Shutdown(context.Background())
	e.prom = nil
}

type promLogger struct{ e *Exporter }

func (l promLogger) Println(v ...any) {
	l.e.promErrors.Add(1)
	l.e.log.Warn("Prometheus endpoint", "err", fmt.Sprint(v...))
}
