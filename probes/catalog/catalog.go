// Package catalog names the probe families: their --probes names, which
// run by default, and how a --probes value is parsed. It is a leaf (no BPF,
// no cilium/ebpf) so that the configuration, its help texts and
// packaging/genconfig know the families without linking them; the tracer
// maps each name to the family's code (daemon/tracer/registry.go), and a
// test there checks that both lists agree.
package catalog

import (
	"fmt"
	"slices"
	"strings"
)

// The families' names in --probes (and in status, errors, metrics).
const (
	GC        = "gc"
	Madvise   = "madvise"
	Sched     = "sched"
	MheapLock = "mheaplock"
)

// Family describes one probe family.
type Family struct {
	Name    string
	Default bool // in --probes default
}

// Families lists every family, in the order status and help list them.
func Families() []Family {
	return []Family{
		{Name: GC, Default: true},
		// Syscall tracepoints only: no trap in the traced programs.
		{Name: Madvise, Default: true},
		// Scheduler BTF tracepoints only: no trap in the traced programs.
		{Name: Sched, Default: true},
		// Opt-in: the futex tracepoints run on every futex call of the
		// host, and on Go >= 1.24 each contended runtime lock sleep is a
		// uprobe trap.
		{Name: MheapLock},
	}
}

// Help lists the families for --probes help texts, e.g.
// "gc*, madvise*, sched*, mheaplock (* in default)".
func Help() string {
	var names []string
	for _, f := range Families() {
		if f.Default {
			names = append(names, f.Name+"*")
		} else {
			names = append(names, f.Name)
		}
	}
	return strings.Join(names, ", ") + " (* in default)"
}

// Parse turns a --probes value into family names, sorted and unique.
func Parse(s string) ([]string, error) {
	var all, dflt []string
	for _, f := range Families() {
		all = append(all, f.Name)
		if f.Default {
			dflt = append(dflt, f.Name)
		}
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "default":
			out = append(out, dflt...)
		case f == "all":
			out = append(out, all...)
		case slices.Contains(all, f):
			out = append(out, f)
		default:
			return nil, fmt.Errorf("unknown probe family %q (want default, all, or a comma list of %s)", f, strings.Join(all, ", "))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
