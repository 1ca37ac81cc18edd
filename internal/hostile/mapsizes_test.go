package hostile_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/gc"
	"github.com/gopulse/gopulse/probes/madvise"
)

// The kernel-side maps of a running daemon, as the kernel reports them: the
// per-process maps hold --max-pids entries, the per-thread maps the bound
// derived from it, the rings the size derived from it; no map is an LRU
// (an eviction would silently rewrite a live process's figures).
func TestMapsSizedFromConfig(t *testing.T) {
	for _, c := range []struct {
		name    string
		maxPIDs int // 0: the default
	}{
		{"max-pids 100", 100},
		{"default", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"--probes", "all"}
			if c.maxPIDs > 0 {
				args = append(args, "--max-pids", strconv.Itoa(c.maxPIDs))
			}
			d := e2etest.StartDaemon(t, args...)
			env := probes.Env{MaxPIDs: c.maxPIDs}
			want := map[string]uint32{
				"madv_procs": env.Procs(), "sched_procs": env.Procs(), "lock_procs": env.Procs(),
				"madv_inflight": env.Threads(), "sched_threads": env.Threads(), "lock_waits": env.Threads(),
				"gc_events": gc.RingBytes(env), "madv_events": madvise.RingBytes(env), "gc_layouts": env.Binaries() * 2,
			}
			maps := daemonMaps(t, d.Cmd.Process.Pid)
			var memlock uint64
			for _, m := range maps {
				memlock += m.memlock
				if m.typ == ebpf.LRUHash || m.typ == ebpf.LRUCPUHash {
					t.Errorf("map %s is an LRU", m.name)
				}
				if n, ok := want[m.name]; ok {
					if m.maxEntries != n {
						t.Errorf("map %s: %d entries, want %d", m.name, m.maxEntries, n)
					}
					delete(want, m.name)
				}
			}
			for name := range want {
				t.Errorf("no map %s in the daemon", name)
			}
			t.Logf("--max-pids %d: per-process maps %d entries, per-thread %d, gc ring %d bytes, madvise ring %d bytes; %d maps, %.1f MiB memlock in all",
				env.Procs(), env.Procs(), env.Threads(), gc.RingBytes(env), madvise.RingBytes(env), len(maps), float64(memlock)/(1<<20))
			for _, m := range maps {
				if m.memlock >= 1<<20 {
					t.Logf("  %-16s %-10v %8d entries %7.1f MiB", m.name, m.typ, m.maxEntries, float64(m.memlock)/(1<<20))
				}
			}
		})
	}
}

type bpfMap struct {
	name       string
	typ        ebpf.MapType
	maxEntries uint32
	memlock    uint64
}

// daemonMaps lists the BPF maps pid holds open (from its fdinfo: other
// daemons on the host have maps of the same names).
func daemonMaps(t *testing.T, pid int) []bpfMap {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fdinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	var out []bpfMap
	for _, fd := range fds {
		b, err := os.ReadFile(filepath.Join(fmt.Sprintf("/proc/%d/fdinfo", pid), fd.Name()))
		if err != nil {
			continue
		}
		var id uint64
		var memlock uint64
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "map_id":
				id, _ = strconv.ParseUint(v, 10, 32)
			case "memlock":
				memlock, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		if id == 0 || seen[uint32(id)] {
			continue
		}
		seen[uint32(id)] = true
		m, err := ebpf.NewMapFromID(ebpf.MapID(id))
		if err != nil {
			t.Fatalf("map %d: %v", id, err)
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			t.Fatalf("map %d: %v", id, err)
		}
		out = append(out, bpfMap{name: info.Name, typ: info.Type, maxEntries: info.MaxEntries, memlock: memlock})
	}
	return out
}
