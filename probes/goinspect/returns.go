package goinspect

import (
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// maxFuncSize bounds how much code Returns will read; no runtime function
// comes near it, so a larger range means a corrupt table.
const maxFuncSize = 1 << 20

// Returns gives the address of every RET in [f.Entry, f.End), for uretprobe-
// free return probes (uretprobes break Go's stack growth). It decodes
// linearly from the entry and fails rather than skip bytes it cannot decode:
// a uprobe placed off an instruction boundary would corrupt the traced
// program.
func (b *Binary) Returns(f Func) (rets []uint64, err error) {
	if b.elf == nil {
		return nil, fmt.Errorf("%s: binary is closed", b.Path)
	}
	if f.End <= f.Entry || f.End-f.Entry > maxFuncSize {
		return nil, fmt.Errorf("%s: %s: implausible range [%#x, %#x)", b.Path, f.Name, f.Entry, f.End)
	}
	code, err := b.readAt(f.Entry, f.End-f.Entry)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", b.Path, f.Name, err)
	}
	defer func() {
		if r := recover(); r != nil {
			rets, err = nil, fmt.Errorf("%s: %s: x86 decoder panic: %v", b.Path, f.Name, r)
		}
	}()
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: decode at %#x: %w", b.Path, f.Name, f.Entry+uint64(off), err)
		}
		if inst.Len <= 0 {
			return nil, fmt.Errorf("%s: %s: decode at %#x: zero-length instruction", b.Path, f.Name, f.Entry+uint64(off))
		}
		if inst.Op == x86asm.RET {
			rets = append(rets, f.Entry+uint64(off))
		}
		off += inst.Len
	}
	return rets, nil
}
