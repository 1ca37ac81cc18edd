package tracer

import (
	"fmt"
	"sync"
	"time"
)

// stallLimit is how long a ring buffer may hold unread records, with its
// reader making no progress, before the tracer calls itself unhealthy
// (and systemd's watchdog, fed only while healthy, restarts it).
const stallLimit = 10 * time.Second

type backlogger interface {
	Backlog() (pending int, consumed uint64)
}

// readerWatch notices a ring-buffer reader that stopped reading.
type readerWatch struct {
	name string
	src  backlogger

	mu       sync.Mutex
	consumed uint64
	since    time.Time // when the backlog without progress was first seen
}

func (w *readerWatch) check(now time.Time) error {
	pending, consumed := w.src.Backlog()
	w.mu.Lock()
	defer w.mu.Unlock()
	if pending == 0 || consumed != w.consumed {
		w.consumed, w.since = consumed, time.Time{}
		return nil
	}
	if w.since.IsZero() {
		w.since = now
		return nil
	}
	if stalled := now.Sub(w.since); stalled > stallLimit {
		return fmt.Errorf("%s reader stuck: %d bytes unread for %v", w.name, pending, stalled.Round(time.Second))
	}
	return nil
}

// Health reports whether the event loop and every ring-buffer reader make
// progress. Call it periodically (a watchdog does): stalls are measured
// between calls.
func (t *Tracer) Health() error {
	now := time.Now()
	if last := time.Unix(0, t.heartbeat.Load()); now.Sub(last) > stallLimit {
		return fmt.Errorf("event loop stuck: last turn %v ago", now.Sub(last).Round(time.Second))
	}
	if err := t.discWatch.check(now); err != nil {
		return err
	}
	for _, l := range t.families() {
		if err := l.watch.check(now); err != nil {
			return err
		}
	}
	return nil
}
