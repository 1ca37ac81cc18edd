package config

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The configuration is a leaf of the package graph: it, and
// packaging/genconfig, which prints it at package build time, link neither
// the BPF side (cilium/ebpf, the objects, the tracer) nor the OpenTelemetry
// SDK. Family names come from probes/catalog, export settings from
// exporters/exportconfig. (Before: 478 packages for genconfig, now ~200,
// most of them the standard library.)
func TestConfigIsALeaf(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, pkg := range []string{"github.com/gopulse/gopulse/daemon/config", "github.com/gopulse/gopulse/packaging/genconfig"} {
		out, err := exec.Command(goBin, "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, bad := range []string{"github.com/cilium/ebpf", "go.opentelemetry.io/otel/sdk", "github.com/gopulse/gopulse/daemon/tracer",
				"github.com/gopulse/gopulse/probes/gc", "github.com/gopulse/gopulse/probes/madvise"} {
				if dep == bad || strings.HasPrefix(dep, bad+"/") {
					t.Errorf("%s links %s", pkg, dep)
				}
			}
			if dep == "github.com/gopulse/gopulse/exporters" {
				t.Errorf("%s links the exporters (use exporters/exportconfig)", pkg)
			}
		}
	}
}
