// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * GC probe family: ONE uprobe hit per completed GC cycle of every traced
 * Go process. The runtime books every cycle itself (memstats: numgc,
 * numforcedgc, pause_total_ns; work: the phase timestamps tSweepTerm,
 * tMark, tMarkTerm, tEnd, the pause pauseNS, heap0/1/2, userForced;
 * gcController: assistTime, heapLive, the next goal), so instead of
 * trapping each transition (6 traps per cycle on Go >= 1.22, 4 before,
 * each ~10 µs on the test VM and most of them inside stop-the-world), the
 * program copies those books once, when they are complete and before the
 * next cycle can touch them.
 *
 * Where: the CALL runtime.mProf_Flush instruction of
 * runtime.gcMarkTermination (Go 1.19-1.27), found by disassembly
 * (probes/gc.Site). By then numgc is incremented and the pause recorded,
 * and the world is running again, so the trap does not lengthen the pause;
 * the next cycle cannot start before gcMarkTermination releases
 * work.startSema/gcsema, so the books are stable. mProf_Flush itself is
 * also called from gcSweep in STW-sweep mode, hence a site, not its entry.
 *
 * The program knows no layout: user space writes, per binary, the byte
 * windows to copy (gc_layouts, keyed by the attach cookie) and decodes
 * them with the facts table (probes/rtstate.DecodeCycle), which is the
 * one definition of the runtime's offsets. Totals need no kernel state:
 * they are the runtime's own counters, absolute and exact however late
 * the process was attached or however many records were lost.
 */
#include "gopulse.h"
#include "cookie.h"
#include "gc.h"
#include "share.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GC_MAX_LAYOUTS);
	__type(key, __u32);
	__type(value, struct gc_layout);
} gc_layouts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, GC_RING_BYTES);
} gc_events SEC(".maps");

DEFINE_LOST_COUNTER(gc_lost);

/* Per-UID shares of gc_events (share.h): a runtime.GC() loop takes only
 * its own user's share of the ring. */
DEFINE_SHARES(gc_shares);

/* Records whose binary had no layout (a bug, or a layout evicted). */
DEFINE_LOST_COUNTER(gc_nolayout);

/* Dummy uses so bpf2go -type finds the types. */
const struct gc_record *unused_gc_record __attribute__((unused));
const struct gc_layout *unused_gc_layout __attribute__((unused));
const enum gc_contract *unused_gc_contract __attribute__((unused));
const struct gp_share *unused_gp_share __attribute__((unused));
const enum share_contract *unused_share_contract __attribute__((unused));

SEC("uprobe")
int gc_cycle(struct pt_regs *ctx)
{
	__u64 ip = GP_PC(ctx); /* the probed address: the kernel resets it for handlers */
	__u32 key = (__u32)gp_cookie(ctx); /* attach cookie, or its fallback (cookie.h) */
	struct gc_layout *l = bpf_map_lookup_elem(&gc_layouts, &key);
	if (!l) {
		count_lost(&gc_nolayout);
		return 0;
	}
	__u64 bias = ip - l->site;
	__u64 now = bpf_ktime_get_ns();
	if (!share_take(&gc_shares, &gc_events, now))
		return 0;
	struct gc_record *r = bpf_ringbuf_reserve(&gc_events, sizeof(*r), 0);
	if (!r) {
		count_lost(&gc_lost);
		return 0;
	}
	r->pid = current_tgid();
	r->layout = key;
	r->ktime = now;
#pragma unroll
	for (int i = 0; i < GC_WINDOWS; i++) {
		__u32 n = l->len[i];
		if (n > GC_WINDOW_MAX)
			n = GC_WINDOW_MAX;
		r->len[i] = n;
		if (n && bpf_probe_read_user(r->data[i], n, (void *)(l->addr[i] + bias)))
			r->len[i] = 0;
	}
	submit_batched(&gc_events, r, gp_wake_bytes);
	return 0;
}
