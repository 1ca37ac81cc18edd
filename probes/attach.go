package probes

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/gopulse/gopulse/probes/goinspect"
)

// Uprobe is one row of a family's declaration: a runtime function and the
// programs to run at its entry and at each of its RET instructions. Go
// functions never get uretprobes: goroutine stacks move, and a uretprobe's
// rewritten return address would crash the traced program.
type Uprobe struct {
	Symbol string
	Entry  *ebpf.Program // nil: none
	Return *ebpf.Program // nil: none; else attached at every RET
	// When reports whether the row applies to a binary; nil means always.
	When func(Facts) bool
	// Cookie is what the programs read with bpf_get_attach_cookie for this
	// binary (e.g. struct offsets); nil means 0.
	Cookie func(Facts) uint64
}

// Tracepoint is a kernel raw tracepoint and its program; raw tracepoints
// need no tracefs.
type Tracepoint struct {
	Name    string // e.g. "sched_process_exec"
	Program *ebpf.Program
}

// Spec is what a probe family needs attached. Adding a probe is adding a
// row here; the Attacher is the only attach path.
type Spec struct {
	Family      string
	Uprobes     []Uprobe
	Tracepoints []Tracepoint
}

// Binary is the attach state of one executable (one inode). Uprobes live on
// the inode, so one attachment traces every process running it, from its
// first instruction.
type Binary struct {
	ID        goinspect.FileID
	Path      string // as the first process seen running it named it
	GoVersion string
	Facts     Facts
	Probes    int               // uprobes attached
	Errors    map[string]string // family -> why it is not attached
	links     map[string][]link.Link
	// file keeps the inode reachable (as /proc/self/fd/N) for families
	// added later, even once every process of it exited or it was deleted.
	file *os.File
}

// Attacher attaches families' specs: tracepoints once, uprobes once per
// binary. It is safe for concurrent use.
type Attacher struct {
	log *slog.Logger

	mu       sync.Mutex
	specs    []Spec
	global   map[string][]link.Link
	binaries map[goinspect.FileID]*Binary
}

// NewAttacher attaches the specs' tracepoints; uprobes come per binary.
func NewAttacher(log *slog.Logger, specs ...Spec) (*Attacher, error) {
	a := &Attacher{log: log, global: map[string][]link.Link{}, binaries: map[goinspect.FileID]*Binary{}}
	for _, s := range specs {
		if err := a.AddSpec(s); err != nil {
			a.Close()
			return nil, err
		}
	}
	return a, nil
}

// AddSpec attaches a family: its tracepoints, and its uprobes on every
// binary already attached.
func (a *Attacher) AddSpec(s Spec) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if slices.ContainsFunc(a.specs, func(x Spec) bool { return x.Family == s.Family }) {
		return fmt.Errorf("family %s already attached", s.Family)
	}
	var tps []link.Link
	for _, tp := range s.Tracepoints {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp.Name, Program: tp.Program})
		if err != nil {
			closeAll(tps)
			return fmt.Errorf("%s: attach tracepoint %s: %w", s.Family, tp.Name, err)
		}
		tps = append(tps, l)
	}
	a.global[s.Family] = tps
	a.specs = append(a.specs, s)
	if len(s.Uprobes) == 0 {
		return nil
	}
	for _, bin := range a.binaries {
		b, err := goinspect.Open(fmt.Sprintf("/proc/self/fd/%d", bin.file.Fd()))
		if err != nil {
			bin.Errors[s.Family] = err.Error()
			continue
		}
		a.attachSpec(bin, b, s)
		b.Close()
	}
	return nil
}

// RemoveSpec detaches a family everywhere.
func (a *Attacher) RemoveSpec(family string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.specs = slices.DeleteFunc(a.specs, func(x Spec) bool { return x.Family == family })
	closeAll(a.global[family])
	delete(a.global, family)
	for _, bin := range a.binaries {
		bin.Probes -= len(bin.links[family])
		closeAll(bin.links[family])
		delete(bin.links, family)
		delete(bin.Errors, family)
	}
}

// attachSpec attaches one family's uprobes to an attached binary; a.mu is
// held.
func (a *Attacher) attachSpec(bin *Binary, b *goinspect.Binary, s Spec) {
	links, err := attachFamily(b, bin.Facts, s)
	if err != nil {
		bin.Errors[s.Family] = err.Error()
		a.log.Warn("family not attached", "exe", bin.Path, "go", b.GoVersion, "probe", s.Family, "err", err)
		return
	}
	delete(bin.Errors, s.Family)
	bin.links[s.Family] = links
	bin.Probes += len(links)
}

// Attach puts every family's uprobes on b's inode, unless already there. A
// family is attached whole or not at all: half its probes would produce
// wrong figures. It fails when no family could be attached.
// exe is the name to show (b.Path may be a /proc/PID/exe link).
func (a *Attacher) Attach(b *goinspect.Binary, exe string) (*Binary, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if got, ok := a.binaries[b.ID]; ok {
		return got, nil
	}
	facts, err := FactsFor(b)
	if err != nil {
		return nil, err
	}
	keep, err := os.Open(b.AttachPath())
	if err != nil {
		return nil, fmt.Errorf("keep %s open: %w", exe, err)
	}
	bin := &Binary{ID: b.ID, Path: exe, GoVersion: b.GoVersion, Facts: facts,
		Errors: map[string]string{}, links: map[string][]link.Link{}, file: keep}
	uprobeFamilies := 0
	for _, s := range a.specs {
		if len(s.Uprobes) > 0 {
			uprobeFamilies++
			a.attachSpec(bin, b, s)
		}
	}
	if uprobeFamilies > 0 && bin.Probes == 0 {
		keep.Close()
		var errs []error
		for fam, e := range bin.Errors {
			errs = append(errs, fmt.Errorf("%s: %s", fam, e))
		}
		return nil, errors.Join(errs...)
	}
	a.binaries[b.ID] = bin
	return bin, nil
}

func attachFamily(b *goinspect.Binary, facts Facts, s Spec) ([]link.Link, error) {
	ex, err := link.OpenExecutable(b.AttachPath())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", b.Path, err)
	}
	var links []link.Link
	fail := func(err error) ([]link.Link, error) {
		closeAll(links)
		return nil, err
	}
	for _, row := range s.Uprobes {
		if row.When != nil && !row.When(facts) {
			continue
		}
		fn, err := b.Func(row.Symbol)
		if err != nil {
			return fail(err)
		}
		var cookie uint64
		if row.Cookie != nil {
			cookie = row.Cookie(facts)
		}
		attach := func(prog *ebpf.Program, vaddr uint64, what string) error {
			off, err := b.FileOffset(vaddr)
			if err != nil {
				return fmt.Errorf("%s %s: %w", what, row.Symbol, err)
			}
			l, err := ex.Uprobe(row.Symbol, prog, &link.UprobeOptions{Address: off, Cookie: cookie})
			if err != nil {
				return fmt.Errorf("attach %s %s at %#x: %w", what, row.Symbol, off, err)
			}
			links = append(links, l)
			return nil
		}
		if row.Entry != nil {
			if err := attach(row.Entry, fn.Entry, "entry"); err != nil {
				return fail(err)
			}
		}
		if row.Return != nil {
			rets, err := b.Returns(fn)
			if err != nil {
				return fail(err)
			}
			if len(rets) == 0 {
				return fail(fmt.Errorf("%s: no RET instruction found", row.Symbol))
			}
			for _, r := range rets {
				if err := attach(row.Return, r, "return"); err != nil {
					return fail(err)
				}
			}
		}
	}
	return links, nil
}

// Lookup returns the attach state of a binary, if attached.
func (a *Attacher) Lookup(id goinspect.FileID) (*Binary, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.binaries[id]
	return b, ok
}

// Detach removes a binary's uprobes.
func (a *Attacher) Detach(id goinspect.FileID) {
	a.mu.Lock()
	b, ok := a.binaries[id]
	delete(a.binaries, id)
	a.mu.Unlock()
	if ok {
		b.close()
	}
}

func (b *Binary) close() {
	for _, l := range b.links {
		closeAll(l)
	}
	b.file.Close()
}

// Binaries returns a snapshot of the attached binaries.
func (a *Attacher) Binaries() []Binary {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Binary, 0, len(a.binaries))
	for _, b := range a.binaries {
		c := *b
		c.links, c.file = nil, nil
		c.Errors = maps.Clone(b.Errors)
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y Binary) int {
		if x.Path < y.Path {
			return -1
		}
		if x.Path > y.Path {
			return 1
		}
		return 0
	})
	return out
}

// Close detaches everything.
func (a *Attacher) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, b := range a.binaries {
		b.close()
		delete(a.binaries, id)
	}
	for fam, l := range a.global {
		closeAll(l)
		delete(a.global, fam)
	}
	a.specs = nil
	return nil
}

func closeAll(links []link.Link) {
	for _, l := range links {
		_ = l.Close()
	}
}
