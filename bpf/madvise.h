/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Event layout shared by madvise.bpf.c and, through bpf2go -type, probes/madvise. */
#ifndef GOPULSE_MADVISE_H
#define GOPULSE_MADVISE_H

#define MADV_MAX_PROCS 16384
/* Advice values 0..30 have their own slot; anything else (MADV_HWPOISON,
 * guard pages...) shares slot 31. */
#define MADV_SLOTS 32
#define MADV_STACK_DEPTH 24

/* Per traced process, created by user space when it starts tracing the
 * process (that is the BPF-side filter) and updated by the kernel side. */
struct madv_totals {
	__u64 calls[MADV_SLOTS];
	__u64 bytes[MADV_SLOTS];
	__u64 errors; /* madvise calls that failed (not counted above) */
};

struct madv_event {
	__u32 pid;
	__u32 tid;
	__s32 advice;
	__s32 ret;
	__u64 start;
	__u64 len;
	__u64 ts; /* CLOCK_MONOTONIC ns */
	/* Running totals of this advice's slot in this process: exact even
	 * when events are lost. */
	__u64 calls;
	__u64 bytes;
	__u32 nframes;
	__u32 _pad;
	__u64 stack[MADV_STACK_DEPTH]; /* user return addresses, innermost first */
};

#endif
