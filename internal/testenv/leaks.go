package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// RunLeakChecked runs a package's tests and turns a clean run into a
// failure when a goroutine or a file descriptor outlives them. Packages
// that load BPF call it from TestMain (as cilium/ebpf's tests do): a
// program, map, link or ring buffer left open is a kernel resource, and a
// reader goroutine left running is one the daemon would leak at every
// reload.
//
//	func TestMain(m *testing.M) { os.Exit(testenv.RunLeakChecked(m)) }
func RunLeakChecked(m *testing.M) int {
	// The runtime's network poller opens its epoll and event descriptors
	// on first use and keeps them: open them before the count.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := openFDs()
	code := m.Run()
	if code != 0 {
		return code
	}
	// Readers stop when their context is cancelled, asynchronously:
	// goleak retries for about a second before it reports.
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "leak check: goroutines outlived the tests: %v\n", err)
		code = 1
	}
	var leaked []string
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		leaked = leaked[:0]
		for fd, target := range openFDs() {
			if before[fd] != target {
				leaked = append(leaked, fmt.Sprintf("fd %s -> %s", fd, target))
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(leaked) > 0 {
		slices.Sort(leaked)
		fmt.Fprintf(os.Stderr, "leak check: %d file descriptors outlived the tests:\n", len(leaked))
		for _, l := range leaked {
			fmt.Fprintln(os.Stderr, "\t"+l)
		}
		code = 1
	}
	return code
}

// openFDs lists this process's open descriptors and what they point to.
func openFDs() map[string]string {
	out := map[string]string{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return out
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		out[e.Name()] = target
	}
	return out
}
