package goinspect

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/arch/x86/x86asm"
)

// Inst is one decoded instruction of a function, at its link-time address.
type Inst struct {
	Addr uint64
	x86asm.Inst
}

// Code decodes every instruction of f, an amd64 function, linearly from its
// entry, failing (never skipping) on bytes it cannot decode, as Returns
// does: a probe at a located instruction must sit on an instruction
// boundary. Trailing INT3 padding decodes as instructions too. For an arm64
// binary it fails with ErrArchUnsupported (see CodeARM64): the x86 locators
// built on it must refuse, not misdecode.
func (b *Binary) Code(f Func) (insts []Inst, err error) {
	if b.Arch != AMD64 {
		return nil, fmt.Errorf("%s: %s: x86 decoding of an %s binary: %w", b.Path, f.Name, b.Arch, ErrArchUnsupported)
	}
	b.budget.begin()
	defer b.budget.end()
	code, err := b.funcBytes(f)
	if err != nil {
		return nil, err
	}
	return b.decodeX86(f, code)
}

// decodeX86 decodes code, f's bytes, within the budget.
func (b *Binary) decodeX86(f Func, code []byte) (insts []Inst, err error) {
	defer func() {
		if r := recover(); r != nil {
			insts, err = nil, fmt.Errorf("%s: %s: x86 decoder panic: %v", b.Path, f.Name, r)
		}
	}()
	for off := 0; off < len(code); {
		if err := b.chargeInst(f, len(insts)); err != nil {
			return nil, err
		}
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: decode at %#x: %w", b.Path, f.Name, f.Entry+uint64(off), err)
		}
		if inst.Len <= 0 {
			return nil, fmt.Errorf("%s: %s: decode at %#x: zero-length instruction", b.Path, f.Name, f.Entry+uint64(off))
		}
		insts = append(insts, Inst{Addr: f.Entry + uint64(off), Inst: inst})
		off += inst.Len
	}
	return insts, nil
}

// instCost is what one decoded instruction costs: the Inst (~200 bytes
// of prefixes and operand interfaces) and its boxed operands.
const instCost = uint64(unsafe.Sizeof(Inst{})) + 64

// chargeInst charges the decoding of the n-th instruction of f (in
// batches of 256) and checks the CPU budget.
func (b *Binary) chargeInst(f Func, n int) error {
	if err := b.budget.tick(); err != nil {
		return fmt.Errorf("%s: %s: %w", b.Path, f.Name, err)
	}
	if n%256 != 0 {
		return nil
	}
	if err := b.budget.charge(256*instCost, "decoding "+f.Name); err != nil {
		return fmt.Errorf("%s: %s: %w", b.Path, f.Name, err)
	}
	return nil
}

// funcBytes reads f's code, within maxFuncSize.
func (b *Binary) funcBytes(f Func) ([]byte, error) {
	if b.elf == nil {
		return nil, fmt.Errorf("%s: binary is closed", b.Path)
	}
	if f.End <= f.Entry || f.End-f.Entry > maxFuncSize {
		return nil, fmt.Errorf("refused: %s: %s: implausible range [%#x, %#x) (%d bytes; the runtime's largest decoded function is ~7 KiB, cap %d): %w",
			b.Path, f.Name, f.Entry, f.End, f.End-f.Entry, maxFuncSize, ErrMalformed)
	}
	code, err := b.readAt(f.Entry, f.End-f.Entry)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", b.Path, f.Name, err)
	}
	return code, nil
}

// Target returns the absolute address an instruction's relative operand
// (CALL/JMP rel, or a RIP-relative memory operand) designates, and whether
// it has one.
func (in Inst) Target() (uint64, bool) {
	next := in.Addr + uint64(in.Len)
	for _, a := range in.Args {
		switch a := a.(type) {
		case x86asm.Rel:
			return uint64(int64(next) + int64(a)), true
		case x86asm.Mem:
			if a.Base == x86asm.RIP && a.Index == 0 {
				return uint64(int64(next) + a.Disp), true
			}
		}
	}
	return 0, false
}

// JumpTargets returns the addresses that jumps (conditional or not) in
// code lead to: a located instruction sequence is straight-line only if
// none lands inside it.
func JumpTargets(code []Inst) map[uint64]bool {
	targets := map[uint64]bool{}
	for _, in := range code {
		if in.Op == x86asm.CALL {
			continue
		}
		if _, rel := in.Args[0].(x86asm.Rel); !rel {
			continue
		}
		if t, ok := in.Target(); ok {
			targets[t] = true
		}
	}
	return targets
}

// Funcs returns every function of the binary, sorted by entry.
func (b *Binary) Funcs() []Func {
	out := make([]Func, 0, len(b.funcs))
	for _, f := range b.funcs {
		out = append(out, f)
	}
	slices.SortFunc(out, func(x, y Func) int {
		switch {
		case x.Entry < y.Entry:
			return -1
		case x.Entry > y.Entry:
			return 1
		}
		return strings.Compare(x.Name, y.Name)
	})
	return out
}

// FuncTable maps program counters to functions.
type FuncTable []Func

// Lookup returns the function holding pc (a link-time address).
func (t FuncTable) Lookup(pc uint64) (Func, bool) {
	i, _ := slices.BinarySearchFunc(t, pc, func(f Func, pc uint64) int {
		switch {
		case f.Entry > pc:
			return 1
		case f.Entry < pc:
			return -1
		}
		return 0
	})
	if i < len(t) && t[i].Entry == pc {
		return t[i], true
	}
	if i == 0 {
		return Func{}, false
	}
	if f := t[i-1]; pc < f.End {
		return f, true
	}
	return Func{}, false
}

// LoadBias returns what to subtract from a run-time address of process pid
// to get the link-time address in b: 0 for a position-dependent binary, the
// load base for a PIE (from /proc/PID/maps: the mapping of b's inode at file
// offset 0, against the first PT_LOAD segment).
func (b *Binary) LoadBias(procRoot string, pid int) (uint64, error) {
	base, err := b.LoadBase()
	if err != nil {
		return 0, err
	}
	return base.Bias(procRoot, pid)
}

// CodeStart returns the link-time address of the binary's first code byte
// as the kernel counts it: the lowest p_vaddr of its executable PT_LOAD
// segments, which the ELF loader, plus the load bias, makes the process's
// mm->start_code.
func (b *Binary) CodeStart() (uint64, error) {
	if b.elf == nil {
		return 0, fmt.Errorf("%s: binary is closed", b.Path)
	}
	start, found := uint64(0), false
	for _, p := range b.elf.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && (!found || p.Vaddr < start) {
			start, found = p.Vaddr, true
		}
	}
	if !found {
		return 0, fmt.Errorf("%s: no executable PT_LOAD segment", b.Path)
	}
	return start, nil
}

// LoadBase is what LoadBias needs of a binary, small enough to cache.
type LoadBase struct {
	ID    FileID
	PIE   bool
	Vaddr uint64 // of the PT_LOAD segment at file offset 0
}

// LoadBase returns b's LoadBase.
func (b *Binary) LoadBase() (LoadBase, error) {
	if b.elf == nil {
		return LoadBase{}, fmt.Errorf("%s: binary is closed", b.Path)
	}
	for _, p := range b.elf.Progs {
		if p.Type == elf.PT_LOAD && p.Off == 0 {
			return LoadBase{ID: b.ID, PIE: b.PIE, Vaddr: p.Vaddr}, nil
		}
	}
	return LoadBase{}, fmt.Errorf("%s: no PT_LOAD segment at file offset 0", b.Path)
}

// Bias returns the load bias of the binary in process pid.
func (lb LoadBase) Bias(procRoot string, pid int) (uint64, error) {
	if !lb.PIE {
		return 0, nil
	}
	f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid), "maps"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 || fs[2] != "00000000" {
			continue
		}
		if ino, err := strconv.ParseUint(fs[4], 10, 64); err != nil || ino != lb.ID.Ino {
			continue
		}
		lo, _, _ := strings.Cut(fs[0], "-")
		start, err := strconv.ParseUint(lo, 16, 64)
		if err != nil {
			continue
		}
		return start - (lb.Vaddr &^ 0xfff), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("pid %d: inode %d not mapped", pid, lb.ID.Ino)
}
