// Package packaging_test proves the Debian package: lintian, systemd's
// verifier, install/upgrade/remove/purge in a clean Debian root, and the
// service under a real systemd (systemd-nspawn). See README.md here.
package packaging_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopulse/gopulse/internal/testenv"
)

// suite is Debian's release the tests install into (the one this
// machine runs, whose mirror /etc/apt/sources.list.d names).
const suite = "bookworm"

// requireTools stops the test unless it runs as root with the programs.
func requireTools(t *testing.T, progs ...string) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			testenv.Unavailable(t, "needs %s (apt-get install %s; .ci/run installs it)", p, aptPackage(p))
		}
	}
}

func aptPackage(prog string) string {
	switch prog {
	case "systemd-nspawn":
		return "systemd-container"
	case "dpkg-deb":
		return "dpkg"
	case "systemd-analyze":
		return "systemd"
	}
	return prog
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd) // this package is packaging/
}

// run runs a command, failing the test with its output if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// debs are the two builds of the package the tests use: old is what
// `make deb` builds from this checkout, new the same with a higher
// version, to upgrade to.
type debs struct {
	dir                    string
	oldVersion, newVersion string
	old, new               string // paths
}

var (
	buildOnce sync.Once
	built     debs
	buildErr  error
)

func buildDebs(t *testing.T) debs {
	t.Helper()
	requireTools(t, "make", "dpkg-deb", "git", "gzip")
	buildOnce.Do(func() {
		start := time.Now()
		built, buildErr = makeDebs(repoRoot(t))
		t.Logf("built %s and %s in %v", filepath.Base(built.old), filepath.Base(built.new), time.Since(start).Round(time.Second))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func makeDebs(root string) (debs, error) {
	dir, err := os.MkdirTemp("", "gopulse-debs")
	if err != nil {
		return debs{}, err
	}
	var d debs
	d.dir = dir
	out, err := exec.Command(filepath.Join(root, "packaging/version.sh")).Output()
	if err != nil {
		return d, fmt.Errorf("packaging/version.sh: %v", err)
	}
	d.oldVersion = strings.TrimSpace(string(out))
	if !regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`).MatchString(d.oldVersion) {
		return d, fmt.Errorf("packaging/version.sh gave %q: not a Debian version", d.oldVersion)
	}
	d.newVersion = d.oldVersion + "+upgradetest1"
	build := func(version string, withVar bool) (string, error) {
		args := []string{"-C", root, "deb", "DIST=" + dir}
		if withVar {
			args = append(args, "DEB_VERSION="+version)
		}
		out, err := exec.Command("make", args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("make %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		p := filepath.Join(dir, "gopulse_"+version+"_amd64.deb")
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("make deb did not build %s:\n%s", p, out)
		}
		return p, nil
	}
	// The first as `make deb` does it, version from git.
	if d.old, err = build(d.oldVersion, false); err != nil {
		return d, err
	}
	d.new, err = build(d.newVersion, true)
	return d, err
}

// aptMirror returns the Debian mirror this machine's apt uses.
func aptMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// deb822 stanzas: URIs: and Suites: lines.
		for _, stanza := range strings.Split(string(b), "\n\n") {
			var uri string
			hasSuite := false
			for _, l := range strings.Split(stanza, "\n") {
				k, v, _ := strings.Cut(l, ":")
				switch strings.TrimSpace(k) {
				case "URIs":
					if fs := strings.Fields(v); len(fs) > 0 {
						uri = fs[0]
					}
				case "Suites":
					hasSuite = hasSuite || strings.Contains(" "+v+" ", " "+suite+" ")
				}
			}
			if uri != "" && hasSuite && !strings.Contains(uri, "security") {
				return uri
			}
		}
	}
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	lists = append(lists, "/etc/apt/sources.list")
	for _, f := range lists {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) >= 3 && fs[0] == "deb" && fs[2] == suite {
				return fs[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// rootfsTarball returns a tarball of a clean minimal Debian root with
// systemd, building it once with debootstrap (a few minutes) and caching
// it under $GOPULSE_ROOTFS_CACHE, else the temporary directory. A file
// lock lets concurrent test processes share one build.
func rootfsTarball(t *testing.T) string {
	t.Helper()
	requireTools(t, "debootstrap", "tar")
	dir := os.Getenv("GOPULSE_ROOTFS_CACHE")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "gopulse-rootfs-cache")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The name changes with what is in it.
	tarball := filepath.Join(dir, "debian-"+suite+"-minbase-systemd-v1.tar")
	lock, err := os.OpenFile(tarball+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(tarball); err == nil {
		return tarball
	}
	start := time.Now()
	root, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	// MkdirTemp made it 0700: the tarball's "./" must be a normal root.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	mirror := aptMirror()
	t.Logf("building the Debian root with debootstrap from %s (cached in %s afterwards)", mirror, tarball)
	run(t, "debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus", suite, root, mirror)
	// apt's lists and the downloaded packages are not needed.
	os.RemoveAll(filepath.Join(root, "var/cache/apt/archives"))
	os.MkdirAll(filepath.Join(root, "var/cache/apt/archives/partial"), 0o755)
	tmp := tarball + ".tmp"
	run(t, "tar", "--numeric-owner", "--xattrs", "-C", root, "-cf", tmp, ".")
	if err := os.Rename(tmp, tarball); err != nil {
		t.Fatal(err)
	}
	t.Logf("Debian root built and cached in %v", time.Since(start).Round(time.Second))
	return tarball
}

// newRoot extracts a fresh copy of the cached Debian root.
func newRoot(t *testing.T) string {
	t.Helper()
	tarball := rootfsTarball(t)
	root, err := os.MkdirTemp("", "gopulse-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(root); err != nil {
			t.Logf("removing %s: %v", root, err)
		}
	})
	run(t, "tar", "--numeric-owner", "--xattrs", "-C", root, "-xf", tarball)
	// 0755 (tar restores "./" too): the container's system users (dbus,
	// journald...) must be able to walk into its root, or it never boots.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// copyFile copies src into dir, returning the new path.
func copyInto(t *testing.T, src, dir string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMain removes the packages built for the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}
