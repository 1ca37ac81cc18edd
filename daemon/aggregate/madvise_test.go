package aggregate

import (
	"os"
	"testing"
	"time"

	"github.com/gopulse/gopulse/probes/event"
)

// The RSS beside the madvise figures is read from the configured procfs
// (--proc), after the lock, for running processes only.
func TestRSSFromConfiguredProc(t *testing.T) {
	pid := os.Getpid()
	for _, c := range []struct {
		name    string
		root    string
		exited  bool
		wantRSS bool
	}{
		{"proc", "/proc", false, true},
		{"another root", t.TempDir(), false, false},
		{"exited", "/proc", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := &fakeClock{now: boot.Add(time.Hour)}
			a := New(Config{ProcRoot: c.root}, clk)
			a.Register(Meta{PID: pid, Exe: "self"})
			a.Madvise(&event.Madvise{Pid: uint32(pid), Advice: event.AdvDontNeed, Len: 4096, Calls: 1, Bytes: 4096, Source: event.SourceForced})
			if c.exited {
				a.Exited(pid)
			}
			ps := a.Processes()
			h, err := a.GCHistory(pid, 0)
			if err != nil || len(ps) != 1 || ps[0].Madvise == nil || h.Process.Madvise == nil {
				t.Fatalf("processes %+v, history %+v, %v", ps, h, err)
			}
			for _, rss := range []uint64{ps[0].Madvise.RSSBytes, h.Process.Madvise.RSSBytes} {
				if (rss > 0) != c.wantRSS {
					t.Errorf("RSS %d, want > 0: %v", rss, c.wantRSS)
				}
			}
			if got := ps[0].Madvise.ReleasedBytes; got != 4096 {
				t.Errorf("released %d, want 4096", got)
			}
		})
	}
}
