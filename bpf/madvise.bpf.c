// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * madvise probe family: every madvise(2) of a traced process, by advice,
 * with the bytes it covered and who in the runtime asked (the user stack,
 * symbolised in user space: background scavenger, allocation-driven
 * scavenging, debug.FreeOSMemory...).
 *
 * The syscalls:sys_enter_madvise / sys_exit_madvise tracepoints (tracefs):
 * no uprobe, no trap in the traced program. The first thing each program
 * does is look the calling process up in madv_procs, which user space fills
 * with the PIDs it traces, so other processes cost one hash lookup per
 * madvise.
 */
#include "gopulse.h"
#include "madvise.h"
#include "share.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Entries are created by user space only (Track), so they need no
 * preallocation: the memory follows the processes traced, and
 * max_entries (--max-pids) is only the bound. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MADV_MAX_PROCS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* tgid */
	__type(value, struct madv_totals);
} madv_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MADV_RING_BYTES);
} madv_events SEC(".maps");

DEFINE_LOST_COUNTER(madv_lost);

/* Per-UID shares of madv_events (share.h): a madvise storm takes only its
 * own user's share of the ring. The totals above are counted before the
 * share is asked: they stay exact for everyone. */
DEFINE_SHARES(madv_shares);

/* madvise calls not counted because madv_inflight was full (the sum of
 * madv_totals.dropped, for status). */
DEFINE_LOST_COUNTER(madv_dropped);

const struct madv_event *unused_madv_event __attribute__((unused));
const enum madv_contract *unused_madv_contract __attribute__((unused));
const struct gp_share *unused_gp_share __attribute__((unused));
const enum share_contract *unused_share_contract __attribute__((unused));

struct madv_args {
	__u64 start;
	__u64 len;
	__s64 advice;
};

/* sys_enter -> sys_exit of one thread of a traced process. A plain hash,
 * not an LRU: an eviction would drop another thread's call silently.
 * When full, the call is counted as dropped for its process. Entries are
 * deleted at sys_exit whether or not the process is still traced. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MADV_MAX_THREADS);
	__type(key, __u32); /* tid */
	__type(value, struct madv_args);
} madv_inflight SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_madvise")
int madv_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tgid = current_tgid();
	if (!bpf_map_lookup_elem(&madv_procs, &tgid))
		return 0;
	struct madv_args a = {
		.start = ctx->args[0],
		.len = ctx->args[1],
		.advice = (__s64)ctx->args[2],
	};
	__u32 tid = current_tid();
	if (bpf_map_update_elem(&madv_inflight, &tid, &a, BPF_ANY)) {
		struct madv_totals *t = bpf_map_lookup_elem(&madv_procs, &tgid);
		if (t)
			__sync_fetch_and_add(&t->dropped, 1);
		count_lost(&madv_dropped);
	}
	return 0;
}

/* releases: the advices that give memory back (MADV_RELEASE_MASK;
 * event.Releases on the Go side). */
static __always_inline bool releases(__s64 advice)
{
	return advice >= 0 && advice < 32 && ((MADV_RELEASE_MASK >> advice) & 1);
}

SEC("tracepoint/syscalls/sys_exit_madvise")
int madv_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tgid = current_tgid(), tid = current_tid();
	/* The call's own entry first (a miss for every untraced process, as
	 * the madv_procs lookup was): deleted even when the process stopped
	 * being traced meanwhile, so none is left behind. */
	struct madv_args *ap = bpf_map_lookup_elem(&madv_inflight, &tid);
	if (!ap)
		return 0; /* untraced, or tracked between enter and exit */
	struct madv_args a = *ap;
	bpf_map_delete_elem(&madv_inflight, &tid);
	struct madv_totals *t = bpf_map_lookup_elem(&madv_procs, &tgid);
	if (!t)
		return 0;
	long ret = ctx->ret;
	__u32 slot = (__u32)a.advice;
	if (a.advice < 0 || slot >= MADV_SLOTS)
		slot = MADV_SLOTS - 1;
	slot &= MADV_SLOTS - 1; /* for the verifier */
	if (ret != 0) {
		__sync_fetch_and_add(&t->errors, 1);
	} else {
		__sync_fetch_and_add(&t->calls[slot], 1);
		__sync_fetch_and_add(&t->bytes[slot], a.len);
	}
	__u64 now = bpf_ktime_get_ns();
	if (!share_take(&madv_shares, &madv_events, now))
		return 0;
	struct madv_event *e = bpf_ringbuf_reserve(&madv_events, sizeof(*e), 0);
	if (!e) {
		count_lost(&madv_lost);
		return 0;
	}
	e->pid = tgid;
	e->tid = tid;
	e->advice = (__s32)a.advice;
	e->ret = (__s32)ret;
	e->start = a.start;
	e->len = a.len;
	e->ts = now;
	e->calls = t->calls[slot];
	e->bytes = t->bytes[slot];
	e->_pad = 0;
	/* Who asked is needed for released bytes only; a user stack walk costs
	 * ~1.5 µs, so the other advices go without. */
	long n = 0;
	if (ret == 0 && releases(a.advice))
		n = bpf_get_stack(ctx, e->stack, sizeof(e->stack), BPF_F_USER_STACK);
	e->nframes = n > 0 ? (__u32)((__u64)n >> 3) : 0;
	submit_batched(&madv_events, e, gp_wake_bytes);
	return 0;
}

/* A new program in a traced process (exec, or a reused PID's first
 * exec): its totals start from zero, before any of its own calls, so
 * nothing of the previous program is carried over. Raw tracepoint: no
 * tracefs, Linux 4.17. */
SEC("raw_tp/sched_process_exec")
int madv_exec(void *ctx)
{
	__u32 tgid = current_tgid();
	struct madv_totals *t = bpf_map_lookup_elem(&madv_procs, &tgid);
	if (t)
		__builtin_memset(t, 0, sizeof(*t));
	return 0;
}
