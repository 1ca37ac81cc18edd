package goinspect_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// startHeld starts a command running gcload -wait -hold (blocked on stdin)
// and returns the pid that gcload reports, which is the one to inspect even
// when a wrapper (unshare, sh) exec'd into it.
func startHeld(t *testing.T, name string, args ...string) int {
	t.Helper()
	cmd := exec.Command(name, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		var pid int
		if _, err := fmt.Sscanf(l, "ready pid=%d", &pid); err != nil {
			t.Fatalf("%s: unexpected first line %q (%v); stderr: %s", name, l, err, stderr.String())
		}
		return pid
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no ready line; stderr: %s", name, stderr.String())
	}
	return 0
}

func checkPID(t *testing.T, pid int) *goinspect.Binary {
	t.Helper()
	b, err := goinspect.OpenPID("/proc", pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	id, err := goinspect.StatPID("/proc", pid)
	if err != nil {
		t.Fatal(err)
	}
	if id != b.ID {
		t.Errorf("StatPID = %+v, Binary.ID = %+v", id, b.ID)
	}
	for _, name := range probedFuncs {
		fn, err := b.Func(name)
		if err != nil {
			t.Error(err)
			continue
		}
		if rets, err := b.Returns(fn); err != nil || len(rets) == 0 {
			t.Errorf("Returns(%s) = %v, %v", name, rets, err)
		}
	}
	return b
}

func TestOpenPIDRunning(t *testing.T) {
	bin := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	pid := startHeld(t, bin, "-wait", "-hold")
	b := checkPID(t, pid)
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if id := statID(t, fi); id != b.ID {
		t.Errorf("ID via /proc = %+v, via path = %+v", b.ID, id)
	}
	if _, err := goinspect.StatPID("/proc", 1<<30); err == nil {
		t.Error("StatPID(nonexistent pid) succeeded")
	}
	if _, err := goinspect.OpenPID("/proc", 1<<30); err == nil {
		t.Error("OpenPID(nonexistent pid) succeeded")
	}
}

func TestOpenPIDDeleted(t *testing.T) {
	src := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	bin := filepath.Join(t.TempDir(), "gcload")
	copyFile(t, src, bin)
	pid := startHeld(t, bin, "-wait", "-hold")
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(link, " (deleted)") {
		t.Fatalf("exe link %q does not show the deletion", link)
	}
	checkPID(t, pid)
}

// The binary lives on a tmpfs mounted only in the child's mount namespace;
// the host sees an empty directory, but /proc/PID/exe still resolves.
func TestOpenPIDOtherMountNamespace(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		skipOrFail(t, "no unshare: %v", err)
	}
	if os.Geteuid() != 0 {
		skipOrFail(t, "mount namespaces need root")
	}
	src := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	dir := t.TempDir()
	pid := startHeld(t, unshare, "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs none "$1" && cp "$2" "$1/gcload" && exec "$1/gcload" -wait -hold`,
		"sh", dir, src)
	if _, err := os.Stat(filepath.Join(dir, "gcload")); !os.IsNotExist(err) {
		t.Fatalf("binary is visible from the host namespace (stat: %v)", err)
	}
	b := checkPID(t, pid)
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if statID(t, fi) == b.ID {
		t.Error("binary in the namespace has the host copy's FileID")
	}
}

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}
