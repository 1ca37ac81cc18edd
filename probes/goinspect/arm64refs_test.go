package goinspect

import (
	"encoding/binary"
	"testing"

	"golang.org/x/arch/arm64/arm64asm"
)

// Encodings of the instructions the tests assemble (Arm ARM C6).
func adrp(rd int, pc, target uint64) uint32 {
	pages := uint32((target>>12 - pc>>12) & 0x1fffff)
	return 0x90000000 | (pages&3)<<29 | (pages>>2)<<5 | uint32(rd)
}
func addImm(rd, rn int, imm uint32) uint32 { return 0x91000000 | imm<<10 | uint32(rn)<<5 | uint32(rd) }
func ldrX(rt, rn int, off uint32) uint32   { return 0xf9400000 | off/8<<10 | uint32(rn)<<5 | uint32(rt) }
func strW(rt, rn int, off uint32) uint32   { return 0xb9000000 | off/4<<10 | uint32(rn)<<5 | uint32(rt) }
func ldpX(rt, rt2, rn int, off uint32) uint32 {
	return 0xa9400000 | off/8<<15 | uint32(rt2)<<10 | uint32(rn)<<5 | uint32(rt)
}
func stlrX(rt, rn int) uint32 { return 0xc89ffc00 | uint32(rn)<<5 | uint32(rt) }
func movX(rd, rm int) uint32  { return 0xaa0003e0 | uint32(rm)<<16 | uint32(rd) }
func bl(words int32) uint32   { return 0x94000000 | uint32(words)&0x3ffffff }
func b(words int32) uint32    { return 0x14000000 | uint32(words)&0x3ffffff }
func cbz(rt int, words int32) uint32 {
	return 0xb4000000 | (uint32(words)&0x7ffff)<<5 | uint32(rt)
}

const (
	nop    = 0xd503201f
	casal0 = 0xc8fbfc08 // CASAL X27, X8, [X0] (LSE: arm64asm does not decode it)
)

// decodeWords decodes words at base as CodeARM64 does (LSE atomics kept
// by their encoding).
func decodeWords(t *testing.T, base uint64, words []uint32) []InstARM64 {
	t.Helper()
	var out []InstARM64
	for i, w := range words {
		var buf [4]byte
		binary.LittleEndian.PutUint32(buf[:], w)
		addr := base + uint64(4*i)
		in, err := arm64asm.Decode(buf[:])
		if err != nil {
			if !isLSE(w) {
				t.Fatalf("word %d (%#08x): %v", i, w, err)
			}
			out = append(out, InstARM64{Addr: addr, LSE: true, Inst: arm64asm.Inst{Enc: w}})
			continue
		}
		out = append(out, InstARM64{Addr: addr, Inst: in})
	}
	return out
}

// GlobalRefsARM64 resolves the linker's ADRP sequences, and forgets a
// register wherever its value may no longer be the address: what it
// reports is what the code really uses.
func TestGlobalRefsARM64(t *testing.T) {
	const pc, g = 0x10000, 0x2a5000 // code base; a global's page
	type want struct {
		addr  uint64
		kind  RefKind
		width int
		reg   int
	}
	for _, c := range []struct {
		name  string
		words func() []uint32 // assembled at pc
		want  []want
	}{
		{"ADRP+ADD: the address", func() []uint32 {
			return []uint32{adrp(0, pc, g), addImm(0, 0, 0x123)}
		}, []want{{g + 0x123, RefAddr, 0, 0}}},
		{"ADRP+LDR: a load at the low bits", func() []uint32 {
			return []uint32{adrp(27, pc, g), ldrX(1, 27, 0x18)}
		}, []want{{g + 0x18, RefLoad, 8, 1}}},
		{"ADRP+STR W: a 4-byte store", func() []uint32 {
			return []uint32{adrp(27, pc, g), strW(3, 27, 0x44)}
		}, []want{{g + 0x44, RefStore, 4, 3}}},
		{"ADRP+ADD+LDP: two loads", func() []uint32 {
			return []uint32{adrp(27, pc, g), addImm(27, 27, 0x800), ldpX(0, 1, 27, 16)}
		}, []want{{g + 0x800, RefAddr, 0, 27}, {g + 0x810, RefLoad, 8, 0}, {g + 0x818, RefLoad, 8, 1}}},
		{"ADRP+ADD+STLR: an atomic store", func() []uint32 {
			return []uint32{adrp(2, pc, g), addImm(2, 2, 0x578), stlrX(1, 2)}
		}, []want{{g + 0x578, RefAddr, 0, 2}, {g + 0x578, RefAtomic, 8, 1}}},
		{"LSE CAS on a known base", func() []uint32 {
			return []uint32{adrp(0, pc, g), addImm(0, 0, 8), casal0}
		}, []want{{g + 8, RefAddr, 0, 0}, {g + 8, RefAtomic, 8, -1}}},
		{"a register overwritten is forgotten", func() []uint32 {
			return []uint32{adrp(27, pc, g), movX(27, 3), ldrX(1, 27, 8)}
		}, nil},
		{"a load into the base register forgets it", func() []uint32 {
			return []uint32{adrp(27, pc, g), ldrX(27, 27, 8), ldrX(1, 27, 8)}
		}, []want{{g + 8, RefLoad, 8, 27}}},
		{"a call forgets everything", func() []uint32 {
			return []uint32{adrp(27, pc, g), bl(100), ldrX(1, 27, 8)}
		}, nil},
		{"a branch target forgets everything", func() []uint32 {
			// CBZ jumps to the LDR: on that path X27 is whatever it was.
			return []uint32{cbz(5, 2), adrp(27, pc+4, g), ldrX(1, 27, 8)}
		}, nil},
		{"after an unconditional branch nothing is known", func() []uint32 {
			return []uint32{adrp(27, pc, g), b(2), ldrX(1, 27, 8)}
		}, nil},
		{"an unrelated register survives", func() []uint32 {
			return []uint32{adrp(27, pc, g), movX(4, 3), nop, ldrX(1, 27, 8)}
		}, []want{{g + 8, RefLoad, 8, 1}}},
		{"the CAS's Rs and Rt are forgotten", func() []uint32 {
			return []uint32{adrp(27, pc, g), adrp(8, pc+4, g), casal0, ldrX(1, 27, 0), ldrX(2, 8, 0)}
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			code := decodeWords(t, pc, c.words())
			got := GlobalRefsARM64(code)
			if len(got) != len(c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
			for i, w := range c.want {
				if g := got[i]; g.Addr != w.addr || g.Kind != w.kind || g.Width != w.width || g.Reg != w.reg {
					t.Errorf("ref %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// SetBy finds the instruction that set a register only across
// straight-line code that leaves it alone.
func TestSetByARM64(t *testing.T) {
	const pc, g = 0x10000, 0x2a5000
	for _, c := range []struct {
		name  string
		words []uint32 // the last one is the use
		reg   int
		ok    bool
	}{
		{"ADRP+ADD then BL", []uint32{adrp(0, pc, g), addImm(0, 0, 0x40), bl(50)}, 0, true},
		{"another register set in between", []uint32{adrp(0, pc, g), addImm(0, 0, 0x40), movX(1, 3), bl(50)}, 0, true},
		{"the register moved over", []uint32{adrp(0, pc, g), addImm(0, 0, 0x40), movX(0, 3), bl(50)}, 0, false},
		{"a branch in between", []uint32{adrp(0, pc, g), addImm(0, 0, 0x40), cbz(5, 1), bl(50)}, 0, false},
		{"a branch lands in between", []uint32{cbz(5, 3), adrp(0, pc+4, g), addImm(0, 0, 0x40), bl(50)}, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			code := decodeWords(t, pc, c.words)
			refs := GlobalRefsARM64(code)
			r, err := SetBy(code, refs, JumpTargetsARM64(code), len(code)-1, c.reg, 8)
			if (err == nil) != c.ok {
				t.Fatalf("SetBy = %+v, %v; want ok %v", r, err, c.ok)
			}
			if c.ok && (r.Kind != RefAddr || r.Addr != g+0x40) {
				t.Errorf("SetBy = %+v, want the address %#x", r, g+0x40)
			}
		})
	}
}
