package probes

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Kernel features the families use, probed at load time (never inferred
// from the kernel's version: distributions backport features), and what
// each family does without them:
//
//	feature                        since   used by          without it
//	BPF ring buffer                5.8     gc, madvise      family cannot run
//	BTF (/sys/kernel/btf/vmlinux)  5.4*    sched, CO-RE     sched cannot run
//	tp_btf programs                5.5     sched            sched cannot run
//	bpf_get_attach_cookie          5.15    gc, mheaplock    per-probe constants from a map (gp_cookie)
//	sched_switch prev_state arg    5.18    sched            prev->__state / ->state (CO-RE)
//	uprobe_multi links             6.6     gc, mheaplock    one link per probe site (slower attach and stop)
//
// (* with CONFIG_DEBUG_INFO_BTF, as every distribution kernel has.)

// NoCookiesEnv, set to "1", makes the families load and attach as on a
// kernel without BPF attach cookies: for tests of the fallback on a kernel
// that has them. Not a user setting.
const NoCookiesEnv = "GOPULSE_NO_ATTACH_COOKIES"

// NoUprobeMultiEnv, set to "1", makes the families load and attach as on
// a kernel without uprobe_multi links (one link per probe site): for tests
// and measurements of the fallback on a kernel that has them. Not a user
// setting.
const NoUprobeMultiEnv = "GOPULSE_NO_UPROBE_MULTI"

// Feature is one kernel feature a family needs or falls back without.
type Feature struct {
	Name  string // e.g. "bpf_get_attach_cookie"
	Since string // the mainline release that brought it, e.g. "5.15"
	Have  bool
	Err   error // the probe itself failed (Have is false)
}

// Missing names the feature as an operator reads it.
func (f Feature) Missing() string {
	return fmt.Sprintf("%s (Linux %s)", f.Name, f.Since)
}

func probeFeature(name, since string, probe func() error) Feature {
	err := probe()
	f := Feature{Name: name, Since: since, Have: err == nil}
	if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		f.Err = err
	}
	return f
}

// AttachCookies probes bpf_get_attach_cookie for uprobe (kprobe-type)
// programs, or reports it missing when NoCookiesEnv is set.
func AttachCookies() Feature {
	if os.Getenv(NoCookiesEnv) == "1" {
		return Feature{Name: "bpf_get_attach_cookie", Since: "5.15"}
	}
	return probeFeature("bpf_get_attach_cookie", "5.15", func() error {
		return features.HaveProgramHelper(ebpf.Kprobe, asm.FnGetAttachCookie)
	})
}

// UprobeMulti probes BPF_TRACE_UPROBE_MULTI links (one link attaching a
// program at many addresses of one file, each with its cookie), or
// reports them missing when NoUprobeMultiEnv is set.
func UprobeMulti() Feature {
	if os.Getenv(NoUprobeMultiEnv) == "1" {
		return Feature{Name: "uprobe_multi links", Since: "6.6"}
	}
	f := probeFeature("uprobe_multi links", "6.6", features.HaveBPFLinkUprobeMulti)
	// A probe that fails otherwise than "not supported" (EOPNOTSUPP from a
	// kernel built without CONFIG_UPROBES' multi links, say) means the
	// same here: per-site links work wherever uprobes do, so the families
	// run with them rather than not at all.
	f.Err = nil
	return f
}

// RingBuffer probes BPF_MAP_TYPE_RINGBUF.
func RingBuffer() Feature {
	return probeFeature("BPF ring buffer", "5.8", func() error {
		return features.HaveMapType(ebpf.RingBuf)
	})
}

// TracingPrograms probes BTF tracepoint programs (tp_btf), which need the
// kernel's BTF: it loads a program that does nothing for sched_switch.
// (features.HaveProgramType(ebpf.Tracing) probes an fentry program, which
// some kernels refuse where tp_btf works.)
func TracingPrograms() Feature {
	return probeFeature("BTF tracepoints (tp_btf) with kernel BTF", "5.5", func() error {
		if _, err := btf.LoadKernelSpec(); err != nil {
			return fmt.Errorf("%w: kernel BTF: %v", ebpf.ErrNotSupported, err)
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sched_switch",
			License:      "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.E2BIG) {
				return fmt.Errorf("%w: %v", ebpf.ErrNotSupported, err)
			}
			return err
		}
		return prog.Close()
	})
}

// SchedSwitchPrevState reports whether the sched_switch BTF tracepoint
// passes prev_state (a fourth argument), from the tracepoint's prototype
// in the kernel's BTF (btf_trace_sched_switch: void *, then the
// arguments).
func SchedSwitchPrevState() Feature {
	return probeFeature("sched_switch prev_state argument", "5.18", func() error {
		spec, err := btf.LoadKernelSpec()
		if err != nil {
			return fmt.Errorf("kernel BTF: %w", err)
		}
		var td *btf.Typedef
		if err := spec.TypeByName("btf_trace_sched_switch", &td); err != nil {
			return fmt.Errorf("btf_trace_sched_switch: %w", err)
		}
		ptr, ok := td.Type.(*btf.Pointer)
		if !ok {
			return fmt.Errorf("btf_trace_sched_switch is a %T", td.Type)
		}
		proto, ok := ptr.Target.(*btf.FuncProto)
		if !ok {
			return fmt.Errorf("btf_trace_sched_switch points to a %T", ptr.Target)
		}
		if len(proto.Params) < 5 {
			return fmt.Errorf("%w: sched_switch has %d arguments", ebpf.ErrNotSupported, len(proto.Params)-1)
		}
		return nil
	})
}

// SetCookieMode prepares a collection whose uprobe programs read their
// constants with gp_cookie (bpf/cookie.h): without attach cookies, the
// programs look them up in their gp_cookies map, which the Attacher fills
// (Spec.CookieMap). It returns whether cookies are used.
func SetCookieMode(spec *ebpf.CollectionSpec) (bool, error) {
	f := AttachCookies()
	if f.Err != nil {
		return false, fmt.Errorf("probe %s: %w", f.Name, f.Err)
	}
	v, ok := spec.Variables["gp_no_cookies"]
	if !ok {
		return false, errors.New("collection has no gp_no_cookies constant (bpf/cookie.h)")
	}
	var off uint8
	if !f.Have {
		off = 1
	}
	if err := v.Set(off); err != nil {
		return false, fmt.Errorf("set gp_no_cookies: %w", err)
	}
	return f.Have, nil
}

// SetUprobeMode prepares a collection's uprobe programs (SEC "uprobe") for
// uprobe_multi links where the kernel has them: the attach type is fixed
// at load, so the same C source serves both kinds of link. It returns
// whether they are (Spec.Multi). env.SingleUprobes keeps one link per
// site, for a caller that attaches the programs itself.
func SetUprobeMode(spec *ebpf.CollectionSpec, env Env) (bool, error) {
	if env.SingleUprobes {
		return false, nil
	}
	f := UprobeMulti()
	if f.Err != nil {
		return false, fmt.Errorf("probe %s: %w", f.Name, f.Err)
	}
	if !f.Have {
		return false, nil
	}
	for _, p := range spec.Programs {
		if p.Type == ebpf.Kprobe && (p.SectionName == "uprobe" || strings.HasPrefix(p.SectionName, "uprobe/")) {
			p.AttachType = ebpf.AttachTraceUprobeMulti
		}
	}
	return true, nil
}
