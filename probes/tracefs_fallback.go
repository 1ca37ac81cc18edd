package probes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// attachTracefsTracepoint attaches prog to the tracefs tracepoint
// group:name. cilium/ebpf looks the event up under the first tracefs mount
// it finds; a tracefs bind-mounted into a container can be a mount without
// its events/ directory (eventfs, seen under systemd-nspawn on Linux 6.18)
// while debugfs's automount still has them. So on ENOENT the event id is
// looked up in every known place and the program attached by hand: a perf
// event for the tracepoint and a BPF link to it.
func attachTracefsTracepoint(group, name string, prog *ebpf.Program) (link.Link, error) {
	l, err := link.Tracepoint(group, name, prog, nil)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return l, err
	}
	l, ferr := attachTracepointByID(group, name, prog)
	if ferr != nil {
		return nil, fmt.Errorf("%w (and %v)", err, ferr)
	}
	return l, nil
}

// attachTracepointByID attaches prog to group:name through a perf event
// opened on the event's id.
func attachTracepointByID(group, name string, prog *ebpf.Program) (link.Link, error) {
	id, err := tracepointID(group, name)
	if err != nil {
		return nil, err
	}
	attr := unix.PerfEventAttr{
		Type:        unix.PERF_TYPE_TRACEPOINT,
		Config:      id,
		Sample_type: unix.PERF_SAMPLE_RAW,
		Sample:      1,
		Wakeup:      1,
	}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, perr := unix.PerfEventOpen(&attr, -1, 0, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if perr != nil {
		return nil, fmt.Errorf("perf_event_open tracepoint %s:%s (id %d): %w", group, name, id, perr)
	}
	raw, lerr := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: prog, Attach: ebpf.AttachPerfEvent})
	if lerr != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("link tracepoint %s:%s: %w", group, name, lerr)
	}
	return &perfLink{RawLink: raw, fd: fd}, nil
}

// perfLink is a BPF link to a perf event that also owns the event.
type perfLink struct {
	*link.RawLink
	fd int
}

func (l *perfLink) Close() error {
	err := l.RawLink.Close()
	if cerr := unix.Close(l.fd); err == nil {
		err = cerr
	}
	return err
}

// tracepointID reads a tracefs event's id from the first place that has it.
func tracepointID(group, name string) (uint64, error) {
	var errs []error
	for _, root := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		b, err := os.ReadFile(filepath.Join(root, "events", group, name, "id"))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	return 0, errors.Join(errs...)
}
