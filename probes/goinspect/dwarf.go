package goinspect

import (
	"debug/dwarf"
	"fmt"
)

// DWARFFieldOffset returns the byte offset of field in the struct type named
// structName (fully qualified, e.g. "runtime.gcControllerState"). Stripped
// binaries have no DWARF, so callers need a per-version fallback table.
func (b *Binary) DWARFFieldOffset(structName, field string) (off int64, err error) {
	if b.elf == nil {
		return 0, fmt.Errorf("%s: binary is closed", b.Path)
	}
	defer func() {
		if r := recover(); r != nil {
			off, err = 0, fmt.Errorf("%s: malformed DWARF: %v", b.Path, r)
		}
	}()
	b.dwarfOnce.Do(func() {
		b.dwarf, b.dwarfErr = b.elf.DWARF()
	})
	if b.dwarfErr != nil {
		return 0, fmt.Errorf("%s: no DWARF: %w", b.Path, b.dwarfErr)
	}

	r := b.dwarf.Reader()
	for {
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
