// Package forgeelf rewrites real Go executables the way an attacker on
// the host would, for the hostile-binary tests (internal/hostile) and the
// goinspect fuzz seeds: only what the kernel's loader and the Go runtime
// ignore (section headers, function names in .gopclntab) is changed, so
// the forged program still runs normally while the daemon reads lies.
package forgeelf

import (
	"bytes"
	"compress/zlib"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// Copy copies the executable src to dst (mode 0755).
func Copy(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// section returns the named section and the file offset of its header.
func section(f *os.File, name string) (*elf.Section, int64, error) {
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, 0, err
	}
	var shoff uint64
	var hdr [64]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return nil, 0, err
	}
	shoff = binary.LittleEndian.Uint64(hdr[40:])
	for i, s := range ef.Sections {
		if s.Name == name {
			return s, int64(shoff) + int64(i)*64, nil
		}
	}
	return nil, 0, fmt.Errorf("no section %s", name)
}

func putU64(f *os.File, off int64, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	_, err := f.WriteAt(b[:], off)
	return err
}

// ClaimSize makes the named section's header claim size bytes and extends
// the file (sparse: a hole, no disk space) so that the claim lies within
// it: a 2 MB binary "holding" a 512 MiB .gopclntab, which still runs (the
// loader reads segments, the runtime finds its table through moduledata).
func ClaimSize(path, name string, size uint64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	s, hoff, err := section(f, name)
	if err != nil {
		return err
	}
	if err := putU64(f, hoff+32, size); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if end := int64(s.Offset + size); end > fi.Size() {
		return f.Truncate(end)
	}
	return nil
}

// Compress points the named section's header at a zlib stream appended to
// the file, flagged SHF_COMPRESSED with a compression header claiming
// claim bytes, the stream inflating to inflated zero bytes (zlib's ratio
// is ~1000:1, so a few hundred KiB on disk inflate to hundreds of MiB).
// debug/elf's Section.Data inflates such a section to what it holds.
func Compress(path, name string, claim uint64, inflated int) error {
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	zero := make([]byte, 1<<20)
	for left := inflated; left > 0; left -= len(zero) {
		if _, err := zw.Write(zero[:min(left, len(zero))]); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	var chdr [24]byte // Elf64_Chdr
	binary.LittleEndian.PutUint32(chdr[0:], uint32(elf.COMPRESS_ZLIB))
	binary.LittleEndian.PutUint64(chdr[8:], claim)
	binary.LittleEndian.PutUint64(chdr[16:], 1)

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, hoff, err := section(f, name)
	if err != nil {
		return err
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	end = (end + 7) &^ 7
	if _, err := f.WriteAt(append(chdr[:], z.Bytes()...), end); err != nil {
		return err
	}
	var flags [8]byte
	if _, err := f.ReadAt(flags[:], hoff+8); err != nil {
		return err
	}
	if err := putU64(f, hoff+8, binary.LittleEndian.Uint64(flags[:])|uint64(elf.SHF_COMPRESSED)); err != nil {
		return err
	}
	if err := putU64(f, hoff+24, uint64(end)); err != nil {
		return err
	}
	return putU64(f, hoff+32, uint64(24+z.Len()))
}

// SwapNames swaps the names of functions a and b in a Go 1.18+
// .gopclntab (the nameOff of their _func records), e.g. a function of
// thousands of RETs and runtime.gcMarkTermination. The runtime never looks
// a function up by name, so the program runs as before; a reader of the
// table sees the forged body under the runtime's name.
func SwapNames(path, a, b string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	s, _, err := section(f, ".gopclntab")
	if err != nil {
		return err
	}
	data, err := s.Data()
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	if m := le.Uint32(data); m != 0xfffffff0 && m != 0xfffffff1 {
		return fmt.Errorf("pclntab magic %#x: not a Go 1.18+ table", m)
	}
	nfunc, nameOff, pclnOff := le.Uint64(data[8:]), le.Uint64(data[32:]), le.Uint64(data[64:])
	where := map[string][]uint64{} // name -> file offsets of nameOff fields
	for i := uint64(0); i < nfunc; i++ {
		fo := pclnOff + uint64(le.Uint32(data[pclnOff+8*i+4:]))
		no := uint64(le.Uint32(data[fo+4:]))
		name := data[nameOff+no:]
		name = name[:bytes.IndexByte(name, 0)]
		if n := string(name); n == a || n == b {
			where[n] = append(where[n], s.Offset+fo+4)
		}
	}
	if len(where[a]) != 1 || len(where[b]) != 1 {
		return fmt.Errorf("want one function each named %s and %s, found %d and %d", a, b, len(where[a]), len(where[b]))
	}
	var va, vb [4]byte
	if _, err := f.ReadAt(va[:], int64(where[a][0])); err != nil {
		return err
	}
	if _, err := f.ReadAt(vb[:], int64(where[b][0])); err != nil {
		return err
	}
	if _, err := f.WriteAt(vb[:], int64(where[a][0])); err != nil {
		return err
	}
	_, err = f.WriteAt(va[:], int64(where[b][0]))
	return err
}

// SetFuncCount writes n as the function count of the .gopclntab header
// (pcHeader.nfunc, which only readers of the table use: the runtime walks
// its moduledata's own slice of it). With a section claiming enough
// (ClaimSize), the count fits the table as far as its header says.
func SetFuncCount(path string, n uint64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	s, _, err := section(f, ".gopclntab")
	if err != nil {
		return err
	}
	return putU64(f, int64(s.Offset)+8, n)
}
