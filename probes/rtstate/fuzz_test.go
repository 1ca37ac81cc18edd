package rtstate_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopulse/gopulse/internal/forgeelf"
	"github.com/gopulse/gopulse/internal/fuzzbound"
	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/gc"
	"github.com/gopulse/gopulse/probes/goinspect"
	"github.com/gopulse/gopulse/probes/mheaplock"
	"github.com/gopulse/gopulse/probes/rtstate"
	"github.com/gopulse/gopulse/probes/sched"
)

// fuzzMem is a process's memory made of data, repeated at every address:
// whatever a layout points at reads as attacker bytes.
type fuzzMem []byte

func (m fuzzMem) ReadAt(p []byte, off int64) (int, error) {
	if len(m) == 0 {
		clear(p)
		return len(p), nil
	}
	for i := range p {
		p[i] = m[uint64(off+int64(i))%uint64(len(m))]
	}
	return len(p), nil
}

// FuzzDecodeBooks decodes arbitrary bytes as the runtime's books with
// every facts row's layout: the cycle windows, gcController, and a whole
// Reader over a memory of those bytes (allp walk, pause rings). No panic,
// and within the parse budget (fuzzbound.Within).
func FuzzDecodeBooks(f *testing.F) {
	f.Add([]byte{}, uint8(0))
	f.Add(make([]byte, 4096), uint8(3))
	ones := make([]byte, 4096)
	for i := range ones {
		ones[i] = 0xff
	}
	f.Add(ones, uint8(5))
	counted := make([]byte, 8192)
	for i := 0; i+8 <= len(counted); i += 8 {
		binary.LittleEndian.PutUint64(counted[i:], uint64(i))
	}
	f.Add(counted, uint8(7))
	rows := probes.FactsTable()
	f.Fuzz(func(t *testing.T, data []byte, row uint8) {
		facts := rows[int(row)%len(rows)]
		bk := facts.Books
		fuzzbound.Within(t, "books", func() {
			var win [rtstate.NumWindows][]byte
			off := 0
			for i, w := range rtstate.CycleWindows(bk) {
				win[i] = make([]byte, w.Len)
				if off < len(data) {
					off += copy(win[i], data[off:])
				}
			}
			_, _ = rtstate.DecodeCycle(bk, win)
			_, _ = rtstate.DecodeSettings(bk, append(data, make([]byte, bk.CtlSize)...))
			a := rtstate.Addrs{Work: 0x1000, Memstats: 0x20000, GCController: 0x40000, Sched: 0x60000, Allp: 0x80000, Allglen: 0x90000}
			if r, err := rtstate.NewReader(fuzzMem(data), a, facts); err == nil {
				_, _ = r.Read()
				s, _ := r.Read()
				_, _ = r.PauseRing(s.NumGC)
			}
		})
	})
}

// The runtime functions the locators and site finders decode, and the
// forge fixture's function (4096 bytes) that takes each one's name in a
// canvas binary: the fuzz input is written as its body.
var canvases = []string{
	"runtime.gcMarkTermination", // gc.FlushCall, rtstate.LocateInCode
	"runtime.gcStart",           // rtstate.LocateInCode (allp)
	"runtime.allgadd",           // rtstate.LocateInCode (allglen)
	"runtime.casgstatus",        // sched.TimeToRunAddr
	"runtime.lock2",             // mheaplock.SleepSites, SpinbitLock, MheapLockAddr
	"runtime.gcSweep",           // mheaplock.MheapLockAddr
}

// FuzzSiteFinders runs every locator and probe-site finder on a real
// binary (the forge fixture) whose runtime function sel names has the
// fuzz input as its code: no panic, within the parse budget, and never
// more sites than goinspect's caps.
func FuzzSiteFinders(f *testing.F) {
	forge := fuzzbound.Forge(f)
	dir := f.TempDir()
	type canvas struct {
		path string
		off  int64 // file offset of the body
		size int
	}
	var cs []canvas
	for i, name := range canvases {
		p := filepath.Join(dir, filepath.Base(name))
		if err := forgeelf.Copy(forge, p); err != nil {
			f.Fatal(err)
		}
		if err := forgeelf.SwapNames(p, "main.rets", name); err != nil {
			f.Fatal(err)
		}
		b, err := goinspect.Open(p)
		if err != nil {
			f.Fatal(err)
		}
		fn, _ := b.Func(name)
		off, err := b.FileOffset(fn.Entry)
		if err != nil {
			f.Fatal(err)
		}
		// The runtime's own body as a seed: the real function now bears
		// the forge's name.
		if orig, err := b.Func("main.rets"); err == nil {
			data, _ := os.ReadFile(forge)
			if o, err := b.FileOffset(orig.Entry); err == nil {
				f.Add(data[o:o+min(4096, orig.End-orig.Entry)], uint8(i))
			}
		}
		cs = append(cs, canvas{p, int64(off), int(fn.End - fn.Entry)})
		b.Close()
	}
	f.Add([]byte{0xc3}, uint8(0))
	f.Fuzz(func(t *testing.T, body []byte, sel uint8) {
		c := cs[int(sel)%len(cs)]
		code := make([]byte, c.size)
		for i := range code {
			code[i] = 0xcc
		}
		copy(code, body)
		w, err := os.OpenFile(c.path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = w.WriteAt(code, c.off)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		fuzzbound.Within(t, "site finders", func() {
			b, err := goinspect.Open(c.path)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			facts, err := probes.FactsFor(b)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = rtstate.LocateInCode(b, facts)
			_, _ = sched.TimeToRunAddr(b, facts.TimeHist)
			if fn, err := b.Func("runtime.gcMarkTermination"); err == nil {
				_, _ = gc.FlushCall(b, fn)
			}
			_, _ = mheaplock.MheapLockAddr(b)
			_, _ = mheaplock.SpinbitLock(b)
			if fn, err := b.Func("runtime.lock2"); err == nil {
				if sites, err := mheaplock.SleepSites(b, fn, facts); err == nil && len(sites) > goinspect.MaxSitesPerFunc {
					t.Errorf("%d sleep sites accepted, cap %d", len(sites), goinspect.MaxSitesPerFunc)
				}
			}
			if fn, err := b.Func(canvases[int(sel)%len(canvases)]); err == nil {
				if rets, err := b.Returns(fn); err == nil && len(rets) > goinspect.MaxSitesPerFunc {
					t.Errorf("%d RET sites accepted, cap %d", len(rets), goinspect.MaxSitesPerFunc)
				}
			}
		})
	})
}
