package goinspect_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/probes/goinspect"
)

func FuzzOpen(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x7fELF"))
	f.Add([]byte("#!/bin/sh\n"))
	if good, err := os.ReadFile(fixturebuild.Build(f, "gcload", fixturebuild.Shapes()[0])); err == nil {
		f.Add(good[:64])
		f.Add(good[:4096])
	}
	if tiny, err := os.ReadFile("/bin/true"); err == nil && len(tiny) < 64<<10 {
		f.Add(tiny)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "input")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := goinspect.Open(p)
		if err != nil {
			return
		}
		defer b.Close()
		for _, name := range probedFuncs {
			if fn, err := b.Func(name); err == nil {
				_, _ = b.Returns(fn)
				_, _ = b.FileOffset(fn.Entry)
			}
		}
		_, _ = b.DWARFFieldOffset("runtime.gcControllerState", "heapLive")
	})
}
