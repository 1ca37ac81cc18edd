package rtstate_test

import (
	"os/exec"
	"testing"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/rtstate"
)

// On arm64 builds (cross-built, only inspected) the books are found in the
// code, ADRP-based addresses, where .symtab says they are: a stripped
// build is checked against the unstripped build of the same toolchain
// (the linker lays both out alike).
func TestLocateInCodeARM64(t *testing.T) {
	for _, shape := range append(fixturebuild.ARM64Shapes(), fixturebuild.ARM64ReleaseShapes()...) {
		t.Run(shape.Name, func(t *testing.T) {
			b := openARM64(t, fixturebuild.Build(t, "books", shape))
			facts, err := probes.FactsFor(b)
			if err != nil {
				t.Fatal(err)
			}
			got, err := rtstate.LocateInCode(b, facts)
			if err != nil {
				t.Fatal(err)
			}
			ref := b
			if b.Stripped {
				unstripped := shape
				unstripped.Stripped = false
				unstripped.Name += "-unstripped"
				ref = openARM64(t, fixturebuild.Build(t, "books", unstripped))
			}
			want, err := rtstate.FromSymtab(ref)
			if err != nil {
				t.Fatal(err)
			}
			want.From = "code"
			if got != want {
				t.Errorf("found in code %+v, .symtab says %+v", got, want)
			}
			t.Logf("%+v", got)
		})
	}
}

func openARM64(t *testing.T, path string) *goinspect.Binary {
	t.Helper()
	b, err := goinspect.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if b.Arch != goinspect.ARM64 {
		t.Fatalf("%s is %s", path, b.Arch)
	}
	return b
}

// The arm64 facts rows and locators hold for a running arm64 runtime: the
// books fixture runs under qemu-user (qemu-aarch64 maps a static guest at
// its link-time addresses in its own process, so /proc/PID/mem reads the
// guest's memory there), and what is read at the addresses found in its
// code equals the runtime's own figures, as TestBooksEqualRuntime checks
// on amd64. Static shapes only: a PIE executable needs the arm64 dynamic
// loader (/lib/ld-linux-aarch64.so.1), which this host does not have.
func TestBooksEqualRuntimeARM64QEMU(t *testing.T) {
	testenv.RequireRoot(t)
	qemu, err := exec.LookPath("qemu-aarch64")
	if err != nil {
		testenv.Unavailable(t, "qemu-user (qemu-aarch64): %v", err)
	}
	for _, shape := range append(fixturebuild.ARM64Shapes(), fixturebuild.ARM64ReleaseShapes()...) {
		if shape.PIE {
			continue
		}
		t.Run(shape.Name, func(t *testing.T) {
			bin := fixturebuild.Build(t, "books", shape)
			f := e2etest.StartFixture(t, qemu, []string{"GOGC=150", "GOMEMLIMIT=3GiB"}, bin)
			b := openARM64(t, bin)
			facts, err := probes.FactsFor(b)
			if err != nil {
				t.Fatal(err)
			}
			addrs, err := rtstate.Locate(b, facts)
			if err != nil {
				t.Fatal(err)
			}
			checkBooks(t, f, b, facts, addrs)
		})
	}
}
