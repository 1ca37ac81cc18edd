package probes_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/gc"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/mheaplock"
)

// linkModes are the two ways uprobes are attached: uprobe_multi links
// (Linux 6.6) and one link per site.
var linkModes = []struct {
	name  string
	env   probes.Env
	multi bool
}{
	{name: "uprobe_multi", multi: true},
	{name: "per-site", env: probes.Env{SingleUprobes: true}},
}

// copies makes n copies of a fixture: n binaries (inodes) never seen.
func copies(t *testing.T, src string, n int) []string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var out []string
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("gcload-%d", i))
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// kernelLinks counts the links the kernel has for prog (every process's).
func kernelLinks(t *testing.T, prog *ebpf.Program) int {
	t.Helper()
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("program without ID")
	}
	var it link.Iterator
	defer it.Close()
	n := 0
	for it.Next() {
		if li, err := it.Link.Info(); err == nil && li.Program == id {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// Attaches from several goroutines at once, of the same binaries in
// different orders, while families come and go and binaries are detached:
// each binary ends attached once (one link per program in the kernel, no
// second attachment from a racing Attach), with every family's sites, and
// nothing leaks (the package's leak check counts descriptors after the
// tests). Run with -race.
func TestAttachConcurrent(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	src := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	for _, mode := range linkModes {
		t.Run(mode.name, func(t *testing.T) {
			if mode.multi && !probes.UprobeMulti().Have {
				testenv.Unavailable(t, "kernel without uprobe_multi links (Linux 6.6)")
			}
			gcf, err := gc.Load(mode.env)
			if err != nil {
				t.Fatal(err)
			}
			defer gcf.Close()
			mhl, err := mheaplock.Load(mode.env)
			if err != nil {
				t.Fatal(err)
			}
			defer mhl.Close()
			att, err := probes.NewAttacher(slog.New(slog.NewTextHandler(io.Discard, nil)), gcf.Spec())
			if err != nil {
				t.Fatal(err)
			}
			defer att.Close()

			const nbin, workers = 10, 4
			paths := copies(t, src, nbin)
			ids := make([]goinspect.FileID, nbin)
			for i, p := range paths {
				ids[i] = open(t, p).ID
			}
			var wg sync.WaitGroup
			errs := make(chan error, nbin*workers+16)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for _, i := range rand.Perm(nbin) {
						b, err := goinspect.Open(paths[i])
						if err != nil {
							errs <- err
							return
						}
						bin, err := att.Attach(b, paths[i])
						b.Close()
						switch {
						case err != nil && strings.Contains(err.Error(), "detached while"):
							// A Detach of the churn below overtook it.
						case err != nil:
							errs <- fmt.Errorf("worker %d, %s: %w", w, paths[i], err)
						case bin.ID != ids[i] || bin.Probes < 1 || len(bin.Errors) > 0:
							errs <- fmt.Errorf("worker %d, %s: %+v", w, paths[i], bin)
						}
					}
				}()
			}
			// The churn: a family added and removed, binaries detached,
			// under the attaches.
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range 3 {
					if err := att.AddSpec(mhl.Spec()); err != nil {
						errs <- err
					}
					att.Detach(ids[k])
					att.RemoveSpec(mheaplock.Name)
					_ = att.Binaries()
				}
			}()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			// Quiet now: every binary attached, with both families.
			if err := att.AddSpec(mhl.Spec()); err != nil {
				t.Fatal(err)
			}
			for i, p := range paths {
				b := open(t, p)
				if _, err := att.Attach(b, p); err != nil {
					t.Fatalf("%s: %v", paths[i], err)
				}
			}
			bins := att.Binaries()
			if len(bins) != nbin {
				t.Fatalf("%d binaries attached, want %d", len(bins), nbin)
			}
			mhlSites := bins[0].Probes - 1 // gc has one site per binary
			if mhlSites < 1 {
				t.Fatalf("%d mheaplock sites (Go 1.26's lock2 sleeps through semasleep)", mhlSites)
			}
			for _, b := range bins {
				if b.Probes != 1+mhlSites || len(b.Errors) > 0 {
					t.Errorf("%s: %d probes (errors %v), want %d", b.Path, b.Probes, b.Errors, 1+mhlSites)
				}
			}
			// The kernel's count: one link per binary and program with
			// uprobe_multi, one per site without; none left over from a
			// racing attach or a rollback.
			wantGC, wantMhl := nbin, nbin*mhlSites
			if mode.multi {
				wantMhl = nbin
			}
			gcProg, mhlProg := gcf.Spec().Uprobes[0].Entry, mhl.Spec().Uprobes[0].Entry
			if got := kernelLinks(t, gcProg); got != wantGC {
				t.Errorf("%d links of the gc program, want %d", got, wantGC)
			}
			if got := kernelLinks(t, mhlProg); got != wantMhl {
				t.Errorf("%d links of the mheaplock program, want %d", got, wantMhl)
			}
			t.Logf("%d binaries, %d sites each: %d + %d links", nbin, 1+mhlSites, wantGC, wantMhl)

			att.Close()
			if got := kernelLinks(t, gcProg) + kernelLinks(t, mhlProg); got != 0 {
				t.Errorf("%d links left after Close", got)
			}
			b := open(t, paths[0])
			if _, err := att.Attach(b, paths[0]); !errors.Is(err, probes.ErrClosed) {
				t.Errorf("Attach after Close: %v, want ErrClosed", err)
			}
		})
	}
}

// A family whose sites in a binary would exceed MaxSitesPerBinary is
// refused there with the reason, before anything is attached; the other
// families still attach.
func TestAttachSiteCap(t *testing.T) {
	testenv.RequireRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	src := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	for _, mode := range linkModes {
		t.Run(mode.name, func(t *testing.T) {
			if mode.multi && !probes.UprobeMulti().Have {
				testenv.Unavailable(t, "kernel without uprobe_multi links (Linux 6.6)")
			}
			gcf, err := gc.Load(mode.env)
			if err != nil {
				t.Fatal(err)
			}
			defer gcf.Close()
			gcSpec := gcf.Spec()
			prog := gcSpec.Uprobes[0].Entry
			// A forged family: as many sites as a function of RET bytes
			// would give.
			forged := probes.Spec{Family: "forged", Multi: gcSpec.Multi, Uprobes: []probes.Uprobe{{
				Symbol: "runtime.gcMarkTermination", Entry: prog,
				Sites: func(b *goinspect.Binary, fn goinspect.Func, _ probes.Facts) ([]probes.Site, error) {
					sites := make([]probes.Site, probes.MaxSitesPerBinary+1)
					for i := range sites {
						sites[i].Addr = fn.Entry
					}
					return sites, nil
				},
			}}}
			att, err := probes.NewAttacher(slog.New(slog.NewTextHandler(io.Discard, nil)), gcSpec, forged)
			if err != nil {
				t.Fatal(err)
			}
			defer att.Close()
			p := copies(t, src, 1)[0]
			bin, err := att.Attach(open(t, p), p)
			if err != nil {
				t.Fatal(err)
			}
			if bin.Probes != 1 || !strings.Contains(bin.Errors["forged"], "cap of") {
				t.Errorf("probes %d, errors %v; want gc's 1 and the forged family refused over the cap", bin.Probes, bin.Errors)
			}
			if got := kernelLinks(t, prog); got != 1 {
				t.Errorf("%d links of the program, want gc's 1", got)
			}
			t.Logf("refused: %s", bin.Errors["forged"])
		})
	}
}

// Every site of one program gets its own cookie, under one uprobe_multi
// link as with one link per site: a program that records the cookies it
// is run with, at the entries of four runtime functions a runtime.GC call
// goes through, each row with its own cookie (the families have one site
// per program and binary today; this is the many-site case).
func TestSiteCookies(t *testing.T) {
	testenv.RequireRoot(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("reads pt_regs->ip at amd64's offset")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	bin := fixturebuild.Build(t, "gcload", fixturebuild.Shapes()[0])
	for _, mode := range linkModes {
		t.Run(mode.name, func(t *testing.T) {
			if mode.multi && !probes.UprobeMulti().Have {
				testenv.Unavailable(t, "kernel without uprobe_multi links (Linux 6.6)")
			}
			seen, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 8, MaxEntries: 64})
			if err != nil {
				t.Fatal(err)
			}
			defer seen.Close()
			ps := &ebpf.ProgramSpec{
				Type: ebpf.Kprobe, License: "GPL",
				// seen[cookie] = the probed ip (pt_regs->ip, amd64).
				Instructions: asm.Instructions{
					asm.Mov.Reg(asm.R6, asm.R1),
					asm.FnGetAttachCookie.Call(),
					asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
					asm.LoadMem(asm.R1, asm.R6, 128, asm.DWord),
					asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
					asm.LoadMapPtr(asm.R1, seen.FD()),
					asm.Mov.Reg(asm.R2, asm.RFP),
					asm.Add.Imm(asm.R2, -8),
					asm.Mov.Reg(asm.R3, asm.RFP),
					asm.Add.Imm(asm.R3, -16),
					asm.Mov.Imm(asm.R4, 0),
					asm.FnMapUpdateElem.Call(),
					asm.Mov.Imm(asm.R0, 0),
					asm.Return(),
				},
			}
			if mode.multi {
				ps.AttachType = ebpf.AttachTraceUprobeMulti
			}
			prog, err := ebpf.NewProgram(ps)
			if err != nil {
				t.Fatal(err)
			}
			defer prog.Close()
			want := map[uint64]string{}
			var rows []probes.Uprobe
			for i, sym := range []string{"runtime.GC", "runtime.gcStart", "runtime.gcMarkDone", "runtime.gcMarkTermination"} {
				cookie := uint64(1000 + i)
				want[cookie] = sym
				rows = append(rows, probes.Uprobe{Symbol: sym, Entry: prog, Cookie: func(probes.Facts) uint64 { return cookie }})
			}
			att, err := probes.NewAttacher(slog.New(slog.NewTextHandler(io.Discard, nil)),
				probes.Spec{Family: "cookies", Multi: mode.multi, Uprobes: rows})
			if err != nil {
				t.Fatal(err)
			}
			defer att.Close()
			p := copies(t, bin, 1)[0]
			b, err := att.Attach(open(t, p), p)
			if err != nil {
				t.Fatal(err)
			}
			if b.Probes != len(rows) {
				t.Fatalf("%d probes, want %d", b.Probes, len(rows))
			}
			wantLinks := len(rows)
			if mode.multi {
				wantLinks = 1
			}
			if got := kernelLinks(t, prog); got != wantLinks {
				t.Errorf("%d links, want %d", got, wantLinks)
			}
			if out, err := exec.Command(p, "-gcloop", "2").CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", p, err, out)
			}
			got := map[uint64]uint64{}
			var k, v uint64
			for it := seen.Iterate(); it.Next(&k, &v); {
				got[k] = v
			}
			ib := open(t, p) // static, not PIE: the ip is the link-time address
			for c, sym := range want {
				fn, err := ib.Func(sym)
				if err != nil {
					t.Fatal(err)
				}
				ip, ok := got[c]
				switch {
				case !ok:
					t.Errorf("no hit with cookie %d (%s)", c, sym)
				case ip != fn.Entry:
					t.Errorf("cookie %d (%s at %#x) came with ip %#x", c, sym, fn.Entry, ip)
				}
			}
			for c := range got {
				if _, ok := want[c]; !ok {
					t.Errorf("a hit with cookie %d, none of the sites'", c)
				}
			}
		})
	}
}
