package goinspect

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/arch/arm64/arm64asm"
)

// InstARM64 is one decoded instruction of an arm64 function, at its
// link-time address. Every arm64 instruction is one 4-byte word.
type InstARM64 struct {
	Addr uint64
	arm64asm.Inst
	// UDF is set for the all-zero word, UDF #0 (permanently undefined in
	// ARMv8), which arm64asm does not decode: the Go linker pads between
	// functions with it (go tool objdump prints "?"). Op is then zero.
	UDF bool
	// LSE is set for an ARMv8.1 atomic (CAS*, SWP*, LD<op>*), which the Go
	// runtime's atomics use and arm64asm v0.33 does not decode (go tool
	// objdump prints "?" too). Recognised by their architectural fixed
	// bits (isLSE); none of them branches or returns. Op is then zero and
	// Enc the word.
	LSE bool
	// Data is set for a word of a literal pool: the target of a PC-relative
	// load (LDR/LDRSW literal) of this function. The Go assembler puts
	// large constants after the function's code or after an unconditional
	// branch; such a word is never executed, so it is never a probe site
	// even when its bits happen to decode. Op is then zero.
	Data bool
}

// isLSE reports whether w is an ARMv8.1 LSE atomic of the two encoding
// classes the Go assembler emits (Arm ARM C4.1.94, "Loads and Stores"):
//
//   - atomic memory operations: size 111 0 00 A R 1 Rs o3 opc 00 Rn Rt,
//     allocated for o3=0 (LDADD..LDUMIN) and o3=1 opc=000 (SWP);
//   - compare and swap: size 001000 1 L 1 Rs o0 11111 Rn Rt (CAS).
func isLSE(w uint32) bool {
	if w&0x3f200c00 == 0x38200000 {
		o3, opc := w>>15&1, w>>12&7
		return o3 == 0 || opc == 0
	}
	return w&0x3fa07c00 == 0x08a07c00
}

// CodeARM64 decodes every 4-byte word of f, an arm64 function, from its
// entry to its end, failing (never skipping) on a word it cannot decode: a
// probe must sit on a real instruction, and a function whose every word
// does not decode is not one we understand. The one exception is the
// zero word (UDF #0, see InstARM64.UDF), the linker's padding.
func (b *Binary) CodeARM64(f Func) (insts []InstARM64, err error) {
	if b.Arch != ARM64 {
		return nil, fmt.Errorf("%s: %s: arm64 decoding of an %s binary: %w", b.Path, f.Name, b.Arch, ErrArchUnsupported)
	}
	b.budget.begin()
	defer b.budget.end()
	code, err := b.funcBytes(f)
	if err != nil {
		return nil, err
	}
	return b.decodeARM64(f, code)
}

// decodeARM64 decodes code, f's bytes, within the budget.
func (b *Binary) decodeARM64(f Func, code []byte) (insts []InstARM64, err error) {
	if len(code)%4 != 0 || f.Entry%4 != 0 {
		return nil, fmt.Errorf("%s: %s: range [%#x, %#x) is not whole 4-byte words", b.Path, f.Name, f.Entry, f.End)
	}
	defer func() {
		if r := recover(); r != nil {
			insts, err = nil, fmt.Errorf("%s: %s: arm64 decoder panic: %v", b.Path, f.Name, r)
		}
	}()
	// literalWords decodes each word once more: bounded by maxFuncSize.
	data := literalWords(f.Entry, code)
	if err := b.budget.charge(uint64(len(code)/4)*uint64(unsafe.Sizeof(InstARM64{})), "decoding "+f.Name); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", b.Path, f.Name, err)
	}
	insts = make([]InstARM64, 0, len(code)/4)
	for off := 0; off < len(code); off += 4 {
		if err := b.budget.tick(); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", b.Path, f.Name, err)
		}
		if data[f.Entry+uint64(off)] {
			insts = append(insts, InstARM64{Addr: f.Entry + uint64(off), Data: true})
			continue
		}
		word := code[off : off+4]
		if word[0]|word[1]|word[2]|word[3] == 0 {
			insts = append(insts, InstARM64{Addr: f.Entry + uint64(off), UDF: true})
			continue
		}
		inst, err := arm64asm.Decode(word)
		if err != nil && isLSE(binary.LittleEndian.Uint32(word)) {
			// Enc keeps the word: its registers are in fixed fields.
			insts = append(insts, InstARM64{Addr: f.Entry + uint64(off), LSE: true, Inst: arm64asm.Inst{Enc: binary.LittleEndian.Uint32(word)}})
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: decode at %#x: %w", b.Path, f.Name, f.Entry+uint64(off), err)
		}
		insts = append(insts, InstARM64{Addr: f.Entry + uint64(off), Inst: inst})
	}
	return insts, nil
}

// returnsARM64 gives the address of every RET of f. Go's arm64 functions
// return with a plain RET (to X30); RETAA/RETAB and ERET are not emitted by
// Go, and a word that decodes as anything else is not a return.
func (b *Binary) returnsARM64(f Func) ([]uint64, error) {
	insts, err := b.CodeARM64(f)
	if err != nil {
		return nil, err
	}
	var rets []uint64
	for _, in := range insts {
		if in.Op == arm64asm.RET {
			rets = append(rets, in.Addr)
		}
	}
	return rets, nil
}

// literalWords returns the addresses of the words in code (at entry) that
// its PC-relative loads read: literal-pool data, not instructions.
func literalWords(entry uint64, code []byte) map[uint64]bool {
	var data map[uint64]bool
	for off := 0; off+4 <= len(code); off += 4 {
		in, err := arm64asm.Decode(code[off : off+4])
		if err != nil || (in.Op != arm64asm.LDR && in.Op != arm64asm.LDRSW) {
			continue
		}
		rel, ok := in.Args[1].(arm64asm.PCRel)
		if !ok {
			continue
		}
		n := literalSize(in)
		target := int64(entry) + int64(off) + int64(rel)
		if n == 0 || target < int64(entry) || target+n > int64(entry)+int64(len(code)) {
			continue // a load from elsewhere (another function's pool is not ours to skip)
		}
		if data == nil {
			data = map[uint64]bool{}
		}
		for w := int64(0); w < n; w += 4 {
			data[uint64(target+w)] = true
		}
	}
	return data
}

// literalSize is how many bytes a literal load reads, from its destination.
func literalSize(in arm64asm.Inst) int64 {
	if in.Op == arm64asm.LDRSW {
		return 4
	}
	r, ok := in.Args[0].(arm64asm.Reg)
	if !ok {
		return 0
	}
	switch {
	case r >= arm64asm.W0 && r <= arm64asm.WZR, r >= arm64asm.S0 && r < arm64asm.D0:
		return 4
	case r >= arm64asm.X0 && r <= arm64asm.XZR, r >= arm64asm.D0 && r < arm64asm.Q0:
		return 8
	case r >= arm64asm.Q0 && r < arm64asm.V0:
		return 16
	}
	return 0
}

// HostArch is the architecture this program runs on.
func HostArch() Arch { return Arch(runtime.GOARCH) }

// RequireHostArch fails with ErrArchUnsupported unless b runs natively on
// this host: goinspect reads binaries of either architecture (for tests and
// tooling), but uprobes and process-memory readers are only for native ones.
func (b *Binary) RequireHostArch() error {
	if b.Arch != HostArch() {
		return fmt.Errorf("%s: an %s executable on an %s host: %w", b.Path, b.Arch, HostArch(), ErrArchUnsupported)
	}
	return nil
}

// BranchTarget returns the absolute address a PC-relative branch (B, BL,
// B.cond, CBZ, CBNZ, TBZ, TBNZ) leads to, and whether in is one.
func (in InstARM64) BranchTarget() (uint64, bool) {
	switch in.Op {
	case arm64asm.B, arm64asm.BL, arm64asm.CBZ, arm64asm.CBNZ, arm64asm.TBZ, arm64asm.TBNZ:
	default:
		return 0, false
	}
	for _, a := range in.Args {
		if rel, ok := a.(arm64asm.PCRel); ok {
			return uint64(int64(in.Addr) + int64(rel)), true
		}
	}
	return 0, false
}
