/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Power-of-two histograms of nanosecond durations. */
#ifndef GOPULSE_HIST_H
#define GOPULSE_HIST_H

/* Bucket i counts values in [2^(i-1), 2^i) ns (bucket 0: 0), so bucket 10
 * ends at ~1 µs, 20 at ~1 ms, 30 at ~1 s; the last one has no bound.
 * An enumerator so that bpf2go -type hist_contract generates it for Go
 * (event.HistBuckets, checked by the families' contract tests). */
enum hist_contract {
	HIST_BUCKETS = 40,
};

static __always_inline __u32 hist_bucket(__u64 v)
{
	__u32 b = 0;
	/* 64 - clz without the builtin's undefined 0 case; bounded loop. */
#pragma unroll
	for (int i = 32; i > 0; i >>= 1) {
		if (v >> i) {
			v >>= i;
			b += i;
		}
	}
	b += (__u32)v; /* v is 0 or 1 here */
	if (b >= HIST_BUCKETS)
		b = HIST_BUCKETS - 1;
	return b;
}

#endif
