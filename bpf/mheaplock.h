/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Map layouts shared by mheaplock.bpf.c and, through bpf2go -type, probes/mheaplock. */
#ifndef GOPULSE_MHEAPLOCK_H
#define GOPULSE_MHEAPLOCK_H

#include "hist.h"

/* Sizes user space relies on, generated for Go (bpf2go -type). */
/* Map sizes as compiled; the loader sizes lock_procs from --max-pids and
 * lock_waits from the thread bound (probes.Env). */
enum lock_contract {
	LOCK_MAX_PROCS = 16384,
	LOCK_MAX_THREADS = 16384, /* threads in a futex sleep or a marked lock2 sleep */
	/* lock2 site cookie, bits 0-7: the register (x86asm numbering of the
	 * 64-bit registers on amd64; Xn on arm64, LOCK_REG_SP for SP); bit 8:
	 * the lock's address is the 8 bytes at register + displacement (a
	 * stack slot: arm64 lock2 has it only in its argument's spill slot at
	 * the call), else register + displacement itself; bits 32-63: the
	 * signed displacement. */
	LOCK_COOKIE_DEREF = 0x100,
	LOCK_REG_SP = 31,
};

/* No hidden padding in what user space reads or writes. */
#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

/* Per traced process: created by user space with mheap_addr (the run-time
 * address of runtime.mheap_.lock's key word) and spinbit, updated by the
 * kernel side, polled by user space. */
struct lock_proc {
	__u64 mheap_addr;
	__u64 spinbit; /* 1: Go >= 1.24 spin-bit mutex, sleeps are marked by the lock2 uprobe */
	__u64 contended;
	__u64 wait_ns;
	__u64 other_contended;
	__u64 other_wait_ns;
	__u64 wait_hist[HIST_BUCKETS]; /* mheap_.lock sleeps, ns */
	/* Sleeps not timed: lock_waits was full (never another thread's
	 * wait evicted instead). */
	__u64 dropped;
};

#pragma clang diagnostic pop

#endif
