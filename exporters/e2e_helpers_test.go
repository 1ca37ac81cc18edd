package exporters

// Helpers of the end-to-end tests: the real gopulsed, gcload fixtures, a
// real Prometheus server and a real OpenTelemetry Collector.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
)

func gcloadBinary(t *testing.T) string {
	t.Helper()
	return e2etest.Gcload(t, fixturebuild.Shapes()[0])
}

var workload = []string{"-workers", "4", "-iters", "40000", "-forced", "5"}

// --- Prometheus server ---

type promServer struct {
	addr string
}

func startPrometheus(t *testing.T, target string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Unavailable(t, "no prometheus binary (Debian package prometheus): %v", err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gopulsed\n    static_configs:\n      - targets: ['%s']\n", target)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	logPath := filepath.Join(dir, "prometheus.log")
	logf, _ := os.Create(logPath)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("prometheus log:\n%s", tail(string(b), 4000))
		}
	})
	e2etest.WaitFor(t, 30*time.Second, "prometheus to be ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return &promServer{addr: addr}
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) value() float64 {
	str, _ := s.Value[1].(string)
	v, _ := strconv.ParseFloat(str, 64)
	return v
}

func (p *promServer) query(t *testing.T, q string) []promSample {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s", q, err, r.Error)
	}
	return r.Data.Result
}

// --- OpenTelemetry Collector ---

const collectorVersion = "v0.165.0"

const collectorManifest = `dist:
  name: otelcol-gopulse
  description: OpenTelemetry Collector for the gopulse tests
  output_path: %s
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver ` + collectorVersion + `
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/debugexporter ` + collectorVersion + `
`

// collectorBinary builds the collector with its own builder, once per
// manifest: the binary is cached under $GOPULSE_COLLECTOR_CACHE (else the
// temporary directory), keyed by the manifest and Go version, behind a
// file lock so that concurrent test runs build it once.
func collectorBinary(t *testing.T) string {
	t.Helper()
	root := os.Getenv("GOPULSE_COLLECTOR_CACHE")
	if root == "" {
		root = filepath.Join(os.TempDir(), "gopulse-otelcol")
	}
	sum := sha256.Sum256([]byte(collectorManifest + runtime.Version() + runtime.GOARCH))
	key := hex.EncodeToString(sum[:8])
	dir := filepath.Join(root, key)
	bin := filepath.Join(dir, "otelcol-gopulse")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(root, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin
	}
	work, err := os.MkdirTemp(root, "build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)
	manifest := filepath.Join(work, "manifest.yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(collectorManifest, filepath.Join(work, "out"))), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command("go", "run", "go.opentelemetry.io/collector/cmd/builder@"+collectorVersion, "--config", manifest)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		testenv.Unavailable(t, "build the OpenTelemetry Collector: %v\n%s", err, tail(string(out), 4000))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(work, "out", "otelcol-gopulse"), bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the OpenTelemetry Collector %s in %v (cached at %s)", collectorVersion, time.Since(start).Round(time.Second), bin)
	return bin
}

type collector struct {
	t          *testing.T
	bin, conf  string
	grpc, http string
	cmd        *exec.Cmd
	out        string
	runs       int
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{t: t, bin: collectorBinary(t), grpc: freePort(t), http: freePort(t)}
	dir := t.TempDir()
	c.conf = filepath.Join(dir, "otelcol.yaml")
	conf := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
exporters:
  debug:
    verbosity: detailed
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [debug]
`, c.grpc, c.http)
	if err := os.WriteFile(c.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.start()
	t.Cleanup(c.stop)
	return c
}

func (c *collector) start() {
	c.t.Helper()
	c.runs++
	c.out = filepath.Join(filepath.Dir(c.conf), fmt.Sprintf("otelcol-%d.Log", c.runs))
	f, err := os.Create(c.out)
	if err != nil {
		c.t.Fatal(err)
	}
	c.cmd = exec.Command(c.bin, "--config", c.conf)
	c.cmd.Stdout, c.cmd.Stderr = f, f
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	f.Close()
	e2etest.WaitFor(c.t, 30*time.Second, "the collector to listen", func() bool {
		b, _ := os.ReadFile(c.out)
		return strings.Contains(string(b), "Everything is ready")
	})
}

func (c *collector) stop() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	if c.t.Failed() {
		b, _ := os.ReadFile(c.out)
		c.t.Logf("collector output (run %d):\n%s", c.runs, tail(string(b), 6000))
	}
	c.cmd = nil
}

// point is one data point the debug exporter printed.
type point struct {
	resource map[string]string
	metric   string
	unit     string
	dtype    string
	attrs    map[string]string
	value    string // Value, or Count for histograms
	sum      string
}

// points parses what the collector's debug exporter printed so far.
func (c *collector) points() []point {
	b, _ := os.ReadFile(c.out)
	var out []point
	var res map[string]string
	var metric, unit, dtype string
	var cur *point
	section := ""
	flush := func() {
		if cur != nil {
			out = append(out, *cur)
			cur = nil
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		s := strings.TrimSpace(line)
		if i := strings.Index(s, "ResourceMetrics #"); i > 0 {
			s = s[i:] // the first line of a dump follows the log prefix
		}
		switch {
		case strings.HasPrefix(s, "ResourceMetrics #"):
			flush()
			res, section = map[string]string{}, ""
		case s == "Resource attributes:":
			section = "resource"
		case strings.HasPrefix(s, "Metric #"):
			flush()
			section = "descriptor"
		case strings.HasPrefix(s, "NumberDataPoints #"), strings.HasPrefix(s, "HistogramDataPoints #"):
			flush()
			cur = &point{resource: res, metric: metric, unit: unit, dtype: dtype, attrs: map[string]string{}}
			section = "point"
		case s == "Data point attributes:":
			section = "attrs"
		case strings.HasPrefix(s, "-> "):
			k, v, _ := strings.Cut(strings.TrimPrefix(s, "-> "), ": ")
			switch section {
			case "resource":
				if res != nil {
					res[k] = unwrap(v)
				}
			case "descriptor":
				switch k {
				case "Name":
					metric = v
				case "Unit":
					unit = v
				case "DataType":
					dtype = v
				}
			case "attrs":
				if cur != nil {
					cur.attrs[k] = unwrap(v)
				}
			}
		case cur != nil && strings.HasPrefix(s, "Value: "):
			cur.value = strings.TrimPrefix(s, "Value: ")
		case cur != nil && strings.HasPrefix(s, "Count: "):
			cur.value = strings.TrimPrefix(s, "Count: ")
		case cur != nil && strings.HasPrefix(s, "Sum: "):
			cur.sum = strings.TrimPrefix(s, "Sum: ")
		case strings.HasPrefix(s, "ScopeMetrics #"):
			flush()
		}
	}
	flush()
	return out
}

// unwrap turns Str(x) or Int(3) into x or 3.
func unwrap(v string) string {
	if i := strings.IndexByte(v, '('); i > 0 && strings.HasSuffix(v, ")") {
		return v[i+1 : len(v)-1]
	}
	return v
}

// latest returns the last point of metric whose attributes include want.
func latest(ps []point, metric string, want map[string]string) (point, bool) {
	for i := len(ps) - 1; i >= 0; i-- {
		p := ps[i]
		if p.metric != metric {
			continue
		}
		ok := true
		for k, v := range want {
			if p.attrs[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return p, true
		}
	}
	return point{}, false
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
