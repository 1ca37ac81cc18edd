package goinspect_test

import (
	"strings"
	"testing"

	"github.com/gopulse/gopulse/internal/fuzzbound"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// Each forged binary of issue 12 is refused with a reason naming what it
// claims (or, for the forged functions, refused when the function is
// decoded or its sites claimed), within the parse budget.
func TestForgedBinaries(t *testing.T) {
	for _, c := range fuzzbound.Crafted(t) {
		t.Run(c.Name, func(t *testing.T) {
			var err error
			fuzzbound.Within(t, c.Name, func() {
				var b *goinspect.Binary
				if b, err = goinspect.Open(c.Path); err != nil {
					return
				}
				defer b.Close()
				name := map[string]string{
					"rets-gcmarktermination": "runtime.gcMarkTermination",
					"bigrets-gcstart":        "runtime.gcStart",
					"semas-lock2":            "runtime.lock2",
				}[c.Name]
				switch {
				case c.Name == "sparse-symtab":
					_, err = b.Symbols("runtime.memstats")
					return
				case name == "":
					// Only DWARF is left to read.
					_, err = b.DWARFFieldOffset("runtime.gcControllerState", "heapLive")
					return
				}
				fn, ferr := b.Func(name)
				if ferr != nil {
					t.Fatal(ferr)
				}
				_, err = b.Returns(fn)
				bytes, cpu := b.ParseCost()
				t.Logf("parse cost %d KiB, %v", bytes>>10, cpu)
			})
			t.Logf("%v", err)
			want := map[string]string{
				"sparse-pclntab":         "", // only what is used is read: traced
				"sparse-pclntab-nfunc":   ".gopclntab function table: 512.0 MiB more would pass the 64.0 MiB parse budget",
				"sparse-symtab":          ".symtab of 536870912 bytes", // read only on demand: Open succeeds
				"compressed-pclntab":     "section .gopclntab is compressed",
				"compressed-debug-info":  "compressed section .debug_info (inflated) claims 4096.0 MiB",
				"rets-gcmarktermination": "refused: 4096 RET sites in runtime.gcMarkTermination, cap 256 per function",
				"bigrets-gcstart":        "runtime.gcStart: implausible range",
				"semas-lock2":            "", // its sites are claimed by mheaplock.SleepSites
			}[c.Name]
			switch {
			case want == "" && err != nil:
				t.Errorf("err %v, want none", err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Errorf("err %v, want %q", err, want)
			}
		})
	}
}
