// Package fixturebuild builds the test programs in tools/fixtures with each
// Go toolchain and binary shape that gopulse must handle, caching the results
// across test packages and test runs.
package fixturebuild

import (
	"bufio"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/gopulse/gopulse/internal/testenv"
)

// Module is the main module's path, used to recognise the repository root.
const Module = "github.com/gopulse/gopulse"

// Shape is one way of building a fixture.
type Shape struct {
	Name      string // e.g. "go1.26-static"
	Toolchain string // "go1.26", "go1.19" or "go1.27"
	Stripped  bool   // -ldflags=-s -w: no .symtab, no DWARF
	PIE       bool   // -buildmode=pie
	CGO       bool   // CGO_ENABLED=1 (external linking against libc); else CGO_ENABLED=0
	Arch      string // GOARCH; "" is amd64, the host's. Others are cross-built, never run here.
}

// goarch returns the GOARCH the shape builds for.
func (s Shape) goarch() string {
	if s.Arch == "" {
		return "amd64"
	}
	return s.Arch
}

func (s Shape) String() string { return s.Name }

// Shapes returns every shape that tests should cover.
func Shapes() []Shape {
	return []Shape{
		{Name: "go1.26-static", Toolchain: "go1.26"},
		{Name: "go1.26-stripped", Toolchain: "go1.26", Stripped: true},
		{Name: "go1.26-pie", Toolchain: "go1.26", PIE: true},
		{Name: "go1.26-cgo", Toolchain: "go1.26", CGO: true},
		{Name: "go1.19-static", Toolchain: "go1.19"},
		{Name: "go1.19-stripped", Toolchain: "go1.19", Stripped: true},
		{Name: "go1.27-static", Toolchain: "go1.27"},
	}
}

// ARM64Shapes returns the arm64 shapes that host-side inspection tests
// cover: cross-built here (CGO_ENABLED=0), read but never run.
func ARM64Shapes() []Shape {
	return []Shape{
		{Name: "go1.26-arm64-static", Toolchain: "go1.26", Arch: "arm64"},
		{Name: "go1.26-arm64-stripped", Toolchain: "go1.26", Arch: "arm64", Stripped: true},
		{Name: "go1.26-arm64-pie", Toolchain: "go1.26", Arch: "arm64", PIE: true},
		{Name: "go1.19-arm64-static", Toolchain: "go1.19", Arch: "arm64"},
		{Name: "go1.27-arm64-static", Toolchain: "go1.27", Arch: "arm64"},
	}
}

// releases are the toolchains between 1.19 and 1.26 that the module proxy
// serves (Go 1.21 on), by the exact release the facts table was checked
// with; the local go switches to them (downloading each once).
var releases = map[string]string{
	"go1.21": "go1.21.13",
	"go1.22": "go1.22.12",
	"go1.23": "go1.23.12",
	"go1.24": "go1.24.11",
	"go1.25": "go1.25.5",
}

// ReleaseShapes returns one static shape per release in between those of
// Shapes (Go 1.21 to 1.25), for checks of per-release facts.
func ReleaseShapes() []Shape {
	var out []Shape
	for _, n := range []string{"go1.21", "go1.22", "go1.23", "go1.24", "go1.25"} {
		out = append(out, Shape{Name: n + "-static", Toolchain: n})
	}
	return out
}

// ARM64ReleaseShapes returns one arm64 static shape per release between
// those of ARM64Shapes (Go 1.21 to 1.25), for checks of the facts table's
// arm64 books: cross-built, inspected, never run.
func ARM64ReleaseShapes() []Shape {
	var out []Shape
	for _, s := range ReleaseShapes() {
		s.Name = strings.TrimSuffix(s.Name, "-static") + "-arm64-static"
		s.Arch = "arm64"
		out = append(out, s)
	}
	return out
}

// toolchain says how to run one toolchain's go command.
type toolchain struct {
	goCmd       string // absolute path or name on PATH
	gotoolchain string // value for GOTOOLCHAIN
}

func lookupToolchain(name string) (toolchain, error) {
	switch name {
	case "go1.26":
		return toolchain{goCmd: "go", gotoolchain: "local"}, nil
	case "go1.19":
		return toolchain{goCmd: "/usr/lib/go-1.19/bin/go", gotoolchain: "local"}, nil
	case "go1.27":
		// The local go switches to (and on first use downloads) this release.
		return toolchain{goCmd: "go", gotoolchain: "go1.27.3"}, nil
	}
	if v, ok := releases[name]; ok {
		return toolchain{goCmd: "go", gotoolchain: v}, nil
	}
	return toolchain{}, fmt.Errorf("unknown toolchain %q", name)
}

// versions caches `go env GOVERSION` per toolchain for the life of the test
// binary: asking a switching go command costs a process start or two, and
// every Build needs the answer for its cache key.
var versions struct {
	sync.Mutex
	m map[string]versionResult
}

type versionResult struct {
	version string
	err     error
}

// toolchainVersion returns the exact release ("go1.26.8") that the named
// toolchain runs, or an error if it is not usable here.
func toolchainVersion(name, modDir string) (string, error) {
	versions.Lock()
	defer versions.Unlock()
	if r, ok := versions.m[name]; ok {
		return r.version, r.err
	}
	v, err := probeVersion(name, modDir)
	if versions.m == nil {
		versions.m = make(map[string]versionResult)
	}
	versions.m[name] = versionResult{v, err}
	return v, err
}

func probeVersion(name, modDir string) (string, error) {
	tc, err := lookupToolchain(name)
	if err != nil {
		return "", err
	}
	goCmd, err := exec.LookPath(tc.goCmd)
	if err != nil {
		return "", fmt.Errorf("toolchain %s: %w", name, err)
	}
	cmd := exec.Command(goCmd, "env", "GOVERSION")
	cmd.Dir = modDir
	cmd.Env = buildEnv(tc, false, "amd64")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("toolchain %s: go env GOVERSION: %w\n%s", name, err, out)
	}
	v := strings.TrimSpace(string(out))
	if v != name && !strings.HasPrefix(v, name+".") {
		return "", fmt.Errorf("toolchain %s: %s reports %q", name, goCmd, v)
	}
	return v, nil
}

func buildEnv(tc toolchain, cgo bool, goarch string) []string {
	cgoEnabled := "0"
	if cgo {
		cgoEnabled = "1"
	}
	// os/exec keeps the last value of a duplicated key, so these override
	// whatever the developer's environment says.
	return append(os.Environ(),
		"GOTOOLCHAIN="+tc.gotoolchain,
		"GOFLAGS=-mod=mod -buildvcs=false",
		"GOWORK=off",
		"GO111MODULE=on",
		"GOOS=linux",
		"GOARCH="+goarch,
		"CGO_ENABLED="+cgoEnabled,
	)
}

// RepoRoot returns the root of the gopulse module, found by walking up from
// the working directory (a test's package directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("fixturebuild: %v", err)
	}
	for {
		if modulePath(filepath.Join(dir, "go.mod")) == Module {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("fixturebuild: no go.mod for module %s above the working directory", Module)
		}
		dir = parent
	}
}

func modulePath(gomod string) string {
	f, err := os.Open(gomod)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// CacheDir is where built fixtures are kept.
func CacheDir() string {
	if d := os.Getenv("GOPULSE_FIXTURE_CACHE"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "gopulse-fixtures")
}

// Build builds tools/fixtures/<program> in shape s and returns the binary's
// path. Builds are cached by shape, toolchain release and source hash, so
// the path is shared: callers must not modify the file (copy it first).
func Build(t testing.TB, program string, s Shape) string {
	t.Helper()
	modDir := filepath.Join(RepoRoot(t), "tools", "fixtures")
	tc, err := lookupToolchain(s.Toolchain)
	if err != nil {
		t.Fatalf("fixturebuild: shape %s: %v", s.Name, err)
	}
	version, err := toolchainVersion(s.Toolchain, modDir)
	if err != nil {
		testenv.Unavailable(t, "fixturebuild: shape %s: toolchain unavailable: %v", s.Name, err)
	}
	if s.CGO {
		cc := os.Getenv("CC")
		if cc == "" {
			cc = "gcc"
		}
		if _, err := exec.LookPath(cc); err != nil {
			testenv.Unavailable(t, "fixturebuild: shape %s: no C compiler: %v", s.Name, err)
		}
	}
	hash, err := sourceHash(modDir, program, s)
	if err != nil {
		t.Fatalf("fixturebuild: %v", err)
	}

	dir := CacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("fixturebuild: %v", err)
	}
	final := filepath.Join(dir, fmt.Sprintf("%s-%s-%s-%s", program, s.Name, version, hash[:16]))
	if isFile(final) {
		return final
	}

	// Test packages run as parallel processes; the lock keeps them from
	// building the same fixture twice, the rename keeps a reader from seeing
	// a half-written one.
	unlock, err := lockFile(final + ".lock")
	if err != nil {
		t.Fatalf("fixturebuild: %v", err)
	}
	defer unlock()
	if isFile(final) {
		return final
	}
	tmpDir, err := os.MkdirTemp(dir, ".build-*")
	if err != nil {
		t.Fatalf("fixturebuild: %v", err)
	}
	defer os.RemoveAll(tmpDir)
	out := filepath.Join(tmpDir, program)

	args := []string{"build", "-o", out}
	if s.PIE {
		args = append(args, "-buildmode=pie")
	}
	if s.Stripped {
		args = append(args, "-ldflags=-s -w")
	}
	args = append(args, "./"+program)
	goCmd, _ := exec.LookPath(tc.goCmd)
	cmd := exec.Command(goCmd, args...)
	cmd.Dir = modDir
	cmd.Env = buildEnv(tc, s.CGO, s.goarch())
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fixturebuild: %s: go %s: %v\n%s", s.Name, strings.Join(args, " "), err, msg)
	}
	if err := verify(out, version, s); err != nil {
		t.Fatalf("fixturebuild: %s: %v", s.Name, err)
	}
	if err := os.Rename(out, final); err != nil {
		t.Fatalf("fixturebuild: %v", err)
	}
	return final
}

// verify checks that the toolchain switch really happened: a go command that
// silently fell back to another release would make version tests pass
// against the wrong runtime.
func verify(path, version string, s Shape) error {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read build info of %s: %w", path, err)
	}
	if got, _, _ := strings.Cut(bi.GoVersion, " "); got != version {
		return fmt.Errorf("%s was built by %s, want %s", path, bi.GoVersion, version)
	}
	want := "0"
	if s.CGO {
		want = "1"
	}
	for _, kv := range bi.Settings {
		if kv.Key == "CGO_ENABLED" && kv.Value != want {
			return fmt.Errorf("%s has CGO_ENABLED=%s, want %s", path, kv.Value, want)
		}
	}
	return nil
}

// sourceHash covers everything that affects the build: the program's files,
// the fixture module's go.mod/go.sum, and the shape's flags.
func sourceHash(modDir, program string, s Shape) (string, error) {
	progDir := filepath.Join(modDir, program)
	var files []string
	err := filepath.WalkDir(progDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("fixture program %s: %w", program, err)
	}
	if len(files) == 0 {
		return "", fmt.Errorf("fixture program %s: no files in %s", program, progDir)
	}
	for _, name := range []string{"go.mod", "go.sum"} {
		if p := filepath.Join(modDir, name); isFile(p) {
			files = append(files, p)
		}
	}
	sort.Strings(files)
	h := sha256.New()
	// The amd64 shapes hash as they did before Arch existed, so that adding
	// it did not invalidate every cached fixture.
	arch := s.Arch
	fmt.Fprintf(h, "shape %+v\n", struct {
		Name, Toolchain    string
		Stripped, PIE, CGO bool
	}{s.Name, s.Toolchain, s.Stripped, s.PIE, s.CGO})
	if arch != "" && arch != "amd64" {
		fmt.Fprintf(h, "arch %s\n", arch)
	}
	for _, p := range files {
		rel, _ := filepath.Rel(modDir, p)
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		fi, err := f.Stat()
		if err == nil {
			fmt.Fprintf(h, "file %s %d\n", rel, fi.Size())
			_, err = io.Copy(h, f)
		}
		f.Close()
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", p, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
