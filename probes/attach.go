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
	// Multi: the uprobe programs were loaded for uprobe_multi links
	// (SetUprobeMode), and each program goes on a binary as one link over
	// all its sites there, each site with its cookie. Else one link per
	// site (kernels before 6.6).
	Multi bool
}

// MaxSitesPerBinary caps the uprobe sites attached to one binary (one
// inode), all families together, whenever they were attached: the same
// number as goinspect's cap on the sites one inspection hands out, which
// does not see the families a later AddSpec attaches with a fresh
// inspection, nor entry probes no finder claims. The families need a few
// per binary (gc: 1, mheaplock: 1–2); a forged binary would otherwise get
// one uprobe per RET byte (and, without uprobe_multi links, a file
// descriptor each). The family that would go over is refused on that
// binary before anything is attached, with the reason in status.
const MaxSitesPerBinary = goinspect.MaxSitesPerBinary

// Binary is the attach state of one executable (one inode). Uprobes live on
// the inode, so one attachment traces every process running it, from its
// first instruction.
type Binary struct {
	ID        goinspect.FileID
	Path      string // as the first process seen running it named it
	GoVersion string
	Facts     Facts
	Probes    int               // uprobe sites attached (one link each, or fewer multi links)
	Errors    map[string]string // family -> why it is not attached
	links     map[string][]link.Link
	cookies   map[string]*cookieSet // family -> its entries in the family's CookieMap
	// file keeps the inode reachable (as /proc/self/fd/N) for families
	// added later, even once every process of it exited or it was deleted.
	file *os.File
}

// Attacher attaches families' specs: tracepoints once, uprobes once per
// binary. It is safe for concurrent use, and attaches of different
// binaries run side by side: creating and closing links takes the kernel
// milliseconds to hundreds of milliseconds (a detach waits for an RCU
// grace period), so no lock is held while it happens.
type Attacher struct {
	log *slog.Logger

	// specMu orders changes of the families against attaches in flight:
	// Attach holds it shared for its whole run (attaches do not wait for
	// each other), AddSpec, RemoveSpec and Close exclusively, so a family
	// never comes or goes under an attach that would miss it or keep it.
	specMu sync.RWMutex

	// mu guards what follows; it is never held while links are created
	// or closed.
	mu       sync.Mutex
	specs    []Spec
	global   map[string][]link.Link
	binaries map[goinspect.FileID]*Binary
	pending  map[goinspect.FileID]*attaching // binaries being attached
	// detaching: binaries whose links are being closed. They are still
	// listed: "no probes" must mean none is left in the kernel (a process
	// started from a rewritten file while a detach is under way, ~250 ms,
	// still traps at the old offsets).
	detaching map[goinspect.FileID]*Binary
	closed    bool
}

// attaching is an attach in flight: the binary's ID is reserved, and a
// second Attach of it waits for the first one's result.
type attaching struct {
	done     chan struct{}
	bin      *Binary // the result, once done
	err      error
	detached bool // Detach came meanwhile: the result is rolled back
}

// ErrClosed is returned by an Attach after (or racing) Close.
var ErrClosed = errors.New("attacher closed")

// NewAttacher attaches the specs' tracepoints; uprobes come per binary.
func NewAttacher(log *slog.Logger, specs ...Spec) (*Attacher, error) {
	a := &Attacher{log: log, global: map[string][]link.Link{}, binaries: map[goinspect.FileID]*Binary{}, detaching: map[goinspect.FileID]*Binary{},
		pending: map[goinspect.FileID]*attaching{}}
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
	a.specMu.Lock()
	defer a.specMu.Unlock()
	a.mu.Lock()
	closed := a.closed
	dup := slices.ContainsFunc(a.specs, func(x Spec) bool { return x.Family == s.Family })
	a.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if dup {
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
	// With specMu held no attach is in flight: every binary is either
	// attached (published) or not known yet, and the ones attached from
	// now on see the new spec. Detach may still remove one meanwhile.
	type target struct {
		bin    *Binary
		file   *os.File // a descriptor of its own: Detach may close bin.file
		budget int
	}
	var targets []target
	a.mu.Lock()
	a.global[s.Family] = tps
	a.specs = append(a.specs, s)
	if len(s.Uprobes) > 0 {
		for _, bin := range a.binaries {
			f, err := os.Open(bin.OpenPath())
			if err != nil {
				bin.Errors[s.Family] = err.Error()
				continue
			}
			targets = append(targets, target{bin: bin, file: f, budget: MaxSitesPerBinary - bin.Probes})
		}
	}
	a.mu.Unlock()
	for _, t := range targets {
		var fa familyAttach
		b, err := goinspect.Open(fmt.Sprintf("/proc/self/fd/%d", t.file.Fd()))
		switch {
		case err != nil:
			fa.err = err
		case b.ID != t.bin.ID:
			fa.err = fmt.Errorf("binary changed identity (%v, was %v)", b.ID, t.bin.ID)
		default:
			fa = attachFamily(b, t.bin.Facts, s, t.budget)
		}
		if b != nil {
			b.Close()
		}
		t.file.Close()
		a.mu.Lock()
		live := a.binaries[t.bin.ID] == t.bin
		if live {
			t.bin.apply(s.Family, fa)
		}
		a.mu.Unlock()
		if !live {
			fa.rollback()
		} else if fa.err != nil {
			a.log.Warn("family not attached", "exe", t.bin.Path, "go", t.bin.GoVersion, "probe", s.Family, "err", fa.err)
		}
	}
	return nil
}

// RemoveSpec detaches a family everywhere.
func (a *Attacher) RemoveSpec(family string) {
	a.specMu.Lock()
	defer a.specMu.Unlock()
	var links []link.Link
	var cookies []*cookieSet
	a.mu.Lock()
	a.specs = slices.DeleteFunc(a.specs, func(x Spec) bool { return x.Family == family })
	links = append(links, a.global[family]...)
	delete(a.global, family)
	for _, bin := range a.binaries {
		bin.Probes -= bin.sites(family)
		links = append(links, bin.links[family]...)
		delete(bin.links, family)
		cookies = append(cookies, bin.cookies[family])
		delete(bin.cookies, family)
		delete(bin.Errors, family)
	}
	a.mu.Unlock()
	// Every link of the family at once: their detaches share grace
	// periods instead of queueing them.
	closeAll(links)
	for _, c := range cookies {
		c.remove()
	}
}

// familyAttach is one family's uprobes on one binary, attached or not.
type familyAttach struct {
	links   []link.Link
	cookies *cookieSet
	sites   int // probe sites the links cover
	err     error
}

func (fa familyAttach) rollback() {
	closeAll(fa.links)
	fa.cookies.remove()
}

// apply records a family's attach on the binary: its links, or why it has
// none. a.mu is held, or bin is not published yet.
func (bin *Binary) apply(family string, fa familyAttach) {
	if fa.err != nil {
		bin.Errors[family] = fa.err.Error()
		return
	}
	delete(bin.Errors, family)
	bin.links[family] = fa.links
	if fa.cookies != nil {
		bin.cookies[family] = fa.cookies
	}
	bin.Probes += fa.sites
}

// sites returns how many probe sites the family has on the binary.
func (bin *Binary) sites(family string) int {
	n := 0
	for _, l := range bin.links[family] {
		n += linkSites(l)
	}
	return n
}

// Attach puts every family's uprobes on b's inode, unless already there. A
// family is attached whole or not at all: half its probes would produce
// wrong figures. It fails when no family could be attached.
// exe is the name to show (b.Path may be a /proc/PID/exe link).
//
// Attaches of different binaries run concurrently; a second Attach of a
// binary being attached waits for the first and returns its result. The
// returned Binary is a snapshot (its figures do not follow later changes).
func (a *Attacher) Attach(b *goinspect.Binary, exe string) (*Binary, error) {
	a.specMu.RLock()
	defer a.specMu.RUnlock()
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil, ErrClosed
	}
	if got, ok := a.binaries[b.ID]; ok {
		snap := got.snapshot()
		a.mu.Unlock()
		return snap, nil
	}
	if p, ok := a.pending[b.ID]; ok {
		a.mu.Unlock()
		<-p.done
		return p.bin, p.err
	}
	p := &attaching{done: make(chan struct{})}
	a.pending[b.ID] = p
	specs := slices.Clone(a.specs)
	a.mu.Unlock()

	bin, err := a.attachNew(b, exe, specs)

	a.mu.Lock()
	delete(a.pending, b.ID)
	rollback := false
	switch {
	case err != nil:
	case a.closed:
		rollback, err = true, ErrClosed
	case p.detached:
		// The file was written to (or its last process left) while its
		// probes went on: they must not stay.
		rollback, err = true, fmt.Errorf("%s: detached while its probes were being attached", exe)
	default:
		a.binaries[b.ID] = bin
		p.bin = bin.snapshot()
	}
	p.err = err
	a.mu.Unlock()
	if rollback {
		bin.close()
	}
	close(p.done)
	return p.bin, p.err
}

// attachNew attaches the specs' uprobes to a binary not published yet; no
// lock is held (bin is private until Attach publishes it).
func (a *Attacher) attachNew(b *goinspect.Binary, exe string, specs []Spec) (*Binary, error) {
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
	for _, s := range specs {
		if len(s.Uprobes) == 0 {
			continue
		}
		uprobeFamilies++
		fa := attachFamily(b, facts, s, MaxSitesPerBinary-bin.Probes)
		if fa.err != nil {
			a.log.Warn("family not attached", "exe", exe, "go", b.GoVersion, "probe", s.Family, "err", fa.err)
		}
		bin.apply(s.Family, fa)
	}
	// No probe at all is a failure only when some family failed: a family
	// none of whose uprobes applies to this binary's Go version (its
	// tracepoints do the work there) leaves nothing to attach.
	if uprobeFamilies > 0 && bin.Probes == 0 && len(bin.Errors) > 0 {
		bin.close()
		var errs []error
		for _, fam := range slices.Sorted(maps.Keys(bin.Errors)) {
			errs = append(errs, fmt.Errorf("%s: %s", fam, bin.Errors[fam]))
		}
		return nil, errors.Join(errs...)
	}
	return bin, nil
}

// site is one probe to attach: a program at a link-time address.
type site struct {
	prog   *ebpf.Program
	symbol string
	what   string // entry, site, return
	vaddr  uint64 // link-time address
	off    uint64 // file offset
	cookie uint64
}

// planFamily locates every probe site of the family in b, creating
// nothing in the kernel. budget is how many sites the binary may still
// get (MaxSitesPerBinary).
func planFamily(b *goinspect.Binary, facts Facts, s Spec, budget int) ([]site, error) {
	var sites []site
	overCap := func(row Uprobe, n int, what string) error {
		return fmt.Errorf("%s: %d probe sites (%s) exceed the cap of %d uprobe sites per binary (%d left): refused, a forged or unusual binary",
			row.Symbol, n, what, MaxSitesPerBinary, max(budget-len(sites), 0))
	}
	add := func(row Uprobe, prog *ebpf.Program, what string, cookie uint64, vaddrs ...uint64) error {
		if len(sites)+len(vaddrs) > budget {
			return overCap(row, len(vaddrs), what)
		}
		for _, v := range vaddrs {
			off, err := b.FileOffset(v)
			if err != nil {
				return fmt.Errorf("%s %s: %w", what, row.Symbol, err)
			}
			sites = append(sites, site{prog: prog, symbol: row.Symbol, what: what, vaddr: v, off: off, cookie: cookie})
		}
		return nil
	}
	for _, row := range s.Uprobes {
		if row.When != nil && !row.When(facts) {
			continue
		}
		fn, err := b.Func(row.Symbol)
		if err != nil {
			return nil, err
		}
		var cookie uint64
		if row.Cookie != nil {
			cookie = row.Cookie(facts)
		}
		if row.Entry != nil && row.Sites != nil {
			found, err := row.Sites(b, fn, facts)
			if err != nil {
				return nil, err
			}
			if len(found) == 0 {
				return nil, fmt.Errorf("%s: no probe site found", row.Symbol)
			}
			if len(sites)+len(found) > budget {
				return nil, overCap(row, len(found), "site")
			}
			for _, st := range found {
				if st.Addr < fn.Entry || st.Addr >= fn.End {
					return nil, fmt.Errorf("%s: site %#x outside the function", row.Symbol, st.Addr)
				}
				if err := add(row, row.Entry, "site", st.Cookie, st.Addr); err != nil {
					return nil, err
				}
			}
		} else if row.Entry != nil {
			if err := add(row, row.Entry, "entry", cookie, fn.Entry); err != nil {
				return nil, err
			}
		}
		if row.Return != nil {
			rets, err := b.Returns(fn)
			if err != nil {
				return nil, err
			}
			if len(rets) == 0 {
				return nil, fmt.Errorf("%s: no RET instruction found", row.Symbol)
			}
			if err := add(row, row.Return, "return", cookie, rets...); err != nil {
				return nil, err
			}
		}
	}
	return sites, nil
}

// attachFamily attaches one family's uprobes to b: all of them, or none
// (the error says why). budget is the binary's sites left under
// MaxSitesPerBinary. No lock is held: this is where the kernel work is.
func attachFamily(b *goinspect.Binary, facts Facts, s Spec, budget int) familyAttach {
	fail := func(err error) familyAttach { return familyAttach{err: err} }
	// An executable of another architecture (run under an emulator such as
	// qemu-user) is never probed: its code sites are not this kernel's.
	if err := b.RequireHostArch(); err != nil {
		return fail(err)
	}
	sites, err := planFamily(b, facts, s, budget)
	if err != nil {
		return fail(err)
	}
	if len(sites) == 0 {
		return familyAttach{}
	}
	ex, err := link.OpenExecutable(b.AttachPath())
	if err != nil {
		return fail(fmt.Errorf("open %s: %w", b.Path, err))
	}
	fa := familyAttach{sites: len(sites)}
	if s.CookieMap != nil {
		start, err := b.CodeStart()
		if err != nil {
			return fail(err)
		}
		fa.cookies = &cookieSet{m: s.CookieMap, ino: b.ID.Ino, dev: kernelDev(b.ID.Dev), start: start}
		for i := range sites {
			if err := fa.cookies.put(sites[i].vaddr, sites[i].cookie); err != nil {
				fa.rollback()
				return fail(fmt.Errorf("%s %s: %w", sites[i].what, sites[i].symbol, err))
			}
			sites[i].cookie = 0
		}
	}
	if s.Multi {
		fa.links, err = attachMulti(ex, sites)
	} else {
		fa.links, err = attachEach(ex, sites)
	}
	if err != nil {
		fa.rollback()
		return fail(err)
	}
	return fa
}

// attachEach attaches one uprobe link per site.
func attachEach(ex *link.Executable, sites []site) ([]link.Link, error) {
	var links []link.Link
	for _, st := range sites {
		l, err := ex.Uprobe(st.symbol, st.prog, &link.UprobeOptions{Address: st.off, Cookie: st.cookie})
		if err != nil {
			closeAll(links)
			return nil, fmt.Errorf("attach %s %s at %#x: %w", st.what, st.symbol, st.off, err)
		}
		links = append(links, multiLink{Link: l, n: 1})
	}
	return links, nil
}

// attachMulti attaches each program once, as a uprobe_multi link over all
// its sites: one link to create and, above all, one to detach (a detach
// waits for the kernel's grace period once per link, not per site).
func attachMulti(ex *link.Executable, sites []site) ([]link.Link, error) {
	var progs []*ebpf.Program
	bySite := map[*ebpf.Program][]site{}
	for _, st := range sites {
		if _, ok := bySite[st.prog]; !ok {
			progs = append(progs, st.prog)
		}
		bySite[st.prog] = append(bySite[st.prog], st)
	}
	var links []link.Link
	for _, prog := range progs {
		ss := bySite[prog]
		opts := &link.UprobeMultiOptions{}
		var where []string
		for _, st := range ss {
			opts.Addresses = append(opts.Addresses, st.off)
			opts.Cookies = append(opts.Cookies, st.cookie)
			where = append(where, fmt.Sprintf("%s %s at %#x", st.what, st.symbol, st.off))
		}
		l, err := ex.UprobeMulti(nil, prog, opts)
		if err != nil {
			closeAll(links)
			return nil, fmt.Errorf("attach %s (uprobe_multi): %w", strings.Join(where, ", "), err)
		}
		links = append(links, multiLink{Link: l, n: len(ss)})
	}
	return links, nil
}

// multiLink is a uprobe link and the number of sites it covers.
type multiLink struct {
	link.Link
	n int
}

func linkSites(l link.Link) int {
	if m, ok := l.(multiLink); ok {
		return m.n
	}
	return 1
}

// Detach removes a binary's uprobes. A binary still being attached is
// rolled back when its attach ends (its Attach fails).
func (a *Attacher) Detach(id goinspect.FileID) {
	a.mu.Lock()
	if p, ok := a.pending[id]; ok {
		p.detached = true
	}
	b, ok := a.binaries[id]
	delete(a.binaries, id)
	if ok {
		a.detaching[id] = b
	}
	a.mu.Unlock()
	if ok {
		b.close()
		a.mu.Lock()
		if a.detaching[id] == b {
			delete(a.detaching, id)
		}
		a.mu.Unlock()
	}
}

// OpenPath names the binary's file for as long as it is attached, even
// once deleted or when it lives in another mount namespace.
func (b *Binary) OpenPath() string {
	return fmt.Sprintf("/proc/self/fd/%d", b.file.Fd())
}

// close detaches an unpublished (or no longer published) binary.
func (b *Binary) close() {
	var all []link.Link
	for _, l := range b.links {
		all = append(all, l...)
	}
	closeAll(all)
	for _, c := range b.cookies {
		c.remove()
	}
	b.file.Close()
}

// snapshot copies the binary's figures; the copy shares the open file
// (OpenPath) but no links. a.mu is held, or b is private.
func (b *Binary) snapshot() *Binary {
	c := *b
	c.links, c.cookies = nil, nil
	c.Errors = maps.Clone(b.Errors)
	return &c
}

// Binaries returns a snapshot of the attached binaries.
func (a *Attacher) Binaries() []Binary {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Binary, 0, len(a.binaries)+len(a.detaching))
	for _, b := range a.binaries {
		c := b.snapshot()
		c.file = nil
		out = append(out, *c)
	}
	for id, b := range a.detaching {
		if _, again := a.binaries[id]; again {
			continue
		}
		c := b.snapshot()
		c.file = nil
		out = append(out, *c)
	}
	slices.SortFunc(out, func(x, y Binary) int { return strings.Compare(x.Path, y.Path) })
	return out
}

// Close detaches everything, every link at once. Attaches in flight end
// first (they hold specMu); any later one fails with ErrClosed.
func (a *Attacher) Close() error {
	a.specMu.Lock()
	defer a.specMu.Unlock()
	var all []link.Link
	var cookies []*cookieSet
	var files []*os.File
	a.mu.Lock()
	a.closed = true
	for id, b := range a.binaries {
		for _, l := range b.links {
			all = append(all, l...)
		}
		for _, c := range b.cookies {
			cookies = append(cookies, c)
		}
		files = append(files, b.file)
		b.links, b.cookies = nil, nil
		delete(a.binaries, id)
	}
	for fam, l := range a.global {
		all = append(all, l...)
		delete(a.global, fam)
	}
	a.specs = nil
	a.mu.Unlock()
	closeAll(all)
	for _, c := range cookies {
		c.remove()
	}
	for _, f := range files {
		f.Close()
	}
	return nil
}

// closeAll closes links concurrently: detaching a uprobe waits for an RCU
// grace period in the kernel (tens to hundreds of ms each on this kernel),
// and concurrent detaches of multi links and tracepoints share grace
// periods instead of queueing them. Per-site uprobe links do not: 37 of
// them closed 64 at once took 6.4 s, ~170 ms each, one after the other
// (the kernel detaches perf-event uprobes under one mutex); hence
// uprobe_multi links.
func closeAll(links []link.Link) {
	if len(links) <= 1 {
		for _, l := range links {
			_ = l.Close()
		}
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxClosing)
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

// maxClosing bounds the links closed at once (each a thread blocked in
// close). Measured, a daemon with ~50 binaries attached (~100 multi
// links): its links all closed in 160-210 ms with 64 at once, no faster
// with 256.
const maxClosing = 64

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
