// Package discovery finds processes: those running when the daemon starts
// (a /proc scan) and those that exec or exit later (kernel tracepoints,
// bpf/discovery.bpf.c). Deciding whether a process runs Go is the
// tracer's job; this package only reports.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/gopulse/gopulse/probes"
)

// Kind of a process event.
type Kind uint8

// The kinds are bpf/discovery.h's enum disc_event_kind, generated.
const (
	Exec = Kind(discDiscEventKindDISC_EVENT_EXEC)
	Exit = Kind(discDiscEventKindDISC_EVENT_EXIT)
)

// Event is one exec or exit.
type Event struct {
	PID  int
	Kind Kind
	// At is when it happened, on the CLOCK_MONOTONIC clock.
	At time.Duration
	// Exec only: the executable as execve named it, and its identity
	// (st_dev, st_ino as stat(2) reports them).
	Filename string
	Dev, Ino uint64
}

// Discovery owns the exec/exit programs and their ring buffer.
type Discovery struct {
	objs discObjects
	ring *probes.Ring[discDiscEvent]
}

// New loads the programs; they run once the attacher attaches Spec.
func New() (*Discovery, error) {
	d := &Discovery{}
	spec, err := loadDisc()
	if err != nil {
		return nil, fmt.Errorf("load discovery spec: %w", err)
	}
	if err := probes.SetShares(spec, spec.Maps["proc_events"].MaxEntries, uint32(unsafe.Sizeof(discDiscEvent{}))); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		return nil, fmt.Errorf("load discovery programs: %w", err)
	}
	if err := probes.InitShares(d.objs.ProcShares); err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("discovery: %w", err)
	}
	ring, err := probes.NewRing[discDiscEvent]("process", d.objs.ProcEvents)
	if err != nil {
		d.objs.Close()
		return nil, err
	}
	d.ring = ring
	return d, nil
}

// Spec declares the tracepoints.
func (d *Discovery) Spec() probes.Spec {
	return probes.Spec{
		Family: "discovery",
		Tracepoints: []probes.Tracepoint{
			{Name: "sched_process_exec", Program: d.objs.ProcExec},
			{Name: "sched_process_exit", Program: d.objs.ProcExit},
		},
	}
}

// Programs returns the programs, for run statistics.
func (d *Discovery) Programs() []*ebpf.Program {
	return []*ebpf.Program{d.objs.ProcExec, d.objs.ProcExit}
}

// Read delivers events to fn until closed or ctx is done.
func (d *Discovery) Read(ctx context.Context, fn func(Event)) error {
	return d.ring.Read(ctx, func(raw *discDiscEvent) {
		ev := Event{PID: int(raw.Pid), Kind: Kind(raw.Kind), At: time.Duration(raw.Ts)}
		if ev.Kind == Exec {
			// The kernel's dev_t is MAJOR<<20|MINOR; stat(2) encodes it
			// differently.
			ev.Dev = unix.Mkdev(raw.Dev>>20, raw.Dev&(1<<20-1))
			ev.Ino = raw.Ino
			ev.Filename = cString(raw.Filename[:])
		}
		fn(ev)
	})
}

// Drain returns once every event submitted before the call was handed to
// Read's fn (see probes.Ring.Drain).
func (d *Discovery) Drain(ctx context.Context) error { return d.ring.Drain(ctx) }

// Backlog is the unread bytes in the ring buffer and the records read so
// far: a backlog that stays while the count stands still is a stuck reader.
func (d *Discovery) Backlog() (pending int, consumed uint64) { return d.ring.Backlog() }

// Lost is the number of events lost: the ring buffer had no room for
// them, or their UID was over its share of the ring (exec events only,
// Shares). Either makes the tracer rescan /proc.
func (d *Discovery) Lost() (uint64, error) {
	full, err := probes.SumPerCPU(d.objs.ProcLost)
	over, err2 := probes.SharesDropped(d.objs.ProcShares)
	return full + over, errors.Join(err, err2)
}

// Shares reports each UID's exec events let through and refused over its
// share of the ring.
func (d *Discovery) Shares() ([]probes.Share, error) { return probes.ReadShares(d.objs.ProcShares) }

// RingSize is the ring's size in bytes and the exec events per second and
// burst each UID may put in it while the reader lags.
func (d *Discovery) RingSize() (bytes uint32, perSecond, burst uint64) {
	bytes = d.objs.ProcEvents.MaxEntries()
	perSecond, burst = probes.ShareRate(bytes, uint32(unsafe.Sizeof(discDiscEvent{})))
	return bytes, perSecond, burst
}

// Close stops the reader and unloads the programs.
func (d *Discovery) Close() error {
	d.ring.Close()
	return d.objs.Close()
}

// Scan lists the PIDs (thread-group leaders) under procRoot.
func Scan(procRoot string) ([]int, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", procRoot, err)
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

// Monotonic is the CLOCK_MONOTONIC clock, the clock of Event.At, of
// bpf_ktime_get_ns and of the Go runtime's nanotime.
func Monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

func cString(b []int8) string {
	buf := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		buf = append(buf, byte(c))
	}
	return string(buf)
}
