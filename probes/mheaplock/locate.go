package mheaplock

import (
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// mheapUsers are runtime functions that lock mheap_.lock directly
// (`LEAQ runtime.mheap_(SB), AX; CALL runtime.lock2(SB)` once lock and
// lockWithRank are inlined) in every release from Go 1.19 to 1.27.
var mheapUsers = []string{
	"runtime.gcSweep",
	"runtime.gcResetMarkState",
	"runtime.allocmcache.func1",
	"runtime.setGCPercent.func1",
}

// MheapLockAddr finds the link-time address of runtime.mheap_.lock's key
// word without .symtab: the RIP-relative LEA into AX right before a call of
// runtime.lock2 in the functions known to lock it (mheap.lock is mheap's
// first field and mutex.key the mutex's, lock ranking being off in release
// builds). At least two functions must agree and none may disagree. On
// arm64: the ADRP+ADD of the address into R0 (mheapLockAddrARM64).
func MheapLockAddr(b *goinspect.Binary) (uint64, error) {
	if err := requireArch(b, "mheaplock.MheapLockAddr"); err != nil {
		return 0, err
	}
	lock2, err := b.Func("runtime.lock2")
	if err != nil {
		return 0, err
	}
	if b.Arch == goinspect.ARM64 {
		return mheapLockAddrARM64(b, lock2)
	}
	var found uint64
	agree := 0
	for _, name := range mheapUsers {
		fn, err := b.Func(name)
		if err != nil {
			continue
		}
		code, err := b.Code(fn)
		if err != nil {
			return 0, err
		}
		for i := 1; i < len(code); i++ {
			call, lea := code[i], code[i-1]
			if call.Op != x86asm.CALL || lea.Op != x86asm.LEA || lea.Args[0] != x86asm.RAX {
				continue
			}
			if t, ok := call.Target(); !ok || t != lock2.Entry {
				continue
			}
			addr, ok := lea.Target()
			if !ok {
				continue
			}
			if found != 0 && addr != found {
				return 0, fmt.Errorf("%s: functions locking mheap_ disagree on its address (%#x, %#x)", b.Path, found, addr)
			}
			found = addr
			agree++
			break
		}
	}
	if agree < 2 {
		return 0, fmt.Errorf("%s: runtime.mheap_ not found by disassembly (%d functions)", b.Path, agree)
	}
	return found, nil
}

// SpinbitLock reports whether the binary's runtime.lock2 is the spin-bit
// implementation (it sleeps in runtime.semasleep) rather than the futex one
// (runtime.futexsleep).
func SpinbitLock(b *goinspect.Binary) (bool, error) {
	if err := requireArch(b, "mheaplock.SpinbitLock"); err != nil {
		return false, err
	}
	lock2, err := b.Func("runtime.lock2")
	if err != nil {
		return false, err
	}
	sema, _ := b.Func("runtime.semasleep")
	futex, _ := b.Func("runtime.futexsleep")
	if b.Arch == goinspect.ARM64 {
		code, err := b.CodeARM64(lock2)
		if err != nil {
			return false, err
		}
		switch {
		case sema.Entry != 0 && callsARM64(code, sema.Entry):
			return true, nil
		case futex.Entry != 0 && callsARM64(code, futex.Entry):
			return false, nil
		}
		return false, fmt.Errorf("%s: runtime.lock2 calls neither semasleep nor futexsleep", b.Path)
	}
	code, err := b.Code(lock2)
	if err != nil {
		return false, err
	}
	for _, in := range code {
		if in.Op != x86asm.CALL {
			continue
		}
		t, _ := in.Target()
		switch {
		case sema.Entry != 0 && t == sema.Entry:
			return true, nil
		case futex.Entry != 0 && t == futex.Entry:
			return false, nil
		}
	}
	return false, fmt.Errorf("%s: runtime.lock2 calls neither semasleep nor futexsleep", b.Path)
}

// requireArch refuses binaries of an architecture whose code the
// locators do not read (amd64 and arm64 they do).
func requireArch(b *goinspect.Binary, what string) error {
	if b.Arch != goinspect.AMD64 && b.Arch != goinspect.ARM64 {
		return fmt.Errorf("%s: %s: %s code: %w", b.Path, what, b.Arch, goinspect.ErrArchUnsupported)
	}
	return nil
}

var errNoSite = errors.New("no usable CALL runtime.semasleep site")

// SleepSites locates, in a spin-bit runtime.lock2, each `CALL
// runtime.semasleep` and the register holding the lock's address there:
// the base of the `LOCK CMPXCHG` that queued the M on the lock just
// before. It refuses a site unless the code from the CMPXCHG to the CALL is
// straight-line (no other jump lands in between) and leaves that register
// alone, so the register read at the CALL is the lock's address. On arm64
// the lock is read from lock2's argument spill slot (sleepSitesARM64).
func SleepSites(b *goinspect.Binary, fn goinspect.Func, _ probes.Facts) ([]probes.Site, error) {
	if err := requireArch(b, "mheaplock.SleepSites"); err != nil {
		return nil, err
	}
	sema, err := b.Func("runtime.semasleep")
	if err != nil {
		return nil, err
	}
	if b.Arch == goinspect.ARM64 {
		return sleepSitesARM64(b, fn, sema)
	}
	code, err := b.Code(fn)
	if err != nil {
		return nil, err
	}
	targets := goinspect.JumpTargets(code)
	var sites []probes.Site
	for i, in := range code {
		if in.Op != x86asm.CALL {
			continue
		}
		if t, _ := in.Target(); t != sema.Entry {
			continue
		}
		site, err := siteAt(code, i, targets)
		if err != nil {
			return nil, fmt.Errorf("%s: %s at %#x: %w", b.Path, fn.Name, in.Addr, err)
		}
		sites = append(sites, site)
	}
	if len(sites) == 0 {
		return nil, fmt.Errorf("%s: %s: %w", b.Path, fn.Name, errNoSite)
	}
	// Each is a uprobe: a forged lock2 of thousands of them is refused.
	if err := b.ClaimSites(fn, len(sites), "CALL runtime.semasleep"); err != nil {
		return nil, err
	}
	return sites, nil
}

func siteAt(code []goinspect.Inst, call int, targets map[uint64]bool) (probes.Site, error) {
	const window = 16
	for j := call - 1; j >= 0 && j >= call-window; j-- {
		in := code[j]
		if targets[code[j+1].Addr] {
			return probes.Site{}, fmt.Errorf("a jump lands at %#x, between the CMPXCHG and the call", code[j+1].Addr)
		}
		if in.Op == x86asm.CALL || in.Op == x86asm.RET || in.Op == x86asm.JMP {
			return probes.Site{}, errNoSite
		}
		if in.Op != x86asm.CMPXCHG || !hasLock(in) {
			continue
		}
		mem, ok := in.Args[0].(x86asm.Mem)
		if !ok || mem.Index != 0 || mem.Base < x86asm.RAX || mem.Base > x86asm.R15 || mem.Base == x86asm.RSP {
			return probes.Site{}, fmt.Errorf("CMPXCHG at %#x: unexpected operand %v", in.Addr, in.Args[0])
		}
		for k := j + 1; k < call; k++ {
			if writes(code[k], mem.Base) {
				return probes.Site{}, fmt.Errorf("%v at %#x overwrites %v", code[k].Op, code[k].Addr, mem.Base)
			}
		}
		reg := uint64(mem.Base - x86asm.RAX)
		return probes.Site{Addr: code[call].Addr, Cookie: reg | uint64(uint32(int32(mem.Disp)))<<32}, nil
	}
	return probes.Site{}, errNoSite
}

func hasLock(in goinspect.Inst) bool {
	for _, p := range in.Prefix {
		if p == 0 {
			break
		}
		if p&0xff == x86asm.PrefixLOCK&0xff {
			return true
		}
	}
	return false
}

// writes reports whether in may write register r (any width of it):
// conservatively, any instruction naming r (or a part of it) as its first
// operand, plus the instructions with implicit outputs.
func writes(in goinspect.Inst, r x86asm.Reg) bool {
	switch in.Op {
	case x86asm.CALL, x86asm.SYSCALL, x86asm.CPUID, x86asm.RDTSC, x86asm.RDTSCP,
		x86asm.MUL, x86asm.IMUL, x86asm.DIV, x86asm.IDIV, x86asm.CMPXCHG, x86asm.XCHG,
		x86asm.CQO, x86asm.CDQ, x86asm.PUSH, x86asm.POP:
		return true
	case x86asm.CMP, x86asm.TEST, x86asm.JE, x86asm.JNE, x86asm.NOP:
		return false
	}
	dst, ok := in.Args[0].(x86asm.Reg)
	return ok && sameReg(dst, r)
}

// sameReg reports whether a (of any width) is part of the 64-bit r.
func sameReg(a, r x86asm.Reg) bool {
	n := r - x86asm.RAX
	if a == x86asm.AX+n || a == x86asm.EAX+n || a == x86asm.RAX+n {
		return true
	}
	if n < 4 {
		return a == x86asm.AL+n || a == x86asm.AH+n
	}
	return a == x86asm.SPB+n-4
}
