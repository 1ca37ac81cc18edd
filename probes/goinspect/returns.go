package goinspect

import "golang.org/x/arch/x86/x86asm"

// maxFuncSize bounds how much code Code and Returns will read; no runtime
// function comes near it, so a larger range means a corrupt table.
const maxFuncSize = 1 << 20

// Returns gives the address of every RET in [f.Entry, f.End), for uretprobe-
// free return probes (uretprobes break Go's stack growth). It decodes
// linearly from the entry (Code) and fails rather than skip bytes it cannot
// decode: a uprobe placed off an instruction boundary would corrupt the
// traced program. On arm64 it decodes every 4-byte word (CodeARM64).
func (b *Binary) Returns(f Func) ([]uint64, error) {
	if b.Arch == ARM64 {
		return b.returnsARM64(f)
	}
	insts, err := b.Code(f)
	if err != nil {
		return nil, err
	}
	var rets []uint64
	for _, in := range insts {
		if in.Op == x86asm.RET {
			rets = append(rets, in.Addr)
		}
	}
	return rets, nil
}
