package probes

import (
	"sync"

	"github.com/gopulse/gopulse/probes/goinspect"
)

// PerBinary caches what a family learns from inspecting a binary (by
// inode), so that every process of it after the first costs a stat and,
// for PIE, one read of /proc/PID/maps. Bounded: past maxPerBinary binaries
// it starts over, which costs re-inspections, never memory.
type PerBinary[T any] struct {
	ProcRoot string
	// Max bounds the binaries kept (0: maxPerBinary).
	Max int

	mu sync.Mutex
	m  map[goinspect.FileID]perBinary[T]
}

type perBinary[T any] struct {
	v    T
	base goinspect.LoadBase
	err  error
}

const maxPerBinary = 256

// ForPID returns what inspect found in pid's binary (inspecting it on
// first sight; a failure is cached too) and pid's load bias, to add to the
// binary's link-time addresses.
func (c *PerBinary[T]) ForPID(pid uint32, inspect func(*goinspect.Binary) (T, error)) (v T, bias uint64, err error) {
	root := c.ProcRoot
	if root == "" {
		root = "/proc"
	}
	id, err := goinspect.StatPID(root, int(pid))
	if err != nil {
		return v, 0, err
	}
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if !ok {
		e = inspectPID(root, pid, inspect)
		c.put(id, e)
	}
	if e.err != nil {
		return v, 0, e.err
	}
	bias, err = e.base.Bias(root, int(pid))
	if err != nil {
		return v, 0, err
	}
	return e.v, bias, nil
}

// Seed caches v for a binary already opened and inspected (say, when its
// probes were attached), so that its processes cost no second open and
// parse of it.
func (c *PerBinary[T]) Seed(b *goinspect.Binary, v T) {
	base, err := b.LoadBase()
	if err != nil {
		return
	}
	c.put(b.ID, perBinary[T]{v: v, base: base})
}

func (c *PerBinary[T]) put(id goinspect.FileID, e perBinary[T]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	limit := c.Max
	if limit <= 0 {
		limit = maxPerBinary
	}
	if c.m == nil || len(c.m) >= limit {
		c.m = map[goinspect.FileID]perBinary[T]{}
	}
	c.m[id] = e
}

func inspectPID[T any](root string, pid uint32, inspect func(*goinspect.Binary) (T, error)) perBinary[T] {
	b, err := goinspect.OpenPID(root, int(pid))
	if err != nil {
		return perBinary[T]{err: err}
	}
	defer b.Close()
	var e perBinary[T]
	if e.err = b.RequireHostArch(); e.err != nil {
		return e
	}
	if e.base, e.err = b.LoadBase(); e.err != nil {
		return e
	}
	e.v, e.err = inspect(b)
	return e
}
