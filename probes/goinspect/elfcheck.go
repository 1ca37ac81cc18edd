package goinspect

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrMalformed is wrapped by the refusal of a file whose headers claim
// what no Go toolchain writes (a section past the end of the file, a
// compressed code table, absurd counts): someone forged it.
var ErrMalformed = errors.New("malformed executable")

var errEOF = io.EOF

// Header bounds no real executable comes near: Go binaries have ≤ 13
// program headers and 25–45 sections (cgo, PIE, DWARF included); a C
// toolchain's stay within a few dozen too. debug/elf would otherwise size
// its tables from the counts, and read a section-name table of any claimed
// size (decompressing it if flagged so) before returning.
const (
	maxProgs    = 128
	maxSections = 1024
	maxShstrtab = 1 << 20
)

// checkELF validates the ELF header and the program and section header
// tables of a 64-bit little-endian file of size bytes against the bounds
// above and the file's size: every section and segment with bytes in the
// file must lie within it. It returns copies of what it checked, for
// fileReader to serve (the file may change afterwards).
func checkELF(r io.ReaderAt, size int64) ([]snapshot, error) {
	hdr := make([]byte, 64)
	if n, _ := r.ReadAt(hdr, 0); n < 16 || string(hdr[:4]) != elf.ELFMAG {
		return nil, fmt.Errorf("%w: no ELF magic", ErrNotELF)
	}
	if elf.Class(hdr[elf.EI_CLASS]) != elf.ELFCLASS64 || elf.Data(hdr[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return nil, fmt.Errorf("unsupported architecture %v/%v: %w", elf.Class(hdr[elf.EI_CLASS]), elf.Data(hdr[elf.EI_DATA]), ErrNotELF)
	}
	if size < 64 {
		return nil, fmt.Errorf("%w: truncated ELF header", ErrNotELF)
	}
	le := binary.LittleEndian
	phoff, shoff := le.Uint64(hdr[32:]), le.Uint64(hdr[40:])
	phentsize, phnum := uint64(le.Uint16(hdr[54:])), uint64(le.Uint16(hdr[56:]))
	shentsize, shnum, shstrndx := uint64(le.Uint16(hdr[58:])), uint64(le.Uint16(hdr[60:])), uint64(le.Uint16(hdr[62:]))
	// Not an ELF file anything could load either (ErrNotELF): a file
	// truncated while written is one too, so both are wrapped.
	bad := func(format string, args ...any) error {
		return fmt.Errorf("refused: %s: %w (%w)", fmt.Sprintf(format, args...), ErrMalformed, ErrNotELF)
	}
	within := func(off, n uint64) bool { return off <= uint64(size) && n <= uint64(size)-off }
	snaps := []snapshot{{0, hdr}}

	if phnum > maxProgs {
		return nil, bad("%d program headers (at most %d read)", phnum, maxProgs)
	}
	if phnum > 0 && (phentsize != 56 || !within(phoff, phnum*56)) {
		return nil, bad("program header table (%d × %d bytes at %#x) not within the file's %d bytes", phnum, phentsize, phoff, size)
	}
	if shoff != 0 && shnum == 0 {
		return nil, bad("extended section numbering (e_shnum 0)")
	}
	if shnum > maxSections {
		return nil, bad("%d section headers (at most %d read)", shnum, maxSections)
	}
	if shnum > 0 && (shentsize != 64 || !within(shoff, shnum*64)) {
		return nil, bad("section header table (%d × %d bytes at %#x) not within the file's %d bytes", shnum, shentsize, shoff, size)
	}
	if shnum > 0 && shstrndx >= shnum {
		return nil, bad("section name table index %d of %d", shstrndx, shnum)
	}
	if phnum > 0 {
		ph := make([]byte, phnum*56)
		if _, err := r.ReadAt(ph, int64(phoff)); err != nil {
			return nil, fmt.Errorf("read program headers: %w", err)
		}
		for i := uint64(0); i < phnum; i++ {
			p := ph[i*56:]
			off, filesz := le.Uint64(p[8:]), le.Uint64(p[32:])
			if filesz > 0 && !within(off, filesz) {
				return nil, bad("segment %d claims %s at %#x, past the end of the %s file", i, fmtSize(filesz), off, sizeOf(size))
			}
		}
		snaps = append(snaps, snapshot{int64(phoff), ph})
	}
	if shnum > 0 {
		sh := make([]byte, shnum*64)
		if _, err := r.ReadAt(sh, int64(shoff)); err != nil {
			return nil, fmt.Errorf("read section headers: %w", err)
		}
		for i := uint64(0); i < shnum; i++ {
			s := sh[i*64:]
			typ, flags := elf.SectionType(le.Uint32(s[4:])), elf.SectionFlag(le.Uint64(s[8:]))
			off, n := le.Uint64(s[24:]), le.Uint64(s[32:])
			if typ == elf.SHT_NULL || typ == elf.SHT_NOBITS {
				continue
			}
			if !within(off, n) {
				return nil, bad("section %d claims %s at %#x, past the end of the %s file", i, fmtSize(n), off, sizeOf(size))
			}
			if i == shstrndx && (n > maxShstrtab || flags&elf.SHF_COMPRESSED != 0) {
				return nil, bad("section name table of %s (compressed: %v)", fmtSize(n), flags&elf.SHF_COMPRESSED != 0)
			}
		}
		snaps = append(snaps, snapshot{int64(shoff), sh})
	}
	return snaps, nil
}

func sizeOf(n int64) string { return fmtSize(uint64(n)) }
