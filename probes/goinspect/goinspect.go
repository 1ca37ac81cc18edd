// Package goinspect reads what gopulse needs from a Go executable on disk:
// its Go version, where runtime functions live and where they return, and
// (when DWARF is present) runtime struct layouts.
//
// Binaries are identified by inode (FileID) so that a daemon can open each
// executable once, however many processes run it, and across mount
// namespaces and deleted files via /proc/PID/exe.
package goinspect

import (
	"debug/buildinfo"
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/gopulse/gopulse/probes/sanitize"
)

// Sentinel errors; returned errors wrap them with the path and detail.
var (
	ErrNotELF = errors.New("not an ELF file")
	ErrNotGo  = errors.New("not a Go executable")
	ErrNoFunc = errors.New("function not found")
	// ErrArchUnsupported is wrapped by code readers that exist for one
	// architecture only (the x86 locators) when given a binary of another.
	ErrArchUnsupported = errors.New("architecture not supported")
)

// Arch is the instruction set of a binary, named as GOARCH names it.
type Arch string

// The architectures goinspect reads.
const (
	AMD64 Arch = "amd64"
	ARM64 Arch = "arm64"
)

// quantum is the pclntab's instruction-size quantum (runtime/symtab.go
// minLC): every arm64 instruction is one 4-byte word.
func (a Arch) quantum() byte {
	if a == ARM64 {
		return 4
	}
	return 1
}

// FileID identifies an executable by inode, which stays valid when the path
// does not (deleted files, other mount namespaces).
type FileID struct{ Dev, Ino uint64 }

// Func is a function from .gopclntab, with link-time virtual addresses.
// End is the next function's entry, so [Entry, End) may end in padding.
type Func struct {
	Name       string
	Entry, End uint64
}

// Binary is an opened Go executable. It holds the file open until Close.
type Binary struct {
	Path      string
	ID        FileID
	GoVersion string
	Version   Version
	Arch      Arch // amd64 or arm64, from the ELF header

	PIE      bool // ELF type ET_DYN
	Static   bool // no PT_INTERP
	Stripped bool // no .symtab
	CGO      bool // built with CGO_ENABLED=1

	file   *os.File
	size   uint64 // bounds allocations sized from header fields
	elf    *elf.File
	funcs  map[string]Func
	budget *budget
	raw    *fileReader // the file, reads not charged (see fileReader.free)
	sites  int         // probe sites handed out (ClaimSites), against MaxSitesPerBinary

	// DWARF is parsed on first use: it is large and only needed when a
	// probe wants a struct offset.
	dwarfOnce sync.Once
	dwarf     *dwarf.Data
	dwarfErr  error
}

// Open opens and parses the executable at path. path may be a /proc/PID/exe
// magic link, which reaches deleted files and files in other mount
// namespaces.
func Open(path string) (*Binary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	b, err := newBinary(path, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return b, nil
}

// OpenPID opens the executable of process pid through procRoot/<pid>/exe.
func OpenPID(procRoot string, pid int) (*Binary, error) {
	return Open(exePath(procRoot, pid))
}

// StatPID returns the identity of pid's executable without parsing it, so
// callers can check a cache keyed by FileID before paying for Open.
func StatPID(procRoot string, pid int) (FileID, error) {
	p := exePath(procRoot, pid)
	fi, err := os.Stat(p)
	if err != nil {
		return FileID{}, fmt.Errorf("stat %s: %w", p, err)
	}
	return fileID(fi)
}

func exePath(procRoot string, pid int) string {
	return filepath.Join(procRoot, strconv.Itoa(pid), "exe")
}

func fileID(fi os.FileInfo) (FileID, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return FileID{}, fmt.Errorf("no inode information for %s", fi.Name())
	}
	return FileID{Dev: uint64(st.Dev), Ino: st.Ino}, nil
}

// Close releases the file.
func (b *Binary) Close() error {
	if b.file == nil {
		return nil
	}
	err := b.file.Close()
	b.file, b.elf, b.funcs, b.dwarf = nil, nil, nil, nil
	if err != nil {
		return fmt.Errorf("close %s: %w", b.Path, err)
	}
	return nil
}

// newBinary does the parsing. The debug/* packages are hardened against bad
// input but not promised to be panic-free, and a daemon scanning every
// process on the host must not die on one odd file.
func newBinary(path string, f *os.File) (b *Binary, err error) {
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("malformed executable (parser panic: %v): %w", r, ErrNotELF)
		}
	}()

	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file: %w", ErrNotELF)
	}
	id, err := fileID(fi)
	if err != nil {
		return nil, err
	}
	g := &budget{}
	g.begin()
	defer g.end()
	// Every read below goes through r: charged, and bounded by the size
	// the file has now (a sparse file's holes count: it is the budget, not
	// the disk, that bounds a claim).
	snaps, err := checkELF(f, fi.Size())
	if err != nil {
		return nil, err
	}
	r := &fileReader{f: f, size: fi.Size(), budget: g, snaps: snaps}
	ef, err := elf.NewFile(r)
	if err != nil {
		if errors.Is(err, ErrBudget) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrNotELF, err)
	}
	var arch Arch
	switch {
	case ef.Class != elf.ELFCLASS64 || ef.Data != elf.ELFDATA2LSB:
	case ef.Machine == elf.EM_X86_64:
		arch = AMD64
	case ef.Machine == elf.EM_AARCH64:
		arch = ARM64
	}
	if arch == "" {
		return nil, fmt.Errorf("unsupported architecture %v/%v/%v: %w", ef.Machine, ef.Class, ef.Data, ErrNotELF)
	}

	bi, err := buildinfo.Read(r)
	if err != nil {
		if errors.Is(err, ErrBudget) {
			return nil, err
		}
		if err.Error() == ErrNotGo.Error() {
			// debug/buildinfo's own sentinel is unexported; avoid saying it twice.
			return nil, ErrNotGo
		}
		return nil, fmt.Errorf("%w: no readable Go build info: %v", ErrNotGo, err)
	}
	ver, err := ParseVersion(bi.GoVersion)
	if err != nil {
		return nil, err
	}

	b = &Binary{
		Path: path,
		ID:   id,
		// The binary's own bytes: any local user chooses them.
		GoVersion: sanitize.Name(bi.GoVersion),
		Version:   ver,
		Arch:      arch,
		PIE:       ef.Type == elf.ET_DYN,
		Static:    true,
		Stripped:  ef.Section(".symtab") == nil,
		file:      f,
		size:      uint64(fi.Size()),
		elf:       ef,
		budget:    g,
		raw:       &fileReader{f: f, size: fi.Size(), budget: g, snaps: snaps, free: true},
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			b.Static = false
		}
	}
	for _, s := range bi.Settings {
		if s.Key == "CGO_ENABLED" && s.Value == "1" {
			b.CGO = true
		}
	}
	if b.funcs, err = b.readFuncs(); err != nil {
		return nil, err
	}
	return b, nil
}

// Func returns the function called name, e.g. "runtime.gcStart" or
// "runtime.(*gcControllerState).endCycle".
func (b *Binary) Func(name string) (Func, error) {
	fn, ok := b.funcs[name]
	if !ok {
		return Func{}, fmt.Errorf("%s: %s: %w", b.Path, name, ErrNoFunc)
	}
	return fn, nil
}

// NumFuncs returns the number of functions in the table, mostly for diagnostics.
func (b *Binary) NumFuncs() int { return len(b.funcs) }

// FileOffset converts a link-time virtual address to the file offset that
// uprobe attachment wants, via the PT_LOAD segment that maps it.
func (b *Binary) FileOffset(vaddr uint64) (uint64, error) {
	if b.elf == nil {
		return 0, fmt.Errorf("%s: binary is closed", b.Path)
	}
	p := b.loadSegment(vaddr, 1)
	if p == nil {
		return 0, fmt.Errorf("%s: address %#x is not in a file-backed PT_LOAD segment", b.Path, vaddr)
	}
	return p.Off + (vaddr - p.Vaddr), nil
}

// loadSegment returns the PT_LOAD segment whose file-backed part holds
// [vaddr, vaddr+n), or nil.
func (b *Binary) loadSegment(vaddr, n uint64) *elf.Prog {
	for _, p := range b.elf.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		if vaddr >= p.Vaddr && vaddr-p.Vaddr < p.Filesz && n <= p.Filesz-(vaddr-p.Vaddr) {
			return p
		}
	}
	return nil
}

// readAt reads n bytes at virtual address vaddr from the file.
func (b *Binary) readAt(vaddr, n uint64) ([]byte, error) {
	p := b.loadSegment(vaddr, n)
	if p == nil {
		return nil, fmt.Errorf("address range %#x+%d is not in a file-backed PT_LOAD segment", vaddr, n)
	}
	if err := b.budget.need(n, "a read of code or data"); err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := p.ReadAt(buf, int64(vaddr-p.Vaddr)); err != nil {
		return nil, fmt.Errorf("read %#x+%d: %w", vaddr, n, err)
	}
	return buf, nil
}

// Writable reports whether [vaddr, vaddr+n) lies in one writable PT_LOAD
// segment (data or bss), where the runtime's global variables live.
func (b *Binary) Writable(vaddr, n uint64) bool {
	if b.elf == nil {
		return false
	}
	for _, p := range b.elf.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_W != 0 &&
			vaddr >= p.Vaddr && vaddr-p.Vaddr < p.Memsz && n <= p.Memsz-(vaddr-p.Vaddr) {
			return true
		}
	}
	return false
}
