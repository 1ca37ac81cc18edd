package tracer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/discovery"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/sanitize"
)

// Inspecting a never-seen binary (ELF, pclntab, disassembly of the probed
// functions) and attaching its uprobes takes milliseconds to seconds; on the
// event loop it made every exec behind it wait (50 new binaries at once: the
// last attached after 5.9 s), and one user's exec storm of new binaries
// delayed everyone's. So the loop only identifies a process (an open and an
// fstat) and registers those whose binary is known; new binaries go to a
// bounded pool of workers, queued per user and served round robin.
const (
	// inspectWorkers bounds the CPU inspection takes from the host (and
	// the memory: each parse is bounded by goinspect's budget).
	inspectWorkers = 4
	// inspectQueue bounds the binaries waiting; inspectQueuePerUser
	// keeps one user's storm from filling it. A job refused here is
	// counted: the next rescan of /proc finds its process again.
	inspectQueue        = 256
	inspectQueuePerUser = 64
)

// rootUID is exempt from the per-user quotas: root can stop the daemon
// anyway, and the host's own services must not be crowded out by it.
const rootUID = 0

// errReexec: the PID runs another file than its exec event named (it
// exec'd again, or the PID was reused): a later event says what it runs.
var errReexec = errors.New("the process runs another file than its exec event named")

// opened is an executable opened for one process, identified by what was
// opened (fstat), never by a path looked up again.
type opened struct {
	f    *os.File
	key  fileKey
	name string // for people: /proc/PID/exe's target, or the exec's path
	gone bool   // the process had exited: f is the file its exec named
	uid  uint32 // the process's owner (its /proc directory's); the file's owner once gone
}

// openExe opens the executable pid runs. /proc/PID/exe is a magic link to
// the very file the process maps, so opening it cannot be raced; once the
// process is gone, the path its exec event named is opened instead, without
// following a final symlink and without blocking (a FIFO swapped in would
// otherwise hang the open), and kept only if it is the inode the kernel
// executed (the event's device and inode). A process found by the scan has
// no event to compare with: its magic link is all there is.
func openExe(procRoot string, pid int, exec *discovery.Event) (*opened, error) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	o := &opened{}
	fd, err := unix.Open(filepath.Join(dir, "exe"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		// A kernel thread, or a process that already exited: for the
		// latter, its binary is still worth probing for its next runs.
		if exec == nil || !filepath.IsAbs(exec.Filename) {
			return nil, fmt.Errorf("open %s/exe: %w", dir, err)
		}
		fd, err = unix.Open(exec.Filename, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err != nil {
			return nil, fmt.Errorf("open %q (its process exited): %w", exec.Filename, err)
		}
		o.gone, o.name = true, exec.Filename
	} else {
		// What it runs now (for a script, the interpreter, not the
		// name its exec gave).
		o.name, _ = os.Readlink(filepath.Join(dir, "exe"))
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("fstat %q: %w", o.name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%q is not a regular file (mode %#o): %w", o.name, st.Mode&unix.S_IFMT, goinspect.ErrNotELF)
	}
	if exec != nil && (st.Dev != exec.Dev || st.Ino != exec.Ino) {
		unix.Close(fd)
		return nil, fmt.Errorf("%q is inode %d:%d, its exec ran %d:%d: %w", o.name, st.Dev, st.Ino, exec.Dev, exec.Ino, errReexec)
	}
	o.key = fileKey{id: goinspect.FileID{Dev: st.Dev, Ino: st.Ino}, size: st.Size, mtime: st.Mtim.Nano()}
	o.uid = st.Uid
	if !o.gone {
		// The process's owner, not the file's: who started it is who
		// could start more.
		var pst unix.Stat_t
		if err := unix.Stat(dir, &pst); err == nil {
			o.uid = pst.Uid
		}
	}
	// Any local user chooses the name: cleaned once, here; files are
	// reached through f only. O_NONBLOCK means nothing for a regular
	// file, so the flag is left as it is.
	o.name = sanitize.Path(o.name)
	o.f = os.NewFile(uintptr(fd), o.name)
	return o, nil
}

// waiter is a process waiting for its binary's inspection.
type waiter struct {
	pid   int
	start time.Time        // zero when gone
	exec  *discovery.Event // nil: found by a scan
	name  string
	gone  bool
	uid   uint32
}

// inspectJob is one binary to inspect and attach, and the processes
// waiting for it.
type inspectJob struct {
	o       *opened
	queued  time.Time
	waiters []waiter
	// stale: the file was written to while it was inspected; what the
	// worker attached is dropped and the job runs again.
	stale bool
}

// inspectResult is a worker's answer, handled on the event loop.
type inspectResult struct {
	job  *inspectJob
	bin  *probes.Binary // nil on error
	info *binInfo
	err  error
	took time.Duration
}

// fairQueue holds jobs per user and hands them out round robin, so a user
// queueing many binaries waits behind their own jobs, not others'.
type fairQueue struct {
	mu      sync.Mutex
	byUser  map[uint32][]*inspectJob
	order   []uint32 // users with jobs, in service order
	n       int
	dropped uint64
	ready   chan struct{} // a token while jobs wait
}

func newFairQueue() *fairQueue {
	return &fairQueue{byUser: map[uint32][]*inspectJob{}, ready: make(chan struct{}, 1)}
}

// push queues j for uid; false (counted) when the queue or the user's
// share of it is full.
func (q *fairQueue) push(uid uint32, j *inspectJob) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n >= inspectQueue || len(q.byUser[uid]) >= inspectQueuePerUser {
		q.dropped++
		return false
	}
	if len(q.byUser[uid]) == 0 {
		q.order = append(q.order, uid)
	}
	q.byUser[uid] = append(q.byUser[uid], j)
	q.n++
	q.signal()
	return true
}

func (q *fairQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop waits for a job: the first of the next user in turn.
func (q *fairQueue) pop(ctx context.Context) (*inspectJob, bool) {
	for {
		q.mu.Lock()
		if q.n > 0 {
			uid := q.order[0]
			jobs := q.byUser[uid]
			j := jobs[0]
			jobs[0] = nil
			q.byUser[uid] = jobs[1:]
			q.order = q.order[1:]
			if len(q.byUser[uid]) > 0 {
				q.order = append(q.order, uid)
			} else {
				delete(q.byUser, uid)
			}
			q.n--
			if q.n > 0 {
				q.signal() // wake the next worker
			}
			q.mu.Unlock()
			return j, true
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, false
		case <-q.ready:
		}
	}
}

// stats returns the jobs waiting and the jobs refused so far.
func (q *fairQueue) stats() (int, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n, q.dropped
}

// runInspectors runs the workers until ctx is done.
func (t *Tracer) runInspectors(ctx context.Context) error {
	var wg sync.WaitGroup
	for range inspectWorkers {
		wg.Go(func() {
			for {
				j, ok := t.queue.pop(ctx)
				if !ok {
					return
				}
				r := t.inspect(j)
				// Never blocks: results has room for every job that can
				// be queued or in flight.
				t.results <- r
			}
		})
	}
	wg.Wait()
	return nil
}

// inspect parses and attaches one binary, off the event loop. The file is
// watched for writes first, so a write during the inspection is seen (the
// loop then marks the job stale).
func (t *Tracer) inspect(j *inspectJob) (r inspectResult) {
	start := time.Now()
	o := j.o
	r.job = j
	defer func() { r.took = time.Since(start) }()
	// A duplicate of the file for the parse: the job keeps its own (a
	// stale job is inspected again from it).
	fd, err := unix.Dup(int(o.f.Fd()))
	if err != nil {
		r.err = fmt.Errorf("dup %s: %w", o.name, err)
		return r
	}
	unix.CloseOnExec(fd)
	b, err := goinspect.FromFile(os.NewFile(uintptr(fd), o.name), o.name)
	if err != nil {
		r.err = err
		return r
	}
	defer b.Close()
	r.info = &binInfo{goVersion: b.GoVersion, pie: b.PIE, static: b.Static, stripped: b.Stripped, uid: o.uid, pids: map[int]struct{}{}}
	if err := t.mods.add(o.key.id, b.AttachPath()); err != nil {
		// Unwatched probes could end up mid-instruction in a rewritten
		// file: better no probes.
		r.err = err
		return r
	}
	bin, err := t.att.Attach(b, o.name)
	if err != nil {
		t.mods.remove(o.key.id)
		r.err = err
		return r
	}
	r.bin = bin
	return r
}

// rateLog logs a warning that an attacker can repeat at will (an exec
// storm) at most once per rateLogEvery per message, saying how many were
// suppressed.
type rateLog struct {
	mu sync.Mutex
	by map[string]*rateLogState
}

type rateLogState struct {
	last       time.Time
	suppressed int
}

const rateLogEvery = 10 * time.Second

func (r *rateLog) warn(log *slog.Logger, msg string, args ...any) {
	r.mu.Lock()
	if r.by == nil {
		r.by = map[string]*rateLogState{}
	}
	st, ok := r.by[msg]
	if !ok {
		if len(r.by) > 64 {
			clear(r.by) // a fixed set of messages; bounded all the same
		}
		st = &rateLogState{}
		r.by[msg] = st
	}
	now := time.Now()
	if now.Sub(st.last) < rateLogEvery {
		st.suppressed++
		r.mu.Unlock()
		return
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	log.Warn(msg, args...)
}
