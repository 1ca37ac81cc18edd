package goinspect

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// maxSymtab bounds what a .symtab may cost to scan: a Go binary's is a few
// MiB; a forged header claiming more is refused, not read.
const maxSymtab = 64 << 20

// ErrNoSymbol: the binary has no .symtab, or the symbol is not in it.
var ErrNoSymbol = errors.New("symbol not found")

// Sym is a .symtab entry's link-time address and size.
type Sym struct{ Addr, Size uint64 }

// Symbols looks names up in .symtab in one pass, e.g. "runtime.memstats";
// names not found are absent from the map. ErrNoSymbol when there is no
// .symtab. The string table is read once (bounded by maxSymtab), the
// entries streamed.
func (b *Binary) Symbols(names ...string) (map[string]Sym, error) {
	if b.elf == nil {
		return nil, fmt.Errorf("%s: binary is closed", b.Path)
	}
	b.budget.begin()
	defer b.budget.end()
	symtab := b.elf.Section(".symtab")
	if symtab == nil || symtab.Type != elf.SHT_SYMTAB {
		return nil, fmt.Errorf("%s: %w (no .symtab)", b.Path, ErrNoSymbol)
	}
	if symtab.Link == 0 || int(symtab.Link) >= len(b.elf.Sections) {
		return nil, fmt.Errorf("%s: .symtab has no string table", b.Path)
	}
	strtab := b.elf.Sections[symtab.Link]
	if symtab.Size > maxSymtab || strtab.Size > maxSymtab || strtab.Size > b.size ||
		symtab.Flags&elf.SHF_COMPRESSED != 0 || strtab.Flags&elf.SHF_COMPRESSED != 0 {
		return nil, fmt.Errorf("%s: .symtab of %d bytes (strings %d) is beyond what gopulse reads", b.Path, symtab.Size, strtab.Size)
	}
	if err := b.budget.need(strtab.Size, "the .symtab string table"); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Path, err)
	}
	strs := make([]byte, strtab.Size)
	if _, err := strtab.ReadAt(strs, 0); err != nil {
		return nil, fmt.Errorf("%s: read .strtab: %w", b.Path, err)
	}
	want := map[string]bool{}
	longest := 0
	for _, n := range names {
		want[n] = true
		longest = max(longest, len(n))
	}
	out := map[string]Sym{}
	const entSize = 24 // Elf64_Sym
	r := bufio.NewReaderSize(io.NewSectionReader(symtab, 0, int64(symtab.Size)), 64<<10)
	var ent [entSize]byte
	for n := uint64(0); n < symtab.Size/entSize && len(out) < len(want); n++ {
		if err := b.budget.tick(); err != nil {
			return nil, fmt.Errorf("%s: .symtab: %w", b.Path, err)
		}
		if _, err := io.ReadFull(r, ent[:]); err != nil {
			return nil, fmt.Errorf("%s: read .symtab: %w", b.Path, err)
		}
		off := uint64(binary.LittleEndian.Uint32(ent[0:]))
		if off >= uint64(len(strs)) {
			continue
		}
		// Only names as long as the ones wanted matter: a scan bounded by
		// them keeps a string table without NULs from costing its size
		// per symbol.
		end := bytes.IndexByte(strs[off:min(uint64(len(strs)), off+uint64(longest)+1)], 0)
		if end < 0 || !want[string(strs[off:off+uint64(end)])] {
			continue
		}
		out[string(strs[off:off+uint64(end)])] = Sym{Addr: binary.LittleEndian.Uint64(ent[8:]), Size: binary.LittleEndian.Uint64(ent[16:])}
	}
	return out, nil
}
