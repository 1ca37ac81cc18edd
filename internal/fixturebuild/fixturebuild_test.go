package fixturebuild

import (
	"debug/buildinfo"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestShapesWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Shapes() {
		if seen[s.Name] {
			t.Errorf("duplicate shape %s", s.Name)
		}
		seen[s.Name] = true
		if _, err := lookupToolchain(s.Toolchain); err != nil {
			t.Errorf("shape %s: %v", s.Name, err)
		}
		if !strings.HasPrefix(s.Name, s.Toolchain+"-") {
			t.Errorf("shape %s: name does not start with its toolchain %s", s.Name, s.Toolchain)
		}
	}
	for _, want := range []string{"go1.26-static", "go1.26-stripped", "go1.26-pie", "go1.26-cgo", "go1.19-static", "go1.19-stripped", "go1.27-static"} {
		if !seen[want] {
			t.Errorf("missing shape %s", want)
		}
	}
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	if modulePath(filepath.Join(root, "go.mod")) != Module {
		t.Fatalf("RepoRoot %s is not the %s module", root, Module)
	}
	if !isFile(filepath.Join(root, "tools", "fixtures", "go.mod")) {
		t.Fatalf("RepoRoot %s has no tools/fixtures module", root)
	}
}

func TestBuildShapes(t *testing.T) {
	for _, s := range Shapes() {
		t.Run(s.Name, func(t *testing.T) {
			p := Build(t, "gcload", s)
			bi, err := buildinfo.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(bi.GoVersion, s.Toolchain+".") {
				t.Errorf("GoVersion %s, want %s.x", bi.GoVersion, s.Toolchain)
			}
			f, err := elf.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := f.Type == elf.ET_DYN; got != s.PIE {
				t.Errorf("ET_DYN=%v, want PIE=%v", got, s.PIE)
			}
			if got := f.Section(".symtab") == nil; got != s.Stripped {
				t.Errorf("no .symtab=%v, want stripped=%v", got, s.Stripped)
			}
			// A cached build is returned as is.
			if again := Build(t, "gcload", s); again != p {
				t.Errorf("second Build returned %s, want cached %s", again, p)
			}
		})
	}
}

// Concurrent builders of one fixture (as parallel test processes are) must
// agree on one complete binary.
func TestBuildConcurrentFreshCache(t *testing.T) {
	t.Setenv("GOPULSE_FIXTURE_CACHE", t.TempDir())
	s := Shapes()[0]
	var wg sync.WaitGroup
	paths := make([]string, 3)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Build may call t.Fatal/Skip, which must run on the test
			// goroutine; a sub-test gives each builder its own.
			t.Run("", func(t *testing.T) { paths[i] = Build(t, "gcload", s) })
		}()
	}
	wg.Wait()
	if t.Skipped() || t.Failed() {
		return
	}
	for _, p := range paths[1:] {
		if p != paths[0] {
			t.Fatalf("paths differ: %q", paths)
		}
	}
	if _, err := buildinfo.ReadFile(paths[0]); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Dir(paths[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".build-") {
			t.Errorf("leftover build directory %s", e.Name())
		}
	}
}

func TestUnknownToolchain(t *testing.T) {
	if _, err := lookupToolchain("go1.0"); err == nil {
		t.Fatal("lookupToolchain(go1.0) succeeded")
	}
}
