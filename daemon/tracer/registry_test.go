package tracer

import (
	"slices"
	"testing"

	"github.com/gopulse/gopulse/probes/catalog"
)

// Every family the configuration accepts has code, and no code runs a
// family the configuration does not know.
func TestRegistryMatchesCatalog(t *testing.T) {
	var names []string
	for _, f := range catalog.Families() {
		names = append(names, f.Name)
		if _, ok := registry[f.Name]; !ok {
			t.Errorf("family %q of probes/catalog has no registry row", f.Name)
		}
	}
	for name := range registry {
		if !slices.Contains(names, name) {
			t.Errorf("registry row %q is not in probes/catalog", name)
		}
	}
}
