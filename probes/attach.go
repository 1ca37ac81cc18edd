package probes

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

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
	// Sites, if set, places Entry at instructions inside the function
	// found by disassembly (a slow path, say) instead of at its entry,
	// each with its own cookie. Every site must be an instruction
	// boundary; an error leaves the family unattached on this binary.
	Sites func(b *goinspect.Binary, fn goinspect.Func, facts Facts) ([]Site, error)
}

// Site is one located probe address (link-time) and its cookie.
type Site struct {
	Addr   uint64
	Cookie uint64
}

// Tracepoint is a kernel raw tracepoint and its program; raw tracepoints
// need no tracefs. A program of type Tracing (SEC "tp_btf/...") is attached
// to the BTF tracepoint it was loaded for, and Name only labels it. A Name
// "group:event" (e.g. "syscalls:sys_enter_madvise") is a tracefs
// tracepoint, for a program of type TracePoint; tracefs is mounted at
// /sys/kernel/tracing when no tracefs is.
type Tracepoint struct {
	Name    string // e.g. "sched_process_exec"
	Program *ebpf.Program
}

func attachTracepoint(tp Tracepoint) (link.Link, error) {
	if tp.Program.Type() == ebpf.Tracing {
		return link.AttachTracing(link.TracingOptions{Program: tp.Program})
	}
	if group, name, ok := strings.Cut(tp.Name, ":"); ok {
		if err := EnsureTracefs(); err != nil {
			return nil, err
		}
		return attachTracefsTracepoint(group, name, tp.Program)
	}
	return link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp.Name, Program: tp.Program})
}

// Spec is what a probe family needs attached. Adding a probe is adding a
// row here; the Attacher is the only attach path.
type Spec struct {
	Family      string
	Uprobes     []Uprobe
	Tracepoints []Tracepoint
	// CookieMap is the family's gp_cookies map (bpf/cookie.h) when its
	// programs were loaded without attach cookies (SetCookieMode): each
	// probe's cookie is written there, keyed by the binary and the
	// probe's place in it, instead of on the link. nil: cookies ride on
	// the links.
	CookieMap *ebpf.Map
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
	cookies   map[string]*cookieSet // family -> its entries in the family's CookieMap
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
		l, err := attachTracepoint(tp)
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
		b, err := goinspect.Open(bin.OpenPath())
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
		bin.cookies[family].remove()
		delete(bin.cookies, family)
		delete(bin.Errors, family)
	}
}

// attachSpec attaches one family's uprobes to an attached binary; a.mu is
// held.
func (a *Attacher) attachSpec(bin *Binary, b *goinspect.Binary, s Spec) {
	links, cookies, err := attachFamily(b, bin.Facts, s)
	if err != nil {
		bin.Errors[s.Family] = err.Error()
		a.log.Warn("family not attached", "exe", bin.Path, "go", b.GoVersion, "probe", s.Family, "err", err)
		return
	}
	delete(bin.Errors, s.Family)
	bin.links[s.Family] = links
	if cookies != nil {
		bin.cookies[s.Family] = cookies
	}
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
		Errors: map[string]string{}, links: map[string][]link.Link{}, cookies: map[string]*cookieSet{}, file: keep}
	uprobeFamilies := 0
	for _, s := range a.specs {
		if len(s.Uprobes) > 0 {
			uprobeFamilies++
			a.attachSpec(bin, b, s)
		}
	}
	// No probe at all is a failure only when some family failed: a family
	// none of whose uprobes applies to this binary's Go version (its
	// tracepoints do the work there) leaves nothing to attach.
	if uprobeFamilies > 0 && bin.Probes == 0 && len(bin.Errors) > 0 {
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

func attachFamily(b *goinspect.Binary, facts Facts, s Spec) ([]link.Link, *cookieSet, error) {
	// An executable of another architecture (run under an emulator such as
	// qemu-user) is never probed: its code sites are not this kernel's.
	if err := b.RequireHostArch(); err != nil {
		return nil, nil, err
	}
	ex, err := link.OpenExecutable(b.AttachPath())
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", b.Path, err)
	}
	var cookies *cookieSet
	if s.CookieMap != nil {
		start, err := b.CodeStart()
		if err != nil {
			return nil, nil, err
		}
		cookies = &cookieSet{m: s.CookieMap, ino: b.ID.Ino, dev: kernelDev(b.ID.Dev), start: start}
	}
	var links []link.Link
	fail := func(err error) ([]link.Link, *cookieSet, error) {
		closeAll(links)
		cookies.remove()
		return nil, nil, err
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
		attachAt := func(prog *ebpf.Program, vaddr uint64, what string, cookie uint64) error {
			off, err := b.FileOffset(vaddr)
			if err != nil {
				return fmt.Errorf("%s %s: %w", what, row.Symbol, err)
			}
			if cookies != nil {
				if err := cookies.put(vaddr, cookie); err != nil {
					return fmt.Errorf("%s %s: %w", what, row.Symbol, err)
				}
				cookie = 0
			}
			l, err := ex.Uprobe(row.Symbol, prog, &link.UprobeOptions{Address: off, Cookie: cookie})
			if err != nil {
				return fmt.Errorf("attach %s %s at %#x: %w", what, row.Symbol, off, err)
			}
			links = append(links, l)
			return nil
		}
		attach := func(prog *ebpf.Program, vaddr uint64, what string) error {
			return attachAt(prog, vaddr, what, cookie)
		}
		if row.Entry != nil && row.Sites != nil {
			sites, err := row.Sites(b, fn, facts)
			if err != nil {
				return fail(err)
			}
			if len(sites) == 0 {
				return fail(fmt.Errorf("%s: no probe site found", row.Symbol))
			}
			for _, st := range sites {
				if st.Addr < fn.Entry || st.Addr >= fn.End {
					return fail(fmt.Errorf("%s: site %#x outside the function", row.Symbol, st.Addr))
				}
				if err := attachAt(row.Entry, st.Addr, "site", st.Cookie); err != nil {
					return fail(err)
				}
			}
		} else if row.Entry != nil {
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
	return links, cookies, nil
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

// OpenPath names the binary's file for as long as it is attached, even
// once deleted or when it lives in another mount namespace.
func (b *Binary) OpenPath() string {
	return fmt.Sprintf("/proc/self/fd/%d", b.file.Fd())
}

func (b *Binary) close() {
	for _, l := range b.links {
		closeAll(l)
	}
	for _, c := range b.cookies {
		c.remove()
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
		c.links, c.cookies, c.file = nil, nil, nil
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
	var all []link.Link
	for id, b := range a.binaries {
		for _, l := range b.links {
			all = append(all, l...)
		}
		for _, c := range b.cookies {
			c.remove()
		}
		b.links, b.cookies = nil, nil
		b.file.Close()
		delete(a.binaries, id)
	}
	for fam, l := range a.global {
		all = append(all, l...)
		delete(a.global, fam)
	}
	closeAll(all)
	a.specs = nil
	return nil
}

// closeAll closes links concurrently: detaching a uprobe waits for an RCU
// grace period in the kernel (tens to hundreds of ms each on this kernel),
// and concurrent detaches share grace periods instead of queueing them.
func closeAll(links []link.Link) {
	if len(links) <= 1 {
		for _, l := range links {
			_ = l.Close()
		}
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, l := range links {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			_ = l.Close()
			<-sem
		}()
	}
	wg.Wait()
}

// cookieKey is struct gp_cookie_key (bpf/cookie.h).
type cookieKey struct {
	Ino, Dev, Off uint64
}

// cookieSet is one binary's entries in a family's gp_cookies map.
type cookieSet struct {
	m     *ebpf.Map
	ino   uint64
	dev   uint64 // as the kernel encodes it (sb->s_dev)
	start uint64 // link-time address of the binary's first code byte
	keys  []cookieKey
}

// put records the cookie of the probe at link-time address vaddr: the
// program finds it from its ip minus the process's mm->start_code.
func (c *cookieSet) put(vaddr, cookie uint64) error {
	if vaddr < c.start {
		return fmt.Errorf("probe %#x before the code start %#x", vaddr, c.start)
	}
	k := cookieKey{Ino: c.ino, Dev: c.dev, Off: vaddr - c.start}
	if err := c.m.Update(&k, cookie, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write the probe's constants to %s: %w", c.m, err)
	}
	c.keys = append(c.keys, k)
	return nil
}

func (c *cookieSet) remove() {
	if c == nil {
		return
	}
	for _, k := range c.keys {
		_ = c.m.Delete(&k)
	}
	c.keys = nil
}

// kernelDev converts a stat(2) st_dev to the kernel's internal dev_t
// (MKDEV: major << 20 | minor), which the BPF side reads from the super
// block.
func kernelDev(stDev uint64) uint64 {
	return uint64(unix.Major(stDev))<<20 | uint64(unix.Minor(stDev))
}
