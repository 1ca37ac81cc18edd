package probes

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

var tracefsOnce struct {
	sync.Mutex
	ok bool
}

// EnsureTracefs makes tracefs reachable where the tracepoint attach path
// looks (/sys/kernel/tracing or /sys/kernel/debug/tracing), mounting it at
// /sys/kernel/tracing when neither has it. Syscall tracepoints need it;
// raw and BTF tracepoints do not.
func EnsureTracefs() error {
	tracefsOnce.Lock()
	defer tracefsOnce.Unlock()
	if tracefsOnce.ok {
		return nil
	}
	for _, d := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(d + "/events"); err == nil {
			tracefsOnce.ok = true
			return nil
		}
	}
	if err := unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("no tracefs, and mounting it at /sys/kernel/tracing failed: %w", err)
	}
	tracefsOnce.ok = true
	return nil
}
