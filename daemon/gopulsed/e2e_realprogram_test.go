package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/testenv"
)

// A real program no one here wrote — Debian's prometheus server, built by
// Debian with its own Go — started after the daemon: gc_cycles is its own
// go_gc_duration_seconds_count (read before and after the daemon's figures,
// at a moment it ran no cycle).
func TestRealProgramEqualsItsOwnMetrics(t *testing.T) {
	testenv.RequireRoot(t)
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Unavailable(t, "no prometheus binary (Debian package prometheus): %v", err)
	}
	d := e2etest.StartDaemon(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1h\nscrape_configs: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	pid := cmd.Process.Pid

	own := func() map[string]float64 {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		out := map[string]float64{}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			name, val, ok := strings.Cut(sc.Text(), " ")
			if !ok || strings.HasPrefix(name, "#") {
				continue
			}
			if v, err := strconv.ParseFloat(val, 64); err == nil {
				out[name] = v
			}
		}
		return out
	}
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("last: %s", last)
		}
	}()
	e2etest.WaitFor(t, 60*time.Second, "the daemon's figures to equal prometheus' own", func() bool {
		m1 := own()
		time.Sleep(1200 * time.Millisecond) // one poll of the books
		p, ok := d.Process(t, pid)
		m2 := own()
		if m1 == nil || m2 == nil || !ok || p.Runtime == nil {
			last = fmt.Sprintf("not yet: metrics %v, listed %v, runtime error %q", m1 != nil, ok, p.RuntimeError)
			return false
		}
		n1, n2 := m1["go_gc_duration_seconds_count"], m2["go_gc_duration_seconds_count"]
		last = fmt.Sprintf("gc_cycles %d, prometheus' own go_gc_duration_seconds_count %v then %v; goroutines %d vs %v",
			p.GCCycles, n1, n2, p.Goroutines, m2["go_goroutines"])
		// (Its go_goroutines counts the goroutines serving the scrape
		// itself: logged, not compared.)
		return n1 == n2 && float64(p.GCCycles) == n2
	})
	t.Logf("prometheus pid %d (%s): %s", pid, mustGoVersion(t, d, pid), last)
}

func mustGoVersion(t *testing.T, d *e2etest.Daemon, pid int) string {
	p, _ := d.Process(t, pid)
	return p.GoVersion
}
