package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/daemon/api/apitest"
)

// followSource is an apitest.Source that streams the cycles the test
// sends on feed.
type followSource struct {
	*apitest.Source
	history []api.GCCycle
	feed    chan api.GCCycle
	mu      sync.Mutex
	stopped bool
	asked   int
}

func (s *followSource) FollowGC(pid, last int) ([]api.GCCycle, <-chan api.GCCycle, func(), error) {
	if pid != 1234 {
		return nil, nil, nil, fmt.Errorf("pid %d: %w", pid, api.ErrNoProcess)
	}
	s.mu.Lock()
	s.asked = last
	s.mu.Unlock()
	h := s.history
	if last < len(h) {
		h = h[len(h)-last:]
	}
	return h, s.feed, func() { s.mu.Lock(); s.stopped = true; s.mu.Unlock() }, nil
}

// The follow route streams the history then each cycle as it is sent,
// flushed at once (the client reads a cycle before the next exists), and
// ends when the source closes the stream.
func TestFollowRoute(t *testing.T) {
	src := &followSource{Source: apitest.NewSource(), feed: make(chan api.GCCycle)}
	for i := 1; i <= 5; i++ {
		src.history = append(src.history, api.GCCycle{Seq: uint64(i), Trigger: api.TriggerHeap})
	}
	path := startServer(t, src, nil, nil)
	c := api.NewClient(path)

	got := make(chan api.GCCycle)
	done := make(chan error, 1)
	go func() {
		done <- c.FollowGC(context.Background(), 1234, 2, func(cy api.GCCycle) error { got <- cy; return nil })
	}()
	for _, want := range []uint64{4, 5} {
		if cy := <-got; cy.Seq != want {
			t.Fatalf("history: seq %d, want %d", cy.Seq, want)
		}
	}
	for seq := uint64(6); seq <= 8; seq++ {
		src.feed <- api.GCCycle{Seq: seq}
		select {
		case cy := <-got:
			if cy.Seq != seq {
				t.Fatalf("streamed seq %d, want %d", cy.Seq, seq)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("cycle %d not delivered before the next one: not flushed", seq)
		}
	}
	close(src.feed)
	if err := <-done; err != nil {
		t.Errorf("FollowGC after the stream ended: %v", err)
	}
	src.mu.Lock()
	if !src.stopped || src.asked != 2 {
		t.Errorf("stop called %v, last asked %d", src.stopped, src.asked)
	}
	src.mu.Unlock()

	var se *api.StatusError
	err := c.FollowGC(context.Background(), 99, 0, func(api.GCCycle) error { return nil })
	if !errors.Is(err, api.ErrNoProcess) || !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Errorf("unknown pid: %v", err)
	}
	resp, err := httpClient(path).Get("http://x/v1/gc/abc/follow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad pid: %d", resp.StatusCode)
	}
}

// A follow ends when the client cancels; a source without follows
// answers 501.
func TestFollowCancel(t *testing.T) {
	src := &followSource{Source: apitest.NewSource(), feed: make(chan api.GCCycle)}
	path := startServer(t, src, nil, nil)
	c := api.NewClient(path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.FollowGC(ctx, 1234, 0, func(api.GCCycle) error { return nil }) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled follow: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not end the follow")
	}
	// No follow source: 501.
	plain := startServer(t, apitest.NewSource(), nil, nil)
	resp, err := httpClient(plain).Get("http://x/v1/gc/1/follow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("source without follow: %d", resp.StatusCode)
	}
}

// The server's shutdown ends the follows in flight at once rather than
// waiting for them until its timeout.
func TestFollowShutdown(t *testing.T) {
	src := &followSource{Source: apitest.NewSource(), feed: make(chan api.GCCycle)}
	path := shortDir(t) + "/s.sock"
	ln, err := api.Listen(path, api.DefaultSocketMode)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- api.NewServer(src, nil).Serve(ctx, ln) }()
	c := api.NewClient(path)
	first := make(chan struct{})
	done := make(chan error, 1)
	src.history = []api.GCCycle{{Seq: 1}}
	go func() {
		done <- c.FollowGC(context.Background(), 1234, 1, func(api.GCCycle) error { close(first); return nil })
	}()
	<-first // the follow is open
	start := time.Now()
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("shutdown took %v with a follow open", el)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the follow did not end at shutdown")
	}
}
