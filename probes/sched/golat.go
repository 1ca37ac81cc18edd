package sched

// Goroutine scheduling latency (OpenTelemetry's go.schedule.duration)
// without a trap. The runtime keeps its own histogram of the time
// goroutines spend runnable before running: sched.timeToRun, fed in
// casgstatus for one transition in gTrackingPeriod (8), the data behind
// runtime/metrics' /sched/latencies:seconds. A uprobe where it is recorded
// would trap ~300 000 times a second on a goroutine-heavy program; reading
// the histogram from /proc/PID/mem once a second costs the traced program
// nothing but a brief shared hold of its mmap lock.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/arch/arm64/arm64asm"
	"golang.org/x/arch/x86/x86asm"

	"github.com/gopulse/gopulse/probes"
	"github.com/gopulse/gopulse/probes/event"
	"github.com/gopulse/gopulse/probes/goinspect"
)

// GoLatency is a process's goroutine scheduling latency histogram in the
// form runtime/metrics gives /sched/latencies:seconds (event.GoLatency).
type GoLatency = event.GoLatency

// SamplePeriod: the runtime times one goroutine transition in this many
// (runtime.gTrackingPeriod, 8 in every release 1.19-1.27); counts are of
// sampled transitions.
const SamplePeriod = 8

// TimeToRunAddr finds the link-time address of runtime.sched.timeToRun
// without .symtab or DWARF, from runtime.casgstatus, which records into
// it: either `LEAQ runtime.sched+off(SB), AX` right before `CALL
// runtime.(*timeHistogram).record` (Go 1.26, 1.27), or, where record is
// inlined (Go 1.19), the two RIP-relative LEAs of the inlined code that are
// exactly the counts array and the underflow counter after it apart. On
// arm64 the same with ADRP+ADD for LEA and R0 for AX (timeToRunARM64).
func TimeToRunAddr(b *goinspect.Binary, h probes.TimeHist) (uint64, error) {
	if !h.Valid() {
		return 0, fmt.Errorf("%s: no timeHistogram layout known for %s", b.Path, b.GoVersion)
	}
	fn, err := b.Func("runtime.casgstatus")
	if err != nil {
		return 0, err
	}
	switch b.Arch {
	case goinspect.AMD64:
	case goinspect.ARM64:
		return timeToRunARM64(b, fn, h)
	default:
		return 0, fmt.Errorf("%s: sched.TimeToRunAddr: %s code: %w", b.Path, b.Arch, goinspect.ErrArchUnsupported)
	}
	code, err := b.Code(fn)
	if err != nil {
		return 0, err
	}
	var addr uint64
	recordCode := code
	if rec, err := b.Func("runtime.(*timeHistogram).record"); err == nil {
		if addr, err = recordReceiver(code, rec.Entry); err != nil {
			return 0, fmt.Errorf("%s: %w", b.Path, err)
		}
		if addr != 0 {
			if recordCode, err = b.Code(rec); err != nil {
				return 0, err
			}
		}
	}
	if addr == 0 {
		if addr, err = inlinedRecord(code, h); err != nil {
			return 0, fmt.Errorf("%s: %w", b.Path, err)
		}
	}
	if err := checkLayout(recordCode, h); err != nil {
		return 0, fmt.Errorf("%s (%s): %w", b.Path, b.GoVersion, err)
	}
	if !b.Writable(addr, uint64(h.Size())) {
		return 0, fmt.Errorf("%s: sched.timeToRun candidate %#x is not in a writable segment", b.Path, addr)
	}
	return addr, nil
}

// recordReceiver returns the address loaded into AX (the receiver, under
// the register ABI) by a RIP-relative LEA before each call of record; all
// calls must agree. 0 when casgstatus does not call it.
func recordReceiver(code []goinspect.Inst, record uint64) (uint64, error) {
	targets := goinspect.JumpTargets(code)
	var found uint64
	for i, in := range code {
		if in.Op != x86asm.CALL {
			continue
		}
		if t, _ := in.Target(); t != record {
			continue
		}
		addr, err := leaIntoAX(code, i, targets)
		if err != nil {
			return 0, fmt.Errorf("call of timeHistogram.record at %#x: %w", in.Addr, err)
		}
		if found != 0 && addr != found {
			return 0, fmt.Errorf("casgstatus records into two histograms (%#x, %#x)", found, addr)
		}
		found = addr
	}
	return found, nil
}

// leaIntoAX walks back from the call at code[call] to the instruction that
// set AX, which must be a RIP-relative LEA, with straight-line code in
// between.
func leaIntoAX(code []goinspect.Inst, call int, targets map[uint64]bool) (uint64, error) {
	const window = 8
	for j := call - 1; j >= 0 && j >= call-window; j-- {
		in := code[j]
		if targets[code[j+1].Addr] {
			return 0, fmt.Errorf("a jump lands at %#x, between the receiver's load and the call", code[j+1].Addr)
		}
		switch in.Op {
		case x86asm.CALL, x86asm.RET, x86asm.JMP:
			return 0, errors.New("no receiver load before the call")
		}
		dst, ok := in.Args[0].(x86asm.Reg)
		if !ok || (dst != x86asm.RAX && dst != x86asm.EAX && dst != x86asm.AX && dst != x86asm.AL) {
			continue
		}
		if in.Op != x86asm.LEA {
			return 0, fmt.Errorf("AX set by %v at %#x, not a LEA", in.Op, in.Addr)
		}
		if t, ok := in.Target(); ok {
			return t, nil
		}
		return 0, fmt.Errorf("LEA at %#x is not RIP-relative", in.Addr)
	}
	return 0, errors.New("no receiver load within reach of the call")
}

// timeToRunARM64 is TimeToRunAddr for arm64 code: `MOVD
// $runtime.sched+off(SB), R0` (ADRP+ADD) straight before each `BL
// runtime.(*timeHistogram).record`, or, inlined, the one pair of ADRP+ADD
// addresses a, a+8n; then the layout's bounds checks in the recording
// code.
func timeToRunARM64(b *goinspect.Binary, fn goinspect.Func, h probes.TimeHist) (uint64, error) {
	code, err := b.CodeARM64(fn)
	if err != nil {
		return 0, err
	}
	refs := goinspect.GlobalRefsARM64(code)
	targets := goinspect.JumpTargetsARM64(code)
	var addr uint64
	recordCode := code
	if rec, err := b.Func("runtime.(*timeHistogram).record"); err == nil {
		for i, in := range code {
			if t, ok := in.BranchTarget(); !ok || in.Op != arm64asm.BL || t != rec.Entry {
				continue
			}
			r, err := goinspect.SetBy(code, refs, targets, i, 0, 8)
			if err != nil || r.Kind != goinspect.RefAddr {
				return 0, fmt.Errorf("%s: call of timeHistogram.record at %#x: receiver not a global address: %v", b.Path, in.Addr, err)
			}
			if addr != 0 && r.Addr != addr {
				return 0, fmt.Errorf("%s: casgstatus records into two histograms (%#x, %#x)", b.Path, addr, r.Addr)
			}
			addr = r.Addr
		}
		if addr != 0 {
			if recordCode, err = b.CodeARM64(rec); err != nil {
				return 0, err
			}
		}
	}
	if addr == 0 {
		var leas []uint64
		for _, r := range refs {
			if r.Kind == goinspect.RefAddr {
				leas = append(leas, r.Addr)
			}
		}
		if addr, err = pairApart(leas, h); err != nil {
			return 0, fmt.Errorf("%s: %w", b.Path, err)
		}
	}
	cmps := goinspect.CmpImmsARM64(recordCode)
	if err := checkBounds(cmps, h); err != nil {
		return 0, fmt.Errorf("%s (%s): %w", b.Path, b.GoVersion, err)
	}
	if !b.Writable(addr, uint64(h.Size())) {
		return 0, fmt.Errorf("%s: sched.timeToRun candidate %#x is not in a writable segment", b.Path, addr)
	}
	return addr, nil
}

// inlinedRecord finds the one pair of RIP-relative LEA targets a, a+8·n
// (counts, underflow) for the layout's n counts.
func inlinedRecord(code []goinspect.Inst, h probes.TimeHist) (uint64, error) {
	var addrs []uint64
	for _, in := range code {
		if in.Op != x86asm.LEA {
			continue
		}
		if t, ok := in.Target(); ok {
			addrs = append(addrs, t)
		}
	}
	return pairApart(addrs, h)
}

// pairApart finds the one pair of addresses a, a+8·n (counts, underflow)
// among addrs.
func pairApart(addrs []uint64, h probes.TimeHist) (uint64, error) {
	leas := map[uint64]bool{}
	for _, a := range addrs {
		leas[a] = true
	}
	var found []uint64
	for a := range leas {
		if leas[a+uint64(8*h.Counts())] {
			found = append(found, a)
		}
	}
	switch len(found) {
	case 0:
		return 0, errors.New("runtime.casgstatus: no sched.timeToRun reference (neither a call of timeHistogram.record nor its inlined code)")
	case 1:
		return found[0], nil
	}
	return 0, fmt.Errorf("runtime.casgstatus: %d candidates for sched.timeToRun", len(found))
}

// checkLayout looks in the code that records into the histogram for the
// bounds checks the layout implies, so that a facts row taken from the
// sources of a release no test could build is checked against the binary
// itself: Go 1.20+ compares the highest set bit with MinBucketBits and the
// bucket index with the number of buckets; Go 1.19 compares the
// super-bucket's first index with the length of counts.
func checkLayout(code []goinspect.Inst, h probes.TimeHist) error {
	seen := map[int64]bool{}
	for _, in := range code {
		if in.Op != x86asm.CMP {
			continue
		}
		if imm, ok := in.Args[1].(x86asm.Imm); ok {
			seen[int64(imm)] = true
		}
	}
	return checkBounds(seen, h)
}

// checkBounds checks that the immediates seen compared with include the
// bounds layout h implies (see checkLayout).
func checkBounds(seen map[int64]bool, h probes.TimeHist) error {
	want := []int64{int64(h.Counts())}
	if h.SuperBuckets == 0 {
		want = []int64{int64(h.MinBucketBits), int64(h.MaxBucketBits - h.MinBucketBits + 1)}
	}
	for _, w := range want {
		if !seen[w] {
			return fmt.Errorf("the code recording into timeHistogram has no bounds check against %d: not the layout %+v", w, h)
		}
	}
	return nil
}

// Buckets returns the boundaries runtime/metrics gives a timeHistogram of
// layout h, in seconds: -Inf, the lower bound of each count, then the
// overflow's lower bound (Go 1.20+), then +Inf. Mirrors the runtime's
// timeHistogramMetricsBuckets of each release.
func Buckets(h probes.TimeHist) []float64 {
	b := []float64{math.Inf(-1)}
	sub := uint(h.SubBucketBits)
	if h.SuperBuckets > 0 {
		for j := 0; j < 1<<sub; j++ {
			b = append(b, float64(j)/1e9)
		}
		for i := uint(0); i < uint(h.SuperBuckets)-1; i++ {
			for j := uint64(0); j < 1<<sub; j++ {
				b = append(b, float64(uint64(1)<<(i+sub)|j<<i)/1e9)
			}
		}
		return append(b, math.Inf(1))
	}
	minb, maxb := uint(h.MinBucketBits), uint(h.MaxBucketBits)
	for j := uint64(0); j < 1<<sub; j++ {
		b = append(b, float64(j<<(minb-1-sub))/1e9)
	}
	for i := minb; i < maxb; i++ {
		for j := uint64(0); j < 1<<sub; j++ {
			b = append(b, float64(uint64(1)<<(i-1)|j<<(i-1-sub))/1e9)
		}
	}
	b = append(b, float64(uint64(1)<<(maxb-1))/1e9)
	return append(b, math.Inf(1))
}

// latReader reads one process's sched.timeToRun. It holds /proc/PID/mem
// open from the time the process is tracked: the descriptor is bound to
// that process's address space, so a recycled PID can never make it read
// another program's memory (reads just fail once the process is gone).
type latReader struct {
	mu      sync.Mutex
	mem     *os.File
	addr    uint64 // run-time address
	layout  probes.TimeHist
	buckets []float64
	last    []uint64
	err     string
}

func openLatReader(procRoot string, pid uint32, addr uint64, layout probes.TimeHist, buckets []float64) (*latReader, error) {
	mem, err := os.Open(filepath.Join(procRoot, strconv.Itoa(int(pid)), "mem"))
	if err != nil {
		return nil, fmt.Errorf("open memory of pid %d: %w", pid, err)
	}
	r := &latReader{mem: mem, addr: addr, layout: layout, buckets: buckets}
	// One read now, so a wrong address is reported at once rather than at
	// the first poll.
	if _, err := r.read(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// read returns the histogram in runtime/metrics order (underflow first,
// overflow last on Go 1.20+). A count that goes backwards means the
// address is not what it should be: the reader gives up for good.
func (r *latReader) read() ([]uint64, error) {
	buf := make([]byte, r.layout.Size())
	if _, err := r.mem.ReadAt(buf, int64(r.addr)); err != nil {
		return nil, fmt.Errorf("read sched.timeToRun at %#x: %w", r.addr, err)
	}
	n := r.layout.Counts()
	out := make([]uint64, 0, n+2)
	out = append(out, binary.LittleEndian.Uint64(buf[8*n:]))
	for i := 0; i < n; i++ {
		out = append(out, binary.LittleEndian.Uint64(buf[8*i:]))
	}
	if r.layout.Overflow() {
		out = append(out, binary.LittleEndian.Uint64(buf[8*(n+1):]))
	}
	for i := range r.last {
		if out[i] < r.last[i] {
			return nil, fmt.Errorf("sched.timeToRun at %#x: bucket %d went from %d to %d: not the runtime's histogram", r.addr, i, r.last[i], out[i])
		}
	}
	r.last = out
	return out, nil
}

// sample returns the latest histogram, or the last one read with the
// reason reading stopped.
func (r *latReader) sample() *GoLatency {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == "" && r.mem != nil {
		if _, err := r.read(); err != nil {
			r.err = err.Error()
			r.mem.Close()
			r.mem = nil
		}
	}
	if r.last == nil {
		return &GoLatency{Err: r.err}
	}
	// A process that exited keeps its last histogram, without an error:
	// the figures are final, not wrong.
	return &GoLatency{Buckets: r.buckets, Counts: append([]uint64(nil), r.last...)}
}

func (r *latReader) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mem != nil {
		r.mem.Close()
		r.mem = nil
	}
}

// latBin is what the family learned of one binary.
type latBin struct {
	addr    uint64 // link-time address of sched.timeToRun
	layout  probes.TimeHist
	buckets []float64
}

func inspectLatency(b *goinspect.Binary) (latBin, error) {
	facts, err := probes.FactsFor(b)
	if err != nil {
		return latBin{}, err
	}
	lb := latBin{layout: facts.TimeHist, buckets: Buckets(facts.TimeHist)}
	lb.addr, err = TimeToRunAddr(b, facts.TimeHist)
	return lb, err
}
