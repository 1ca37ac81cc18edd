// Package exportconfig is the export settings of gopulsed (OTLP push,
// Prometheus endpoint, series per PID or per service) and their overlay
// from the standard OTEL_* environment. It is a leaf: the configuration
// and packaging/genconfig read it without linking the OpenTelemetry SDK.
package exportconfig

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
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
	// PrometheusWebConfig is the exporter-toolkit web configuration file
	// (TLS, basic auth) of the endpoint; "" serves plain HTTP to anyone.
	PrometheusWebConfig string

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
		if _, _, err := Target(c); err != nil {
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

// Target resolves the endpoint: a URL (http:// means plaintext), or a
// bare host:port. With http/protobuf a URL without a path gets
// /v1/metrics.
func Target(c Config) (*url.URL, bool, error) {
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
