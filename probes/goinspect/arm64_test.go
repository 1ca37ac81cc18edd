package goinspect_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// retARM64 is RET (to X30), the only return the Go compiler emits on arm64.
const retARM64 = 0xd65f03c0

// TestARM64 reads arm64 fixtures cross-built here: the function table must
// equal `go tool nm` (or, stripped, the unstripped build's), every probed
// function must decode word by word, and its RET sites must be exactly the
// RETs that `go tool objdump` shows, each on a RET word.
func TestARM64(t *testing.T) {
	var unstripped map[string][]goinspect.Func // by toolchain
	unstripped = map[string][]goinspect.Func{}
	for _, s := range fixturebuild.ARM64Shapes() {
		t.Run(s.Name, func(t *testing.T) {
			path := fixturebuild.Build(t, "gcload", s)
			b, err := goinspect.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.Arch != goinspect.ARM64 || b.PIE != s.PIE || b.Stripped != s.Stripped || b.CGO {
				t.Errorf("Arch=%s PIE=%v Stripped=%v CGO=%v, want arm64 %v %v false", b.Arch, b.PIE, b.Stripped, b.CGO, s.PIE, s.Stripped)
			}
			if !strings.HasPrefix(b.GoVersion, s.Toolchain+".") {
				t.Errorf("GoVersion = %q, want %s.x", b.GoVersion, s.Toolchain)
			}
			funcs := b.Funcs()
			if s.Stripped {
				want := unstripped[s.Toolchain]
				if want == nil {
					t.Fatalf("no unstripped %s build ran before this shape", s.Toolchain)
				}
				if !slices.Equal(funcs, want) {
					t.Errorf("stripped function table (%d) differs from the unstripped build's (%d)", len(funcs), len(want))
				}
			} else {
				unstripped[s.Toolchain] = funcs
				checkNM(t, path, funcs)
			}

			if err := b.RequireHostArch(); !errors.Is(err, goinspect.ErrArchUnsupported) {
				t.Errorf("RequireHostArch of an arm64 binary on this amd64 host: err = %v", err)
			}
			if _, err := b.Code(funcs[0]); !errors.Is(err, goinspect.ErrArchUnsupported) {
				t.Errorf("Code (x86) of an arm64 binary: err = %v, want ErrArchUnsupported", err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range append(probedFuncs, "runtime.gcMarkTermination") {
				fn, err := b.Func(name)
				if err != nil {
					t.Error(err)
					continue
				}
				rets, err := b.Returns(fn)
				if err != nil {
					t.Errorf("Returns(%s): %v", name, err)
					continue
				}
				if len(rets) == 0 {
					t.Errorf("Returns(%s): no RET", name)
				}
				for _, r := range rets {
					off, err := b.FileOffset(r)
					if err != nil {
						t.Fatal(err)
					}
					if w := binary.LittleEndian.Uint32(raw[off:]); w != retARM64 || r%4 != 0 {
						t.Errorf("%s: RET site %#x holds %#08x, not RET", name, r, w)
					}
				}
				if s.Stripped {
					continue // objdump needs .symtab; the RET words were checked
				}
				if want := objdumpRets(t, path, name); !slices.Equal(rets, want) {
					t.Errorf("%s: Returns = %#x, go tool objdump RETs = %#x", name, rets, want)
				}
				t.Logf("%s entry=%#x rets=%d", name, fn.Entry, len(rets))
			}
		})
	}
}

// checkNM compares the table with every text symbol `go tool nm` lists
// that is a function of the pclntab (nm also lists markers such as
// runtime.text, which are not).
func checkNM(t *testing.T, path string, funcs []goinspect.Func) {
	t.Helper()
	out, err := exec.Command("go", "tool", "nm", path).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	// Names may hold spaces (generic shapes); assembly functions are listed
	// as NAME.abi0, and a function with an ABI wrapper appears twice.
	nm := map[string][]uint64{}
	addrs := map[uint64]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.SplitN(strings.TrimSpace(sc.Text()), " ", 3)
		if len(f) != 3 || (f[1] != "T" && f[1] != "t") {
			continue
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			t.Fatalf("go tool nm: %q", sc.Text())
		}
		name := strings.TrimSuffix(f[2], ".abi0")
		nm[name] = append(nm[name], addr)
		addrs[addr] = true
	}
	renamed := 0
	for _, f := range funcs {
		a, listed := nm[f.Name]
		switch {
		case slices.Contains(a, f.Entry):
		case !listed && addrs[f.Entry] && strings.HasPrefix(f.Name, "type"):
			// The linker renames duplicated type-equality functions in one
			// table and not the other (type:.eq.T·7, type..eq.[...]T).
			renamed++
		default:
			t.Errorf("%s: pclntab entry %#x, go tool nm %#x", f.Name, f.Entry, a)
		}
	}
	if renamed > 3 {
		t.Errorf("%d type functions named differently by go tool nm", renamed)
	}
	t.Logf("%d pclntab functions equal go tool nm (%d text symbols)", len(funcs), len(nm))
}

// objdumpRets returns the addresses of the RETs `go tool objdump` shows in
// function name.
func objdumpRets(t *testing.T, path, name string) []uint64 {
	t.Helper()
	out, err := exec.Command("go", "tool", "objdump", "-s", "^"+regexp.QuoteMeta(name)+"$", path).Output()
	if err != nil {
		t.Fatalf("go tool objdump: %v", err)
	}
	var rets []uint64
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		// file:line  address  word  RET
		if len(f) >= 4 && f[3] == "RET" {
			a, err := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64)
			if err != nil {
				t.Fatalf("go tool objdump: %q", line)
			}
			rets = append(rets, a)
		}
	}
	return rets
}

// An amd64 binary has no arm64 code to decode.
func TestCodeARM64OfAMD64(t *testing.T) {
	b, err := goinspect.Open(fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Arch != goinspect.AMD64 {
		t.Errorf("Arch = %s, want amd64", b.Arch)
	}
	if err := b.RequireHostArch(); err != nil {
		t.Errorf("RequireHostArch of an amd64 binary on this amd64 host: %v", err)
	}
	fn, err := b.Func("runtime.gcStart")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CodeARM64(fn); !errors.Is(err, goinspect.ErrArchUnsupported) {
		t.Errorf("CodeARM64 of an amd64 binary: err = %v, want ErrArchUnsupported", err)
	}
}
