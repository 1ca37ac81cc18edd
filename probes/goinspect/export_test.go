package goinspect

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// Test hooks for the fuzz targets: the parsers on raw bytes, each with a
// fresh budget, as Open would run them.

// DecodeForTest decodes code as the function f of an arch binary and
// returns its RET sites as Returns would (caps included).
func DecodeForTest(arch Arch, f Func, code []byte) (n int, rets []uint64, err error) {
	b := &Binary{Path: "fuzz", Arch: arch, budget: &budget{}}
	b.budget.begin()
	defer b.budget.end()
	if arch == ARM64 {
		insts, err := b.decodeARM64(f, code)
		if err != nil {
			return 0, nil, err
		}
		for _, in := range insts {
			if in.Op.String() == "RET" {
				rets = append(rets, in.Addr)
			}
		}
		n = len(insts)
	} else {
		insts, err := b.decodeX86(f, code)
		if err != nil {
			return 0, nil, err
		}
		for _, in := range insts {
			if in.Op.String() == "RET" {
				rets = append(rets, in.Addr)
			}
		}
		n = len(insts)
	}
	return n, rets, b.ClaimSites(f, len(rets), "RET")
}

// PclntabForTest reads data as a .gopclntab whose functions' text starts
// at text, as readFuncs does once the table is found.
func PclntabForTest(arch Arch, data []byte, text uint64) (map[string]Func, error) {
	b := &Binary{Path: "fuzz", Arch: arch, budget: &budget{}, elf: &elf.File{}}
	b.budget.begin()
	defer b.budget.end()
	t, err := newPclntab(bytes.NewReader(data), uint64(len(data)))
	if err != nil {
		return nil, err
	}
	if err := checkPclntab(t.hdr, t.size, arch); err != nil {
		return nil, err
	}
	if m := binary.LittleEndian.Uint32(data); m != magic118 && m != magic120 {
		funcs, _, err := b.funcsGosym(t, text)
		return funcs, err
	}
	funcs, _, err := b.funcs118(t, text)
	return funcs, err
}
