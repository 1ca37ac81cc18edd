package tracer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gopulse/gopulse/probes/discovery"
)

// openExe identifies a process by the file it opened, checked against the
// exec event's inode: a path swapped between the exec and the daemon's
// look (to a FIFO, a symlink, another file) is refused, never followed,
// never blocked on.
func TestOpenExeIdentity(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "prog")
	if err := os.WriteFile(real, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("other"), 0o755); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	var selfSt unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &selfSt); err != nil {
		t.Fatal(err)
	}
	gonePID := unusedPID(t)
	ev := func(pid int, name string, s unix.Stat_t) *discovery.Event {
		return &discovery.Event{PID: pid, Kind: discovery.Exec, Filename: name, Dev: s.Dev, Ino: s.Ino}
	}
	cases := []struct {
		name     string
		pid      int
		exec     *discovery.Event
		wantErr  string // substring; "" means identified
		wantGone bool
		wantIno  uint64
	}{
		{"live process, scanned", self, nil, "", false, selfSt.Ino},
		{"live process, its exec", self, ev(self, "/proc/self/exe", selfSt), "", false, selfSt.Ino},
		{"live process that exec'd again", self, ev(self, real, st), errReexec.Error(), false, 0},
		{"exited, its file in place", gonePID, ev(gonePID, real, st), "", true, st.Ino},
		{"exited, another file swapped in", gonePID, ev(gonePID, other, st), errReexec.Error(), false, 0},
		{"exited, a FIFO swapped in", gonePID, ev(gonePID, fifo, st), "not a regular file", false, 0},
		{"exited, a symlink swapped in", gonePID, ev(gonePID, link, st), "too many levels of symbolic links", false, 0},
		{"exited, relative name", gonePID, ev(gonePID, "prog", st), "no such file", false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			done := make(chan struct{})
			var o *opened
			var err error
			go func() {
				defer close(done)
				o, err = openExe("/proc", c.pid, c.exec)
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("openExe blocked")
			}
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer o.f.Close()
			if o.gone != c.wantGone || o.key.id.Ino != c.wantIno {
				t.Errorf("gone %v ino %d, want %v %d", o.gone, o.key.id.Ino, c.wantGone, c.wantIno)
			}
			var fst unix.Stat_t
			if err := unix.Fstat(int(o.f.Fd()), &fst); err != nil || fst.Ino != c.wantIno {
				t.Errorf("the opened file is inode %d (%v), want %d", fst.Ino, err, c.wantIno)
			}
			if !c.wantGone && o.uid != uint32(os.Getuid()) {
				t.Errorf("uid %d, want the process's %d", o.uid, os.Getuid())
			}
		})
	}
}

// unusedPID returns a PID no process has now.
func unusedPID(t *testing.T) int {
	for pid := 4194000; pid > 1000; pid-- {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return pid
		}
	}
	t.Fatal("no unused PID")
	return 0
}

// The inspection queue serves users round robin and bounds each user's
// share: a user with many binaries queued waits behind their own.
func TestFairQueue(t *testing.T) {
	q := newFairQueue()
	for i := range inspectQueuePerUser + 5 {
		ok := q.push(1000, &inspectJob{queued: time.Unix(int64(i), 0)})
		if want := i < inspectQueuePerUser; ok != want {
			t.Fatalf("push %d of user 1000: %v, want %v", i, ok, want)
		}
	}
	q.push(1001, &inspectJob{queued: time.Unix(1001, 0)})
	q.push(0, &inspectJob{queued: time.Unix(0, 1)})
	ctx := t.Context()
	var order []int64
	for range 4 {
		j, ok := q.pop(ctx)
		if !ok {
			t.Fatal("pop")
		}
		order = append(order, j.queued.Unix())
	}
	// User 1000's first, then 1001's and root's (queued after user 1000
	// had 64 waiting), then user 1000's second.
	if want := []int64{0, 1001, 0, 1}; !equal(order, want) {
		t.Errorf("served %v, want %v", order, want)
	}
	if n, dropped := q.stats(); n != inspectQueuePerUser+2-4 || dropped != 5 {
		t.Errorf("queued %d dropped %d, want %d and 5", n, dropped, inspectQueuePerUser-2)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
