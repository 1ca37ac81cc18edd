package goinspect

import (
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// maxFuncSize bounds how much code Code and Returns will read and decode.
// The largest runtime function of Go 1.26 is runtime.initMetrics, 7253
// bytes (then findRunnable, 4746; gcMarkTermination, 3920); the functions
// gopulse decodes are all runtime functions, so 64 KiB leaves a margin of
// ~9× and keeps a forged range (1 MiB of one-byte RETs decodes to ~230 MiB
// of instructions) within the parse budget.
const maxFuncSize = 64 << 10

// Probe-site caps. Each uprobe is a kernel object (and, without
// uprobe_multi, a perf event fd), so a forged function must not be able
// to ask for a million of them.
const (
	// MaxSitesPerFunc bounds the probe sites in one function (its RETs,
	// or the sites a family's finder locates). The runtime function with
	// the most RETs in Go 1.19–1.27 has 31 (runtime.typesEqual; memmove
	// 17; the functions gopulse probes have ≤ 10): 256 is 8× that.
	MaxSitesPerFunc = 256
	// MaxSitesPerBinary bounds the probe sites handed out for one binary,
	// over every family: gopulse's families use a handful (one GC site,
	// one or two in runtime.lock2); 512 leaves room for return probes on
	// dozens of functions.
	MaxSitesPerBinary = 512
)

// ClaimSites accounts for n probe sites in fn, against MaxSitesPerFunc and
// MaxSitesPerBinary: the site finders call it before returning their
// sites, so a binary is refused with the count rather than attached with
// thousands of uprobes.
// kind names the sites in the refusal ("RET", "CALL runtime.semasleep").
func (b *Binary) ClaimSites(fn Func, n int, kind string) error {
	if n > MaxSitesPerFunc {
		return fmt.Errorf("%s: refused: %d %s sites in %s, cap %d per function: %w", b.Path, n, kind, fn.Name, MaxSitesPerFunc, ErrMalformed)
	}
	if n > MaxSitesPerBinary-b.sites {
		return fmt.Errorf("%s: refused: %d %s sites in %s after %d in this binary, cap %d per binary: %w", b.Path, n, kind, fn.Name, b.sites, MaxSitesPerBinary, ErrMalformed)
	}
	b.sites += n
	return nil
}

// Returns gives the address of every RET in [f.Entry, f.End), for uretprobe-
// free return probes (uretprobes break Go's stack growth). It decodes
// linearly from the entry (Code) and fails rather than skip bytes it cannot
// decode: a uprobe placed off an instruction boundary would corrupt the
// traced program. On arm64 it decodes every 4-byte word (CodeARM64). More
// than MaxSitesPerFunc RETs (or the binary's MaxSitesPerBinary) are refused:
// they are all probe sites (ClaimSites).
func (b *Binary) Returns(f Func) ([]uint64, error) {
	var rets []uint64
	if b.Arch == ARM64 {
		var err error
		if rets, err = b.returnsARM64(f); err != nil {
			return nil, err
		}
	} else {
		insts, err := b.Code(f)
		if err != nil {
			return nil, err
		}
		for _, in := range insts {
			if in.Op == x86asm.RET {
				rets = append(rets, in.Addr)
			}
		}
	}
	if err := b.ClaimSites(f, len(rets), "RET"); err != nil {
		return nil, err
	}
	return rets, nil
}
