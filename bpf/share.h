/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Per-UID shares of a ring buffer: one user's processes flooding a ring
 * (a runtime.GC() loop, a madvise storm) must not make other users'
 * processes lose records. Included by the families whose records go
 * through a ring (gc, madvise). */
#ifndef GOPULSE_SHARE_H
#define GOPULSE_SHARE_H

#include "gopulse.h"

/* Sizes user space relies on (bpf2go -type share_contract). */
enum share_contract {
	/* UIDs with a bucket of their own; more share one bucket, keyed
	 * SHARE_UID_OTHER (user space creates it at load, so a full map
	 * never refuses it). */
	SHARE_MAX_UIDS = 4096,
};

/* The key of the bucket shared by the UIDs beyond SHARE_MAX_UIDS (no UID
 * is (uid_t)-1: it means "unchanged" to setresuid). */
#define SHARE_UID_OTHER 0xffffffffu

/* No hidden padding in what user space reads. */
#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

/* One UID's bucket, as GCRA (a token bucket kept as one timestamp): tat is
 * when the bucket will be full again; every record moves it
 * gp_share_interval_ns on (never more than a burst and a record ahead of
 * now). While the ring is under pressure, a record is refused when tat is
 * more than gp_share_burst_ns ahead of now. */
struct gp_share {
	__u64 tat;
	__u64 sent;    /* records let through */
	__u64 dropped; /* records refused: over the UID's share */
};

#pragma clang diagnostic pop

/* Set by the loader (probes.SetShares) from the ring's size: the time one
 * record costs a UID at its sustained rate, and the burst it may take at
 * once, in the same time unit. 0: no limit. */
volatile const __u64 gp_share_interval_ns = 0;
volatile const __u64 gp_share_burst_ns = 0;

/* submit_batched's threshold (bpf/gopulse.h): an eighth of the ring as
 * the loader sized it (probes.SetShares). */
volatile const __u64 gp_wake_bytes = 1 << 17;

/* Pressure: a quarter of the ring waiting to be read, twice what wakes the
 * reader, so the reader was woken and did not catch up. (At the wakeup
 * threshold itself, a heavy user whose reader keeps up would lose records
 * in every wakeup's latency window.) */
volatile const __u64 gp_pressure_bytes = 1 << 18;

#define DEFINE_SHARES(name)                               \
	struct {                                          \
		__uint(type, BPF_MAP_TYPE_HASH);          \
		__uint(max_entries, SHARE_MAX_UIDS + 1);  \
		__type(key, __u32);                       \
		__type(value, struct gp_share);           \
	} name SEC(".maps")

/* share_take reports whether the current task's UID may put one more
 * record in ring, counting the record as sent or dropped for it.
 *
 * Work-conserving: shares are enforced only while the ring is under
 * pressure — gp_pressure_bytes (a quarter of it) or more waiting to be
 * read, that is the reader woken (at an eighth) and not caught up
 * (starved of CPU, or slower than the flood). Until then every record passes, a legitimate burst
 * (debug.FreeOSMemory of a large heap: hundreds of madvise calls at once)
 * included, but is still charged to its UID: a UID that has been
 * flooding is refused first when the pressure comes, one that has been
 * quiet still has its whole burst.
 *
 * Buckets are updated without a lock (tracing programs cannot take a
 * bpf_spin_lock on every kernel the daemon supports, nor compare-and-swap
 * on 5.10): two CPUs of the same UID racing may both pass on one token, so
 * a UID can exceed its share by at most one record per CPU per race; the
 * counters themselves are atomic. */
static __always_inline bool share_take(void *shares, void *ring, __u64 now)
{
	if (!gp_share_interval_ns)
		return true;
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	struct gp_share *s = bpf_map_lookup_elem(shares, &uid);
	if (!s) {
		struct gp_share fresh = {};
		bpf_map_update_elem(shares, &uid, &fresh, BPF_NOEXIST);
		s = bpf_map_lookup_elem(shares, &uid);
		if (!s) {
			uid = SHARE_UID_OTHER; /* the map is full */
			s = bpf_map_lookup_elem(shares, &uid);
			if (!s)
				return true;
		}
	}
	__u64 tat = s->tat;
	if (tat < now)
		tat = now;
	if (tat - now > gp_share_burst_ns && bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) >= gp_pressure_bytes) {
		__sync_fetch_and_add(&s->dropped, 1);
		return false;
	}
	tat += gp_share_interval_ns;
	if (tat - now > gp_share_burst_ns + gp_share_interval_ns)
		tat = now + gp_share_burst_ns + gp_share_interval_ns;
	s->tat = tat;
	__sync_fetch_and_add(&s->sent, 1);
	return true;
}

#endif
