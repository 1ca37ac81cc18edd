package mheaplock

import (
	"fmt"

	"golang.org/x/arch/arm64/arm64asm"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// mheapLockAddrARM64 is MheapLockAddr for arm64 code: `MOVD
// $runtime.mheap_(SB), R0` (ADRP+ADD) straight before `BL runtime.lock2`.
func mheapLockAddrARM64(b *goinspect.Binary, lock2 goinspect.Func) (uint64, error) {
	var found uint64
	agree := 0
	for _, name := range mheapUsers {
		fn, err := b.Func(name)
		if err != nil {
			continue
		}
		code, err := b.CodeARM64(fn)
		if err != nil {
			return 0, err
		}
		refs := goinspect.GlobalRefsARM64(code)
		targets := goinspect.JumpTargetsARM64(code)
		for i, in := range code {
			if t, ok := in.BranchTarget(); !ok || in.Op != arm64asm.BL || t != lock2.Entry {
				continue
			}
			r, err := goinspect.SetBy(code, refs, targets, i, 0, 4)
			if err != nil || r.Kind != goinspect.RefAddr {
				continue
			}
			if found != 0 && r.Addr != found {
				return 0, fmt.Errorf("%s: functions locking mheap_ disagree on its address (%#x, %#x)", b.Path, found, r.Addr)
			}
			found = r.Addr
			agree++
			break
		}
	}
	if agree < 2 {
		return 0, fmt.Errorf("%s: runtime.mheap_ not found by disassembly (%d functions)", b.Path, agree)
	}
	return found, nil
}

// calls reports whether arm64 code calls target (BL).
func callsARM64(code []goinspect.InstARM64, target uint64) bool {
	for _, in := range code {
		if t, ok := in.BranchTarget(); ok && in.Op == arm64asm.BL && t == target {
			return true
		}
	}
	return false
}

// sleepSitesARM64 is SleepSites for arm64 code. At lock2's `BL
// runtime.semasleep` no register holds the lock any more (R0 is
// semasleep's -1, and the CAS's base register was R0; measured on Go
// 1.24-1.27), but lock2 spills its argument l to its spill slot (frame
// size + 8 above SP) right after its prologue: the cookie says "the 8
// bytes at SP + slot". Refused unless the prologue is the one `MOVD.W
// R30, -N(RSP)`, SP changes nowhere else but in epilogues (followed by
// RET), R0 is untouched from the entry to the spill, the slot is stored
// to only there, and every path from the entry to each call passes the
// spill.
func sleepSitesARM64(b *goinspect.Binary, fn goinspect.Func, sema goinspect.Func) ([]probes.Site, error) {
	code, err := b.CodeARM64(fn)
	if err != nil {
		return nil, err
	}
	slot, spill, err := argSpill(code)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", b.Path, fn.Name, err)
	}
	var sites []probes.Site
	for i, in := range code {
		if t, ok := in.BranchTarget(); !ok || in.Op != arm64asm.BL || t != sema.Entry {
			continue
		}
		if reachableAvoiding(code, i, spill) {
			return nil, fmt.Errorf("%s: %s: the call at %#x is reachable without the spill of the lock at %#x", b.Path, fn.Name, in.Addr, code[spill].Addr)
		}
		sites = append(sites, probes.Site{Addr: in.Addr, Cookie: uint64(mheaplockLockContractLOCK_REG_SP) | uint64(mheaplockLockContractLOCK_COOKIE_DEREF) | uint64(uint32(slot))<<32})
	}
	if len(sites) == 0 {
		return nil, fmt.Errorf("%s: %s: %w", b.Path, fn.Name, errNoSite)
	}
	return sites, nil
}

// argSpill finds where code spills its first argument (R0): the SP
// offset of the slot and the index of the store.
func argSpill(code []goinspect.InstARM64) (slot int32, at int, err error) {
	frame, prologue := int32(0), -1
	for i, in := range code {
		w := in.Enc
		if in.Data || in.UDF || in.LSE {
			continue
		}
		// STR X30, [SP, #-N]! (pre-index, 64-bit).
		if w&0xffe00c00 == 0xf8000c00 && w&31 == 30 && w>>5&31 == 31 {
			if prologue >= 0 {
				return 0, 0, fmt.Errorf("two prologues (%#x, %#x)", code[prologue].Addr, in.Addr)
			}
			frame, prologue = -(int32(w>>12&0x1ff) << 23 >> 23), i
		}
	}
	if prologue < 0 || frame <= 0 {
		return 0, 0, fmt.Errorf("no `MOVD.W R30, -N(RSP)` prologue")
	}
	slot = frame + 8
	at = -1
	for i, in := range code {
		if i != prologue && writesSP(in) && (i+1 >= len(code) || code[i+1].Op != arm64asm.RET) {
			return 0, 0, fmt.Errorf("SP changed at %#x, not in the prologue or an epilogue", in.Addr)
		}
		if i > prologue && at < 0 && storesSlot(in, slot) && in.Enc>>30 == 3 && in.Enc&31 == 0 {
			at = i
			continue
		}
		if i > prologue && storesSlot(in, slot) {
			return 0, 0, fmt.Errorf("the argument's spill slot %d(RSP) is stored to again at %#x", slot, in.Addr)
		}
	}
	if at < 0 {
		return 0, 0, fmt.Errorf("no spill of R0 to %d(RSP)", slot)
	}
	for _, in := range code[:at] {
		if goinspect.WritesRegARM64(in, 0) {
			return 0, 0, fmt.Errorf("R0 written at %#x, before its spill at %#x", in.Addr, code[at].Addr)
		}
	}
	return slot, at, nil
}

// writesSP reports whether in changes SP: a pre- or post-indexed access
// based on SP, or an arithmetic instruction whose destination is SP.
func writesSP(in goinspect.InstARM64) bool {
	switch in.Op {
	case arm64asm.CMP, arm64asm.CMN, arm64asm.TST:
		return false // the stack check compares SP
	}
	for i, a := range in.Args {
		switch a := a.(type) {
		case arm64asm.MemImmediate:
			if a.Base == arm64asm.RegSP(arm64asm.SP) && (a.Mode == arm64asm.AddrPreIndex || a.Mode == arm64asm.AddrPostIndex) {
				return true
			}
		case arm64asm.RegSP:
			if i == 0 && a == arm64asm.RegSP(arm64asm.SP) {
				return true
			}
		}
	}
	return false
}

// storesSlot reports whether in is a store (any width; STR or STUR or
// STP) that may write the 8 bytes at SP+slot.
func storesSlot(in goinspect.InstARM64, slot int32) bool {
	w := in.Enc
	if in.Data || in.UDF || in.LSE || w>>5&31 != 31 {
		return false
	}
	var lo, hi int32
	switch {
	case w&0x3b000000 == 0x39000000 && w>>22&3 == 0: // STR (unsigned offset)
		size := w >> 30
		if w>>26&1 == 1 {
			return true // SIMD store to the stack: not told apart
		}
		lo = int32(w>>10&0xfff) << size
		hi = lo + 1<<size
	case w&0x3b200000 == 0x38000000 && w>>22&3 == 0: // STUR, STR pre/post-index
		lo = int32(w>>12&0x1ff) << 23 >> 23
		hi = lo + 16
		if w>>10&3 != 0 {
			return true // writeback: SP moves; told by writesSP
		}
	case w&0x3a400000 == 0x28000000: // STP/STNP (any indexing), general or SIMD
		scale := int32(4) << (w >> 31)
		if w>>26&1 == 1 {
			scale = 4 << (w >> 30)
		}
		lo = int32(w>>15&0x7f) << 25 >> 25 * scale
		hi = lo + 2*scale
	default:
		return false
	}
	return lo < slot+8 && slot < hi
}

// reachableAvoiding reports whether code[target] can be reached from the
// entry without passing code[avoid], following fall-through and direct
// branches; an indirect branch (BR) reached makes it so (its targets are
// unknown).
func reachableAvoiding(code []goinspect.InstARM64, target, avoid int) bool {
	index := make(map[uint64]int, len(code))
	for i, in := range code {
		index[in.Addr] = i
	}
	seen := make([]bool, len(code))
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i < 0 || i >= len(code) || seen[i] || i == avoid {
			continue
		}
		seen[i] = true
		if i == target {
			return true
		}
		in := code[i]
		switch {
		case in.Data:
			continue
		case in.Op == arm64asm.BR:
			return true
		case in.Op == arm64asm.RET:
			continue
		}
		if t, ok := in.BranchTarget(); ok && in.Op != arm64asm.BL {
			if j, ok := index[t]; ok {
				stack = append(stack, j)
			}
			if in.Op == arm64asm.B {
				continue
			}
		}
		stack = append(stack, i+1)
	}
	return false
}
