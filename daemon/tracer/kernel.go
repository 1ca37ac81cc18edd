package tracer

import (
	"fmt"
	"strings"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/catalog"
)

// need is a kernel feature a family uses, and what the family does on a
// kernel without it ("" : it cannot run there).
type need struct {
	probe    func() probes.Feature
	fallback string
}

var (
	needRingBuffer = need{probe: probes.RingBuffer}
	needCookies    = need{probe: probes.AttachCookies,
		fallback: "per-probe constants looked up in a map keyed by the binary and the probe's offset"}
	needUprobeMulti = need{probe: probes.UprobeMulti,
		fallback: "one uprobe link per probe site (attach and stop take longer: each link's detach waits for the kernel, one after the other)"}
)

// KernelFit is how one family fits the running kernel, from feature
// probes (gopulsed --check-kernel, and before a family is loaded).
type KernelFit struct {
	Family  string
	Default bool // in --probes default
	// Missing lists the features the family cannot run without, as
	// "name (Linux x.y)": empty when it runs.
	Missing []string
	// Fallbacks lists the features it runs without, and how.
	Fallbacks []string
}

// Runs reports whether the family can run on this kernel.
func (k KernelFit) Runs() bool { return len(k.Missing) == 0 }

func (k KernelFit) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s", k.Family)
	if k.Runs() {
		b.WriteString("runs")
	} else {
		b.WriteString("CANNOT RUN: kernel lacks " + strings.Join(k.Missing, ", "))
	}
	if k.Default {
		b.WriteString(" [default]")
	}
	for _, f := range k.Fallbacks {
		b.WriteString("\n          without " + f)
	}
	return b.String()
}

func fitOf(fam catalog.Family) KernelFit {
	k := KernelFit{Family: fam.Name, Default: fam.Default}
	def := registry[fam.Name]
	for _, n := range def.needs {
		f := n.probe()
		switch {
		case f.Have:
		case f.Err != nil:
			k.Missing = append(k.Missing, fmt.Sprintf("%s (probe failed: %v)", f.Missing(), f.Err))
		case n.fallback == "":
			k.Missing = append(k.Missing, f.Missing())
		default:
			k.Fallbacks = append(k.Fallbacks, f.Missing()+": "+n.fallback)
		}
	}
	return k
}

// CheckKernel probes the running kernel for every family's features.
// It needs the privileges the daemon has (it loads test programs).
func CheckKernel() []KernelFit {
	var out []KernelFit
	for _, fam := range catalog.Families() {
		out = append(out, fitOf(fam))
	}
	return out
}
