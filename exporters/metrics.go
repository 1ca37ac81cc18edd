package exporters

import (
	"context"
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/goconv"
)

// ScopeName is the instrumentation scope of every metric.
const ScopeName = "github.com/gopulse/gopulse/exporters"

// Instrument kinds, as the metric catalog names them.
const (
	kindCounter       = "Counter (async)"
	kindUpDownCounter = "UpDownCounter (async)"
	kindHistogram     = "Histogram"
)

// Attribute keys that have no semantic convention.
const (
	attrTrigger  = attribute.Key("go.gc.trigger")
	attrPhase    = attribute.Key("go.gc.phase")
	attrFamily   = attribute.Key("gopulse.probe.family")
	attrExporter = attribute.Key("gopulse.exporter")
)

// metricDef is one row of the catalog (and of exporters/README.md).
type metricDef struct {
	name, unit, kind, desc string
	attrs                  string // extra data-point attributes
	family                 string // probe family (or "daemon")
	semconv                bool   // name, unit and kind from the semantic conventions
	integer                bool
}

var (
	mGCCycles = metricDef{name: goconv.MemoryGCCyclesObservable{}.Name(), unit: goconv.MemoryGCCyclesObservable{}.Unit(),
		kind: kindCounter, desc: goconv.MemoryGCCyclesObservable{}.Description() + " Exact (counted in the kernel).",
		family: "gc", semconv: true, integer: true}
	mGCPause = metricDef{name: goconv.MemoryGCPauseDuration{}.Name(), unit: goconv.MemoryGCPauseDuration{}.Unit(),
		kind: kindHistogram, desc: goconv.MemoryGCPauseDuration{}.Description() + " Two pauses per cycle: sweep termination and mark termination.",
		family: "gc", semconv: true}
	mGCCyclesByTrigger = metricDef{name: "go.gc.cycles", unit: "{gc_cycle}", kind: kindCounter, attrs: "go.gc.trigger (heap, time, forced)",
		desc: "Completed GC cycles by what triggered them, from the per-cycle events (a lost event is missing here, not in go.memory.gc.cycles).", family: "gc", integer: true}
	mGCPauseTime = metricDef{name: "go.gc.pause.time", unit: "s", kind: kindCounter,
		desc: "Stop-the-world time of GC cycles: the runtime's own runtime.MemStats.PauseTotalNs.", family: "gc"}
	mGCPhase = metricDef{name: "go.gc.phase.duration", unit: "s", kind: kindHistogram, attrs: "go.gc.phase (sweep_termination, mark, mark_termination)",
		desc: "Wall-clock duration of each GC phase (the A+B+C ms clock of a gctrace line); sweep and mark termination stop the world, mark is concurrent.", family: "gc"}
	mGCAssist = metricDef{name: "go.gc.assist.time", unit: "s", kind: kindCounter,
		desc: "CPU time goroutines spent assisting the GC mark (/cpu/classes/gc/mark/assist:cpu-seconds), summed over observed cycles.", family: "gc"}
	mSTWOther = metricDef{name: "go.stw.other.pauses", unit: "{pause}", kind: kindCounter,
		desc: "Stop-the-world pauses not caused by the GC (ReadMemStats, GOMAXPROCS, profiles...; Go 1.22+): the runtime's own count (/sched/pauses/total/other:seconds).", family: "gc", integer: true}
	mSTWOtherTime = metricDef{name: "go.stw.other.time", unit: "s", kind: kindCounter,
		desc: "Time of the stop-the-world pauses not caused by the GC (Go 1.22+): estimated from the bucket midpoints of the runtime's own histogram (/sched/pauses/total/other:seconds), which keeps no sum.", family: "gc"}

	// The runtime's own settings and gauges (probes/rtstate), semconv.
	mGCGoal = metricDef{name: goconv.MemoryGCGoal{}.Name(), unit: goconv.MemoryGCGoal{}.Unit(), kind: kindUpDownCounter,
		desc: goconv.MemoryGCGoal{}.Description() + " Read from the process's memory (gcController).", family: "gc", semconv: true, integer: true}
	mGOGC = metricDef{name: goconv.ConfigGogc{}.Name(), unit: goconv.ConfigGogc{}.Unit(), kind: kindUpDownCounter,
		desc: goconv.ConfigGogc{}.Description() + " -1: GC off. Per process only.", family: "gc", semconv: true, integer: true}
	mMemLimit = metricDef{name: goconv.MemoryLimit{}.Name(), unit: goconv.MemoryLimit{}.Unit(), kind: kindUpDownCounter,
		desc: goconv.MemoryLimit{}.Description() + " Left out when there is none (math.MaxInt64). Per process only.", family: "gc", semconv: true, integer: true}
	mGoroutines = metricDef{name: goconv.GoroutineCount{}.Name(), unit: goconv.GoroutineCount{}.Unit(), kind: kindUpDownCounter,
		desc: goconv.GoroutineCount{}.Description() + " As runtime.NumGoroutine counts them, from the process's memory.", family: "gc", semconv: true, integer: true}
	mProcs = metricDef{name: goconv.ProcessorLimit{}.Name(), unit: goconv.ProcessorLimit{}.Unit(), kind: kindUpDownCounter,
		desc: goconv.ProcessorLimit{}.Description() + " (GOMAXPROCS)", family: "gc", semconv: true, integer: true}
	mMemUsed = metricDef{name: goconv.MemoryUsed{}.Name(), unit: goconv.MemoryUsed{}.Unit(), kind: kindUpDownCounter, attrs: "go.memory.type (stack, other)",
		desc: goconv.MemoryUsed{}.Description() + " Mapped and not released (gcController.mappedReady); stack: goroutine stacks.", family: "gc", semconv: true, integer: true}
	mMemAllocated = metricDef{name: goconv.MemoryAllocated{}.Name(), unit: goconv.MemoryAllocated{}.Unit(), kind: kindCounter,
		desc: goconv.MemoryAllocated{}.Description() + " (gcController.totalAlloc: as of the last flush of each P's cache)", family: "gc", semconv: true, integer: true}

	mTraced = metricDef{name: "gopulse.processes.traced", unit: "{process}", kind: kindUpDownCounter,
		desc: "Go processes the daemon traces now (exited ones until --forget-after).", family: "daemon", integer: true}
	mReady = metricDef{name: "gopulse.ready", unit: "{state}", kind: kindUpDownCounter,
		desc: "1 once the daemon's probe families are loaded and the processes running at its start attached, else 0.", family: "daemon", integer: true}
	mPIDsDropped = metricDef{name: "gopulse.processes.dropped", unit: "{process}", kind: kindCounter,
		desc: "Go processes not traced because of --max-pids.", family: "daemon", integer: true}
	mBinaries = metricDef{name: "gopulse.binaries.probed", unit: "{binary}", kind: kindUpDownCounter,
		desc: "Go executables (inodes) with probes attached.", family: "daemon", integer: true}
	mProbes = metricDef{name: "gopulse.probes.attached", unit: "{probe}", kind: kindUpDownCounter,
		desc: "Uprobes attached, over all binaries.", family: "daemon", integer: true}
	mEvents = metricDef{name: "gopulse.probe.events", unit: "{event}", kind: kindCounter, attrs: "gopulse.probe.family",
		desc: "Events read from a probe family's ring buffer.", family: "every family", integer: true}
	mLost = metricDef{name: "gopulse.probe.lost_events", unit: "{event}", kind: kindCounter, attrs: "gopulse.probe.family",
		desc: "Events a probe family lost (ring buffer full).", family: "every family", integer: true}
	mHits = metricDef{name: "gopulse.probe.runs", unit: "{run}", kind: kindCounter, attrs: "gopulse.probe.family",
		desc: "BPF program runs of a family (0 unless kernel.bpf_stats_enabled=1).", family: "every family", integer: true}
	mExportErrors = metricDef{name: "gopulse.export.errors", unit: "{error}", kind: kindCounter, attrs: "gopulse.exporter (otlp, prometheus)",
		desc: "Failed OTLP pushes (after retries) and Prometheus endpoint errors.", family: "daemon", integer: true}
	mExportSeries = metricDef{name: "gopulse.export.series.exported", unit: "{series}", kind: kindUpDownCounter,
		desc: "Processes (or services, with --export-per-service) exported as separate series now.", family: "daemon", integer: true}
	mExportDropped = metricDef{name: "gopulse.export.series.dropped", unit: "{series}", kind: kindCounter,
		desc: "Distinct processes (or services) left out of the export because of --export-max-processes.", family: "daemon", integer: true}
)

// catalog lists every metric, in README order.
var catalog = []metricDef{
	mGCCycles, mGCPause, mGCCyclesByTrigger, mGCPauseTime, mGCPhase, mGCAssist, mSTWOther, mSTWOtherTime,
	mGCGoal, mGOGC, mMemLimit, mGoroutines, mProcs, mMemUsed, mMemAllocated,
	mAdviseCalls, mAdviseSize, mReleased, mRSS,
	mThreads, mSwitches, mOnCPU, mOffCPU, mRunQueueTime, mRunQueue, mSchedDuration,
	mLockContentions, mLockWaitTime, mLockWait,
	mTraced, mReady, mPIDsDropped, mBinaries, mProbes, mEvents, mLost, mHits, mExportErrors, mExportSeries, mExportDropped,
}

// perSeries tells the per-process (or per-service) metrics from the
// daemon's own.
func (d metricDef) perSeries() bool { return d.family != "daemon" && d.family != "every family" }

// register creates the asynchronous instruments on m, with one callback
// reading the aggregator (through the exporter's state) and the status.
func (e *Exporter) register(m metric.Meter) error {
	ints := map[string]metric.Int64Observable{}
	floats := map[string]metric.Float64Observable{}
	var all []metric.Observable
	for _, d := range catalog {
		opts := []any{metric.WithUnit(d.unit), metric.WithDescription(d.desc)}
		var err error
		switch {
		case d.kind == kindHistogram:
			continue // produced from the exporter's own state (see produce)
		case d.integer && d.kind == kindCounter:
			var i metric.Int64ObservableCounter
			i, err = m.Int64ObservableCounter(d.name, int64CounterOpts(opts)...)
			ints[d.name] = i
			all = append(all, i)
		case d.integer:
			var i metric.Int64ObservableUpDownCounter
			i, err = m.Int64ObservableUpDownCounter(d.name, int64UpDownOpts(opts)...)
			ints[d.name] = i
			all = append(all, i)
		default:
			var f metric.Float64ObservableCounter
			f, err = m.Float64ObservableCounter(d.name, float64CounterOpts(opts)...)
			floats[d.name] = f
			all = append(all, f)
		}
		if err != nil {
			return err
		}
	}
	_, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		v := e.view(time.Now())
		for _, s := range v.series {
			set := metric.WithAttributeSet(s.attrs)
			o.ObserveInt64(ints[mGCCycles.name], i64(s.fig.cycles), set)
			o.ObserveFloat64(floats[mGCPauseTime.name], s.fig.pauseSeconds, set)
			o.ObserveFloat64(floats[mGCAssist.name], s.fig.assistSeconds, set)
			o.ObserveInt64(ints[mSTWOther.name], i64(s.fig.otherSTWCount), set)
			o.ObserveFloat64(floats[mSTWOtherTime.name], s.fig.otherSTWSeconds, set)
			observeRuntime(o, ints, s)
			for trig, n := range s.fig.triggers {
				o.ObserveInt64(ints[mGCCyclesByTrigger.name], i64(n), metric.WithAttributeSet(with(s.attrs, attrTrigger.String(trig))))
			}
			observeFamilies(o, ints, floats, s)
		}
		o.ObserveInt64(ints[mExportSeries.name], int64(v.exported))
		o.ObserveInt64(ints[mExportDropped.name], i64(v.dropped))
		o.ObserveInt64(ints[mExportErrors.name], i64(e.otlpErrors.Load()), metric.WithAttributes(attrExporter.String("otlp")))
		o.ObserveInt64(ints[mExportErrors.name], i64(e.promErrors.Load()), metric.WithAttributes(attrExporter.String("prometheus")))

		st := e.src.Status()
		o.ObserveInt64(ints[mTraced.name], int64(st.Processes))
		ready := int64(0)
		if st.Ready {
			ready = 1
		}
		o.ObserveInt64(ints[mReady.name], ready)
		o.ObserveInt64(ints[mPIDsDropped.name], i64(st.ProcessesDropped))
		var probes int64
		for _, b := range st.Binaries {
			probes += int64(b.Probes)
		}
		o.ObserveInt64(ints[mBinaries.name], int64(len(st.Binaries)))
		o.ObserveInt64(ints[mProbes.name], probes)
		for _, f := range st.Families {
			fam := metric.WithAttributes(attrFamily.String(f.Name))
			o.ObserveInt64(ints[mEvents.name], i64(f.Events), fam)
			o.ObserveInt64(ints[mLost.name], i64(f.LostEvents), fam)
			o.ObserveInt64(ints[mHits.name], i64(f.Hits), fam)
		}
		return nil
	}, all...)
	return err
}

func int64CounterOpts(in []any) []metric.Int64ObservableCounterOption {
	out := make([]metric.Int64ObservableCounterOption, len(in))
	for i, o := range in {
		out[i] = o.(metric.Int64ObservableCounterOption)
	}
	return out
}

func int64UpDownOpts(in []any) []metric.Int64ObservableUpDownCounterOption {
	out := make([]metric.Int64ObservableUpDownCounterOption, len(in))
	for i, o := range in {
		out[i] = o.(metric.Int64ObservableUpDownCounterOption)
	}
	return out
}

func float64CounterOpts(in []any) []metric.Float64ObservableCounterOption {
	out := make([]metric.Float64ObservableCounterOption, len(in))
	for i, o := range in {
		out[i] = o.(metric.Float64ObservableCounterOption)
	}
	return out
}

func i64(n uint64) int64 {
	if n > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(n)
}

func with(set attribute.Set, kv attribute.KeyValue) attribute.Set {
	kvs := append(set.ToSlice(), kv)
	return attribute.NewSet(kvs...)
}

// producer hands the histograms kept by the exporter to a reader. It
// implements sdk/metric.Producer.
type producer struct{ e *Exporter }

func (p producer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	v := p.e.view(time.Now())
	pause := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
	phase := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
	for _, s := range v.series {
		if dp, ok := histPoint(s.attrs, s.start, v.at, pauseBounds, &s.fig.pause); ok {
			pause.DataPoints = append(pause.DataPoints, dp)
		}
		for i, name := range phases {
			if dp, ok := histPoint(with(s.attrs, attrPhase.String(name)), s.start, v.at, phaseBounds, &s.fig.phase[i]); ok {
				phase.DataPoints = append(phase.DataPoints, dp)
			}
		}
	}
	ms := appendHistogram(nil, mGCPause, pause)
	ms = appendHistogram(ms, mGCPhase, phase)
	ms = append(ms, familyHistograms(v)...)
	if len(ms) == 0 {
		return nil, nil
	}
	return []metricdata.ScopeMetrics{{Scope: p.e.scope(), Metrics: ms}}, nil
}

// appendHistogram adds h as metric d, unless it has no point.
func appendHistogram(ms []metricdata.Metrics, d metricDef, h metricdata.Histogram[float64]) []metricdata.Metrics {
	if len(h.DataPoints) == 0 {
		return ms
	}
	return append(ms, metricdata.Metrics{Name: d.name, Description: d.desc, Unit: d.unit, Data: h})
}

func histPoint(attrs attribute.Set, start, now time.Time, bounds []float64, h *hist) (metricdata.HistogramDataPoint[float64], bool) {
	if h.count == 0 {
		return metricdata.HistogramDataPoint[float64]{}, false
	}
	if !start.Before(now) {
		start = now.Add(-time.Millisecond)
	}
	return metricdata.HistogramDataPoint[float64]{
		Attributes: attrs, StartTime: start, Time: now,
		Count: h.count, Sum: h.sum, Bounds: bounds, BucketCounts: h.counts,
		Min: metricdata.NewExtrema(h.min), Max: metricdata.NewExtrema(h.max),
	}, true
}

func (e *Exporter) scope() instrumentation.Scope {
	return instrumentation.Scope{Name: ScopeName, Version: e.version, SchemaURL: semconv.SchemaURL}
}

// attrMemType is semconv's go.memory.type.
var attrMemType = attribute.Key("go.memory.type")

// observeRuntime reports the runtime's settings and gauges of a series.
// GOGC and the memory limit are a process's settings: a per-service
// series (a sum) leaves them out.
func observeRuntime(o metric.Observer, ints map[string]metric.Int64Observable, s series) {
	r := s.fig.runtime
	if !s.fig.hasRuntime {
		return
	}
	set := metric.WithAttributeSet(s.attrs)
	o.ObserveInt64(ints[mGCGoal.name], i64(r.GCGoalBytes), set)
	o.ObserveInt64(ints[mGoroutines.name], r.Goroutines, set)
	o.ObserveInt64(ints[mProcs.name], r.GOMAXPROCS, set)
	o.ObserveInt64(ints[mMemUsed.name], i64(r.MemoryStackBytes), metric.WithAttributeSet(with(s.attrs, attrMemType.String("stack"))))
	o.ObserveInt64(ints[mMemUsed.name], i64(r.MemoryUsedBytes-min(r.MemoryStackBytes, r.MemoryUsedBytes)), metric.WithAttributeSet(with(s.attrs, attrMemType.String("other"))))
	o.ObserveInt64(ints[mMemAllocated.name], i64(r.AllocatedBytes), set)
	if s.fig.summed {
		return
	}
	o.ObserveInt64(ints[mGOGC.name], r.GOGCPercent, set)
	if r.MemoryLimitBytes != math.MaxInt64 {
		o.ObserveInt64(ints[mMemLimit.name], r.MemoryLimitBytes, set)
	}
}
