package exporters

// End-to-end tests: the real gopulsed traces real Go processes; a real
// Prometheus scrapes it and a real OpenTelemetry Collector receives its
// pushes. They need root (BPF), the prometheus binary and the Go module
// proxy (to build the collector once); in CI a missing piece fails them.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/testenv"
)

// Prometheus scrapes the daemon; the fixture's GC cycle count, as the
// Prometheus HTTP API answers it, is the runtime's own NumGC, with the
// process's pid and service name as labels.
func TestE2EPrometheusScrape(t *testing.T) {
	testenv.RequireRoot(t)
	bin := gcloadBinary(t)
	listen := freePort(t)
	d := e2etest.StartDaemon(t, "--prometheus-listen", listen)
	prom := startPrometheus(t, listen)
	e2etest.WarmUp(t, d, bin)

	const service = "gopulse-e2e-checkout"
	f := e2etest.RunFixture(t, bin, []string{"OTEL_SERVICE_NAME=" + service}, workload...)
	if f.Final.NumGC < 5 {
		t.Fatalf("fixture ran only %d GC cycles", f.Final.NumGC)
	}
	q := fmt.Sprintf(`go_memory_gc_cycles_total{process_pid="%d"}`, f.PID)
	var got []promSample
	e2etest.WaitFor(t, 30*time.Second, q+" in Prometheus", func() bool {
		got = prom.query(t, q)
		return len(got) == 1 && uint64(got[0].value()) >= f.Final.NumGC
	})
	s := got[0]
	if uint64(s.value()) != f.Final.NumGC {
		t.Errorf("%s = %v, runtime NumGC = %d", q, s.value(), f.Final.NumGC)
	}
	for k, want := range map[string]string{
		"service_name": service, "process_runtime_name": "go", "process_executable_path": bin,
		"process_executable_name": filepath.Base(bin), "job": "gopulsed",
	} {
		if s.Metric[k] != want {
			t.Errorf("label %s = %q, want %q (labels %v)", k, s.Metric[k], want, s.Metric)
		}
	}
	if !strings.HasPrefix(s.Metric["process_runtime_version"], "go1.26") {
		t.Errorf("process_runtime_version = %q", s.Metric["process_runtime_version"])
	}
	// The pause histogram: two pauses per cycle, every cycle seen (the
	// process was traced from its start).
	// These are built from per-cycle events: exact unless the host's
	// load made the daemon lose some (then only bounded).
	lost := prom.query(t, `gopulse_probe_lost_events_total{gopulse_probe_family="gc"}`)
	exact := len(lost) == 1 && lost[0].value() == 0
	hq := fmt.Sprintf(`go_memory_gc_pause_duration_seconds_count{process_pid="%d"}`, f.PID)
	if h := prom.query(t, hq); len(h) != 1 || uint64(h[0].value()) > 2*f.Final.NumGC || exact && uint64(h[0].value()) != 2*f.Final.NumGC {
		t.Errorf("%s = %v, want %d (lost events: %v)", hq, h, 2*f.Final.NumGC, lost)
	}
	fq := fmt.Sprintf(`go_gc_cycles_total{process_pid="%d",go_gc_trigger="forced"}`, f.PID)
	if fs := prom.query(t, fq); len(fs) != 1 || uint64(fs[0].value()) > f.Final.Forced || exact && uint64(fs[0].value()) != f.Final.Forced {
		t.Errorf("%s = %v, runtime NumForcedGC = %d (lost events: %v)", fq, fs, f.Final.Forced, lost)
	}
	if up := prom.query(t, `up{job="gopulsed"}`); len(up) != 1 || up[0].value() != 1 {
		t.Errorf("up = %v", up)
	}
	if tr := prom.query(t, `gopulse_processes_traced`); len(tr) != 1 || tr[0].value() < 1 {
		t.Errorf("gopulse_processes_traced = %v", tr)
	}
	t.Logf("pid %d: Prometheus says %v cycles, runtime NumGC %d", f.PID, s.value(), f.Final.NumGC)
}

// The OTLP push over gRPC and over HTTP reaches a real collector with the
// right names, units, resource and values.
func TestE2EOTLPCollector(t *testing.T) {
	testenv.RequireRoot(t)
	bin := gcloadBinary(t)
	col := startCollector(t)
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTP} {
		t.Run(strings.ReplaceAll(proto, "/", "_"), func(t *testing.T) {
			endpoint := "http://" + col.grpc
			if proto == ProtocolHTTP {
				endpoint = "http://" + col.http
			}
			d := e2etest.StartDaemon(t, "--prometheus-listen", "", "--otlp-endpoint", endpoint, "--otlp-protocol", proto, "--export-interval", "1s")
			e2etest.WarmUp(t, d, bin)
			service := "gopulse-e2e-" + strings.ReplaceAll(proto, "/", "-")
			f := e2etest.RunFixture(t, bin, []string{"OTEL_SERVICE_NAME=" + service}, workload...)
			want := map[string]string{"process.pid": strconv.Itoa(f.PID)}
			var p point
			e2etest.WaitFor(t, 30*time.Second, "the collector to print the fixture's final cycle count", func() bool {
				var ok bool
				p, ok = latest(col.points(), "go.memory.gc.cycles", want)
				return ok && p.value == strconv.FormatUint(f.Final.NumGC, 10)
			})
			if p.unit != "{gc_cycle}" || p.dtype != "Sum" {
				t.Errorf("go.memory.gc.cycles: unit %q type %q", p.unit, p.dtype)
			}
			for k, v := range map[string]string{"service.name": service, "process.runtime.name": "go",
				"process.executable.path": bin, "process.executable.name": filepath.Base(bin)} {
				if p.attrs[k] != v {
					t.Errorf("data point %s = %q, want %q", k, p.attrs[k], v)
				}
			}
			host, _ := os.Hostname()
			for k, v := range map[string]string{"service.name": "gopulsed", "host.name": host, "telemetry.sdk.language": "go"} {
				if p.resource[k] != v {
					t.Errorf("resource %s = %q, want %q (resource %v)", k, p.resource[k], v, p.resource)
				}
			}
			h, ok := latest(col.points(), "go.memory.gc.pause.duration", want)
			if !ok || h.unit != "s" || h.dtype != "Histogram" || h.value != strconv.FormatUint(2*f.Final.NumGC, 10) {
				t.Errorf("go.memory.gc.pause.duration: %+v, want a histogram in s of %d pauses", h, 2*f.Final.NumGC)
			}
			if pt, ok := latest(col.points(), "go.gc.pause.time", want); !ok || pt.unit != "s" {
				t.Errorf("go.gc.pause.time: %+v", pt)
			}
			if ev, ok := latest(col.points(), "gopulse.probe.events", map[string]string{"gopulse.probe.family": "gc"}); !ok || ev.value == "0" {
				t.Errorf("gopulse.probe.events{gc}: %+v", ev)
			}
		})
	}
}

// A collector down for 30 s: the daemon keeps tracing, its memory stays
// bounded, and the pushes resume when the collector is back.
func TestE2ECollectorOutage(t *testing.T) {
	testenv.RequireRoot(t)
	bin := gcloadBinary(t)
	col := startCollector(t)
	d := e2etest.StartDaemon(t, "--prometheus-listen", "", "--otlp-endpoint", "http://"+col.grpc, "--otlp-protocol", "grpc",
		"--export-interval", "1s")
	e2etest.WarmUp(t, d, bin)
	// A long-lived process that keeps collecting.
	f := e2etest.StartFixture(t, bin, []string{"OTEL_SERVICE_NAME=gopulse-e2e-outage"}, "-hold", "-gcloop", "200000")
	want := map[string]string{"process.pid": strconv.Itoa(f.PID)}
	e2etest.WaitFor(t, 30*time.Second, "the first push", func() bool {
		_, ok := latest(col.points(), "go.memory.gc.cycles", want)
		return ok
	})
	rssBefore := d.RSS(t)
	col.stop()
	outageStart := time.Now()
	var last uint64
	var rssMax int64
	for time.Since(outageStart) < 30*time.Second {
		p, ok := d.Process(t, f.PID) // the socket API answers
		if !ok {
			t.Fatalf("pid %d no longer listed during the outage", f.PID)
		}
		if p.GCCycles < last {
			t.Fatalf("cycle count went down: %d after %d", p.GCCycles, last)
		}
		last = p.GCCycles
		rssMax = max(rssMax, d.RSS(t))
		// Short-lived processes too, so that there is work to trace.
		e2etest.RunFixture(t, bin, nil, "-gcloop", "3")
		time.Sleep(500 * time.Millisecond)
	}
	p1, _ := d.Process(t, f.PID)
	time.Sleep(time.Second)
	p2, _ := d.Process(t, f.PID)
	if p2.GCCycles <= p1.GCCycles {
		t.Errorf("GC count not growing at the end of the outage: %d then %d", p1.GCCycles, p2.GCCycles)
	}
	t.Logf("RSS %d KiB before the outage, at most %d KiB during it; %d cycles traced", rssBefore>>10, rssMax>>10, p2.GCCycles)
	if rssMax > rssBefore+32<<20 {
		t.Errorf("RSS grew from %d KiB to %d KiB while the collector was down", rssBefore>>10, rssMax>>10)
	}
	col.start()
	restarted := time.Now()
	e2etest.WaitFor(t, 30*time.Second, "pushes to reach the restarted collector", func() bool {
		p, ok := latest(col.points(), "go.memory.gc.cycles", want)
		n, _ := strconv.ParseUint(p.value, 10, 64)
		return ok && n >= p2.GCCycles
	})
	t.Logf("exports resumed %v after the collector restarted", time.Since(restarted).Round(100*time.Millisecond))
	if e, ok := latest(col.points(), "gopulse.export.errors", map[string]string{"gopulse.exporter": "otlp"}); !ok || e.value == "0" {
		t.Errorf("gopulse.export.errors{otlp} after an outage: %+v", e)
	}
	f.Proceed()
}

// seriesOf counts the series of metric in a scrape whose executable is
// path.
func seriesOf(body, metric, path string) int {
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, metric+"{") && strings.Contains(line, `process_executable_path="`+path+`"`) {
			n++
		}
	}
	return n
}

func scrapeBody(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String()
}

// 200 short-lived Go processes: their series appear, and are gone after
// the grace period.
func TestE2EChurn(t *testing.T) {
	testenv.RequireRoot(t)
	src := gcloadBinary(t)
	// A copy of its own, so that no other test's processes are counted.
	bin := filepath.Join(t.TempDir(), "gcload-churn")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	listen := freePort(t)
	d := e2etest.StartDaemon(t, "--prometheus-listen", listen, "--forget-after", "2s")
	e2etest.WarmUp(t, d, bin)
	// The warm-up process is forgotten too.
	e2etest.WaitFor(t, 30*time.Second, "the warm-up series to go", func() bool {
		return seriesOf(scrapeBody(t, listen), "go_memory_gc_cycles_total", bin) == 0
	})
	baselineBody := scrapeBody(t, listen)
	baseline := strings.Count(baselineBody, "\ngo_memory_gc_cycles_total{")

	var peak, peakHist int
	var mu sync.Mutex
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			resp, err := http.Get("http://" + listen + "/metrics")
			if err != nil {
				continue
			}
			var sb strings.Builder
			buf := make([]byte, 64<<10)
			for {
				n, err := resp.Body.Read(buf)
				sb.Write(buf[:n])
				if err != nil {
					break
				}
			}
			resp.Body.Close()
			mu.Lock()
			peak = max(peak, seriesOf(sb.String(), "go_memory_gc_cycles_total", bin))
			peakHist = max(peakHist, seriesOf(sb.String(), "go_memory_gc_pause_duration_seconds_count", bin))
			mu.Unlock()
		}
	}()
	start := time.Now()
	const procs, parallel = 200, 8
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := 0; i < procs; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if out, err := exec.Command(bin, "-gcloop", "2").CombinedOutput(); err != nil {
				t.Errorf("short-lived process: %v\n%s", err, out)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d processes ran in %v", procs, time.Since(start).Round(10*time.Millisecond))
	time.Sleep(time.Second)
	close(stop)
	<-sampled
	if peak < 20 || peakHist < 20 {
		t.Errorf("at most %d cycle series and %d pause histograms of the short-lived processes seen at once; want them exported", peak, peakHist)
	}
	end := time.Now()
	e2etest.WaitFor(t, 30*time.Second, "the series count to return to the baseline", func() bool {
		body := scrapeBody(t, listen)
		return seriesOf(body, "go_memory_gc_cycles_total", bin) == 0 &&
			seriesOf(body, "go_memory_gc_pause_duration_seconds_count", bin) == 0 &&
			seriesOf(body, "go_gc_cycles_total", bin) == 0
	})
	// Beyond the baseline, only live processes may have series (other Go
	// processes on the host may have started meanwhile).
	body := scrapeBody(t, listen)
	n := strings.Count(body, "\ngo_memory_gc_cycles_total{")
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "go_memory_gc_cycles_total{") {
			continue
		}
		if m := regexp.MustCompile(`process_pid="(\d+)"`).FindStringSubmatch(line); m != nil {
			if _, err := os.Stat("/proc/" + m[1]); err != nil && !strings.Contains(baselineBody, `process_pid="`+m[1]+`"`) {
				t.Errorf("series of exited process %s still exported after the grace period: %s", m[1], line)
			}
		}
	}
	t.Logf("peak %d series (%d histograms) of the churned binary; none left %v after the last exit (%d series before, %d after)",
		peak, peakHist, time.Since(end).Round(100*time.Millisecond), baseline, n)
	// The daemon's own figures are right after the churn.
	st, err := d.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.ProcessesDropped != 0 {
		t.Errorf("processes dropped by --max-pids: %d", st.ProcessesDropped)
	}
}

// A local user names a Go program with terminal escapes and invalid UTF-8.
// One invalid attribute used to fail the whole OTLP batch (every process's
// export stopped); the name is cleaned where it enters, so the real
// collector receives the hostile process's points, with the cleaned name,
// and a bystander's points alongside.
func TestE2EOTLPCollectorHostileName(t *testing.T) {
	testenv.RequireRoot(t)
	bin := gcloadBinary(t)
	col := startCollector(t)
	d := e2etest.StartDaemon(t, "--prometheus-listen", "", "--otlp-endpoint", "http://"+col.grpc,
		"--otlp-protocol", ProtocolGRPC, "--export-interval", "1s")
	dir := t.TempDir()
	name := "ev\x1b[31mil\x07\xff\xfe\u009b"
	hostile := filepath.Join(dir, name)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hostile, data, 0o755); err != nil {
		t.Fatal(err)
	}
	e2etest.WarmUp(t, d, bin)
	// Its status line shows the cleaned name: wait for the process.
	bad := e2etest.StartFixture(t, hostile, nil, "-wait", "-gcloop", "3", "-hold")
	e2etest.WaitFor(t, 30*time.Second, "the hostile-named process to be traced", func() bool {
		_, ok := d.Process(t, bad.PID)
		return ok
	})
	bad.Proceed()
	bad.Expect("final")
	good := e2etest.StartFixture(t, bin, nil, "-gcloop", "4", "-hold")
	good.Expect("final")
	clean := filepath.Join(dir, `ev\x1b[31mil\x07`+"\uFFFD\uFFFD"+`\u009b`)
	for _, f := range []*e2etest.Fixture{bad, good} {
		want := map[string]string{"process.pid": strconv.Itoa(f.PID)}
		var p point
		e2etest.WaitFor(t, 30*time.Second, fmt.Sprintf("the collector to print pid %d's final cycle count", f.PID), func() bool {
			var ok bool
			p, ok = latest(col.points(), "go.memory.gc.cycles", want)
			return ok && p.value == strconv.FormatUint(f.Final.NumGC, 10)
		})
		if f == bad && unwrap(p.attrs["process.executable.path"]) != clean && p.attrs["process.executable.path"] != clean {
			t.Errorf("process.executable.path = %q, want %q", p.attrs["process.executable.path"], clean)
		}
	}
	bad.Proceed()
	good.Proceed()
}
