/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Event layout shared by gc.bpf.c and, through bpf2go -type, probes/gc. */
#ifndef GOPULSE_GC_H
#define GOPULSE_GC_H

#define GC_MAX_PROCS 16384

enum gc_event_kind {
	GC_EVENT_CYCLE = 1,
	GC_EVENT_STW_OTHER = 2,
};

#define GC_FLAG_PARTIAL 1

struct gc_event {
	__u32 pid;
	__u8 kind;
	__u8 trigger;    /* gcTriggerKind: 0 heap, 1 time, 2 cycle (forced) */
	__u8 flags;
	__u8 stw_reason; /* GC_EVENT_STW_OTHER: runtime stwReason */
	__u64 seq;       /* cycles observed in this process, this one included */
	/* Runtime nanotime() values (CLOCK_MONOTONIC). */
	__s64 t_sweep_term;
	__s64 t_mark;
	__s64 t_mark_term;
	__s64 t_end;
	__u64 stw_sweep_ns;
	__u64 stw_mark_ns;
	__u64 heap_start;
	__u64 heap_end;
	__u64 assist_ns;
	/* Running totals of the process since first seen: exact even when
	 * some events were lost. */
	__u64 cycles;
	__u64 forced_cycles;
	__u64 pause_total_ns;
};

#endif
