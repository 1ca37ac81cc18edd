package goinspect

import (
	"bytes"
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unsafe"
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
	pclnAddr, t, err := b.findPclntab()
	if err != nil {
		return nil, err
	}
	if err := checkPclntab(t.hdr, t.size, b.Arch); err != nil {
		return nil, err
	}
	text, guessed, err := b.textStart(pclnAddr, t)
	if err != nil {
		return nil, err
	}
	var funcs map[string]Func
	var entryIsFunc bool
	switch binary.LittleEndian.Uint32(t.hdr) {
	case magic118, magic120:
		funcs, entryIsFunc, err = b.funcs118(t, text)
	default:
		funcs, entryIsFunc, err = b.funcsGosym(t, text)
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

// pclntab is a located .gopclntab: its header and a reader of its size
// bytes. Only what is used is read (the function table, the names, one
// word of each _func): a 120 MiB binary's table is 35 MiB, of which ~40%
// is needed.
type pclntab struct {
	hdr  []byte // the first 72 bytes (fewer if the table is shorter)
	size uint64
	r    io.ReaderAt // not charged: what is kept is charged by its reader
}

func newPclntab(r io.ReaderAt, size uint64) (*pclntab, error) {
	hdr := make([]byte, min(size, 72))
	if _, err := r.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("read .gopclntab header: %w", err)
	}
	return &pclntab{hdr: hdr, size: size, r: r}, nil
}

// read reads [off, off+n) of the table into a new buffer, charged.
func (b *Binary) readPcln(t *pclntab, off, n uint64, what string) ([]byte, error) {
	if off > t.size || n > t.size-off {
		return nil, fmt.Errorf("parse .gopclntab: %s [%#x, +%d) past its %d bytes", what, off, n, t.size)
	}
	if err := b.budget.charge(n, ".gopclntab "+what); err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := t.r.ReadAt(buf, int64(off)); err != nil {
		return nil, fmt.Errorf("read .gopclntab %s: %w", what, err)
	}
	return buf, nil
}

// window reads small pieces of a table through one buffer, reloaded when
// a piece lies outside it: _func records follow the function table in
// order, so a pass over them reads the table once.
type window struct {
	r     io.ReaderAt
	size  uint64
	buf   []byte
	start uint64
	n     int
}

func (w *window) at(off, n uint64) ([]byte, bool) {
	if off > w.size || n > w.size-off || n > uint64(len(w.buf)) {
		return nil, false
	}
	if off < w.start || off+n > w.start+uint64(w.n) {
		w.start = off
		m, _ := w.r.ReadAt(w.buf[:min(uint64(len(w.buf)), w.size-off)], int64(off))
		w.n = m
		if uint64(m) < n {
			return nil, false
		}
	}
	return w.buf[off-w.start : off-w.start+n], true
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
// What it keeps is charged: the function table, the name table (one
// string whose substrings are the names) and one map entry per function;
// checkPclntab has checked that nfunc entries fit in the table.
func (b *Binary) funcs118(t *pclntab, text uint64) (map[string]Func, bool, error) {
	le := binary.LittleEndian
	nfunc := le.Uint64(t.hdr[8:])
	nameOff, cuOff, pclnOff := le.Uint64(t.hdr[32:]), le.Uint64(t.hdr[40:]), le.Uint64(t.hdr[64:])
	if nameOff >= t.size {
		return nil, false, fmt.Errorf("parse .gopclntab: name table at %#x past its %d bytes", nameOff, t.size)
	}
	nameEnd := t.size
	if cuOff > nameOff && cuOff <= t.size {
		nameEnd = cuOff // the names end where the compilation units' table starts
	}
	ftab, err := b.readPcln(t, pclnOff, (2*nfunc+1)*4, "function table")
	if err != nil {
		return nil, false, err
	}
	raw, err := b.readPcln(t, nameOff, nameEnd-nameOff, "function names")
	if err != nil {
		return nil, false, err
	}
	// raw is never written again: the names are substrings of one string
	// sharing its bytes, not one allocation each.
	names := unsafe.String(unsafe.SliceData(raw), len(raw))
	if err := b.budget.charge(64<<10, ".gopclntab _func window"); err != nil {
		return nil, false, err
	}
	fw := &window{r: t.r, size: t.size, buf: make([]byte, 64<<10)}
	if err := b.budget.charge(min(nfunc, 1<<16)*funcEntryCost, "the function table"); err != nil {
		return nil, false, err
	}
	funcs := make(map[string]Func, min(nfunc, 1<<16))
	entryIsFunc := false
	for i := uint64(0); i < nfunc; i++ {
		if err := b.budget.tick(); err != nil {
			return nil, false, err
		}
		entry := text + uint64(le.Uint32(ftab[8*i:]))
		end := text + uint64(le.Uint32(ftab[8*i+8:]))
		fo := uint64(le.Uint32(ftab[8*i+4:]))
		if end < entry || fo > t.size-pclnOff {
			return nil, false, fmt.Errorf("parse .gopclntab: corrupt function %d", i)
		}
		fn, ok := fw.at(pclnOff+fo, 8)
		if !ok {
			return nil, false, fmt.Errorf("parse .gopclntab: function %d's record at %#x past the table", i, pclnOff+fo)
		}
		no := uint64(le.Uint32(fn[4:]))
		if no >= uint64(len(names)) {
			return nil, false, fmt.Errorf("parse .gopclntab: function %d's name at %#x past the table", i, no)
		}
		cand := names[no:min(uint64(len(names)), no+maxFuncName)]
		n := strings.IndexByte(cand, 0)
		if n < 0 {
			return nil, false, fmt.Errorf("parse .gopclntab: function %d's name does not end within %d bytes", i, maxFuncName)
		}
		name := cand[:n]
		entryIsFunc = entryIsFunc || entry == b.elf.Entry
		// Keep the first of duplicate names; the runtime functions we probe
		// are unique, and a deterministic choice beats a random one.
		if _, dup := funcs[name]; dup {
			continue
		}
		if uint64(len(funcs)) >= 1<<16 {
			if err := b.budget.charge(funcEntryCost, "the function table"); err != nil {
				return nil, false, err
			}
		}
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
func (b *Binary) funcsGosym(t *pclntab, text uint64) (map[string]Func, bool, error) {
	data, err := b.readPcln(t, 0, t.size, "(whole)")
	if err != nil {
		return nil, false, err
	}
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
func checkPclntab(data []byte, size uint64, arch Arch) error {
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
	if functab > size || nfunc > (size-functab)/(2*field) || functab+(2*nfunc+1)*field > size {
		return fmt.Errorf("parse .gopclntab: %d functions do not fit in %d bytes", nfunc, size)
	}
	return nil
}

// findPclntab returns the table's virtual address and bytes.
func (b *Binary) findPclntab() (uint64, *pclntab, error) {
	// PIE binaries from Go <1.21's internal linker use the second name.
	for _, name := range []string{".gopclntab", ".data.rel.ro.gopclntab"} {
		s := b.elf.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			continue
		}
		if err := b.checkSection(s); err != nil {
			return 0, nil, err
		}
		t, err := newPclntab(io.NewSectionReader(b.raw, int64(s.Offset), int64(s.Size)), s.Size)
		if err != nil {
			return 0, nil, err
		}
		return s.Addr, t, nil
	}
	return b.scanPclntab()
}

// scanPclntab finds the table by its header when section headers are gone
// (e.g. sstrip). It only accepts Go 1.18+ headers whose offsets fit.
func (b *Binary) scanPclntab() (uint64, *pclntab, error) {
	for _, p := range b.elf.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X != 0 || p.Filesz > b.size {
			continue
		}
		if err := b.budget.charge(p.Filesz, "a data segment searched for .gopclntab"); err != nil {
			return 0, nil, err
		}
		data := make([]byte, p.Filesz)
		if _, err := io.NewSectionReader(b.raw, int64(p.Off), int64(p.Filesz)).ReadAt(data, 0); err != nil {
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
					t, err := newPclntab(bytes.NewReader(data[off:]), uint64(len(data)-off))
					return p.Vaddr + uint64(off), t, err
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
func (b *Binary) textStart(pclnAddr uint64, t *pclntab) (text uint64, guessed bool, err error) {
	magic := binary.LittleEndian.Uint32(t.hdr)
	if magic != magic118 && magic != magic120 {
		// Older tables hold absolute entry addresses; the argument is unused.
		return b.textSection(), false, nil
	}
	relocs := b.relativeRelocs()
	if t, ok := b.moduledataText(pclnAddr, t, relocs); ok {
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

func (b *Binary) moduledataText(pclnAddr uint64, t *pclntab, relocs relocs) (uint64, bool) {
	funcnameOff := binary.LittleEndian.Uint64(t.hdr[32:])
	pclnOff := binary.LittleEndian.Uint64(t.hdr[64:])
	var first [4]byte
	if pclnOff > t.size-4 {
		return 0, false
	}
	if _, err := t.r.ReadAt(first[:], int64(pclnOff)); err != nil {
		return 0, false
	}
	firstEntryOff := uint64(binary.LittleEndian.Uint32(first[:]))

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
			if t, ok := b.scanWords(s.Addr, io.NewSectionReader(b.raw, int64(s.Offset), int64(s.Size)), s.Size, pclnAddr, check); ok {
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
				if t, ok := b.scanWords(p.Vaddr, io.NewSectionReader(b.raw, int64(p.Off), int64(p.Filesz)), p.Filesz, pclnAddr, check); ok {
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
		// One buffer, so reads are not charged; the CPU clock is checked.
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
	if err := b.checkSection(s); err != nil {
		return nil, err
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

// checkSection refuses a compressed section and one past the file's end.
func (b *Binary) checkSection(s *elf.Section) error {
	if s.Flags&elf.SHF_COMPRESSED != 0 {
		return fmt.Errorf("refused: section %s is compressed (inflating to %s claimed); no Go toolchain compresses it: %w", s.Name, fmtSize(s.Size), ErrMalformed)
	}
	if s.Offset > b.size || s.Size > b.size-s.Offset {
		return fmt.Errorf("refused: section %s claims %s at %#x, past the end of the file: %w", s.Name, fmtSize(s.Size), s.Offset, ErrMalformed)
	}
	return nil
}
