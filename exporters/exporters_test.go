package exporters

import (
	"cmp"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/semconv/v1.43.0/goconv"

	"golang.org/x/crypto/bcrypt"

	"github.com/gopulse/gopulse/daemon/api"
)

func TestFromEnv(t *testing.T) {
	base := Defaults()
	for _, tc := range []struct {
		name    string
		env     map[string]string
		check   func(Config) bool
		wantErr string // substring; "" for none
	}{
		{"nothing", nil, func(c Config) bool { return reflect.DeepEqual(c, base) }, ""},
		{"grpc endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://col:4317"},
			func(c Config) bool { return c.OTLPEndpoint == "http://col:4317" && c.OTLPProtocol == "grpc" }, ""},
		{"http endpoint gets v1/metrics", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://col:4318/otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			func(c Config) bool { return c.OTLPEndpoint == "https://col:4318/otlp/v1/metrics" }, ""},
		{"metrics endpoint as is", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://col:4318/custom", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			func(c Config) bool { return c.OTLPEndpoint == "https://col:4318/custom" }, ""},
		{"metrics endpoint wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://b:4317"},
			func(c Config) bool { return c.OTLPEndpoint == "http://b:4317" }, ""},
		{"bad endpoint", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "col:4317"}, nil, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"},
		{"metrics protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"},
			func(c Config) bool { return c.OTLPProtocol == "http/protobuf" }, ""},
		{"bad protocol", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, nil, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"headers", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20ecret, x-tenant = a"},
			func(c Config) bool { return c.OTLPHeaders["api-key"] == "s ecret" && c.OTLPHeaders["x-tenant"] == "a" }, ""},
		{"metrics headers win", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "b=2"},
			func(c Config) bool { return len(c.OTLPHeaders) == 1 && c.OTLPHeaders["b"] == "2" }, ""},
		{"bad headers", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_HEADERS": "novalue"}, nil, "OTEL_EXPORTER_OTLP_METRICS_HEADERS"},
		{"insecure", map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "true"}, func(c Config) bool { return c.OTLPInsecure }, ""},
		{"metrics insecure wins", map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_METRICS_INSECURE": "false"},
			func(c Config) bool { return !c.OTLPInsecure }, ""},
		{"bad insecure", map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "maybe"}, nil, "OTEL_EXPORTER_OTLP_INSECURE"},
		{"certificates", map[string]string{"OTEL_EXPORTER_OTLP_CERTIFICATE": "/ca.pem", "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE": "/c.pem", "OTEL_EXPORTER_OTLP_CLIENT_KEY": "/k.pem"},
			func(c Config) bool {
				return c.OTLPCertificate == "/ca.pem" && c.OTLPClientCertificate == "/c.pem" && c.OTLPClientKey == "/k.pem"
			}, ""},
		{"compression", map[string]string{"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}, func(c Config) bool { return c.OTLPCompression == "gzip" }, ""},
		{"bad compression", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "zstd"}, nil, "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION"},
		{"otlp timeout", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}, func(c Config) bool { return c.Timeout == 2500*time.Millisecond }, ""},
		{"metrics timeout wins", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "3000"},
			func(c Config) bool { return c.Timeout == 3*time.Second }, ""},
		{"export timeout wins", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "3000", "OTEL_METRIC_EXPORT_TIMEOUT": "4000"},
			func(c Config) bool { return c.Timeout == 4*time.Second }, ""},
		{"bad timeout", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, nil, "OTEL_EXPORTER_OTLP_TIMEOUT"},
		{"bad export timeout", map[string]string{"OTEL_METRIC_EXPORT_TIMEOUT": "-5"}, nil, "OTEL_METRIC_EXPORT_TIMEOUT"},
		{"interval", map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "15000"}, func(c Config) bool { return c.Interval == 15*time.Second }, ""},
		{"bad interval", map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "0"}, nil, "OTEL_METRIC_EXPORT_INTERVAL"},
		{"temporality cumulative", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "Cumulative"}, func(c Config) bool { return true }, ""},
		{"temporality delta", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"}, nil, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_METRICS_EXPORTER": "none"},
			func(c Config) bool { return c.OTLPEndpoint == "" }, ""},
		{"bad exporter", map[string]string{"OTEL_METRICS_EXPORTER": "zipkin"}, nil, "OTEL_METRICS_EXPORTER"},
		{"blank is unset", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "  ", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317"},
			func(c Config) bool { return c.OTLPEndpoint == "http://a:4317" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromEnv(base, func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(got) {
				t.Errorf("config %+v", got)
			}
		})
	}
}

func TestValidateAndTarget(t *testing.T) {
	for _, tc := range []struct {
		cfg      Config
		url      string
		insecure bool
		err      bool
	}{
		{Config{OTLPEndpoint: "http://c:4317", OTLPProtocol: "grpc"}, "http://c:4317", true, false},
		{Config{OTLPEndpoint: "https://c:4317", OTLPProtocol: "grpc"}, "https://c:4317", false, false},
		{Config{OTLPEndpoint: "c:4317", OTLPProtocol: "grpc", OTLPInsecure: true}, "http://c:4317", true, false},
		{Config{OTLPEndpoint: "http://c:4318", OTLPProtocol: "http/protobuf"}, "http://c:4318/v1/metrics", true, false},
		{Config{OTLPEndpoint: "http://c:4318/x/v1/metrics", OTLPProtocol: "http/protobuf"}, "http://c:4318/x/v1/metrics", true, false},
		{Config{OTLPEndpoint: "ftp://c", OTLPProtocol: "grpc"}, "", false, true},
		{Config{OTLPEndpoint: "http://c:1", OTLPProtocol: "thrift"}, "", false, true},
	} {
		c := tc.cfg
		c.Interval, c.Timeout = time.Second, time.Second
		err := c.Validate()
		if (err != nil) != tc.err {
			t.Errorf("%+v: Validate = %v", c, err)
			continue
		}
		if tc.err {
			continue
		}
		u, insecure, _ := otlpTarget(c)
		if u.String() != tc.url || insecure != tc.insecure {
			t.Errorf("%+v: target %s insecure=%v, want %s %v", c, u, insecure, tc.url, tc.insecure)
		}
	}
	if err := (Config{PrometheusListen: "9464"}).Validate(); err == nil {
		t.Error("a listen address without a port is accepted")
	}
}

// The catalog follows the semantic conventions where they define the
// metric, and the top README.md documents every metric.
func TestCatalog(t *testing.T) {
	if mGCCycles.name != "go.memory.gc.cycles" || mGCCycles.unit != (goconv.MemoryGCCyclesObservable{}).Unit() || mGCCycles.kind != kindCounter {
		t.Errorf("go.memory.gc.cycles: %+v", mGCCycles)
	}
	if mGCPause.name != "go.memory.gc.pause.duration" || mGCPause.unit != "s" || mGCPause.kind != kindHistogram {
		t.Errorf("go.memory.gc.pause.duration: %+v", mGCPause)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, d := range catalog {
		if names[d.name] {
			t.Errorf("%s twice in the catalog", d.name)
		}
		names[d.name] = true
		row := "| `" + d.name + "` | `" + d.unit + "` | " + d.kind + " |"
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md lacks the row starting %q", row)
		}
		if !strings.HasPrefix(d.name, "go.") && !strings.HasPrefix(d.name, "gopulse.") && !(d.semconv && strings.HasPrefix(d.name, "process.")) {
			t.Errorf("%s: outside the go.* and gopulse.* namespaces (and not a semconv process.* metric)", d.name)
		}
	}
	// No metric name is the namespace of another (OpenTelemetry naming).
	for a := range names {
		for b := range names {
			if strings.HasPrefix(b, a+".") {
				t.Errorf("%s is a metric and the namespace of %s", a, b)
			}
		}
	}
}

type fakeSource struct {
	mu     sync.Mutex
	procs  []api.Process
	status api.Status
}

func (f *fakeSource) Processes() []api.Process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.Process(nil), f.procs...)
}

func (f *fakeSource) Status() api.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeSource) set(ps ...api.Process) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs = ps
}

var t0 = time.Now().Add(-time.Hour)

func proc(pid int, service string, cycles uint64) api.Process {
	return api.Process{PID: pid, Exe: "/usr/bin/app" + service, GoVersion: "go1.26.8", ServiceName: service,
		FirstSeen: t0.Add(time.Duration(pid) * time.Second), StartTime: t0,
		GCCycles: cycles, GCForcedCycles: cycles / 2, GCPauseSecondsTotal: float64(cycles) * 1e-4,
		GCAssistSecondsTotal: float64(cycles) * 1e-3, OtherSTWCount: 1, OtherSTWSecondsTotal: 2e-5,
		Runtime: &api.Runtime{GCGoalBytes: 8 << 20, GOGCPercent: 100, MemoryLimitBytes: 1 << 30, Goroutines: 12, GOMAXPROCS: 4,
			HeapLiveBytes: 5 << 20, MemoryUsedBytes: 20 << 20, MemoryStackBytes: 1 << 20, AllocatedBytes: cycles << 20}}
}

func cycle(trigger string) api.GCCycle {
	return api.GCCycle{Trigger: trigger, SweepTermSeconds: 20e-6, MarkSeconds: 3e-3, MarkTermSeconds: 80e-6, PauseSeconds: 100e-6}
}

// collector collects the exporter's metrics with a manual reader.
type manualCollector struct {
	reader *sdkmetric.ManualReader
}

func newCollector(t *testing.T, e *Exporter) *manualCollector {
	t.Helper()
	e.version = "test"
	r := sdkmetric.NewManualReader(sdkmetric.WithProducer(producer{e}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	if err := e.register(e.meter(mp)); err != nil {
		t.Fatal(err)
	}
	return &manualCollector{reader: r}
}

func (c *manualCollector) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := c.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != ScopeName {
			t.Errorf("scope %q", sm.Scope.Name)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func attrOf(set attribute.Set, k string) string {
	v, _ := set.Value(attribute.Key(k))
	return v.Emit()
}

// sumByAttr maps the value of attribute k to the point's value.
func sumByAttr[N int64 | float64](t *testing.T, m metricdata.Metrics, k string) map[string]N {
	t.Helper()
	s, ok := m.Data.(metricdata.Sum[N])
	if !ok {
		t.Fatalf("%s: %T, want a Sum", m.Name, m.Data)
	}
	if s.Temporality != metricdata.CumulativeTemporality {
		t.Errorf("%s: temporality %v", m.Name, s.Temporality)
	}
	out := map[string]N{}
	for _, dp := range s.DataPoints {
		out[attrOf(dp.Attributes, k)] += dp.Value
	}
	return out
}

func histByAttr(t *testing.T, m metricdata.Metrics, k string) map[string]metricdata.HistogramDataPoint[float64] {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s: %T, want a Histogram", m.Name, m.Data)
	}
	out := map[string]metricdata.HistogramDataPoint[float64]{}
	for _, dp := range h.DataPoints {
		out[attrOf(dp.Attributes, k)] = dp
	}
	return out
}

// Names, units, kinds, attributes and values of every metric.
func TestMapping(t *testing.T) {
	src := &fakeSource{status: api.Status{Version: "test", Processes: 2, ProcessesDropped: 3,
		Binaries: []api.BinaryStatus{{Probes: 4}, {Probes: 5}},
		Families: []api.FamilyStatus{{Name: "discovery", Events: 0, LostEvents: 1}, {Name: "gc", Events: 10, LostEvents: 2, Hits: 7}}}}
	a, b := proc(100, "api", 10), proc(200, "worker", 4)
	a.ContainerID = strings.Repeat("ab", 32)
	a.Madvise = &api.MadviseStats{
		Advice:           []api.AdviceCount{{Advice: "dontneed", Calls: 3, Bytes: 3 << 20}, {Advice: "hugepage", Calls: 1, Bytes: 4 << 20}},
		ReleasedBytes:    3 << 20,
		ReleasedBySource: map[string]uint64{api.SourceFreeOSMemory: 2 << 20, api.SourceBackgroundScavenger: 1 << 20},
		RSSBytes:         50 << 20,
	}
	a.Sched = &api.SchedStats{Threads: 5, VoluntarySwitches: 70, InvoluntarySwitches: 7, OnCPUSeconds: 1.5, OffCPUSeconds: 2, RunQueueSeconds: 0.25,
		RunQueueLatency: api.Histogram{Count: 3, SumSeconds: 6e-6, BucketUpperSeconds: []float64{1e-9, 2e-9, 4e-9}, Counts: []uint64{0, 1, 2}}}
	// The runtime's own buckets (Go 1.20+: 0, 64, 128, 192, 256, 320 ns ...)
	// fold into the power-of-two ones by upper bound.
	a.Sched.GoroutineLatency = &api.Histogram{Count: 15, SumSeconds: 2e-6,
		BucketUpperSeconds: []float64{0, 64e-9, 128e-9, 192e-9, 256e-9, 320e-9, -1}, Counts: []uint64{0, 1, 2, 3, 4, 5, 0}}
	a.MheapLock = &api.MheapLockStats{Method: "futex", Contended: 9, WaitSeconds: 0.125, OtherContended: 4, OtherWaitSeconds: 0.5,
		Wait: api.Histogram{Count: 9, SumSeconds: 0.125, BucketUpperSeconds: []float64{1e-9, -1}, Counts: []uint64{1, 8}}}
	src.set(a, b)
	e, err := New(Config{MaxProcesses: 10}, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector(t, e)
	e.ObserveCycle(a, cycle("heap"))
	e.ObserveCycle(a, cycle("forced"))
	e.ObserveCycle(b, cycle("time"))
	got := c.collect(t)
	for _, d := range catalog {
		m, ok := got[d.name]
		if !ok {
			t.Errorf("%s not collected", d.name)
			continue
		}
		if m.Unit != d.unit {
			t.Errorf("%s: unit %q, want %q", d.name, m.Unit, d.unit)
		}
		switch data := m.Data.(type) {
		case metricdata.Sum[int64]:
			if want := d.kind == kindCounter; data.IsMonotonic != want || !d.integer {
				t.Errorf("%s: int sum monotonic=%v, catalog %+v", d.name, data.IsMonotonic, d)
			}
		case metricdata.Sum[float64]:
			if !data.IsMonotonic || d.kind != kindCounter || d.integer {
				t.Errorf("%s: float sum monotonic=%v, catalog %+v", d.name, data.IsMonotonic, d)
			}
		case metricdata.Histogram[float64]:
			if d.kind != kindHistogram {
				t.Errorf("%s: histogram, catalog says %s", d.name, d.kind)
			}
		default:
			t.Errorf("%s: %T", d.name, m.Data)
		}
	}
	if v := sumByAttr[int64](t, got["go.memory.gc.cycles"], "process.pid"); v["100"] != 10 || v["200"] != 4 {
		t.Errorf("go.memory.gc.cycles by pid: %v", v)
	}
	if v := sumByAttr[float64](t, got["go.gc.pause.time"], "process.pid"); v["100"] != 10e-4 {
		t.Errorf("go.gc.pause.time by pid: %v", v)
	}
	if v := sumByAttr[int64](t, got["go.gc.cycles"], "go.gc.trigger"); v["heap"] != 1 || v["forced"] != 1 || v["time"] != 1 {
		t.Errorf("go.gc.cycles by trigger: %v", v)
	}
	if v := sumByAttr[int64](t, got["gopulse.probe.lost_events"], "gopulse.probe.family"); v["gc"] != 2 || v["discovery"] != 1 {
		t.Errorf("lost events by family: %v", v)
	}
	if v := sumByAttr[int64](t, got["gopulse.probes.attached"], ""); v[""] != 9 {
		t.Errorf("probes attached: %v", v)
	}
	pauses := histByAttr(t, got["go.memory.gc.pause.duration"], "process.pid")
	if p := pauses["100"]; p.Count != 4 || p.BucketCounts[1] != 2 || p.BucketCounts[3] != 2 || len(p.Bounds) != len(pauseBounds) {
		t.Errorf("pid 100 pauses: count %d buckets %v", p.Count, p.BucketCounts)
	}
	if p := histByAttr(t, got["go.gc.phase.duration"], "go.gc.phase")["mark"]; p.Count == 0 {
		t.Errorf("mark phase histogram empty")
	}
	// The other families' figures, for the process that has them only.
	if v := sumByAttr[int64](t, got["go.memory.advise.size"], "go.memory.advice"); v["dontneed"] != 3<<20 || v["hugepage"] != 4<<20 {
		t.Errorf("go.memory.advise.size by advice: %v", v)
	}
	if v := sumByAttr[int64](t, got["go.memory.released"], "go.memory.release.source"); v["free_os_memory"] != 2<<20 || len(v) != 2 {
		t.Errorf("go.memory.released by source: %v", v)
	}
	if v := sumByAttr[int64](t, got["process.memory.usage"], "process.pid"); v["100"] != 50<<20 || len(v) != 1 {
		t.Errorf("process.memory.usage by pid: %v", v)
	}
	if v := sumByAttr[int64](t, got["process.context_switches"], "process.context_switch.type"); v["voluntary"] != 70 || v["involuntary"] != 7 {
		t.Errorf("process.context_switches by type: %v", v)
	}
	if v := sumByAttr[float64](t, got["go.runtime.lock.wait.time"], "go.runtime.lock"); v["mheap"] != 0.125 || v["other"] != 0.5 {
		t.Errorf("go.runtime.lock.wait.time by lock: %v", v)
	}
	if p := histByAttr(t, got["go.thread.runqueue.duration"], "process.pid")["100"]; p.Count != 3 || p.BucketCounts[1] != 1 || p.BucketCounts[2] != 2 || len(p.BucketCounts) != log2Buckets {
		t.Errorf("run-queue histogram: count %d buckets %v", p.Count, p.BucketCounts)
	}
	if p := histByAttr(t, got["go.schedule.duration"], "process.pid")["100"]; p.Count != 15 || p.BucketCounts[6] != 1 || p.BucketCounts[7] != 2 ||
		p.BucketCounts[8] != 7 || p.BucketCounts[9] != 5 {
		t.Errorf("goroutine scheduling histogram: count %d buckets %v", p.Count, p.BucketCounts)
	}
	if p := histByAttr(t, got["go.runtime.lock.wait.duration"], "go.runtime.lock")["mheap"]; p.Count != 9 || p.BucketCounts[log2Buckets-1] != 8 {
		t.Errorf("mheap lock wait histogram: count %d buckets %v", p.Count, p.BucketCounts)
	}
	// Identity attributes of a per-process series.
	s := got["go.memory.gc.cycles"].Data.(metricdata.Sum[int64])
	for _, dp := range s.DataPoints {
		if attrOf(dp.Attributes, "process.pid") != "100" {
			continue
		}
		for k, want := range map[string]string{"process.executable.name": "appapi", "process.executable.path": "/usr/bin/appapi",
			"process.runtime.name": "go", "process.runtime.version": "go1.26.8", "service.name": "api", "container.id": a.ContainerID} {
			if got := attrOf(dp.Attributes, k); got != want {
				t.Errorf("pid 100 %s = %q, want %q", k, got, want)
			}
		}
	}
}

func pidsOf(t *testing.T, m metricdata.Metrics) []string {
	t.Helper()
	var out []string
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, dp := range d.DataPoints {
			out = append(out, attrOf(dp.Attributes, "process.pid"))
		}
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			out = append(out, attrOf(dp.Attributes, "process.pid"))
		}
	}
	slices.SortFunc(out, func(a, b string) int { return cmp.Compare(len(a), len(b))*2 + cmp.Compare(a, b) })
	return out
}

// A process the aggregator forgot is no longer exported, histograms
// included; a new process on the same PID starts new series.
func TestForgottenProcess(t *testing.T) {
	src := &fakeSource{}
	a, b := proc(1, "a", 5), proc(2, "b", 5)
	src.set(a, b)
	e, _ := New(Config{}, src, nil)
	c := newCollector(t, e)
	e.ObserveCycle(a, cycle("heap"))
	e.ObserveCycle(b, cycle("heap"))
	got := c.collect(t)
	if p := pidsOf(t, got["go.memory.gc.pause.duration"]); len(p) != 2 {
		t.Fatalf("pause series for %v", p)
	}
	src.set(b)
	time.Sleep(cacheFor)
	got = c.collect(t)
	for _, name := range []string{"go.memory.gc.pause.duration", "go.memory.gc.cycles", "go.gc.cycles"} {
		if p := pidsOf(t, got[name]); !reflect.DeepEqual(p, []string{"2"}) {
			t.Errorf("%s: series for pids %v, want only 2", name, p)
		}
	}
	// PID 2 reused by a new process: its histogram starts over.
	b2 := proc(2, "b", 1)
	b2.FirstSeen = b.FirstSeen.Add(time.Minute)
	src.set(b2)
	e.ObserveCycle(b2, cycle("heap"))
	time.Sleep(cacheFor)
	got = c.collect(t)
	if p := histByAttr(t, got["go.memory.gc.pause.duration"], "process.pid")["2"]; p.Count != 2 {
		t.Errorf("reused pid: %d pauses, want 2", p.Count)
	}
	if len(e.st.pids) != 1 {
		t.Errorf("%d process states kept, want 1", len(e.st.pids))
	}
}

// PerService: one series per service.name, whose counters do not go down
// when one of its processes is forgotten.
func TestPerService(t *testing.T) {
	src := &fakeSource{}
	a1, a2, w := proc(1, "api", 10), proc(2, "api", 20), proc(3, "worker", 5)
	src.set(a1, a2, w)
	e, _ := New(Config{PerService: true, MaxProcesses: 10}, src, nil)
	c := newCollector(t, e)
	e.ObserveCycle(a1, cycle("heap"))
	e.ObserveCycle(a2, cycle("heap"))
	got := c.collect(t)
	cyc := sumByAttr[int64](t, got["go.memory.gc.cycles"], "service.name")
	if !reflect.DeepEqual(cyc, map[string]int64{"api": 30, "worker": 5}) {
		t.Errorf("cycles per service: %v", cyc)
	}
	if p := pidsOf(t, got["go.memory.gc.cycles"]); p[0] != "" {
		t.Errorf("per-service series carry process.pid %v", p)
	}
	if h := histByAttr(t, got["go.memory.gc.pause.duration"], "service.name")["api"]; h.Count != 4 {
		t.Errorf("api pauses %d, want 4", h.Count)
	}
	// api pid 1 is forgotten, pid 2 runs on.
	a2.GCCycles = 25
	src.set(a2, w)
	time.Sleep(cacheFor)
	got = c.collect(t)
	cyc = sumByAttr[int64](t, got["go.memory.gc.cycles"], "service.name")
	if cyc["api"] != 35 {
		t.Errorf("api cycles after a process was forgotten: %d, want 35 (10 retired + 25)", cyc["api"])
	}
	if h := histByAttr(t, got["go.memory.gc.pause.duration"], "service.name")["api"]; h.Count != 4 {
		t.Errorf("api pauses after a process was forgotten: %d, want 4", h.Count)
	}
	// The service with no process left disappears.
	src.set(w)
	time.Sleep(cacheFor)
	got = c.collect(t)
	if cyc = sumByAttr[int64](t, got["go.memory.gc.cycles"], "service.name"); !reflect.DeepEqual(cyc, map[string]int64{"worker": 5}) {
		t.Errorf("cycles per service: %v", cyc)
	}
}

// MaxProcesses: processes over the cap are left out and counted once; the
// ones exported stay exported.
func TestMaxProcesses(t *testing.T) {
	src := &fakeSource{}
	src.set(proc(5, "a", 1), proc(6, "b", 1), proc(7, "c", 1))
	e, _ := New(Config{MaxProcesses: 2}, src, nil)
	c := newCollector(t, e)
	got := c.collect(t)
	if p := pidsOf(t, got["go.memory.gc.cycles"]); !reflect.DeepEqual(p, []string{"5", "6"}) {
		t.Errorf("exported %v, want 5 and 6", p)
	}
	check := func(series, dropped int64) {
		t.Helper()
		if v := sumByAttr[int64](t, got["gopulse.export.series.exported"], ""); v[""] != series {
			t.Errorf("series %v, want %d", v, series)
		}
		if v := sumByAttr[int64](t, got["gopulse.export.series.dropped"], ""); v[""] != dropped {
			t.Errorf("dropped %v, want %d", v, dropped)
		}
	}
	check(2, 1)
	// A lower PID arrives: the exported ones stay, it is dropped.
	src.set(proc(1, "z", 1), proc(5, "a", 1), proc(6, "b", 1), proc(7, "c", 1))
	time.Sleep(cacheFor)
	got = c.collect(t)
	if p := pidsOf(t, got["go.memory.gc.cycles"]); !reflect.DeepEqual(p, []string{"5", "6"}) {
		t.Errorf("exported %v, want 5 and 6 still", p)
	}
	check(2, 2)
	// 5 is forgotten: room for one more.
	src.set(proc(1, "z", 1), proc(6, "b", 1), proc(7, "c", 1))
	time.Sleep(cacheFor)
	got = c.collect(t)
	if p := pidsOf(t, got["go.memory.gc.cycles"]); !reflect.DeepEqual(p, []string{"1", "6"}) {
		t.Errorf("exported %v, want 1 and 6", p)
	}
	check(2, 2)
	// The cap applies to services in per-service mode.
	if err := e.Reconfigure(Config{PerService: true, MaxProcesses: 1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(cacheFor)
	got = c.collect(t)
	if v := sumByAttr[int64](t, got["go.memory.gc.cycles"], "service.name"); len(v) != 1 || v["b"] != 1 {
		t.Errorf("per-service with cap 1: %v", v)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func scrape(t *testing.T, addr, accept string) (string, string) {
	t.Helper()
	var body []byte
	var ctype string
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			ctype = resp.Header.Get("Content-Type")
			if resp.StatusCode == 200 {
				return string(body), ctype
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrape %s: %v %s", addr, err, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The Prometheus endpoint names metrics as the OpenTelemetry Prometheus
// exporter does, serves OpenMetrics on request, and moves on Reconfigure
// without losing counts.
func TestPrometheusEndpoint(t *testing.T) {
	src := &fakeSource{status: api.Status{Version: "test", Families: []api.FamilyStatus{{Name: "gc", Events: 3}}}}
	a := proc(42, "checkout", 7)
	src.set(a)
	addr := freePort(t)
	e, err := New(Config{PrometheusListen: addr, MaxProcesses: 10, HostName: "host-1"}, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	e.ObserveCycle(a, cycle("heap"))
	body, ctype := scrape(t, addr, "")
	if !strings.HasPrefix(ctype, "text/plain") {
		t.Errorf("content type %q", ctype)
	}
	for _, want := range []string{
		`go_memory_gc_cycles_total{`,
		`process_pid="42"`,
		`service_name="checkout"`,
		`go_memory_gc_pause_duration_seconds_bucket{`,
		`go_gc_pause_time_seconds_total{`,
		`go_gc_phase_duration_seconds_count{`,
		`go_gc_cycles_total{go_gc_trigger="heap"`,
		`gopulse_probe_lost_events_total`,
		`target_info{`,
		`host_name="host-1"`,
		`service_name="gopulsed"`,
		`# TYPE go_memory_gc_pause_duration_seconds histogram`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", body)
	}
	om, ctype := scrape(t, addr, "application/openmetrics-text; version=1.0.0")
	if !strings.HasPrefix(ctype, "application/openmetrics-text") || !strings.HasSuffix(strings.TrimSpace(om), "# EOF") {
		t.Errorf("OpenMetrics: content type %q", ctype)
	}
	// Move the endpoint: the counts go on.
	addr2 := freePort(t)
	if err := e.Reconfigure(Config{PrometheusListen: addr2, MaxProcesses: 10, HostName: "host-1"}); err != nil {
		t.Fatal(err)
	}
	e.ObserveCycle(a, cycle("heap"))
	body, _ = scrape(t, addr2, "")
	if !strings.Contains(body, `go_gc_cycles_total{go_gc_trigger="heap"`) || !strings.Contains(body, `} 2`) {
		t.Errorf("after Reconfigure:\n%s", body)
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Errorf("old address still served")
	}
}

// A web configuration that does not load leaves the endpoint closed, never
// open without the protection asked for; a good one (here basic auth
// alone) is applied by Reconfigure, as on SIGHUP.
func TestPrometheusWebConfigFailsClosed(t *testing.T) {
	src := &fakeSource{status: api.Status{Version: "test"}}
	src.set(proc(42, "checkout", 7))
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(bad, []byte("basic_auth_users: [not, a, map]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	cfg := Config{PrometheusListen: addr, PrometheusWebConfig: bad, MaxProcesses: 10, HostName: "host-1"}
	e, err := New(cfg, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Fatalf("bad web config: endpoint served (%s)", resp.Status)
	}
	good := filepath.Join(dir, "good.yml")
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, []byte("basic_auth_users:\n  u: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.PrometheusWebConfig = good
	if err := e.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	var resp *http.Response
	for i := 0; i < 50; i++ {
		if resp, err = http.Get("http://" + addr + "/metrics"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no credentials: %s, want 401", resp.Status)
	}
}
