/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Map layouts shared by sched.bpf.c and, through bpf2go -type, probes/sched. */
#ifndef GOPULSE_SCHED_H
#define GOPULSE_SCHED_H

#include "hist.h"

/* Sizes user space relies on, generated for Go (bpf2go -type). */
/* Map sizes as compiled; the loader sizes sched_procs from --max-pids and
 * sched_threads from the thread bound (probes.Env). */
enum sched_contract {
	SCHED_MAX_PROCS = 16384,
	SCHED_MAX_THREADS = 65536,
};

/* No hidden padding in what user space reads. */
#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

/* Per traced process: created by user space when it starts tracing the
 * process (the BPF-side filter), updated by the kernel side, read by user
 * space every second. */
struct sched_proc {
	__u64 rq_hist[HIST_BUCKETS]; /* run-queue latency, ns */
	__u64 rq_ns;                 /* sum of run-queue latencies */
	__u64 on_cpu_ns;
	__u64 off_cpu_ns; /* blocked: switched out not runnable, until woken */
	__u64 voluntary;
	__u64 involuntary;
	__s64 threads; /* seen and not exited */
	/* Thread states not kept: sched_threads was full, or the process
	 * had sched_max_proc_threads already. Such a thread's switches are
	 * not timed; never another thread's state evicted instead. */
	__u64 threads_dropped;
};

#pragma clang diagnostic pop

#endif
