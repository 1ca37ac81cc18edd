package tracer

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gopulse/gopulse/probes/goinspect"
)

// modWatch tells when a probed binary is modified in place. Uprobes sit on
// (inode, offset): if the file's bytes change under them, the next process
// started from it would trap in the middle of an instruction. A running
// executable cannot be written (ETXTBSY), but one whose processes all
// exited can, while its probes stay for the next run; so every probed
// binary is watched, and its probes go at the first write.
type modWatch struct {
	f  *os.File        // non-blocking, on Go's poller: Close ends a blocked Read
	rc syscall.RawConn // for inotify_add_watch/rm_watch (f.Fd would make f blocking)

	mu  sync.Mutex
	ids map[int32]goinspect.FileID // watch descriptor -> binary
	wds map[goinspect.FileID]int32
}

func newModWatch() (*modWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &modWatch{f: f, rc: rc, ids: map[int32]goinspect.FileID{}, wds: map[goinspect.FileID]int32{}}, nil
}

// add watches the file behind path (a /proc/self/fd/N link is fine: the
// kernel resolves it to the inode).
func (w *modWatch) add(id goinspect.FileID, path string) error {
	var wd int
	var err error
	if cerr := w.rc.Control(func(fd uintptr) {
		wd, err = unix.InotifyAddWatch(int(fd), path, unix.IN_MODIFY)
	}); cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ids[int32(wd)], w.wds[id] = id, int32(wd)
	return nil
}

func (w *modWatch) remove(id goinspect.FileID) {
	w.mu.Lock()
	wd, ok := w.wds[id]
	delete(w.wds, id)
	delete(w.ids, wd)
	w.mu.Unlock()
	if ok {
		_ = w.rc.Control(func(fd uintptr) { _, _ = unix.InotifyRmWatch(int(fd), uint32(wd)) })
	}
}

// run calls modified for each binary written to, until close.
func (w *modWatch) run(modified func(goinspect.FileID)) error {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read inotify: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_MODIFY == 0 {
				continue
			}
			w.mu.Lock()
			id, ok := w.ids[ev.Wd]
			w.mu.Unlock()
			if ok {
				modified(id)
			}
		}
	}
}

func (w *modWatch) close() { _ = w.f.Close() }
