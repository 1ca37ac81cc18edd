package aggregate

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/probes/event"
)

// The madvise family's per-process state.

type madvState struct {
	calls, bytes [event.AdviceSlots]uint64
	bySource     map[string]uint64
	released     counterRing
}

// Madvise records one event of the madvise family.
func (a *Aggregator) Madvise(ev *event.Madvise) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.procs[int(ev.Pid)]
	if !ok {
		return
	}
	m := p.ext.madv
	if m == nil {
		m = &madvState{bySource: map[string]uint64{}}
		p.ext.madv = m
	}
	if ev.Ret != 0 {
		return
	}
	slot := event.AdviceSlot(ev.Advice)
	// The kernel side's running totals: exact even when events were lost.
	m.calls[slot] = max(m.calls[slot], ev.Calls)
	m.bytes[slot] = max(m.bytes[slot], ev.Bytes)
	if event.Releases(ev.Advice) {
		if len(m.bySource) < 16 {
			m.bySource[ev.Source] += ev.Len
		}
		m.released.add(a.clock.Now(), m.releasedTotal())
	}
}

func (m *madvState) releasedTotal() uint64 {
	var n uint64
	for slot, b := range m.bytes {
		if event.Releases(int32(slot)) {
			n += b
		}
	}
	return n
}

func (m *madvState) stats(exited bool, now time.Time) *api.MadviseStats {
	s := &api.MadviseStats{ReleasedBySource: map[string]uint64{}}
	for slot := range m.calls {
		if m.calls[slot] > 0 {
			s.Advice = append(s.Advice, api.AdviceCount{Advice: event.AdviceName(int32(slot)), Calls: m.calls[slot], Bytes: m.bytes[slot]})
		}
	}
	for k, v := range m.bySource {
		s.ReleasedBySource[k] = v
	}
	s.ReleasedBytes = m.releasedTotal()
	if !exited {
		s.ReleasedBytesPerSecond = m.released.rate(now)
	}
	return s
}

// rss reads a process's resident set from procfs. It is file I/O: callers
// hold no lock (a /v1/ps of N processes reads N files).
func (a *Aggregator) rss(pid int) uint64 {
	b, err := os.ReadFile(filepath.Join(a.cfg.ProcRoot, strconv.Itoa(pid), "statm"))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// withIO completes snapshots taken under a.mu with what needs file I/O,
// after a.mu is released: the RSS beside the madvise figures of running
// processes.
func (a *Aggregator) withIO(infos []api.Process) {
	for i := range infos {
		if m := infos[i].Madvise; m != nil && infos[i].Exited == nil {
			m.RSSBytes = a.rss(infos[i].PID)
		}
	}
}
