package goinspect

import (
	"bytes"
	"compress/zlib"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// DWARFFieldOffset returns the byte offset of field in the struct type named
// structName (fully qualified, e.g. "runtime.gcControllerState"). Stripped
// binaries have no DWARF, so callers need a per-version fallback table.
func (b *Binary) DWARFFieldOffset(structName, field string) (off int64, err error) {
	if b.elf == nil {
		return 0, fmt.Errorf("%s: binary is closed", b.Path)
	}
	b.budget.begin()
	defer b.budget.end()
	defer func() {
		if r := recover(); r != nil {
			off, err = 0, fmt.Errorf("%s: malformed DWARF: %v", b.Path, r)
		}
	}()
	b.dwarfOnce.Do(func() {
		b.dwarf, b.dwarfErr = b.loadDWARF()
	})
	if b.dwarfErr != nil {
		return 0, fmt.Errorf("%s: no DWARF: %w", b.Path, b.dwarfErr)
	}

	r := b.dwarf.Reader()
	for {
		if err := b.budget.tick(); err != nil {
			return 0, fmt.Errorf("%s: DWARF: %w", b.Path, err)
		}
		e, err := r.Next()
		if err != nil {
			return 0, fmt.Errorf("%s: read DWARF: %w", b.Path, err)
		}
		if e == nil {
			return 0, fmt.Errorf("%s: DWARF has no struct %s", b.Path, structName)
		}
		switch {
		case e.Tag == dwarf.TagCompileUnit:
			// Descend: types are children of compile units.
		case e.Tag == dwarf.TagStructType && e.Val(dwarf.AttrName) == structName:
			return b.memberOffset(r, e, structName, field)
		case e.Children:
			// Skipping function bodies and other types keeps the walk
			// proportional to the number of top-level entries.
			r.SkipChildren()
		}
	}
}

func (b *Binary) memberOffset(r *dwarf.Reader, st *dwarf.Entry, structName, field string) (int64, error) {
	if !st.Children {
		return 0, fmt.Errorf("%s: DWARF struct %s has no fields", b.Path, structName)
	}
	for {
		if err := b.budget.tick(); err != nil {
			return 0, fmt.Errorf("%s: DWARF: %w", b.Path, err)
		}
		e, err := r.Next()
		if err != nil {
			return 0, fmt.Errorf("%s: read DWARF: %w", b.Path, err)
		}
		if e == nil || e.Tag == 0 {
			return 0, fmt.Errorf("%s: DWARF struct %s has no field %s", b.Path, structName, field)
		}
		if e.Tag == dwarf.TagMember && e.Val(dwarf.AttrName) == field {
			switch loc := e.Val(dwarf.AttrDataMemberLoc).(type) {
			case int64:
				return loc, nil
			default:
				return 0, fmt.Errorf("%s: %s.%s: unsupported member location %T", b.Path, structName, field, loc)
			}
		}
		if e.Children {
			r.SkipChildren()
		}
	}
}

// dwarfSections are the sections goinspect reads: what dwarf.New and
// AddSection take for struct types (no frames, no name indexes).
var dwarfSections = []string{"abbrev", "info", "str", "line", "ranges", "addr", "line_str", "loclists", "rnglists", "str_offsets"}

// loadDWARF is debug/elf's File.DWARF within the budget: that one reads
// every debug section whole and inflates a compressed one to the size its
// header claims. Here each section's claimed size is checked against what
// is left of the budget before anything is allocated, and inflation stops
// at that size (io.LimitReader).
func (b *Binary) loadDWARF() (*dwarf.Data, error) {
	sec := map[string][]byte{}
	for _, s := range b.elf.Sections {
		name, zdebug := "", false
		switch {
		case strings.HasPrefix(s.Name, ".debug_"):
			name = s.Name[len(".debug_"):]
		case strings.HasPrefix(s.Name, ".zdebug_"):
			name, zdebug = s.Name[len(".zdebug_"):], true
		default:
			continue
		}
		if !slicesContains(dwarfSections, name) || s.Type == elf.SHT_NOBITS {
			continue
		}
		data, err := b.debugSection(s, zdebug)
		if err != nil {
			return nil, err
		}
		sec[name] = data
	}
	if sec["info"] == nil {
		return nil, fmt.Errorf("no .debug_info section")
	}
	d, err := dwarf.New(sec["abbrev"], nil, nil, sec["info"], sec["line"], nil, sec["ranges"], sec["str"])
	if err != nil {
		return nil, err
	}
	for _, n := range []string{"addr", "line_str", "loclists", "rnglists", "str_offsets"} {
		if sec[n] != nil {
			if err := d.AddSection(".debug_"+n, sec[n]); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// debugSection reads one debug section: plain, SHF_COMPRESSED (zlib or
// zstd, by debug/elf's reader) or GNU .zdebug ("ZLIB", 8-byte big-endian
// size, zlib stream), inflated to at most the size it claims, which must
// fit the budget.
func (b *Binary) debugSection(s *elf.Section, zdebug bool) ([]byte, error) {
	if s.Flags&elf.SHF_COMPRESSED == 0 && !zdebug {
		return b.sectionData(s)
	}
	if s.Offset > b.size || s.FileSize > b.size-s.Offset {
		return nil, fmt.Errorf("refused: section %s claims %s at %#x, past the end of the file: %w", s.Name, fmtSize(s.FileSize), s.Offset, ErrMalformed)
	}
	var r io.Reader
	claimed := s.Size // debug/elf: the compression header's ch_size
	if zdebug {
		raw := io.NewSectionReader(s, 0, int64(s.FileSize))
		var hdr [12]byte
		if _, err := io.ReadFull(raw, hdr[:]); err != nil || !bytes.Equal(hdr[:4], []byte("ZLIB")) {
			return nil, fmt.Errorf("section %s: no ZLIB header", s.Name)
		}
		claimed = binary.BigEndian.Uint64(hdr[4:])
		zr, err := zlib.NewReader(raw)
		if err != nil {
			return nil, fmt.Errorf("section %s: %w", s.Name, err)
		}
		defer zr.Close()
		r = zr
	} else {
		r = s.Open()
	}
	if err := b.budget.need(claimed, "compressed section "+s.Name+" (inflated)"); err != nil {
		return nil, err
	}
	if err := b.budget.charge(claimed, "inflating "+s.Name); err != nil {
		return nil, err
	}
	data := make([]byte, claimed)
	if _, err := io.ReadFull(io.LimitReader(r, int64(claimed)), data); err != nil {
		return nil, fmt.Errorf("inflate %s: %w", s.Name, err)
	}
	return data, nil
}
