package exporters

import (
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/semconv/v1.43.0/goconv"
	"go.opentelemetry.io/otel/semconv/v1.43.0/processconv"

	"github.com/gopulse/gopulse/daemon/api"
)

// Metrics of the madvise, sched and mheaplock families.
var (
	mAdviseCalls = metricDef{name: "go.memory.advise.calls", unit: "{call}", kind: kindCounter, attrs: "go.memory.advice (dontneed, free, hugepage, nohugepage, collapse, ...)",
		desc: "Successful madvise calls of the process, by advice (syscall tracepoint).", family: "madvise", integer: true}
	mAdviseSize = metricDef{name: "go.memory.advise.size", unit: "By", kind: kindCounter, attrs: "go.memory.advice",
		desc: "Bytes covered by the successful madvise calls, by advice.", family: "madvise", integer: true}
	mReleased = metricDef{name: "go.memory.released", unit: "By", kind: kindCounter, attrs: "go.memory.release.source (background_scavenger, allocation, free_os_memory, other, unknown)",
		desc: "Bytes given back to the OS (DONTNEED, FREE, REMOVE, PAGEOUT), by who in the runtime asked.", family: "madvise", integer: true}
	mRSS = metricDef{name: processconv.MemoryUsage{}.Name(), unit: processconv.MemoryUsage{}.Unit(), kind: kindUpDownCounter,
		desc: "Resident set size of the process (procfs), read beside the madvise figures. (semconv)", family: "madvise", semconv: true, integer: true}
	mThreads = metricDef{name: processconv.ThreadCount{}.Name(), unit: processconv.ThreadCount{}.Unit(), kind: kindUpDownCounter,
		desc: "Live OS threads of the process seen by the scheduler tracepoints. (semconv)", family: "sched", semconv: true, integer: true}
	mSwitches = metricDef{name: processconv.ContextSwitches{}.Name(), unit: processconv.ContextSwitches{}.Unit(), kind: kindCounter, attrs: "process.context_switch.type (voluntary, involuntary)",
		desc: "Context switches of the process's threads: voluntary (blocked) or involuntary (preempted). (semconv)", family: "sched", semconv: true, integer: true}
	mOnCPU = metricDef{name: "go.thread.oncpu.time", unit: "s", kind: kindCounter,
		desc: "Time the process's OS threads ran on a CPU (sched_switch).", family: "sched"}
	mOffCPU = metricDef{name: "go.thread.offcpu.time", unit: "s", kind: kindCounter,
		desc: "Time the process's OS threads were blocked (off CPU, not runnable).", family: "sched"}
	mRunQueueTime = metricDef{name: "go.thread.runqueue.time", unit: "s", kind: kindCounter,
		desc: "Time the process's OS threads waited in a run queue, runnable but not running.", family: "sched"}
	mRunQueue = metricDef{name: "go.thread.runqueue.duration", unit: "s", kind: kindHistogram,
		desc: "Distribution of OS-thread run-queue latency, from wakeup or preemption to running (power-of-two buckets from 1 ns).", family: "sched"}
	mSchedDuration = metricDef{name: goconv.ScheduleDuration{}.Name(), unit: goconv.ScheduleDuration{}.Unit(), kind: kindHistogram,
		desc: "Time goroutines spent runnable before running: the runtime's own histogram (/sched/latencies:seconds, 1 transition in 8), read from the process's memory, in power-of-two buckets; sum estimated from bucket midpoints. (semconv)", family: "sched", semconv: true}
	mLockContentions = metricDef{name: "go.runtime.lock.contentions", unit: "{contention}", kind: kindCounter, attrs: "go.runtime.lock (mheap, other)",
		desc: "Times a thread slept to acquire a runtime-internal lock: runtime.mheap_.lock or any other.", family: "mheaplock", integer: true}
	mLockWaitTime = metricDef{name: "go.runtime.lock.wait.time", unit: "s", kind: kindCounter, attrs: "go.runtime.lock (mheap, other)",
		desc: "Time threads slept waiting for runtime-internal locks (cf. /sync/mutex/wait/total:seconds, which samples).", family: "mheaplock"}
	mLockWait = metricDef{name: "go.runtime.lock.wait.duration", unit: "s", kind: kindHistogram, attrs: "go.runtime.lock (mheap)",
		desc: "Distribution of the waits for runtime.mheap_.lock (power-of-two buckets from 1 ns).", family: "mheaplock"}
)

const (
	attrAdvice        = attribute.Key("go.memory.advice")
	attrReleaseSource = attribute.Key("go.memory.release.source")
	attrSwitchType    = attribute.Key("process.context_switch.type")
	attrLock          = attribute.Key("go.runtime.lock")
)

// log2Buckets is the number of power-of-two buckets exported for the
// families' latency histograms: bounds 1 ns … 2^38 ns (~275 s), then +Inf,
// the same for every process so that services can sum them.
const log2Buckets = 40

var log2Bounds = func() []float64 {
	b := make([]float64, log2Buckets-1)
	for i := range b {
		b[i] = math.Ldexp(1, i) / 1e9
	}
	return b
}()

// l2hist is a power-of-two histogram as the kernel side keeps it.
type l2hist struct {
	counts []uint64 // log2Buckets
	count  uint64
	sum    float64
}

// fromAPI re-buckets an API histogram by its buckets' upper bounds: a
// bucket whose upper bound u lies in (2^(j-1), 2^j] ns lands in power-of-two
// bucket j, so both the kernel side's power-of-two histograms (unchanged)
// and the runtime's finer ones (whose buckets never straddle a power of
// two) sum into the same exported buckets.
func fromAPI(h api.Histogram) l2hist {
	out := l2hist{counts: make([]uint64, log2Buckets), count: h.Count, sum: h.SumSeconds}
	for i, c := range h.Counts {
		j := -1
		if i < len(h.BucketUpperSeconds) {
			j = api.Pow2Bucket(h.BucketUpperSeconds[i])
		}
		if j < 0 || j >= log2Buckets {
			j = log2Buckets - 1
		}
		out.counts[j] += c
	}
	return out
}

func (h *l2hist) add(o l2hist) {
	if o.count == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, log2Buckets)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.count += o.count
	h.sum += o.sum
}

func (h l2hist) point(attrs attribute.Set, start, now time.Time) (metricdata.HistogramDataPoint[float64], bool) {
	if h.count == 0 {
		return metricdata.HistogramDataPoint[float64]{}, false
	}
	if !start.Before(now) {
		start = now.Add(-time.Millisecond)
	}
	return metricdata.HistogramDataPoint[float64]{
		Attributes: attrs, StartTime: start, Time: now,
		Count: h.count, Sum: h.sum, Bounds: log2Bounds, BucketCounts: append([]uint64(nil), h.counts...),
	}, true
}

// famFigures are the cumulative figures of the madvise, sched and
// mheaplock families of one series. RSS and threads are gauges: a retired
// process contributes nothing to them.
type famFigures struct {
	adviceCalls, adviceBytes map[string]uint64
	released                 map[string]uint64
	rss                      uint64
	hasMadvise               bool

	threads                 int64
	voluntary, involuntary  uint64
	onCPU, offCPU, runQueue float64
	runQueueHist            l2hist
	schedHist               l2hist // goroutine latency
	hasSched                bool

	lockContended, otherContended uint64
	lockWait, otherWait           float64
	lockHist                      l2hist
	hasLock                       bool
}

func (f *famFigures) set(p api.Process) {
	*f = famFigures{}
	if m := p.Madvise; m != nil {
		f.hasMadvise = true
		f.adviceCalls, f.adviceBytes = map[string]uint64{}, map[string]uint64{}
		for _, a := range m.Advice {
			f.adviceCalls[a.Advice] += a.Calls
			f.adviceBytes[a.Advice] += a.Bytes
		}
		f.released = maps(m.ReleasedBySource)
		f.rss = m.RSSBytes
	}
	if s := p.Sched; s != nil {
		f.hasSched = true
		f.threads = int64(s.Threads)
		f.voluntary, f.involuntary = s.VoluntarySwitches, s.InvoluntarySwitches
		f.onCPU, f.offCPU, f.runQueue = s.OnCPUSeconds, s.OffCPUSeconds, s.RunQueueSeconds
		f.runQueueHist = fromAPI(s.RunQueueLatency)
		if s.GoroutineLatency != nil {
			f.schedHist = fromAPI(*s.GoroutineLatency)
		}
	}
	if l := p.MheapLock; l != nil {
		f.hasLock = true
		f.lockContended, f.otherContended = l.Contended, l.OtherContended
		f.lockWait, f.otherWait = l.WaitSeconds, l.OtherWaitSeconds
		f.lockHist = fromAPI(l.Wait)
	}
}

func addMap(dst *map[string]uint64, src map[string]uint64) {
	for k, v := range src {
		if *dst == nil {
			*dst = map[string]uint64{}
		}
		(*dst)[k] += v
	}
}

// add sums o into f; gauges is false when o is a retired process.
func (f *famFigures) add(o *famFigures, gauges bool) {
	f.hasMadvise = f.hasMadvise || o.hasMadvise
	f.hasSched = f.hasSched || o.hasSched
	f.hasLock = f.hasLock || o.hasLock
	addMap(&f.adviceCalls, o.adviceCalls)
	addMap(&f.adviceBytes, o.adviceBytes)
	addMap(&f.released, o.released)
	if gauges {
		f.rss += o.rss
		f.threads += o.threads
	}
	f.voluntary += o.voluntary
	f.involuntary += o.involuntary
	f.onCPU += o.onCPU
	f.offCPU += o.offCPU
	f.runQueue += o.runQueue
	f.runQueueHist.add(o.runQueueHist)
	f.schedHist.add(o.schedHist)
	f.lockContended += o.lockContended
	f.otherContended += o.otherContended
	f.lockWait += o.lockWait
	f.otherWait += o.otherWait
	f.lockHist.add(o.lockHist)
}

func (f famFigures) clone() famFigures {
	var c famFigures
	c.add(&f, true)
	return c
}

// observeFamilies reports one series' family figures at a collection.
func observeFamilies(o metric.Observer, ints map[string]metric.Int64Observable, floats map[string]metric.Float64Observable, s series) {
	f := &s.fig.fam
	set := metric.WithAttributeSet(s.attrs)
	if f.hasMadvise {
		for adv, n := range f.adviceCalls {
			o.ObserveInt64(ints[mAdviseCalls.name], i64(n), metric.WithAttributeSet(with(s.attrs, attrAdvice.String(adv))))
			o.ObserveInt64(ints[mAdviseSize.name], i64(f.adviceBytes[adv]), metric.WithAttributeSet(with(s.attrs, attrAdvice.String(adv))))
		}
		for src, n := range f.released {
			o.ObserveInt64(ints[mReleased.name], i64(n), metric.WithAttributeSet(with(s.attrs, attrReleaseSource.String(src))))
		}
		o.ObserveInt64(ints[mRSS.name], i64(f.rss), set)
	}
	if f.hasSched {
		o.ObserveInt64(ints[mThreads.name], f.threads, set)
		o.ObserveInt64(ints[mSwitches.name], i64(f.voluntary), metric.WithAttributeSet(with(s.attrs, attrSwitchType.String("voluntary"))))
		o.ObserveInt64(ints[mSwitches.name], i64(f.involuntary), metric.WithAttributeSet(with(s.attrs, attrSwitchType.String("involuntary"))))
		o.ObserveFloat64(floats[mOnCPU.name], f.onCPU, set)
		o.ObserveFloat64(floats[mOffCPU.name], f.offCPU, set)
		o.ObserveFloat64(floats[mRunQueueTime.name], f.runQueue, set)
	}
	if f.hasLock {
		mheap := metric.WithAttributeSet(with(s.attrs, attrLock.String("mheap")))
		other := metric.WithAttributeSet(with(s.attrs, attrLock.String("other")))
		o.ObserveInt64(ints[mLockContentions.name], i64(f.lockContended), mheap)
		o.ObserveInt64(ints[mLockContentions.name], i64(f.otherContended), other)
		o.ObserveFloat64(floats[mLockWaitTime.name], f.lockWait, mheap)
		o.ObserveFloat64(floats[mLockWaitTime.name], f.otherWait, other)
	}
}

// familyHistograms are the families' histogram metrics of a view.
func familyHistograms(v *view) []metricdata.Metrics {
	runq := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
	gsched := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
	lock := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
	for _, s := range v.series {
		if dp, ok := s.fig.fam.runQueueHist.point(s.attrs, s.start, v.at); ok {
			runq.DataPoints = append(runq.DataPoints, dp)
		}
		if dp, ok := s.fig.fam.schedHist.point(s.attrs, s.start, v.at); ok {
			gsched.DataPoints = append(gsched.DataPoints, dp)
		}
		if dp, ok := s.fig.fam.lockHist.point(with(s.attrs, attrLock.String("mheap")), s.start, v.at); ok {
			lock.DataPoints = append(lock.DataPoints, dp)
		}
	}
	ms := appendHistogram(nil, mRunQueue, runq)
	ms = appendHistogram(ms, mSchedDuration, gsched)
	return appendHistogram(ms, mLockWait, lock)
}
