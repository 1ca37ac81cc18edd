/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Layouts shared by gc.bpf.c and, through bpf2go -type, probes/gc. */
#ifndef GOPULSE_GC_H
#define GOPULSE_GC_H

/* A cycle's books are copied in GC_WINDOWS byte ranges of the runtime's
 * structures (probes/rtstate.CycleWindows), each at most GC_WINDOW_MAX
 * bytes: work's last-cycle fields (≤ 192 bytes on Go 1.19-1.27), memstats'
 * counters (24), its pause total (16), gcController's pacing (128). */
/* Enumerators, not macros, so that bpf2go -type gc_contract hands them to
 * Go (probes/gc contract test). GC_MAX_LAYOUTS: binaries with a layout at
 * once, as compiled; the loader sizes gc_layouts at twice --max-binaries. */
enum gc_contract {
	GC_WINDOWS = 4,
	GC_WINDOW_MAX = 256,
	GC_MAX_LAYOUTS = 8192,
	/* The ring's size as compiled; the loader sizes it from --max-pids
	 * (probes.Env.RingBytes). */
	GC_RING_BYTES = 1 << 21,
};

/* Shared structs have no hidden padding. */
#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

/* Per probed binary, written by user space when it attaches: where the
 * probe sits (link-time) and where each window starts (link-time); the
 * difference between the probe's run-time address and site is the load
 * bias of a PIE process. */
struct gc_layout {
	__u64 site;
	__u64 addr[GC_WINDOWS];
	__u32 len[GC_WINDOWS];
};

/* One completed GC cycle: the runtime's own books, copied as they were
 * when gcMarkTermination restarted the world. */
struct gc_record {
	__u32 pid;
	__u32 layout; /* the gc_layouts key: decodes the windows */
	__u64 ktime;  /* bpf_ktime_get_ns at the probe (CLOCK_MONOTONIC) */
	__u32 len[GC_WINDOWS]; /* bytes copied; 0: the read failed */
	__u8 data[GC_WINDOWS][GC_WINDOW_MAX];
};

#pragma clang diagnostic pop

#endif
