package hostile_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
)

// TestSwapRacesTheOpen: a local user runs a Go program from a path and, as
// soon as it exits, puts a FIFO or another Go program at that path, again
// and again, racing the daemon's look at the exec. Before, a FIFO hung the
// event loop (open blocked) and another file got its facts cached under the
// exec'd inode. Now the daemon opens without blocking or following, keeps
// only the inode the kernel executed, and must keep serving and tracing a
// bystander exactly; the program swapped in is, when run, traced exactly
// under its own identity.
func TestSwapRacesTheOpen(t *testing.T) {
	var a, b string // Go 1.26 and Go 1.19: a mix-up would show in the version
	for _, s := range fixturebuild.Shapes() {
		switch {
		case a == "" && s.Toolchain == "go1.26":
			a = e2etest.Gcload(t, s)
		case b == "" && s.Toolchain == "go1.19":
			b = e2etest.Gcload(t, s)
		}
	}
	if a == "" || b == "" {
		t.Fatal("want a Go 1.26 and a Go 1.19 gcload")
	}
	d := e2etest.StartDaemon(t, "--log-level", "debug")
	bystander := e2etest.StartFixture(t, a, nil, "-gcrate", "20", "-duration", "10s", "-hold")

	dir := t.TempDir()
	p := filepath.Join(dir, "prog")
	fifo := filepath.Join(dir, "fifo")
	const rounds = 60
	for i := range rounds {
		copyFile(t, a, p)
		e2etest.RunFixture(t, p, nil, "-gcloop", "1")
		switch i % 2 {
		case 0:
			_ = os.Remove(fifo)
			if err := unix.Mkfifo(fifo, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(fifo, p); err != nil {
				t.Fatal(err)
			}
		case 1:
			copyFile(t, b, p+".new")
			if err := os.Rename(p+".new", p); err != nil {
				t.Fatal(err)
			}
		}
		// Still serving: an answer within the API's bound.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := d.Client.Status(ctx); err != nil {
			cancel()
			t.Fatalf("round %d: daemon not answering: %v", i, err)
		}
		cancel()
		_ = os.Remove(p)
	}

	// The bystander, exact.
	bystander.Expect("final")
	e2etest.WaitFor(t, 10*time.Second, "the bystander's exact cycle count", func() bool {
		pr, ok := d.Process(t, bystander.PID)
		return ok && pr.GCCycles == bystander.Final.NumGC && pr.GCForcedCycles == bystander.Final.Forced
	})
	bystander.Proceed()

	// The Go 1.19 program at the raced path, run: its own identity.
	copyFile(t, b, p)
	f := e2etest.StartFixture(t, p, nil, "-gcloop", "5", "-hold")
	f.Expect("final")
	e2etest.WaitFor(t, 10*time.Second, "the swapped-in program traced exactly", func() bool {
		pr, ok := d.Process(t, f.PID)
		return ok && pr.GCCycles == f.Final.NumGC && strings.HasPrefix(pr.GoVersion, "go1.19")
	})
	f.Proceed()

	var fifos, others int
	log, _ := os.ReadFile(d.Log)
	for _, line := range strings.Split(string(log), "\n") {
		if !strings.Contains(line, "process not identified") || !strings.Contains(line, dir) {
			continue
		}
		switch {
		case strings.Contains(line, "not a regular file"):
			fifos++
		case strings.Contains(line, "its exec ran"):
			others++
		}
	}
	t.Logf("%d rounds; the swap came before the daemon's look %d times: a FIFO refused %d, another inode %d", rounds, fifos+others, fifos, others)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".tmp", data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".tmp", to); err != nil {
		t.Fatal(err)
	}
}
