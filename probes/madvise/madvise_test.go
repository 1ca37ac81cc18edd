package madvise_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/madvise"
)

var (
	straceCall    = regexp.MustCompile(`^(\d+) +madvise\(0x[0-9a-f]+, (\d+), (MADV_[A-Z_]+|\d+)(.*)$`)
	straceResumed = regexp.MustCompile(`^(\d+) +<\.\.\. madvise resumed>(.*)$`)
	straceOK      = regexp.MustCompile(`\)\s*= 0$`)
)

// straceMadvise sums the successful madvise calls in strace -f output by
// advice, from the first MADV_NORMAL call on (the fixture's marker).
func straceMadvise(trace string) map[string]uint64 {
	sum := map[string]uint64{}
	pending := map[string][2]string{} // tid -> len, advice
	started := false
	add := func(n, adv, rest string) {
		if !straceOK.MatchString(rest) {
			return
		}
		adv = strings.ToLower(strings.TrimPrefix(adv, "MADV_"))
		if adv == "normal" {
			started = true
		}
		if started {
			v, _ := strconv.ParseUint(n, 10, 64)
			sum[adv] += v
		}
	}
	for _, line := range strings.Split(trace, "\n") {
		if m := straceCall.FindStringSubmatch(line); m != nil {
			if strings.Contains(m[4], "<unfinished ...>") {
				pending[m[1]] = [2]string{m[2], m[3]}
				continue
			}
			add(m[2], m[3], m[4])
		} else if m := straceResumed.FindStringSubmatch(line); m != nil {
			if p, ok := pending[m[1]]; ok {
				add(p[0], p[1], m[2])
				delete(pending, m[1])
			}
		}
	}
	return sum
}

// The bytes the family reports per advice equal what the kernel was asked,
// counted independently by strace; the FreeOSMemory release is attributed
// to it, and the RSS drop is visible.
func TestMadviseCountsEqualStrace(t *testing.T) {
	testenv.RequireRoot(t)
	strace, err := exec.LookPath("strace")
	if err != nil {
		testenv.Unavailable(t, "strace not installed: %v", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	fam, err := madvise.New()
	if err != nil {
		t.Fatal(err)
	}
	defer fam.Close()
	att, err := probes.NewAttacher(slog.New(slog.DiscardHandler), fam.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()

	var mu sync.Mutex
	got := map[uint32][]madvise.Event{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- fam.Read(ctx, func(ev *madvise.Event) {
			mu.Lock()
			got[ev.Pid] = append(got[ev.Pid], *ev)

			mu.Unlock()
		})
	}()
	defer func() { cancel(); <-done }()

	for _, shape := range fixturebuild.Shapes() {
		if !shape.Stripped && !shape.PIE {
			continue
		}
		t.Run(shape.Name, func(t *testing.T) {
			bin := fixturebuild.Build(t, "memfree", shape)
			out := filepath.Join(t.TempDir(), "strace")
			cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=madvise", "-o", out, bin, "-wait", "-hold", "-mb", "128")
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			sc := bufio.NewScanner(stdout)
			fields := map[string]map[string]uint64{}
			expect := func(prefix string) {
				t.Helper()
				for sc.Scan() {
					line := sc.Text()
					f := strings.Fields(line)
					fields[f[0]] = map[string]uint64{}
					for _, kv := range f[1:] {
						k, v, _ := strings.Cut(kv, "=")
						n, _ := strconv.ParseUint(v, 10, 64)
						fields[f[0]][k] = n
					}
					if strings.HasPrefix(line, prefix) {
						return
					}
				}
				t.Fatalf("fixture ended before %q", prefix)
			}
			expect("ready")
			pid := uint32(fields["ready"]["pid"])
			fam.Track(pid)
			defer fam.Forget(pid)
			_, _ = io.WriteString(stdin, "\n")
			expect("freed")
			_, _ = io.WriteString(stdin, "\n")
			if err := cmd.Wait(); err != nil {
				t.Fatal(err)
			}
			// strace's independent count, by advice.
			trace, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			want := straceMadvise(string(trace))
			time.Sleep(probes.PollEvery + 500*time.Millisecond) // let the reader poll and drain
			mu.Lock()
			evs := got[pid]
			mu.Unlock()
			// From the fixture's marker on, as strace's count.
			for i, ev := range evs {
				if ev.Advice == madvise.AdvNormal {
					evs = evs[i:]
					break
				}
			}
			have := map[string]uint64{}
			bySource := map[string]uint64{}
			for _, ev := range evs {
				if ev.Ret != 0 {
					continue
				}
				have[madvise.AdviceName(ev.Advice)] += ev.Len
				if madvise.Releases(ev.Advice) {
					bySource[ev.Source] += ev.Len
				}
			}
			if len(want) == 0 || want["dontneed"]+want["free"] == 0 {
				t.Fatalf("strace saw no releasing madvise: %v", want)
			}
			for adv, n := range want {
				if have[adv] != n {
					t.Errorf("MADV_%s: gopulse %d bytes, strace %d", strings.ToUpper(adv), have[adv], n)
				}
			}
			for adv, n := range have {
				if _, ok := want[adv]; !ok {
					t.Errorf("MADV_%s: gopulse %d bytes, strace none", strings.ToUpper(adv), n)
				}
			}
			released := fields["freed"]["released"] - fields["before"]["released"]
			rssDrop := int64(fields["before"]["rss"]) - int64(fields["freed"]["rss"])
			t.Logf("gopulse %v; strace %v; by source %v; runtime released +%d; RSS %d -> %d",
				have, want, bySource, released, fields["before"]["rss"], fields["freed"]["rss"])
			if rssDrop < 100<<20 {
				t.Errorf("RSS dropped by %d bytes only, want >= 100 MiB of the 128 MiB freed", rssDrop)
			}
			if bySource[madvise.SourceForced] < 100<<20 {
				t.Errorf("FreeOSMemory released %d bytes per the stacks, want >= 100 MiB", bySource[madvise.SourceForced])
			}
		})
	}
}
