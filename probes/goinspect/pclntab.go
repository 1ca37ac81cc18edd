package goinspect

import (
	"bytes"
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"errors"
	"fmt"
)

// pclntab header magics (runtime/symtab.go), little-endian on amd64 and arm64.
const (
	magic118 = 0xfffffff0 // Go 1.18–1.19
	magic120 = 0xfffffff1 // Go 1.20+
	magic116 = 0xfffffffa // Go 1.16–1.17
	magic12  = 0xfffffffb // Go 1.2–1.15
)

// Offsets into runtime.moduledata, stable from Go 1.18 through at least 1.27:
// pcHeader, then six slices (funcnametab, cutab, filetab, pctab, pclntable,
// ftab), findfunctab, minpc, maxpc, text.
const (
	mdFuncnametab = 8
	mdMinPC       = 8 + 6*24 + 8
	mdText        = mdMinPC + 16
)

// readFuncs builds the name->Func table from .gopclntab, which (unlike
// .symtab) survives stripping.
func (b *Binary) readFuncs() (map[string]Func, error) {
	pclnAddr, data, err := b.findPclntab()
	if err != nil {
		return nil, err
	}
	if err := checkPclntab(data, b.Arch); err != nil {
		return nil, err
	}
	text, guessed, err := b.textStart(pclnAddr, data)
	if err != nil {
		return nil, err
	}
	var funcs map[string]Func
	var entryIsFunc bool
	switch binary.LittleEndian.Uint32(data) {
	case magic118, magic120:
		funcs, entryIsFunc, err = b.funcs118(data, text)
	default:
		funcs, entryIsFunc, err = b.funcsGosym(data, text)
	}
	if err != nil {
		return nil, err
	}
	if guessed && !entryIsFunc {
		// Every address would be off by the size of the code placed before
		// Go's (cgo start-up code), and a uprobe there corrupts the target.
		return nil, fmt.Errorf("parse .gopclntab: cannot locate runtime.text (no moduledata found, and .text does not start with Go code)")
	}
	return funcs, nil
}

// funcEntryCost is what one function of the table costs in memory (map
// entry, Func, string header) besides its name: charged per function.
const funcEntryCost = 96

// maxFuncName bounds how far a function name is looked for in the name
// table: Go's longest (generic instantiations) are a few hundred bytes;
// an unbounded scan per function would make a table without NULs cost
// its size squared.
const maxFuncName = 16 << 10

// funcs118 reads a Go 1.18+ table (runtime/symtab.go pcHeader, functab,
// _func) directly: each function's entry offset and name, nothing else.
// Its memory is the names and one map entry each, charged as it goes;
// checkPclntab has checked that nfunc entries fit in the data.
func (b *Binary) funcs118(data []byte, text uint64) (map[string]Func, bool, error) {
	le := binary.LittleEndian
	nfunc := le.Uint64(data[8:])
	nameOff, pclnOff := le.Uint64(data[32:]), le.Uint64(data[64:])
	if nameOff >= uint64(len(data)) {
		return nil, false, fmt.Errorf("parse .gopclntab: name table at %#x past its %d bytes", nameOff, len(data))
	}
	names, ftab := data[nameOff:], data[pclnOff:]
	funcs := make(map[string]Func, min(nfunc, 1<<16))
	entryIsFunc := false
	for i := uint64(0); i < nfunc; i++ {
		if err := b.budget.tick(); err != nil {
			return nil, false, err
		}
		entry := text + uint64(le.Uint32(ftab[8*i:]))
		end := text + uint64(le.Uint32(ftab[8*i+8:]))
		fo := uint64(le.Uint32(ftab[8*i+4:]))
		if end < entry || fo > uint64(len(ftab))-8 {
			return nil, false, fmt.Errorf("parse .gopclntab: corrupt function %d", i)
		}
		no := uint64(le.Uint32(ftab[fo+4:]))
		if no >= uint64(len(names)) {
			return nil, false, fmt.Errorf("parse .gopclntab: function %d's name at %#x past the table", i, no)
		}
		raw := names[no:min(uint64(len(names)), no+maxFuncName)]
		n := bytes.IndexByte(raw, 0)
		if n < 0 {
			return nil, false, fmt.Errorf("parse .gopclntab: function %d's name does not end within %d bytes", i, maxFuncName)
		}
		entryIsFunc = entryIsFunc || entry == b.elf.Entry
		// Keep the first of duplicate names; the runtime functions we probe
		// are unique, and a deterministic choice beats a random one.
		if _, dup := funcs[string(raw[:n])]; dup {
			continue
		}
		if err := b.budget.charge(uint64(n)+funcEntryCost, "the function table"); err != nil {
			return nil, false, err
		}
		name := string(raw[:n])
		funcs[name] = Func{Name: name, Entry: entry, End: end}
	}
	if len(funcs) == 0 {
		return nil, false, fmt.Errorf("parse .gopclntab: no functions (unsupported or corrupt table)")
	}
	return funcs, entryIsFunc, nil
}

// funcsGosym reads the tables of Go releases before 1.18 (which gopulse
// does not trace, but names in its refusal) with debug/gosym, charged
// beforehand for what gosym allocates per function (~2 structs, a name).
func (b *Binary) funcsGosym(data []byte, text uint64) (map[string]Func, bool, error) {
	nfunc := binary.LittleEndian.Uint64(data[8:])
	if err := b.budget.charge(nfunc*4*funcEntryCost, "the function table (debug/gosym)"); err != nil {
		return nil, false, err
	}
	lt := gosym.NewLineTable(data, text)
	tab, err := gosym.NewTable(nil, lt)
	if err != nil {
		return nil, false, fmt.Errorf("parse .gopclntab: %w", err)
	}
	if len(tab.Funcs) == 0 {
		return nil, false, fmt.Errorf("parse .gopclntab: no functions (unsupported or corrupt table)")
	}
	funcs := make(map[string]Func, len(tab.Funcs))
	entryIsFunc := false
	for i := range tab.Funcs {
		f := &tab.Funcs[i]
		if f.Sym == nil || f.End < f.Entry {
			return nil, false, fmt.Errorf("parse .gopclntab: corrupt function %d", i)
		}
		entryIsFunc = entryIsFunc || f.Entry == b.elf.Entry
		if _, dup := funcs[f.Sym.Name]; !dup {
			funcs[f.Sym.Name] = Func{Name: f.Sym.Name, Entry: f.Entry, End: f.End}
		}
	}
	return funcs, entryIsFunc, nil
}

// checkPclntab rejects headers whose function count does not fit the data.
// debug/gosym sizes its allocations from that count, and an out-of-memory
// crash, unlike a panic, cannot be recovered.
func checkPclntab(data []byte, arch Arch) error {
	if len(data) < 72 {
		return fmt.Errorf("parse .gopclntab: truncated header")
	}
	if data[4] != 0 || data[5] != 0 || data[6] != arch.quantum() || data[7] != 8 {
		return fmt.Errorf("parse .gopclntab: not an %s Go 1.2+ table", arch)
	}
	word := func(i int) uint64 { return binary.LittleEndian.Uint64(data[8+8*i:]) }
	nfunc := word(0)
	var functab, field uint64
	switch binary.LittleEndian.Uint32(data) {
	case magic118, magic120:
		functab, field = word(7), 4
	case magic116:
		functab, field = word(6), 8
	case magic12:
		functab, field = 16, 8
	default:
		return fmt.Errorf("parse .gopclntab: unknown magic %#x", binary.LittleEndian.Uint32(data))
	}
	size := uint64(len(data))
	if functab > size || nfunc > (size-functab)/(2*field) || functab+(2*nfunc+1)*field > size {
		return fmt.Errorf("parse .gopclntab: %d functions do not fit in %d bytes", nfunc, size)
	}
	return nil
}

// findPclntab returns the table's virtual address and bytes.
func (b *Binary) findPclntab() (uint64, []byte, error) {
	// PIE binaries from Go <1.21's internal linker use the second name.
	for _, name := range []string{".gopclntab", ".data.rel.ro.gopclntab"} {
		s := b.elf.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			continue
		}
		data, err := b.sectionData(s)
		if err != nil {
			return 0, nil, err
		}
		return s.Addr, data, nil
	}
	return b.scanPclntab()
}

// scanPclntab finds the table by its header when section headers are gone
// (e.g. sstrip). It only accepts Go 1.18+ headers whose offsets fit.
func (b *Binary) scanPclntab() (uint64, []byte, error) {
	for _, p := range b.elf.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X != 0 || p.Filesz > b.size {
			continue
		}
		if err := b.budget.need(p.Filesz, "a data segment searched for .gopclntab"); err != nil {
			return 0, nil, err
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		for _, magic := range []uint32{magic120, magic118} {
			var pat [8]byte
			binary.LittleEndian.PutUint32(pat[:], magic)
			pat[6], pat[7] = b.Arch.quantum(), 8 // minLC, ptrSize
			for off := 0; off+72 <= len(data); {
				if err := b.budget.tick(); err != nil {
					return 0, nil, err
				}
				i := bytes.Index(data[off:], pat[:])
				if i < 0 {
					break
				}
				off += i
				if off%8 == 0 && plausibleHeader(data[off:]) {
					return p.Vaddr + uint64(off), data[off:], nil
				}
				off++
			}
		}
	}
	return 0, nil, fmt.Errorf("%w: no .gopclntab section or table found", ErrNotGo)
}

func plausibleHeader(d []byte) bool {
	prev := uint64(72)
	for w := 3; w <= 7; w++ {
		off := binary.LittleEndian.Uint64(d[8+8*w:])
		if off < prev || off >= uint64(len(d)) {
			return false
		}
		prev = off
	}
	return binary.LittleEndian.Uint64(d[8:]) > 0 // nfunc
}

// textStart returns the address that Go 1.18+ pclntab entry offsets are
// relative to (runtime.text). It is not simply the .text section address:
// with external linking (cgo) the C start-up code comes first, and Go 1.26+
// no longer stores it in the pclntab header at all. The authoritative copy
// is runtime.firstmoduledata.text, which we locate through its pcHeader
// pointer. guessed reports a fallback to .text that the caller must verify.
func (b *Binary) textStart(pclnAddr uint64, data []byte) (text uint64, guessed bool, err error) {
	magic := binary.LittleEndian.Uint32(data)
	if magic != magic118 && magic != magic120 {
		// Older tables hold absolute entry addresses; the argument is unused.
		return b.textSection(), false, nil
	}
	relocs := b.relativeRelocs()
	if t, ok := b.moduledataText(pclnAddr, data, relocs); ok {
		return t, false, nil
	}
	// Go 1.18–1.25 also kept runtime.text in the header; it is zero in the
	// file when a dynamic relocation fills it in (PIE).
	if t, err := b.readPtr(pclnAddr+24, relocs); err == nil && t != 0 {
		return t, false, nil
	}
	// Internal linking puts runtime.text first in .text, and the ELF entry
	// point (_rt0_amd64_*) is then a Go function; the caller checks that.
	if t := b.textSection(); t != 0 {
		return t, true, nil
	}
	return 0, false, fmt.Errorf("parse .gopclntab: cannot locate runtime.text")
}

func (b *Binary) textSection() uint64 {
	if s := b.elf.Section(".text"); s != nil {
		return s.Addr
	}
	return 0
}

func (b *Binary) moduledataText(pclnAddr uint64, data []byte, relocs relocs) (uint64, bool) {
	funcnameOff := binary.LittleEndian.Uint64(data[32:])
	pclnOff := binary.LittleEndian.Uint64(data[64:])
	if pclnOff > uint64(len(data))-4 {
		return 0, false
	}
	firstEntryOff := uint64(binary.LittleEndian.Uint32(data[pclnOff:]))

	check := func(md uint64) (uint64, bool) {
		if v, err := b.readPtr(md, relocs); err != nil || v != pclnAddr {
			return 0, false
		}
		if v, err := b.readPtr(md+mdFuncnametab, relocs); err != nil || v != pclnAddr+funcnameOff {
			return 0, false
		}
		minpc, err := b.readPtr(md+mdMinPC, relocs)
		if err != nil {
			return 0, false
		}
		text, err := b.readPtr(md+mdText, relocs)
		if err != nil || text+firstEntryOff != minpc {
			return 0, false
		}
		return text, true
	}

	// Non-PIE: the pointer is in the file. Go 1.26+ puts moduledata in
	// .go.module, older releases in .noptrdata.
	for _, name := range []string{".go.module", ".noptrdata", ".data"} {
		if s := b.elf.Section(name); s != nil && s.Type != elf.SHT_NOBITS {
			if t, ok := b.scanWords(s.Addr, s, s.Size, pclnAddr, check); ok {
				return t, true
			}
		}
	}
	// PIE: the file holds zero and a R_*_RELATIVE relocation holds the
	// address as its addend.
	for off, addend := range relocs {
		if addend == pclnAddr {
			if t, ok := check(off); ok {
				return t, true
			}
		}
	}
	// No section headers: try every writable segment.
	if len(b.elf.Sections) == 0 {
		for _, p := range b.elf.Progs {
			if p.Type == elf.PT_LOAD && p.Flags&elf.PF_W != 0 {
				if t, ok := b.scanWords(p.Vaddr, p, p.Filesz, pclnAddr, check); ok {
					return t, true
				}
			}
		}
	}
	return 0, false
}

type readerAt interface {
	ReadAt(p []byte, off int64) (int, error)
}

func (b *Binary) scanWords(base uint64, r readerAt, size uint64, want uint64, check func(uint64) (uint64, bool)) (uint64, bool) {
	const chunk = 1 << 16
	buf := make([]byte, chunk)
	for off := uint64(0); off < size; off += chunk {
		// Each read is charged: a section claiming more than the budget
		// ends the scan (and the Binary) there.
		n, err := r.ReadAt(buf, int64(off))
		if errors.Is(err, ErrBudget) {
			return 0, false
		}
		n &^= 7
		for i := 0; i < n; i += 8 {
			if binary.LittleEndian.Uint64(buf[i:]) == want {
				if t, ok := check(base + off + uint64(i)); ok {
					return t, true
				}
			}
		}
		if n < chunk {
			break
		}
	}
	return 0, false
}

// relocs maps the link-time addresses that R_*_RELATIVE
// relocations fill in to their addends.
type relocs map[uint64]uint64

// relocCost is what one relocation costs in the map: charged per entry.
const relocCost = 48

// relativeRelocs returns the R_X86_64_RELATIVE (R_AARCH64_RELATIVE on arm64)
// relocations, which is how PIE binaries store pointers: zero in the file,
// address in the addend.
func (b *Binary) relativeRelocs() relocs {
	if b.elf.Type != elf.ET_DYN {
		return nil
	}
	relative := uint32(elf.R_X86_64_RELATIVE)
	if b.Arch == ARM64 {
		relative = uint32(elf.R_AARCH64_RELATIVE)
	}
	out := relocs{}
	for _, s := range b.elf.Sections {
		if s.Type != elf.SHT_RELA {
			continue
		}
		data, err := b.sectionData(s)
		if err != nil {
			continue
		}
		for i := 0; i+24 <= len(data); i += 24 {
			if uint32(binary.LittleEndian.Uint64(data[i+8:])) != relative {
				continue
			}
			if b.budget.charge(relocCost, "relocations") != nil {
				return out
			}
			off := binary.LittleEndian.Uint64(data[i:])
			if _, dup := out[off]; !dup {
				out[off] = binary.LittleEndian.Uint64(data[i+16:])
			}
		}
	}
	return out
}

var errNoPtr = errors.New("no pointer")

// readPtr reads a pointer-sized word as the loader would see it (relative
// to the link-time base).
func (b *Binary) readPtr(vaddr uint64, relocs relocs) (uint64, error) {
	buf, err := b.readAt(vaddr, 8)
	if err != nil {
		return 0, err
	}
	if v := binary.LittleEndian.Uint64(buf); v != 0 {
		return v, nil // absolute, or RELR/REL with the addend in place
	}
	if addend, ok := relocs[vaddr]; ok {
		return addend, nil
	}
	return 0, errNoPtr
}

// sectionData reads a section whole, within the budget: a compressed one
// is refused (Go writes no compressed section but DWARF, see dwarf.go, and
// debug/elf would inflate it to whatever size its header claims).
func (b *Binary) sectionData(s *elf.Section) ([]byte, error) {
	if s.Flags&elf.SHF_COMPRESSED != 0 {
		return nil, fmt.Errorf("refused: section %s is compressed (inflating to %s claimed); no Go toolchain compresses it: %w", s.Name, fmtSize(s.Size), ErrMalformed)
	}
	if s.Offset > b.size || s.Size > b.size-s.Offset {
		return nil, fmt.Errorf("refused: section %s claims %s at %#x, past the end of the file: %w", s.Name, fmtSize(s.Size), s.Offset, ErrMalformed)
	}
	if err := b.budget.need(s.Size, "section "+s.Name); err != nil {
		return nil, err
	}
	data := make([]byte, s.Size)
	if _, err := s.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("read %s: %w", s.Name, err)
	}
	return data, nil
}
