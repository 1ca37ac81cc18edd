// Package rtstate reads the Go runtime's own books from a process's
// memory: memstats (cycle counts, pause totals and the rings of the last
// 256 pauses), the GC controller (GOGC, the memory limit, the heap goal's
// inputs, heapLive), work (the last cycle's phase timestamps and heap
// sizes), sched and allp (goroutines, GOMAXPROCS). The runtime keeps all
// of it for runtime/metrics and ReadMemStats; reading it costs the traced
// program no trap.
//
// Addresses come from the code that uses the structures (Locate), .symtab
// being the fallback and the tests' reference; layouts come from the facts table
// (probes.Books) and every read is checked against identities the runtime
// maintains (check), so a layout that does not fit is refused, not used.
package rtstate

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/arch/arm64/arm64asm"
	"golang.org/x/arch/x86/x86asm"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/sched"
)

// Addrs are the link-time addresses of the runtime's books in one binary.
type Addrs struct {
	Work, Memstats, GCController, Sched, Allp, Allglen uint64
	// How they were found: "symtab" or "code".
	From string
}

// Add returns the addresses moved by a process's load bias (PIE).
func (a Addrs) Add(bias uint64) Addrs {
	a.Work += bias
	a.Memstats += bias
	a.GCController += bias
	a.Sched += bias
	a.Allp += bias
	a.Allglen += bias
	return a
}

var symbols = []string{"runtime.work", "runtime.memstats", "runtime.gcController", "runtime.sched", "runtime.allp", "runtime.allglen"}

// Locate finds the books in b: from the code that uses them
// (LocateInCode: a few functions decoded, nothing else read), else from
// .symtab when the binary has one (a release whose code moved). Either
// way each address must lie in a writable segment, and every reading is
// checked against the runtime's identities before use.
func Locate(b *goinspect.Binary, f probes.Facts) (Addrs, error) {
	a, codeErr := LocateInCode(b, f)
	if codeErr != nil {
		var err error
		if a, err = FromSymtab(b); errors.Is(err, goinspect.ErrNoSymbol) {
			return Addrs{}, codeErr
		} else if err != nil {
			return Addrs{}, err
		}
	}
	for _, r := range []struct {
		name string
		addr uint64
		size uint32
	}{
		{"work", a.Work, f.Books.WorkHeap2 + 8},
		{"memstats", a.Memstats, f.Books.MemLastGCNanotime + 8},
		{"gcController", a.GCController, f.Books.CtlSize},
		{"sched", a.Sched, f.Books.SchedTimeToRun + 8},
		{"allp", a.Allp, 24},
		{"allglen", a.Allglen, 8},
	} {
		if r.addr == 0 || !b.Writable(r.addr, uint64(r.size)) {
			return Addrs{}, fmt.Errorf("%s: runtime.%s at %#x is not in a writable segment", b.Path, r.name, r.addr)
		}
	}
	return a, nil
}

// FromSymtab reads the books' addresses from .symtab (ErrNoSymbol when
// the binary has none, or lacks one of them).
func FromSymtab(b *goinspect.Binary) (Addrs, error) {
	syms, err := b.Symbols(symbols...)
	if err != nil {
		return Addrs{}, err
	}
	if len(syms) != len(symbols) {
		return Addrs{}, fmt.Errorf("%s: %d of the runtime's %d books in .symtab: %w", b.Path, len(syms), len(symbols), goinspect.ErrNoSymbol)
	}
	return Addrs{Work: syms["runtime.work"].Addr, Memstats: syms["runtime.memstats"].Addr,
		GCController: syms["runtime.gcController"].Addr, Sched: syms["runtime.sched"].Addr,
		Allp: syms["runtime.allp"].Addr, Allglen: syms["runtime.allglen"].Addr, From: "symtab"}, nil
}

// LocateInCode finds the books without .symtab, from the code of runtime
// functions present in every binary (Go 1.19-1.27), amd64 or arm64:
//   - work, memstats, gcController: gcMarkTermination and gcStart address
//     their fields RIP-relative (amd64) or ADRP-based (arm64, resolved by
//     goinspect.GlobalRefsARM64; an ADD'ed address counts as a LEA); each
//     struct's base is the address that
//     most distinct known fields agree on (at least 3 for work and
//     memstats, 2 for gcController, whose receiver LEA counts), and it
//     must be the only one with that many;
//   - sched: from sched.timeToRun, located in casgstatus (probes/sched);
//   - allp: the one 16-byte slice header (ptr, len) gcStart loads, never
//     stores, that is in none of the structures above (gcStart ranges over
//     allp);
//   - allglen: allgadd's atomic store of len(allgs) (an XCHG into the
//     LEA'd address, or an STLR to the ADRP+ADD'ed one, of a value loaded
//     from allgs+8, allgs being the one slice header it appends to).
func LocateInCode(b *goinspect.Binary, f probes.Facts) (Addrs, error) {
	if b.Arch != goinspect.AMD64 && b.Arch != goinspect.ARM64 {
		return Addrs{}, fmt.Errorf("%s: rtstate.LocateInCode: %s code: %w", b.Path, b.Arch, goinspect.ErrArchUnsupported)
	}
	bk := f.Books
	var refs []ref
	for _, name := range []string{"runtime.gcMarkTermination", "runtime.gcStart"} {
		r, err := funcRefs(b, name)
		if err != nil {
			return Addrs{}, err
		}
		refs = append(refs, r...)
	}
	var a Addrs
	var err error
	q, l, b1 := 8, 4, 1
	if a.Work, err = vote(refs, 3, "work", field{bk.WorkTEnd, q}, field{bk.WorkTSweepTerm, q}, field{bk.WorkTMark, q}, field{bk.WorkTMarkTerm, q}, field{bk.WorkTEnd, q},
		field{bk.WorkPauseNS, q}, field{bk.WorkHeap0, q}, field{bk.WorkHeap1, q}, field{bk.WorkHeap2, q}, field{bk.WorkUserForced, b1}); err != nil {
		return Addrs{}, fmt.Errorf("%s: %w", b.Path, err)
	}
	if a.Memstats, err = vote(refs, 3, "memstats", field{bk.MemNumGC, l}, field{bk.MemLastGCUnix, lea}, field{bk.MemPauseTotalNS, q}, field{bk.MemPauseNS, lea},
		field{bk.MemPauseEnd, lea}, field{bk.MemNumGC, l}, field{bk.MemNumForcedGC, l}, field{bk.MemLastGCNanotime, lea}); err != nil {
		return Addrs{}, fmt.Errorf("%s: %w", b.Path, err)
	}
	// The receiver of the pacer's methods (LEAQ gcController(SB), AX)
	// must be among the votes: work and memstats fields are dense enough
	// to outvote a structure only a few of whose fields are referenced.
	var ctlRefs []ref
	for _, r := range refs {
		if !inSpans(r.addr, []span{{a.Work, uint64(bk.WorkHeap2) + 8}, {a.Memstats, uint64(bk.MemLastGCNanotime) + 8}}) {
			ctlRefs = append(ctlRefs, r)
		}
	}
	if a.GCController, err = vote(ctlRefs, 3, "gcController", field{0, lea}, field{bk.CtlHeapLive, q}, field{bk.CtlHeapMarked, q},
		field{bk.CtlTriggered, q}, field{bk.CtlHeapInUse, q}, field{bk.CtlAssistTime, q}); err != nil {
		return Addrs{}, fmt.Errorf("%s: %w", b.Path, err)
	}
	ttr, err := sched.TimeToRunAddr(b, f.TimeHist)
	if err != nil {
		return Addrs{}, err
	}
	a.Sched = ttr - uint64(bk.SchedTimeToRun)

	start, err := funcRefs(b, "runtime.gcStart")
	if err != nil {
		return Addrs{}, err
	}
	known := []span{{a.Work, uint64(bk.WorkHeap2) + 8}, {a.Memstats, uint64(bk.MemLastGCNanotime) + 8}, {a.GCController, uint64(bk.CtlSize)}, {a.Sched, uint64(bk.SchedTimeToRun)}}
	if a.Allp, err = sliceHeader(start, known); err != nil {
		return Addrs{}, fmt.Errorf("%s: runtime.gcStart: allp: %w", b.Path, err)
	}
	if b.Arch == goinspect.ARM64 {
		a.Allglen, err = allglenARM64(b)
	} else {
		a.Allglen, err = allglenAMD64(b)
	}
	if err != nil {
		return Addrs{}, fmt.Errorf("%s: runtime.allgadd: %w", b.Path, err)
	}
	a.From = "code"
	return a, nil
}

func funcCode(b *goinspect.Binary, name string) ([]goinspect.Inst, error) {
	fn, err := b.Func(name)
	if err != nil {
		return nil, err
	}
	return b.Code(fn)
}

// ripTargets lists the RIP-relative memory operands' addresses (LEA
// included), not jump or call targets.
func ripTargets(code []goinspect.Inst) []uint64 {
	var out []uint64
	for _, in := range code {
		for _, arg := range in.Args {
			if m, ok := arg.(x86asm.Mem); ok && m.Base == x86asm.RIP && m.Index == 0 {
				if t, ok := in.Target(); ok {
					out = append(out, t)
				}
			}
		}
	}
	return out
}

// ref is a use of a global's address: an x86 RIP-relative memory
// operand, or an arm64 ADRP-based address (goinspect.GlobalRefsARM64);
// its address and how it is used (the width of the load or store, or lea
// for an address taken). load8 marks an 8-byte load into a register,
// store a store to the address.
type ref struct {
	addr         uint64
	width        int
	load8, store bool
}

// funcRefs returns the global references of the named function's code,
// of either architecture.
func funcRefs(b *goinspect.Binary, name string) ([]ref, error) {
	fn, err := b.Func(name)
	if err != nil {
		return nil, err
	}
	if b.Arch == goinspect.ARM64 {
		code, err := b.CodeARM64(fn)
		if err != nil {
			return nil, err
		}
		return armRefs(goinspect.GlobalRefsARM64(code)), nil
	}
	code, err := b.Code(fn)
	if err != nil {
		return nil, err
	}
	return memRefs(code), nil
}

func armRefs(rs []goinspect.RefARM64) []ref {
	out := make([]ref, 0, len(rs))
	for _, r := range rs {
		w := r.Width
		if r.Kind == goinspect.RefAddr {
			w = lea
		}
		out = append(out, ref{addr: r.Addr, width: w, load8: r.Kind == goinspect.RefLoad && r.Width == 8,
			store: r.Kind == goinspect.RefStore || r.Kind == goinspect.RefAtomic})
	}
	return out
}

// lea marks a field whose address is taken (LEA), an array's say.
const lea = -1

// field is a struct field at off, accessed width bytes at a time (or
// through LEA).
type field struct {
	off   uint32
	width int
}

func memRefs(code []goinspect.Inst) []ref {
	var out []ref
	for _, in := range code {
		for _, arg := range in.Args {
			m, ok := arg.(x86asm.Mem)
			if !ok || m.Base != x86asm.RIP || m.Index != 0 {
				continue
			}
			t, ok := in.Target()
			if !ok {
				continue
			}
			w := in.MemBytes
			if in.Op == x86asm.LEA {
				w = lea
			}
			_, toReg := in.Args[0].(x86asm.Reg)
			out = append(out, ref{t, w, in.Op == x86asm.MOV && in.DataSize == 64 && toReg && m == in.Args[1], in.Op == x86asm.MOV && m == in.Args[0]})
		}
	}
	return out
}

// vote returns the base address that the most distinct fields agree on:
// each reference of the right width at t votes for t-off for every field
// at off. Widths keep a base shifted by a neighbouring field's size from
// scoring as well as the true one. The required field must be among those
// that agree, at least min distinct fields must, and no other base as
// many.
func vote(refs []ref, min int, what string, required field, fields ...field) (uint64, error) {
	fields = append(fields, required)
	votes := map[uint64]map[uint32]bool{}
	for _, r := range refs {
		for _, f := range fields {
			if uint64(f.off) > r.addr || r.width != f.width {
				continue
			}
			base := r.addr - uint64(f.off)
			if votes[base] == nil {
				votes[base] = map[uint32]bool{}
			}
			votes[base][f.off] = true
		}
	}
	var best uint64
	n, tie := 0, false
	for base, agree := range votes {
		if !agree[required.off] {
			continue
		}
		switch {
		case len(agree) > n:
			best, n, tie = base, len(agree), false
		case len(agree) == n:
			tie = true
		}
	}
	if n < min {
		return 0, fmt.Errorf("runtime.%s: at most %d of its known fields referenced at a common base (want %d): not the layout this version's facts row says", what, n, min)
	}
	if tie {
		return 0, fmt.Errorf("runtime.%s: two candidate addresses with %d agreeing fields", what, n)
	}
	return best, nil
}

type span struct{ addr, size uint64 }

func inSpans(t uint64, spans []span) bool {
	for _, s := range spans {
		if t >= s.addr && t < s.addr+s.size {
			return true
		}
	}
	return false
}

// sliceHeader finds the one pair of 8-byte loads of t and t+8 (a slice's
// pointer and length) outside the known structures, neither of them
// stored to (gcStart ranges over allp; it updates work.cpuStats, past the
// known part of work, by loads and stores: measured on arm64, Go 1.23+).
func sliceHeader(refs []ref, known []span) (uint64, error) {
	loads, stores := map[uint64]bool{}, map[uint64]bool{}
	for _, r := range refs {
		if r.load8 && !inSpans(r.addr, known) {
			loads[r.addr] = true
		}
		if r.store {
			stores[r.addr] = true
		}
	}
	var found []uint64
	for t := range loads {
		if loads[t+8] && !stores[t] && !stores[t+8] {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		slices.Sort(found)
		return 0, fmt.Errorf("%d slice headers loaded (%#x), want exactly one (%d loads, known %x)", len(found), found, len(loads), known)
	}
	return found[0], nil
}

// allgs returns the one slice appended to among addrs: the base whose +0,
// +8 and +16 are all referenced.
func allgs(addrs []uint64) (uint64, error) {
	refs := map[uint64]bool{}
	for _, t := range addrs {
		refs[t] = true
	}
	var found []uint64
	for t := range refs {
		if refs[t+8] && refs[t+16] {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("%d slice headers appended to, want exactly one (allgs)", len(found))
	}
	return found[0], nil
}

// allglenAMD64 finds allgadd's `MOVQ allgs+8(SB), R1; LEAQ allglen(SB),
// R2; XCHGQ R1, 0(R2)`.
func allglenAMD64(b *goinspect.Binary) (uint64, error) {
	code, err := funcCode(b, "runtime.allgadd")
	if err != nil {
		return 0, err
	}
	allgs, err := allgs(ripTargets(code))
	if err != nil {
		return 0, err
	}
	var found []uint64
	for i, in := range code {
		if in.Op != x86asm.XCHG || i < 2 {
			continue
		}
		dst, ok := in.Args[0].(x86asm.Mem)
		val, ok2 := in.Args[1].(x86asm.Reg)
		if !ok || !ok2 {
			dst, ok = in.Args[1].(x86asm.Mem)
			val, ok2 = in.Args[0].(x86asm.Reg)
		}
		if !ok || !ok2 || dst.Index != 0 || dst.Disp != 0 {
			continue
		}
		lea, load := code[i-1], code[i-2]
		if lea.Op != x86asm.LEA || lea.Args[0] != dst.Base || load.Op != x86asm.MOV || load.Args[0] != val {
			continue
		}
		t, ok := lea.Target()
		src, ok2 := load.Target()
		if ok && ok2 && src == allgs+8 {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("%d atomic stores of len(allgs), want exactly one (allglen)", len(found))
	}
	return found[0], nil
}

// allglenARM64 finds allgadd's atomic store of len(allgs) on arm64:
// `MOVD allgs+8(SB), R1` (ADRP+LDR), `MOVD $allglen(SB), R2` (ADRP+ADD),
// `STLR R1, (R2)`: an 8-byte store-release of the register last loaded
// from allgs+8 to a global address.
func allglenARM64(b *goinspect.Binary) (uint64, error) {
	fn, err := b.Func("runtime.allgadd")
	if err != nil {
		return 0, err
	}
	code, err := b.CodeARM64(fn)
	if err != nil {
		return 0, err
	}
	rs := goinspect.GlobalRefsARM64(code)
	addrs := make([]uint64, len(rs))
	for i, r := range rs {
		addrs[i] = r.Addr
	}
	allgs, err := allgs(addrs)
	if err != nil {
		return 0, err
	}
	targets := goinspect.JumpTargetsARM64(code)
	var found []uint64
	for _, r := range rs {
		if r.Kind != goinspect.RefAtomic || r.Width != 8 || r.Reg < 0 || code[r.Index].Op != arm64asm.STLR {
			continue
		}
		if v, err := goinspect.SetBy(code, rs, targets, r.Index, r.Reg, 8); err == nil && v.Kind == goinspect.RefLoad && v.Width == 8 && v.Addr == allgs+8 {
			found = append(found, r.Addr)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("%d atomic stores of len(allgs), want exactly one (allglen)", len(found))
	}
	return found[0], nil
}
