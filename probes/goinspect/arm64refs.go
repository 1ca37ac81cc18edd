package goinspect

import (
	"fmt"
	"strings"

	"golang.org/x/arch/arm64/arm64asm"
)

// RefKind is how arm64 code uses a global address it computed.
type RefKind uint8

const (
	// RefAddr: the address itself is put in a register (ADRP+ADD, ADR, or
	// an ADD of a constant to such a register): x86's LEA.
	RefAddr RefKind = iota + 1
	RefLoad
	RefStore
	// RefAtomic: an acquire/release or exclusive load or store (LDAR, STLR,
	// LDAXR, STLXR, ...) or an ARMv8.1 atomic (CAS, SWP, LDADD, ...).
	RefAtomic
)

// RefARM64 is one use of a link-time address by arm64 code, resolved from
// the PC-relative arithmetic the Go linker emits for a global: ADRP of the
// page, then the low 12 bits either as an ADD (the address; `MOVD
// $sym+off(SB), R`) or as a load/store offset (`MOVD sym+off(SB), R`), and
// further constant ADDs and offsets from there. PIE code uses the same
// sequences (they are PC-relative), so addresses are link-time ones.
type RefARM64 struct {
	Index int    // the instruction's index in the code
	Addr  uint64 // the address used
	Kind  RefKind
	Width int // bytes loaded or stored; 0 for RefAddr
	// Reg is the general register (0-30) loaded or stored (Rt), or that
	// received the address (RefAddr); -1 for none (an LSE atomic's is not
	// told apart).
	Reg int
	// Base is the register that held the address (a load's or store's
	// base), -1 for RefAddr.
	Base int
}

// GlobalRefsARM64 returns every use of a global address in code, an arm64
// function's decoded words (CodeARM64), by a linear walk that knows a
// register's value only from ADRP/ADR/ADD-immediate. What it knows is
// forgotten where it could be wrong: at every branch target, after every
// branch, call or return, and for every register an instruction may write
// (any register operand of an instruction that is not a store, a load's
// written-back base, an exclusive store's status, an LSE atomic's). So a
// reported address is one the code really computes on every path.
func GlobalRefsARM64(code []InstARM64) []RefARM64 {
	targets := map[uint64]bool{}
	for _, in := range code {
		if t, ok := in.BranchTarget(); ok && in.Op != arm64asm.BL {
			targets[t] = true
		}
	}
	var known [32]uint64 // 0: unknown (no global lives at 0)
	clear := func() { known = [32]uint64{} }
	var out []RefARM64
	for i, in := range code {
		if targets[in.Addr] {
			clear()
		}
		if in.Data || in.UDF {
			clear()
			continue
		}
		w := in.Enc
		if in.LSE {
			// Rs (bits 16-20) and Rt (0-4) may be written; Rn (5-9) is the
			// address, size in bits 30-31.
			if a := known[w>>5&31]; a != 0 && w>>5&31 != 31 {
				out = append(out, RefARM64{Index: i, Addr: a, Kind: RefAtomic, Width: 1 << (w >> 30), Reg: -1, Base: int(w >> 5 & 31)})
			}
			known[w>>16&31], known[w&31] = 0, 0
			continue
		}
		switch in.Op {
		case arm64asm.B, arm64asm.BL, arm64asm.BLR, arm64asm.BR, arm64asm.RET:
			clear()
			continue
		}
		rd, rn := int(w&31), int(w>>5&31)
		switch {
		case w&0x9f000000 == 0x90000000: // ADRP
			imm := int64(w>>29&3|(w>>5&0x7ffff)<<2) << 43 >> 43 // signed 21 bits
			known[rd] = uint64(int64(in.Addr&^0xfff) + imm<<12)
			if rd == 31 {
				known[31] = 0
			}
			continue
		case w&0x9f000000 == 0x10000000: // ADR
			imm := int64(w>>29&3|(w>>5&0x7ffff)<<2) << 43 >> 43
			known[rd] = uint64(int64(in.Addr) + imm)
			if rd == 31 {
				known[31] = 0
			} else {
				out = append(out, RefARM64{Index: i, Addr: known[rd], Kind: RefAddr, Reg: rd, Base: -1})
			}
			continue
		case w&0xff800000 == 0x91000000: // ADD (immediate), 64-bit
			imm := uint64(w >> 10 & 0xfff)
			if w>>22&1 == 1 {
				imm <<= 12
			}
			if a := known[rn]; a != 0 && rn != 31 && rd != 31 {
				known[rd] = a + imm
				out = append(out, RefARM64{Index: i, Addr: known[rd], Kind: RefAddr, Reg: rd, Base: -1})
				continue
			}
		case w&0x3b000000 == 0x39000000 && w>>26&1 == 0: // LDR/STR (unsigned offset), general registers
			size, opc := w>>30, w>>22&3
			if size == 3 && opc == 2 { // PRFM
				continue
			}
			if a := known[rn]; a != 0 && rn != 31 {
				k := RefLoad
				if opc == 0 {
					k = RefStore
				}
				out = append(out, RefARM64{Index: i, Addr: a + uint64(w>>10&0xfff)<<size, Kind: k, Width: 1 << size, Reg: rd, Base: rn})
			}
		case w&0x3b200c00 == 0x38000000 && w>>26&1 == 0: // LDUR/STUR (unscaled)
			size, opc := w>>30, w>>22&3
			if a := known[rn]; a != 0 && rn != 31 && !(size == 3 && opc == 2) {
				k := RefLoad
				if opc == 0 {
					k = RefStore
				}
				off := int64(w>>12&0x1ff) << 55 >> 55
				out = append(out, RefARM64{Index: i, Addr: uint64(int64(a) + off), Kind: k, Width: 1 << size, Reg: rd, Base: rn})
			}
		case w&0x3f800000 == 0x29000000: // LDP/STP (signed offset), general registers
			opc, load := w>>30, w>>22&1 == 1
			size := uint64(4)
			if opc == 2 {
				size = 8
			}
			if a := known[rn]; a != 0 && rn != 31 && opc != 3 {
				k := RefStore
				if load {
					k = RefLoad
				}
				off := int64(w>>15&0x7f) << 57 >> 57 * int64(size)
				first := uint64(int64(a) + off)
				out = append(out,
					RefARM64{Index: i, Addr: first, Kind: k, Width: int(size), Reg: rd, Base: rn},
					RefARM64{Index: i, Addr: first + size, Kind: k, Width: int(size), Reg: int(w >> 10 & 31), Base: rn})
			}
		case w&0x3f000000 == 0x08000000: // load/store exclusive, acquire/release
			if a := known[rn]; a != 0 && rn != 31 {
				out = append(out, RefARM64{Index: i, Addr: a, Kind: RefAtomic, Width: 1 << (w >> 30), Reg: rd, Base: rn})
			}
			// A load writes Rt (and Rt2); an exclusive store writes its
			// status Rs: forget all three.
			known[w>>16&31], known[w>>10&31] = 0, 0
			if w>>22&1 == 1 {
				known[rd] = 0
			}
			continue
		}
		forgetWritten(&known, in)
	}
	return out
}

// forgetWritten forgets the registers in may write: every register operand
// unless in is a store (whose register operands are read), plus the base of
// a written-back address.
func forgetWritten(known *[32]uint64, in InstARM64) {
	store := isStore(in.Op)
	for i, a := range in.Args {
		if a == nil {
			break
		}
		switch a := a.(type) {
		case arm64asm.Reg:
			if !store || i == 0 && isExclusiveStore(in.Op) {
				forgetReg(known, a)
			}
		case arm64asm.RegSP:
			if !store {
				forgetReg(known, arm64asm.Reg(a))
			}
		case arm64asm.MemImmediate:
			if a.Mode == arm64asm.AddrPreIndex || a.Mode == arm64asm.AddrPostIndex {
				forgetReg(known, arm64asm.Reg(a.Base))
			}
		}
	}
}

func forgetReg(known *[32]uint64, r arm64asm.Reg) {
	switch {
	case r >= arm64asm.W0 && r <= arm64asm.W30:
		known[r-arm64asm.W0] = 0
	case r >= arm64asm.X0 && r <= arm64asm.X30:
		known[r-arm64asm.X0] = 0
	}
}

func isStore(op arm64asm.Op) bool {
	switch op {
	case arm64asm.STR, arm64asm.STRB, arm64asm.STRH, arm64asm.STUR, arm64asm.STURB, arm64asm.STURH,
		arm64asm.STP, arm64asm.STNP, arm64asm.STLR, arm64asm.STLRB, arm64asm.STLRH,
		arm64asm.STXR, arm64asm.STXRB, arm64asm.STXRH, arm64asm.STLXR, arm64asm.STLXRB, arm64asm.STLXRH,
		arm64asm.STXP, arm64asm.STLXP,
		arm64asm.CMP, arm64asm.CMN, arm64asm.TST, arm64asm.CCMP, arm64asm.CCMN,
		arm64asm.CBZ, arm64asm.CBNZ, arm64asm.TBZ, arm64asm.TBNZ, arm64asm.PRFM:
		return true
	}
	return false
}

func isExclusiveStore(op arm64asm.Op) bool {
	switch op {
	case arm64asm.STXR, arm64asm.STXRB, arm64asm.STXRH, arm64asm.STLXR, arm64asm.STLXRB, arm64asm.STLXRH,
		arm64asm.STXP, arm64asm.STLXP:
		return true
	}
	return false
}

// JumpTargetsARM64 returns the addresses that branches of code (not calls)
// lead to.
func JumpTargetsARM64(code []InstARM64) map[uint64]bool {
	targets := map[uint64]bool{}
	for _, in := range code {
		if t, ok := in.BranchTarget(); ok && in.Op != arm64asm.BL {
			targets[t] = true
		}
	}
	return targets
}

// SetBy walks back from code[at] to the instruction that set register reg
// (0-30) and returns it as one of refs (GlobalRefsARM64 of code): the
// global address reg holds (RefAddr) or was loaded from (RefLoad). It
// fails unless the code from there to at is straight-line (no branch in it,
// none landing in it) within window instructions, and no instruction in
// between names reg at all (conservatively: reading it is as bad as
// writing it, for a register the Go compiler has no reason to touch).
func SetBy(code []InstARM64, refs []RefARM64, targets map[uint64]bool, at, reg, window int) (RefARM64, error) {
	for k := at - 1; k >= 0 && k >= at-window; k-- {
		if targets[code[k+1].Addr] {
			return RefARM64{}, fmt.Errorf("a branch lands at %#x, between where R%d is set and %#x", code[k+1].Addr, reg, code[at].Addr)
		}
		in := code[k]
		if in.Data || in.UDF || in.LSE {
			return RefARM64{}, fmt.Errorf("an undecoded word at %#x before %#x", in.Addr, code[at].Addr)
		}
		for _, r := range refs {
			if r.Index == k && r.Reg == reg && (r.Kind == RefAddr || r.Kind == RefLoad) {
				return r, nil
			}
		}
		if _, ok := in.BranchTarget(); ok || in.Op == arm64asm.BLR || in.Op == arm64asm.BR || in.Op == arm64asm.RET {
			return RefARM64{}, fmt.Errorf("%v at %#x before R%d is set for %#x", in.Op, in.Addr, reg, code[at].Addr)
		}
		if NamesRegARM64(in.Inst, reg) {
			return RefARM64{}, fmt.Errorf("R%d is set by %v at %#x, not from a global address", reg, in.Op, in.Addr)
		}
	}
	return RefARM64{}, fmt.Errorf("R%d is not set from a global address within %d instructions of %#x", reg, window, code[at].Addr)
}

// NamesRegARM64 reports whether an operand of in is register n (Wn or
// Xn), directly or as a memory base.
func NamesRegARM64(in arm64asm.Inst, n int) bool {
	w, x := arm64asm.W0+arm64asm.Reg(n), arm64asm.X0+arm64asm.Reg(n)
	for _, a := range in.Args {
		switch a := a.(type) {
		case arm64asm.Reg:
			if a == w || a == x {
				return true
			}
		case arm64asm.RegSP:
			if arm64asm.Reg(a) == w || arm64asm.Reg(a) == x {
				return true
			}
		case arm64asm.MemImmediate:
			if arm64asm.Reg(a.Base) == x {
				return true
			}
		case nil:
			return false
		default:
			// Register-offset and extended operands: their text names
			// their registers (R<n> in Go's syntax is X<n> here).
			if strings.Contains(" "+strings.NewReplacer("[", " ", "]", " ", ",", " ").Replace(a.String())+" ", " "+x.String()+" ") ||
				strings.Contains(" "+strings.NewReplacer("[", " ", "]", " ", ",", " ").Replace(a.String())+" ", " "+w.String()+" ") {
				return true
			}
		}
	}
	return false
}

// CmpImmsARM64 returns the immediates code compares registers with (CMP
// #imm, i.e. SUBS to the zero register, 32- or 64-bit).
func CmpImmsARM64(code []InstARM64) map[int64]bool {
	out := map[int64]bool{}
	for _, in := range code {
		w := in.Enc
		if in.Data || in.UDF || in.LSE || w&0x7f800000 != 0x71000000 || w&31 != 31 {
			continue
		}
		imm := int64(w >> 10 & 0xfff)
		if w>>22&1 == 1 {
			imm <<= 12
		}
		out[imm] = true
	}
	return out
}

// WritesRegARM64 reports whether in may write general register n (0-30):
// conservatively, every register operand of an instruction that is not a
// store, compare or test, a written-back base, an exclusive store's
// status, an LSE atomic's Rs and Rt, any call; an undecoded word is
// assumed to write every register.
func WritesRegARM64(in InstARM64, n int) bool {
	if in.Data || in.UDF {
		return true
	}
	if in.LSE {
		return int(in.Enc>>16&31) == n || int(in.Enc&31) == n
	}
	switch in.Op {
	case arm64asm.BL, arm64asm.BLR:
		return true
	}
	var known [32]uint64
	known[n] = 1
	forgetWritten(&known, in)
	return known[n] == 0
}
