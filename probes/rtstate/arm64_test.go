package rtstate_test

import (
	"testing"

	"github.com/gopulse/gopulse/internal/fixturebuild"
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
