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

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MADV_MAX_PROCS);
	__type(key, __u32); /* tgid */
	__type(value, struct madv_totals);
} madv_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MADV_RING_BYTES);
} madv_events SEC(".maps");

DEFINE_LOST_COUNTER(madv_lost);

const struct madv_event *unused_madv_event __attribute__((unused));
const enum madv_contract *unused_madv_contract __attribute__((unused));

struct madv_args {
	__u64 start;
	__u64 len;
	__s64 advice;
};

/* sys_enter -> sys_exit of one thread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
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
	bpf_map_update_elem(&madv_inflight, &tid, &a, BPF_ANY);
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
	struct madv_totals *t = bpf_map_lookup_elem(&madv_procs, &tgid);
	if (!t)
		return 0;
	struct madv_args *ap = bpf_map_lookup_elem(&madv_inflight, &tid);
	if (!ap)
		return 0; /* tracked between enter and exit */
	struct madv_args a = *ap;
	bpf_map_delete_elem(&madv_inflight, &tid);
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
	e->ts = bpf_ktime_get_ns();
	e->calls = t->calls[slot];
	e->bytes = t->bytes[slot];
	e->_pad = 0;
	/* Who asked is needed for released bytes only; a user stack walk costs
	 * ~1.5 µs, so the other advices go without. */
	long n = 0;
	if (ret == 0 && releases(a.advice))
		n = bpf_get_stack(ctx, e->stack, sizeof(e->stack), BPF_F_USER_STACK);
	e->nframes = n > 0 ? (__u32)((__u64)n >> 3) : 0;
	submit_batched(&madv_events, e, MADV_RING_BYTES / 8);
	return 0;
}
