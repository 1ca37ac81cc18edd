// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * GC probe family: one event per completed GC cycle of every traced Go
 * process, built from the runtime's own timestamps (nanotime is
 * CLOCK_MONOTONIC) read from registers, so the traps themselves do not skew
 * the figures beyond what the runtime itself measures.
 *
 * Probes (all uprobes at function entries or at RET instructions, never
 * uretprobes):
 *   (*gcControllerState).startCycle  entry: markStartTime (= work.tSweepTerm),
 *                                    trigger kind, heapLive
 *   (*gcControllerState).endCycle    entry: now (= work.tMarkTerm), heapLive,
 *                                    assistTime
 *   startTheWorldWithSema            Go >= 1.22: entry: worldStop.reason and
 *                                    .startedStopping; each RET: now
 *   (*gcCPULimiterState).finishGCTransition
 *                                    Go < 1.22: entry: now, the end of the pause
 * A stop-the-world is serialised by worldsema within a process, so one
 * in-flight state per process is enough.
 */
#include "gopulse.h"
#include "cookie.h"
#include "gc.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Go's gcTriggerKind and stwReason values; stable from Go 1.19 (triggers)
 * and Go 1.21 (reasons) to 1.27. */
#define GC_TRIGGER_CYCLE 2
#define STW_GC_MARK_TERM 1
#define STW_GC_SWEEP_TERM 2

enum gc_phase {
	PHASE_OFF = 0,
	PHASE_SWEEP_TERM = 1, /* world stopped for sweep termination */
	PHASE_MARK = 2,       /* concurrent mark */
	PHASE_MARK_TERM = 3,  /* world stopped for mark termination */
};

struct gc_state {
	struct gc_event ev; /* the cycle being built; totals run on */
	__u8 phase;
};

struct stw_entry {
	__s64 started;
	__u8 reason;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GC_MAX_PROCS);
	__type(key, __u32); /* tgid */
	__type(value, struct gc_state);
} gc_states SEC(".maps");

/* startTheWorldWithSema runs on the system stack without preemption, so
 * its entry and RETs happen on one thread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tid */
	__type(value, struct stw_entry);
} stw_entries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} gc_events SEC(".maps");

DEFINE_LOST_COUNTER(gc_lost);

/* Dummy use so bpf2go -type finds the event type. */
const struct gc_event *unused_gc_event __attribute__((unused));

/* Cookie layout, set per binary from the version table: bits 0-15 the
 * offset of gcControllerState.heapLive, bits 16-31 of .assistTime; 0 when
 * unknown for this binary. */
static __always_inline __u64 read_field(__u64 base, __u64 cookie, int shift)
{
	__u64 off = (cookie >> shift) & 0xffff, v = 0;
	if (!off || !base)
		return 0;
	bpf_probe_read_user(&v, sizeof(v), (void *)(base + off));
	return v;
}

static __always_inline struct gc_state *state_for(__u32 tgid)
{
	struct gc_state *st = bpf_map_lookup_elem(&gc_states, &tgid);
	if (st)
		return st;
	struct gc_state zero = {};
	bpf_map_update_elem(&gc_states, &tgid, &zero, BPF_NOEXIST);
	st = bpf_map_lookup_elem(&gc_states, &tgid);
	if (st)
		st->ev.pid = tgid;
	return st;
}

static __always_inline void emit(struct gc_event *src)
{
	struct gc_event *e = bpf_ringbuf_reserve(&gc_events, sizeof(*e), 0);
	if (!e) {
		count_lost(&gc_lost);
		return;
	}
	__builtin_memcpy(e, src, sizeof(*e));
	submit_batched(&gc_events, e, (1 << 20) / 8);
}

SEC("uprobe")
int gc_start_cycle(struct pt_regs *ctx)
{
	/* Read every register first: the verifier rejects ctx accesses the
	 * compiler turns into pointer arithmetic later on. */
	__u64 c = GO_ARG1(ctx), mark_start = GO_ARG2(ctx), kind = GO_ARG4(ctx);
	__u64 cookie = gp_cookie(ctx);
	struct gc_state *st = state_for(current_tgid());
	if (!st)
		return 0;
	struct gc_event *ev = &st->ev;

	/* A cycle left unfinished (attached mid-way) is dropped here. */
	ev->kind = GC_EVENT_CYCLE;
	ev->flags = 0;
	ev->seq++;
	ev->trigger = (__u8)kind;
	ev->stw_reason = 0;
	ev->t_sweep_term = (__s64)mark_start;
	ev->t_mark = ev->t_mark_term = ev->t_end = 0;
	ev->stw_sweep_ns = ev->stw_mark_ns = 0;
	ev->heap_start = read_field(c, cookie, 0);
	ev->heap_end = ev->assist_ns = 0;
	st->phase = PHASE_SWEEP_TERM;
	return 0;
}

SEC("uprobe")
int gc_end_cycle(struct pt_regs *ctx)
{
	__u64 c = GO_ARG1(ctx), now = GO_ARG2(ctx);
	__u64 cookie = gp_cookie(ctx);
	struct gc_state *st = state_for(current_tgid());
	if (!st)
		return 0;
	struct gc_event *ev = &st->ev;

	if (st->phase != PHASE_MARK) {
		/* Attached mid-cycle: the start of this one was not seen. */
		if (st->phase == PHASE_OFF)
			ev->seq++;
		ev->flags |= GC_FLAG_PARTIAL;
		ev->kind = GC_EVENT_CYCLE;
	}
	ev->t_mark_term = (__s64)now;
	ev->heap_end = read_field(c, cookie, 0);
	ev->assist_ns = read_field(c, cookie, 16);
	st->phase = PHASE_MARK_TERM;
	return 0;
}

SEC("uprobe")
int gc_stw_start_entry(struct pt_regs *ctx)
{
	struct stw_entry e = {
		.started = (__s64)GO_ARG3(ctx), /* w.startedStopping */
		.reason = (__u8)GO_ARG2(ctx),   /* w.reason */
	};
	__u32 tid = current_tid();
	bpf_map_update_elem(&stw_entries, &tid, &e, BPF_ANY);
	return 0;
}

static __always_inline void finish_cycle(struct gc_state *st, __s64 now)
{
	struct gc_event *ev = &st->ev;
	ev->t_end = now;
	ev->cycles++;
	if (ev->trigger == GC_TRIGGER_CYCLE)
		ev->forced_cycles++;
	ev->pause_total_ns += ev->stw_sweep_ns + ev->stw_mark_ns;
	emit(ev);
	st->phase = PHASE_OFF;
}

SEC("uprobe")
int gc_stw_start_ret(struct pt_regs *ctx)
{
	__s64 now = (__s64)GO_RET1(ctx);
	__u32 tid = current_tid(), tgid = current_tgid();
	struct stw_entry *e = bpf_map_lookup_elem(&stw_entries, &tid);
	struct gc_state *st = bpf_map_lookup_elem(&gc_states, &tgid);

	if (!e)
		return 0; /* attached between entry and RET */

	/* The runtime's own pause is now - startedStopping. */
	__s64 began = e->started;
	__u8 reason = e->reason;
	bpf_map_delete_elem(&stw_entries, &tid);

	if (reason == STW_GC_SWEEP_TERM) {
		if (st && st->phase == PHASE_SWEEP_TERM) {
			st->ev.stw_sweep_ns = now - began;
			st->ev.t_mark = now;
			st->phase = PHASE_MARK;
		}
	} else if (reason == STW_GC_MARK_TERM) {
		if (!st)
			return 0;
		/* A restarted mark termination (issue 27993) is paused time
		 * of this cycle too. */
		st->ev.stw_mark_ns += now - began;
		if (st->phase == PHASE_MARK_TERM)
			finish_cycle(st, now);
	} else {
		struct gc_event other = {
			.kind = GC_EVENT_STW_OTHER,
			.pid = tgid,
			.stw_reason = reason,
			.t_mark_term = began,
			.t_end = now,
			.stw_mark_ns = now - began,
		};
		emit(&other);
	}
	return 0;
}

/* Go < 1.22: the runtime times each pause from work.pauseStart (the
 * markStartTime/now arguments of startCycle/endCycle) to the `now` it then
 * passes to gcCPULimiter.finishGCTransition, at the end of both the sweep
 * termination and the mark termination. STWs other than the GC's are not
 * told apart on these versions. */
SEC("uprobe")
int gc_finish_transition(struct pt_regs *ctx)
{
	__s64 now = (__s64)GO_ARG2(ctx);
	__u32 tgid = current_tgid();
	struct gc_state *st = bpf_map_lookup_elem(&gc_states, &tgid);

	if (!st)
		return 0;
	if (st->phase == PHASE_SWEEP_TERM) {
		st->ev.stw_sweep_ns = now - st->ev.t_sweep_term;
		st->ev.t_mark = now;
		st->phase = PHASE_MARK;
	} else if (st->phase == PHASE_MARK_TERM) {
		st->ev.stw_mark_ns += now - st->ev.t_mark_term;
		finish_cycle(st, now);
	}
	return 0;
}

/* A process that exits, or execs a new image, starts over: its state goes
 * at once (not when the LRU needs room), so a re-exec'd PID counts from 0. */
static __always_inline int drop_state(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if ((__u32)id == tgid)
		bpf_map_delete_elem(&gc_states, &tgid);
	return 0;
}

SEC("raw_tp/sched_process_exec")
int gc_proc_exec(void *ctx)
{
	return drop_state();
}

SEC("raw_tp/sched_process_exit")
int gc_proc_exit(void *ctx)
{
	return drop_state();
}
