package probes

import (
	"errors"
	"fmt"
	"log/slog"
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
	links     []link.Link
}

// Attacher attaches families' specs: tracepoints once, uprobes once per
// binary. It is safe for concurrent use.
type Attacher struct {
	log   *slog.Logger
	specs []Spec

	mu       sync.Mutex
	global   []link.Link
	binaries map[goinspect.FileID]*Binary
}

// NewAttacher attaches the specs' tracepoints; uprobes come per binary.
func NewAttacher(log *slog.Logger, specs ...Spec) (*Attacher, error) {
	a := &Attacher{log: log, specs: specs, binaries: map[goinspect.FileID]*Binary{}}
	for _, s := range specs {
		for _, tp := range s.Tracepoints {
			l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp.Name, Program: tp.Program})
			if err != nil {
				a.Close()
				return nil, fmt.Errorf("%s: attach tracepoint %s: %w", s.Family, tp.Name, err)
			}
			a.global = append(a.global, l)
		}
	}
	return a, nil
}

// Attach puts every family's uprobes on b's inode, unless already there. A
// family is attached whole or not at all: half its probes would produce
// wrong figures. The returned error is set only when no family attached.
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
	ex, err := link.OpenExecutable(b.AttachPath())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", b.Path, err)
	}
	bin := &Binary{ID: b.ID, Path: exe, GoVersion: b.GoVersion, Facts: facts, Errors: map[string]string{}}
	var errs []error
	for _, s := range a.specs {
		if len(s.Uprobes) == 0 {
			continue
		}
		links, err := attachFamily(ex, b, facts, s)
		if err != nil {
			bin.Errors[s.Family] = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", s.Family, err))
			a.log.Warn("family not attached", "exe", b.Path, "go", b.GoVersion, "probe", s.Family, "err", err)
			continue
		}
		bin.links = append(bin.links, links...)
		bin.Probes += len(links)
	}
	if bin.Probes == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	a.binaries[b.ID] = bin
	return bin, nil
}

func attachFamily(ex *link.Executable, b *goinspect.Binary, facts Facts, s Spec) ([]link.Link, error) {
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
		closeAll(b.links)
	}
}

// Binaries returns a snapshot of the attached binaries.
func (a *Attacher) Binaries() []Binary {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Binary, 0, len(a.binaries))
	for _, b := range a.binaries {
		c := *b
		c.links = nil
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
		closeAll(b.links)
		delete(a.binaries, id)
	}
	closeAll(a.global)
	a.global = nil
	return nil
}

func closeAll(links []link.Link) {
	for _, l := range links {
		_ = l.Close()
	}
}
