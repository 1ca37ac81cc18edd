package packaging_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Lintian finds no error in the package, and every warning it leaves is
// explained in packaging/README.md.
func TestLintian(t *testing.T) {
	requireTools(t, "lintian")
	d := buildDebs(t)
	checkLintian(t, d.old)
}

// checkLintian runs lintian on deb: no error, every warning explained.
func checkLintian(t *testing.T, deb string) {
	t.Helper()
	out, _ := runErr("lintian", "--display-level", ">=warning", "--no-tag-display-limit", deb)
	readme := readFile(t, "README.md")
	tagRE := regexp.MustCompile(`^([EW]): gopulse(?: [a-z]+)?: ([a-z0-9-]+)`)
	var errs, warns []string
	for _, line := range strings.Split(out, "\n") {
		m := tagRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if m[1] == "E" {
			errs = append(errs, line)
		} else {
			warns = append(warns, line)
			if !strings.Contains(readme, "`"+m[2]+"`") {
				t.Errorf("lintian warning not explained in packaging/README.md (as `%s`): %s", m[2], line)
			}
		}
	}
	if len(errs) > 0 {
		t.Errorf("lintian errors:\n%s", strings.Join(errs, "\n"))
	}
	if strings.Contains(out, "E: ") && len(errs) == 0 {
		t.Errorf("lintian failed:\n%s", out)
	}
	t.Logf("lintian: %d errors, %d warnings\n%s", len(errs), len(warns), strings.Join(warns, "\n"))
}

// The package has what the issue lists, with the right modes.
func TestDebContents(t *testing.T) {
	d := buildDebs(t)
	listing := run(t, "dpkg-deb", "--contents", d.old)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/sbin/gopulsed",
		"-rwxr-xr-x root/root .* ./usr/bin/gopulse",
		"-rw-r--r-- root/root .* ./lib/systemd/system/gopulsed.service",
		"-rw-r--r-- root/root .* ./lib/systemd/system/gopulsed.socket",
		"-rw-r--r-- root/root .* ./etc/gopulse/gopulse.yaml",
		"-rw-r--r-- root/root .* ./usr/share/man/man8/gopulsed.8.gz",
		"-rw-r--r-- root/root .* ./usr/share/man/man1/gopulse.1.gz",
		"-rw-r--r-- root/root .* ./usr/share/bash-completion/completions/gopulse",
		"-rw-r--r-- root/root .* ./usr/share/zsh/vendor-completions/_gopulse",
		"-rw-r--r-- root/root .* ./usr/share/doc/gopulse/copyright",
		"-rw-r--r-- root/root .* ./usr/share/gopulse/gopulse-dashboard.json",
		"-rw-r--r-- root/root .* ./usr/share/gopulse/gopulse-alerts.yml",
		"-rw-r--r-- root/root .* ./usr/share/doc/gopulse/changelog.gz",
	} {
		if !regexp.MustCompile(`(?m)^` + want + `$`).MatchString(listing) {
			t.Errorf("package lacks %q:\n%s", want, listing)
		}
	}
	info := run(t, "dpkg-deb", "--info", d.old)
	for _, want := range []string{"Package: gopulse", "Version: " + d.oldVersion, "Architecture: amd64", "Depends: passwd"} {
		if !strings.Contains(info, want) {
			t.Errorf("control lacks %q:\n%s", want, info)
		}
	}
	if conf := run(t, "dpkg-deb", "--field", d.old, "Package"); strings.TrimSpace(conf) != "gopulse" {
		t.Errorf("Package field %q", conf)
	}
	ctl := t.TempDir()
	run(t, "dpkg-deb", "--control", d.old, ctl)
	if got := readFile(t, filepath.Join(ctl, "conffiles")); got != "/etc/gopulse/gopulse.yaml\n" {
		t.Errorf("conffiles = %q", got)
	}
}

// dpkgStatus returns the package's dpkg status in root ("" if unknown).
func dpkgStatus(t *testing.T, root string) string {
	out, _ := runErr("chroot", root, "dpkg-query", "-W", "-f", "${Status} ${Version}", "gopulse")
	return strings.TrimSpace(out)
}

func inChroot(t *testing.T, root string, args ...string) string {
	t.Helper()
	return run(t, "chroot", append([]string{root, "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}, args...)...)
}

func hasGroup(t *testing.T, root string) bool {
	_, err := runErr("chroot", root, "getent", "group", "gopulse")
	return err == nil
}

// Install, reinstall, upgrade, remove and purge in a clean Debian root
// where systemd is not PID 1: the maintainer scripts work and leave
// nothing behind. systemd-analyze verify checks the installed units.
func TestInstallUpgradeRemovePurge(t *testing.T) {
	requireTools(t, "chroot")
	t.Parallel()
	d := buildDebs(t)
	root := newRoot(t)
	os.MkdirAll(filepath.Join(root, "tmp/debs"), 0o755)
	oldDeb := "/tmp/debs/" + filepath.Base(copyInto(t, d.old, filepath.Join(root, "tmp/debs")))
	newDeb := "/tmp/debs/" + filepath.Base(copyInto(t, d.new, filepath.Join(root, "tmp/debs")))
	before := rootFiles(t, root)

	// Install.
	inChroot(t, root, "dpkg", "-i", oldDeb)
	if st := dpkgStatus(t, root); st != "install ok installed "+d.oldVersion {
		t.Fatalf("after install: status %q", st)
	}
	for _, p := range []string{
		"usr/sbin/gopulsed", "usr/bin/gopulse", "lib/systemd/system/gopulsed.service",
		"lib/systemd/system/gopulsed.socket", "etc/gopulse/gopulse.yaml",
		"usr/share/man/man8/gopulsed.8.gz", "usr/share/man/man1/gopulse.1.gz",
		"usr/share/bash-completion/completions/gopulse", "usr/share/zsh/vendor-completions/_gopulse",
		"usr/share/doc/gopulse/copyright", "usr/share/doc/gopulse/changelog.gz",
		"usr/share/gopulse/gopulse-dashboard.json", "usr/share/gopulse/gopulse-alerts.yml",
		// Enabled: the socket with sockets.target, the service at boot.
		"etc/systemd/system/sockets.target.wants/gopulsed.socket",
		"etc/systemd/system/multi-user.target.wants/gopulsed.service",
	} {
		if !exists(filepath.Join(root, p)) {
			t.Errorf("after install: /%s missing", p)
		}
	}
	if !hasGroup(t, root) {
		t.Errorf("after install: no group gopulse")
	}
	if g := inChroot(t, root, "getent", "group", "gopulse"); !strings.HasPrefix(g, "gopulse:x:") {
		t.Errorf("group: %q", g)
	} else if gid := strings.Split(g, ":")[2]; len(gid) > 3 {
		t.Errorf("gopulse group gid %s: want a system group", gid)
	}
	// Not started: no systemd here.
	if exists(filepath.Join(root, "run/gopulse")) {
		t.Errorf("after install in a chroot: /run/gopulse exists, something started the daemon")
	}
	out := inChroot(t, root, "gopulsed", "--check-config")
	if !strings.Contains(out, "configuration OK: /etc/gopulse/gopulse.yaml") {
		t.Errorf("gopulsed --check-config on the shipped file: %s", out)
	}
	verify := inChroot(t, root, "systemd-analyze", "verify", "--man=no", "gopulsed.socket", "gopulsed.service")
	if strings.TrimSpace(verify) != "" {
		t.Errorf("systemd-analyze verify gopulsed.socket gopulsed.service:\n%s", verify)
	}

	// Reinstalling the same version and running postinst again are
	// harmless (idempotent).
	inChroot(t, root, "dpkg", "-i", oldDeb)
	inChroot(t, root, "/var/lib/dpkg/info/gopulse.postinst", "configure", d.oldVersion)

	// The administrator edits the configuration, then upgrades.
	conf := filepath.Join(root, "etc/gopulse/gopulse.yaml")
	edited := readFile(t, conf) + "history: 321\n"
	if err := os.WriteFile(conf, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	inChroot(t, root, "dpkg", "-i", newDeb)
	if st := dpkgStatus(t, root); st != "install ok installed "+d.newVersion {
		t.Fatalf("after upgrade: status %q", st)
	}
	if got := readFile(t, conf); got != edited {
		t.Errorf("upgrade lost the administrator's configuration")
	}
	if !strings.Contains(readFile(t, filepath.Join(root, "usr/sbin/gopulsed")), d.newVersion) {
		t.Errorf("after upgrade: /usr/sbin/gopulsed is not the new build")
	}
	if !hasGroup(t, root) {
		t.Errorf("after upgrade: no group gopulse")
	}

	// Remove: programs gone, configuration and group kept.
	inChroot(t, root, "dpkg", "--remove", "gopulse")
	if st := dpkgStatus(t, root); !strings.HasPrefix(st, "deinstall ok config-files") {
		t.Errorf("after remove: status %q", st)
	}
	for _, p := range []string{"usr/sbin/gopulsed", "usr/bin/gopulse", "lib/systemd/system/gopulsed.service"} {
		if exists(filepath.Join(root, p)) {
			t.Errorf("after remove: /%s still there", p)
		}
	}
	if !exists(conf) || !hasGroup(t, root) {
		t.Errorf("after remove: the configuration or the group went (they stay until purge)")
	}

	// Purge: nothing left.
	os.MkdirAll(filepath.Join(root, "run/gopulse"), 0o755) // as a daemon run by hand leaves it
	inChroot(t, root, "dpkg", "--purge", "gopulse")
	if st := dpkgStatus(t, root); !strings.Contains(st, "no packages found") && !strings.HasPrefix(st, "unknown ok not-installed") {
		t.Errorf("after purge: status %q", st)
	}
	if hasGroup(t, root) {
		t.Errorf("after purge: group gopulse still there")
	}
	after := rootFiles(t, root)
	for _, f := range after {
		if !slices.Contains(before, f) && !allowedLeftover(f) {
			t.Errorf("after purge: left behind: /%s", f)
		}
	}
	for _, f := range before {
		if !slices.Contains(after, f) {
			t.Errorf("after purge: /%s went missing", f)
		}
	}
	// The postrm is idempotent too.
	inChroot(t, root, "sh", "-c", "dpkg --purge gopulse")
}

// allowedLeftover: dpkg's and the system's own bookkeeping.
func allowedLeftover(f string) bool {
	if strings.Contains(f, "gopulse") && !strings.HasPrefix(f, "tmp/debs") && !strings.HasPrefix(f, "var/lib/dpkg/") {
		return false
	}
	for _, p := range []string{"var/lib/dpkg/", "var/log/", "var/cache/debconf/", "tmp/debs", "etc/group-", "etc/gshadow-", "var/lib/systemd/deb-systemd-helper-",
		"run/systemd/systemd-units-load"} {
		if strings.HasPrefix(f, p) {
			return true
		}
	}
	return false
}

// rootFiles lists the files under root, relative, without the virtual
// and scratch directories.
func rootFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if e.IsDir() && slices.Contains([]string{"proc", "sys", "dev"}, rel) {
			return filepath.SkipDir
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
