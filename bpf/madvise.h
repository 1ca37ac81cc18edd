/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Event layout shared by madvise.bpf.c and, through bpf2go -type, probes/madvise. */
#ifndef GOPULSE_MADVISE_H
#define GOPULSE_MADVISE_H

/* The numbers user space must agree on are enumerators, not macros, so
 * that bpf2go -type madv_contract generates them for Go
 * (probes/madvise/contract_test.go checks the Go side against them). */
enum madv_contract {
	/* Map sizes as compiled; the loader sizes madv_procs from --max-pids
	 * and madv_inflight from the thread bound (probes.Env). */
	MADV_MAX_PROCS = 16384,
	MADV_MAX_THREADS = 65536,
	/* Advice values 0..30 have their own slot; anything else
	 * (MADV_HWPOISON, guard pages...) shares slot 31. */
	MADV_SLOTS = 32,
	MADV_STACK_DEPTH = 24,
	MADV_RING_BYTES = 1 << 20,
	/* The advices that give memory back, one bit per advice value
	 * (event.Releases): DONTNEED 4, FREE 8, REMOVE 9, PAGEOUT 21,
	 * DONTNEED_LOCKED 24. The stack (who asked) is walked for these only. */
	MADV_RELEASE_MASK = (1 << 4) | (1 << 8) | (1 << 9) | (1 << 21) | (1 << 24),
};

/* No hidden padding in what user space reads: an error here means a
 * struct needs an explicit padding field. */
#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

/* Per traced process, created by user space when it starts tracing the
 * process (that is the BPF-side filter) and updated by the kernel side. */
struct madv_totals {
	__u64 calls[MADV_SLOTS];
	__u64 bytes[MADV_SLOTS];
	__u64 errors; /* madvise calls that failed (not counted above) */
	/* madvise calls not counted at all: madv_inflight was full when the
	 * call began (an honest count, never an eviction of another
	 * thread's call). */
	__u64 dropped;
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

#pragma clang diagnostic pop

#endif
