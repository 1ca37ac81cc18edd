package probes

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// SumPerCPU sums key 0 of a per-CPU array of uint64 counters.
func SumPerCPU(m *ebpf.Map) (uint64, error) {
	var vals []uint64
	if err := m.Lookup(uint32(0), &vals); err != nil {
		return 0, fmt.Errorf("read %s: %w", m.String(), err)
	}
	var sum uint64
	for _, v := range vals {
		sum += v
	}
	return sum, nil
}
