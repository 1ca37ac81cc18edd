package packaging_test

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopulse/gopulse/probes/goinspect"
)

// `make deb ARCH=arm64` cross-builds the arm64 package on this amd64
// machine: Architecture arm64, aarch64 binaries that goinspect reads as Go
// arm64 executables (their own RET sites at RET words), lintian clean as
// the amd64 one is. Running them needs an arm64 kernel (issue 14's VM).
func TestARM64Deb(t *testing.T) {
	requireTools(t, "dpkg-deb", "lintian")
	root := repoRoot(t)
	dir := t.TempDir()
	version := "0.0.1~arm64test"
	out, err := exec.Command("make", "-C", root, "deb", "ARCH=arm64", "DIST="+dir, "DEB_VERSION="+version).CombinedOutput()
	if err != nil {
		t.Fatalf("make deb ARCH=arm64: %v\n%s", err, out)
	}
	deb := filepath.Join(dir, "gopulse_"+version+"_arm64.deb")
	if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Architecture")); got != "arm64" {
		t.Errorf("Architecture: %q, want arm64", got)
	}
	x := filepath.Join(dir, "x")
	run(t, "dpkg-deb", "-x", deb, x)
	for _, p := range []string{"usr/sbin/gopulsed", "usr/bin/gopulse"} {
		path := filepath.Join(x, p)
		ef, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if ef.Machine != elf.EM_AARCH64 {
			t.Errorf("%s: machine %v, want EM_AARCH64", p, ef.Machine)
		}
		ef.Close()
		b, err := goinspect.Open(path)
		if err != nil {
			t.Fatalf("goinspect %s: %v", p, err)
		}
		if b.Arch != goinspect.ARM64 || !b.PIE || !b.Stripped {
			t.Errorf("%s: Arch=%s PIE=%v Stripped=%v, want arm64, PIE, stripped", p, b.Arch, b.PIE, b.Stripped)
		}
		fn, err := b.Func("runtime.gcStart")
		if err != nil {
			t.Fatal(err)
		}
		rets, err := b.Returns(fn)
		if err != nil || len(rets) == 0 {
			t.Errorf("%s: Returns(runtime.gcStart) = %#x, %v", p, rets, err)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rets {
			off, err := b.FileOffset(r)
			if err != nil {
				t.Fatal(err)
			}
			if w := binary.LittleEndian.Uint32(raw[off:]); w != 0xd65f03c0 {
				t.Errorf("%s: RET site %#x holds %#08x", p, r, w)
			}
		}
		b.Close()
	}
	checkLintian(t, deb)
}
