package hostile_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
)

// nobody is the unprivileged UID (and GID) the attacker's processes run
// as; quietUID the quiet processes' (not root: on a shared host, root runs
// every build and test, whose records share root's bucket).
const (
	nobody   = 65534
	quietUID = 4242
)

// runtime.GC() loops run by one user next to quiet processes of another,
// while the daemon's readers are stalled (SIGSTOP, as a daemon starved of
// CPU on a saturated host): the quiet ones lose nothing — every cycle's
// record is there, not only the totals read from the runtime's books, and
// every madvise event — while the loops' records over their UID's share
// of the ring are dropped and counted for that UID (bpf/share.h). Without
// the shares the loops fill the ring during the stall and every process
// loses records.
func TestGCLoopNextToQuietProcess(t *testing.T) {
	// --max-pids 64: the smallest GC ring (256 KiB: 246 records; shares
	// of 30 at once and 7/s, enforced from 30 records waiting), so the
	// loops are over their share even on a loaded host (measured down to
	// 77 cycles/s for two loops).
	d := e2etest.StartDaemon(t, "--max-pids", "64", "--history", "1000")
	dir := fairWorldDir(t)
	gcload := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	loopBin := fairCopy(t, gcload, filepath.Join(dir, "gcloop"))
	quietBin := fairCopy(t, gcload, filepath.Join(dir, "gcquiet"))
	memBin := fairCopy(t, fixturebuild.Build(t, "memfree", fixturebuild.Shapes()[0]), filepath.Join(dir, "memquiet"))
	// Every binary probed before its measured process starts: each is
	// traced from its first instruction.
	e2etest.WarmUp(t, d, loopBin)
	e2etest.WarmUp(t, d, quietBin)
	w := e2etest.StartFixture(t, memBin, nil, "-wait", "-hold", "-mb", "1")
	d.WaitBinary(t, memBin)
	w.Proceed()
	w.Expect("freed")
	w.Finish()

	// Four loops: the scheduler shares the CPUs per task, not per user, so
	// on a loaded host more loops get the attacker more cycles per second.
	var loops []*exec.Cmd
	for range 4 {
		cmd := exec.Command(loopBin, "-gcloop", "1000000000")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		loops = append(loops, cmd)
	}
	e2etest.WaitFor(t, 30*time.Second, "the loops' records", func() bool {
		u, _ := fairShare(t, d, "gc", nobody)
		return u.Sent > 0
	})
	loopStart := fairLoopCycles(t, d, loops)
	t0 := time.Now()

	// The quiet processes, as a third user: 20 GC cycles at once (within
	// a share), and 32 MiB given back to the OS (a few hundred madvise
	// calls at once, within a share).
	quiet := &syscall.Credential{Uid: quietUID, Gid: quietUID}
	q := e2etest.StartFixtureAs(t, quiet, quietBin, nil, "-wait", "-hold", "-gcloop", "20")
	m := e2etest.StartFixtureAs(t, quiet, memBin, nil, "-wait", "-hold", "-mb", "32")
	e2etest.WaitFor(t, 10*time.Second, "the quiet processes to be traced", func() bool {
		_, ok1 := d.Process(t, q.PID)
		_, ok2 := d.Process(t, m.PID)
		return ok1 && ok2
	})
	// The readers stall while the quiet processes work: the ring fills
	// with whatever the kernel side lets in.
	if err := d.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stalled := time.Now()
	// Long enough for the loops alone to fill the ring (246 records at
	// 80+ cycles/s) were their share not enforced.
	time.Sleep(3 * time.Second)
	q.Proceed()
	m.Proceed()
	q.Expect("final")
	m.Expect("freed")
	time.Sleep(time.Second)
	if err := d.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stall := time.Since(stalled)

	// Every cycle of the quiet process has its own record. Records lost
	// would show as cycles filled in from the runtime's pause rings
	// (before_probes) a poll period after the books counted them.
	want := q.Final.NumGC
	e2etest.WaitFor(t, 20*time.Second, "the quiet process's cycles", func() bool {
		h, err := d.Client.GCHistory(context.Background(), q.PID, 1000)
		return err == nil && h.Process.GCCycles == want && len(h.Cycles) == int(want)
	})
	time.Sleep(3 * time.Second) // past the fill-in of lost records
	h, err := d.Client.GCHistory(context.Background(), q.PID, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if h.Process.GCCycles != want || len(h.Cycles) != int(want) {
		t.Errorf("quiet process: %d cycles, %d in history, want %d", h.Process.GCCycles, len(h.Cycles), want)
	}
	for i, c := range h.Cycles {
		if c.Seq != uint64(i+1) || c.BeforeProbes {
			t.Errorf("quiet process: history[%d] = cycle %d, before_probes %v: want cycle %d with its record", i, c.Seq, c.BeforeProbes, i+1)
		}
	}
	if h.Process.GCForcedCycles != q.Final.Forced {
		t.Errorf("quiet process: %d forced cycles, the runtime says %d", h.Process.GCForcedCycles, q.Final.Forced)
	}

	// Its madvise events: every released byte the kernel counted came
	// with its event (attributed to who asked).
	var mad *api.MadviseStats
	e2etest.WaitFor(t, 10*time.Second, "the quiet process's madvise figures", func() bool {
		p, ok := d.Process(t, m.PID)
		if !ok || p.Madvise == nil {
			return false
		}
		mad = p.Madvise
		return mad.ReleasedBytes >= 32<<20
	})
	var attributed uint64
	for _, b := range mad.ReleasedBySource {
		attributed += b
	}
	if attributed != mad.ReleasedBytes {
		t.Errorf("quiet madvise: %d bytes released, %d of them with their event (%v): events lost", mad.ReleasedBytes, attributed, mad.ReleasedBySource)
	}

	loopEnd := fairLoopCycles(t, d, loops)
	rate := float64(loopEnd-loopStart) / time.Since(t0).Seconds()
	gcQuiet, gcFam := fairShare(t, d, "gc", quietUID)
	gcNobody, _ := fairShare(t, d, "gc", nobody)
	madQuiet, madFam := fairShare(t, d, "madvise", quietUID)
	if gcQuiet.Dropped != 0 || madQuiet.Dropped != 0 {
		t.Errorf("the quiet user's records dropped over its share: gc %d, madvise %d", gcQuiet.Dropped, madQuiet.Dropped)
	}
	if gcQuiet.Sent < want {
		t.Errorf("the quiet user put %d GC records through the ring, want at least its %d cycles", gcQuiet.Sent, want)
	}
	if gcNobody.Dropped == 0 {
		t.Errorf("the loops' records over their share were not counted: %+v", gcNobody)
	}
	var overShares uint64
	for _, u := range gcFam.UIDShares {
		overShares += u.Dropped
	}
	t.Logf("readers stalled %v", stall.Round(time.Millisecond))
	t.Logf("gc ring %d bytes, %d records/s per UID, burst %d; the loops ran %.0f cycles/s in all", gcFam.RingBytes, gcFam.RingSharePerSecond, gcFam.RingShareBurst, rate)
	t.Logf("gc: uid %d sent %d dropped %d; uid %d sent %d dropped %d; ring full %d; all uids %+v", nobody, gcNobody.Sent, gcNobody.Dropped,
		quietUID, gcQuiet.Sent, gcQuiet.Dropped, gcFam.LostEvents-overShares, gcFam.UIDShares)
	t.Logf("madvise ring %d bytes: uid %d sent %d dropped %d; lost (all causes, all uids) %d; quiet released %d bytes; all uids %+v", madFam.RingBytes,
		quietUID, madQuiet.Sent, madQuiet.Dropped, madFam.LostEvents, mad.ReleasedBytes, madFam.UIDShares)
	q.Finish()
	m.Finish()
}

// fairShare returns uid's share of family's ring, and the family's status.
func fairShare(t *testing.T, d *e2etest.Daemon, family string, uid int64) (api.UIDShare, api.FamilyStatus) {
	t.Helper()
	st, err := d.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range st.Families {
		if f.Name != family {
			continue
		}
		for _, u := range f.UIDShares {
			if u.UID == uid {
				return u, f
			}
		}
		return api.UIDShare{UID: uid}, f
	}
	t.Fatalf("no %s family in status", family)
	return api.UIDShare{}, api.FamilyStatus{}
}

// fairLoopCycles sums the daemon's GC cycle counts (the runtime's own) of
// the loops.
func fairLoopCycles(t *testing.T, d *e2etest.Daemon, loops []*exec.Cmd) uint64 {
	t.Helper()
	var sum uint64
	for _, l := range loops {
		var n uint64
		e2etest.WaitFor(t, 10*time.Second, "a reading of the loop's books", func() bool {
			p, ok := d.Process(t, l.Process.Pid)
			n = p.GCCycles
			return ok && n > 0
		})
		sum += n
	}
	return sum
}

// fairWorldDir is a directory every user can read and run files from.
func fairWorldDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gopulse-hostile")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fairCopy copies an executable to dst (a new inode: a binary of its own).
func fairCopy(t *testing.T, src, dst string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}
