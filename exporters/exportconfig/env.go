package exportconfig

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// FromEnv overlays the standard OTEL_EXPORTER_OTLP_* and
// OTEL_METRIC_EXPORT_* variables (getenv is os.Getenv in production).
//
// For each setting the signal-specific OTEL_EXPORTER_OTLP_METRICS_X wins
// over OTEL_EXPORTER_OTLP_X. A generic endpoint is a base URL: with
// http/protobuf "v1/metrics" is appended to its path, as the specification
// says; a metrics endpoint is used as it is. OTEL_METRIC_EXPORT_TIMEOUT
// (the periodic reader's) wins over the OTLP exporter's timeouts, as the
// reader's deadline bounds the exporter's anyway. Empty variables are
// unset. A bad value is an error naming the variable.
func FromEnv(base Config, getenv func(string) string) (Config, error) {
	cfg := base
	cfg.OTLPHeaders = cloneHeaders(base.OTLPHeaders)
	get := func(name string) (string, string) {
		if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_METRICS_" + name)); v != "" {
			return v, "OTEL_EXPORTER_OTLP_METRICS_" + name
		}
		if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_" + name)); v != "" {
			return v, "OTEL_EXPORTER_OTLP_" + name
		}
		return "", ""
	}

	if v, name := get("PROTOCOL"); v != "" {
		switch v {
		case ProtocolGRPC, ProtocolHTTP:
			cfg.OTLPProtocol = v
		default:
			return base, fmt.Errorf("%s=%q: want %s or %s (http/json is not supported)", name, v, ProtocolGRPC, ProtocolHTTP)
		}
	}
	if v, name := get("ENDPOINT"); v != "" {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return base, fmt.Errorf("%s=%q: want an http:// or https:// URL with a host", name, v)
		}
		if name == "OTEL_EXPORTER_OTLP_ENDPOINT" && cfg.OTLPProtocol == ProtocolHTTP {
			u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/metrics"
		}
		cfg.OTLPEndpoint = u.String()
	}
	if v, name := get("HEADERS"); v != "" {
		h, err := parseHeaders(v)
		if err != nil {
			return base, fmt.Errorf("%s: %w", name, err)
		}
		for k, val := range h {
			if cfg.OTLPHeaders == nil {
				cfg.OTLPHeaders = map[string]string{}
			}
			cfg.OTLPHeaders[k] = val
		}
	}
	if v, name := get("INSECURE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return base, fmt.Errorf("%s=%q: want true or false", name, v)
		}
		cfg.OTLPInsecure = b
	}
	if v, _ := get("CERTIFICATE"); v != "" {
		cfg.OTLPCertificate = v
	}
	if v, _ := get("CLIENT_CERTIFICATE"); v != "" {
		cfg.OTLPClientCertificate = v
	}
	if v, _ := get("CLIENT_KEY"); v != "" {
		cfg.OTLPClientKey = v
	}
	if v, name := get("COMPRESSION"); v != "" {
		switch v {
		case "gzip", "none":
			cfg.OTLPCompression = v
		default:
			return base, fmt.Errorf("%s=%q: want gzip or none", name, v)
		}
	}
	if v, name := get("TIMEOUT"); v != "" {
		d, err := millis(v)
		if err != nil {
			return base, fmt.Errorf("%s=%q: %w", name, v, err)
		}
		cfg.Timeout = d
	}
	if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")); v != "" {
		// Fleet backends (and Prometheus) want cumulative series; delta
		// would need per-reader state the daemon does not keep.
		if !strings.EqualFold(v, "cumulative") {
			return base, fmt.Errorf("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=%q: only cumulative is supported", v)
		}
	}
	if v := strings.TrimSpace(getenv("OTEL_METRIC_EXPORT_INTERVAL")); v != "" {
		d, err := millis(v)
		if err != nil {
			return base, fmt.Errorf("OTEL_METRIC_EXPORT_INTERVAL=%q: %w", v, err)
		}
		cfg.Interval = d
	}
	if v := strings.TrimSpace(getenv("OTEL_METRIC_EXPORT_TIMEOUT")); v != "" {
		d, err := millis(v)
		if err != nil {
			return base, fmt.Errorf("OTEL_METRIC_EXPORT_TIMEOUT=%q: %w", v, err)
		}
		cfg.Timeout = d
	}
	if v := strings.TrimSpace(getenv("OTEL_METRICS_EXPORTER")); v != "" {
		// "none" turns the push off; "otlp" and "prometheus" are what the
		// daemon does anyway (each still needs its address).
		for _, e := range strings.Split(v, ",") {
			switch strings.TrimSpace(e) {
			case "none":
				cfg.OTLPEndpoint = ""
			case "otlp", "prometheus", "console":
			default:
				return base, fmt.Errorf("OTEL_METRICS_EXPORTER=%q: want otlp, prometheus or none", v)
			}
		}
	}
	return cfg, nil
}

// millis parses a duration in milliseconds, as the OTEL_* variables give
// them; a Go duration ("30s") is accepted too.
func millis(v string) (time.Duration, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0, fmt.Errorf("want a positive number of milliseconds")
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want a positive number of milliseconds")
	}
	return d, nil
}

// parseHeaders reads the W3C-baggage-like "k1=v1,k2=v2" list of
// OTEL_EXPORTER_OTLP_HEADERS, values percent-encoded.
func parseHeaders(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want key=value", kv)
		}
		dk, err := url.PathUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("%q: bad percent-encoding: %v", kv, err)
		}
		dv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q: bad percent-encoding: %v", kv, err)
		}
		out[dk] = dv
	}
	return out, nil
}

func cloneHeaders(h map[string]string) map[string]string {
	if h == nil {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[k] = v
	}
	return out
}
