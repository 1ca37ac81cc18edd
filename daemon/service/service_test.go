package service

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", p)
	out := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			out <- string(buf[:n])
		}
	}()
	return out
}

// A failing health check stops the watchdog pings (so systemd restarts
// the daemon) and says why in the status; they resume when it recovers.
func TestWatchdogFollowsHealth(t *testing.T) {
	msgs := notifySocket(t)
	var healthy atomic.Bool
	healthy.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go Watchdog(ctx, NewNotifier(log), log, 20*time.Millisecond, func() error {
		if healthy.Load() {
			return nil
		}
		return errors.New("gc reader stuck: 4096 bytes unread for 11s")
	})
	count := func(d time.Duration) (pings int, status []string) {
		deadline := time.After(d)
		for {
			select {
			case m := <-msgs:
				if m == "WATCHDOG=1" {
					pings++
				} else if s, ok := strings.CutPrefix(m, "STATUS="); ok {
					status = append(status, s)
				}
			case <-deadline:
				return
			}
		}
	}
	if n, _ := count(200 * time.Millisecond); n < 5 {
		t.Fatalf("healthy: %d pings in 200ms at a 20ms interval", n)
	}
	healthy.Store(false)
	// At most one ping already in flight, then the status, then silence.
	var events []string
	deadline := time.After(300 * time.Millisecond)
collect:
	for {
		select {
		case m := <-msgs:
			events = append(events, m)
		case <-deadline:
			break collect
		}
	}
	i := 0
	for i < len(events) && events[i] == "WATCHDOG=1" {
		i++
	}
	if i > 1 || i == len(events) || !strings.Contains(events[i], "STATUS=unhealthy: gc reader stuck") || len(events) != i+1 {
		t.Errorf("unhealthy: messages %q, want the status saying why and no more pings", events)
	}
	healthy.Store(true)
	if n, _ := count(200 * time.Millisecond); n < 5 {
		t.Errorf("recovered: %d pings", n)
	}
}

func TestNotifierWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := NewNotifier(slog.New(slog.DiscardHandler))
	n.Ready("x") // no socket: nothing happens
	if WatchdogInterval() != 0 {
		t.Errorf("WatchdogInterval without WATCHDOG_USEC = %v", WatchdogInterval())
	}
	t.Setenv("WATCHDOG_USEC", "30000000")
	if got := WatchdogInterval(); got != 15*time.Second {
		t.Errorf("WatchdogInterval = %v, want half of WATCHDOG_USEC", got)
	}
}

type sent struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

func TestJournalHandler(t *testing.T) {
	var mu sync.Mutex
	var got []sent
	h := NewJournalHandler(slog.LevelDebug, "gopulsed", io.Discard)
	h.send = func(msg string, pri journal.Priority, vars map[string]string) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, sent{msg, pri, vars})
		return nil
	}
	log := slog.New(h).With("component", "api")
	log.Warn("api: refused a peer", "peer_uid", 65534, "path", "/v1/ps", slog.Group("req", "method", "GET"), "message", "x y")
	log.Debug("debug line")
	if len(got) != 2 {
		t.Fatalf("sent %d entries", len(got))
	}
	e := got[0]
	if e.msg != `api: refused a peer component=api peer_uid=65534 path=/v1/ps req.method=GET message="x y"` {
		t.Errorf("MESSAGE = %q", e.msg)
	}
	if e.pri != journal.PriWarning || got[1].pri != journal.PriDebug {
		t.Errorf("priorities %v %v", e.pri, got[1].pri)
	}
	for k, v := range map[string]string{
		"COMPONENT": "api", "PEER_UID": "65534", "PATH": "/v1/ps", "REQ_METHOD": "GET",
		"ATTR_MESSAGE": "x y", "SYSLOG_IDENTIFIER": "gopulsed", "SLOG_LEVEL": "WARN",
	} {
		if e.vars[k] != v {
			t.Errorf("field %s = %q, want %q (all: %v)", k, e.vars[k], v, e.vars)
		}
	}
	if !strings.HasSuffix(e.vars["CODE_FILE"], "service_test.go") || e.vars["CODE_LINE"] == "" {
		t.Errorf("CODE_FILE/CODE_LINE: %q %q", e.vars["CODE_FILE"], e.vars["CODE_LINE"])
	}
	// Levels below the handler's are dropped.
	h2 := NewJournalHandler(slog.LevelInfo, "gopulsed", io.Discard)
	if h2.Enabled(context.Background(), slog.LevelDebug) {
		t.Errorf("debug enabled at info level")
	}
	for in, want := range map[string]string{"peer-uid": "PEER_UID", "_x": "X", "9lives": "F9LIVES", "é": "F"} {
		if got := fieldName(in); got != want {
			t.Errorf("fieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

// A failed send falls back to text on stderr.
func TestJournalFallback(t *testing.T) {
	var b strings.Builder
	h := NewJournalHandler(slog.LevelInfo, "gopulsed", &b)
	h.send = func(string, journal.Priority, map[string]string) error { return errors.New("no journal") }
	slog.New(h).Info("hello", "k", "v")
	if !strings.Contains(b.String(), "INFO hello k=v (journal: no journal)") {
		t.Errorf("fallback wrote %q", b.String())
	}
}
