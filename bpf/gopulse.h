/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Shared by every gopulse BPF program. */
#ifndef GOPULSE_H
#define GOPULSE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

/* Per-architecture access to a uprobe's registers; bpf2go builds every
 * object once per target and defines __TARGET_ARCH_x86 or _arm64.
 *
 * GP_PC is the probed address (the kernel resets the PC to it for uprobe
 * handlers). GO_ARGn/GO_RET1 follow Go's register ABI (ABIInternal, Go >=
 * 1.17 on amd64, 1.18 on arm64) and GO_G is the register holding the
 * current goroutine's g. */
#if defined(__TARGET_ARCH_x86)
/* amd64: integer arguments and results in RAX, RBX, RCX, RDI, RSI, R8, R9,
 * R10, R11; g in R14. */
#define GP_PC(ctx)   ((ctx)->ip)
#define GO_ARG1(ctx) ((ctx)->ax)
#define GO_ARG2(ctx) ((ctx)->bx)
#define GO_ARG3(ctx) ((ctx)->cx)
#define GO_ARG4(ctx) ((ctx)->di)
#define GO_ARG5(ctx) ((ctx)->si)
#define GO_ARG6(ctx) ((ctx)->r8)
#define GO_RET1(ctx) ((ctx)->ax)
#define GO_G(ctx)    ((ctx)->r14)
#elif defined(__TARGET_ARCH_arm64)
/* arm64: a uprobe's context is the UAPI struct user_pt_regs (regs[31], sp,
 * pc, pstate), a fixed layout; vmlinux.h is x86's, so its struct pt_regs
 * must not be used here. Integer arguments and results in R0-R15, g in
 * R28. */
struct gp_user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#define GP_REGS(ctx) ((const struct gp_user_pt_regs *)(ctx))
#define GP_PC(ctx)   (GP_REGS(ctx)->pc)
#define GO_ARG1(ctx) (GP_REGS(ctx)->regs[0])
#define GO_ARG2(ctx) (GP_REGS(ctx)->regs[1])
#define GO_ARG3(ctx) (GP_REGS(ctx)->regs[2])
#define GO_ARG4(ctx) (GP_REGS(ctx)->regs[3])
#define GO_ARG5(ctx) (GP_REGS(ctx)->regs[4])
#define GO_ARG6(ctx) (GP_REGS(ctx)->regs[5])
#define GO_RET1(ctx) (GP_REGS(ctx)->regs[0])
#define GO_G(ctx)    (GP_REGS(ctx)->regs[28])
#else
#error "gopulse BPF: define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64 (bpf2go -target amd64,arm64)"
#endif

static __always_inline __u32 current_tgid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

static __always_inline __u32 current_tid(void)
{
	return (__u32)bpf_get_current_pid_tgid();
}

/* A per-CPU counter of events the ring buffer had no room for: overload
 * drops and counts, it never blocks the traced program. */
#define DEFINE_LOST_COUNTER(name)                     \
	struct {                                      \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); \
		__uint(max_entries, 1);               \
		__type(key, __u32);                   \
		__type(value, __u64);                 \
	} name SEC(".maps")

static __always_inline void count_lost(void *map)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(map, &zero);
	if (n)
		(*n)++;
}

/* submit_batched hands a reserved record to user space without waking the
 * reader, unless wake_bytes are already waiting: a wakeup (irq_work, then
 * waking the reader thread) costs the traced thread ~4 µs on the test VM,
 * several times the program itself, and on the GC family it lands inside
 * stop-the-world. The reader polls every second (probes.Ring), so a record
 * waits at most that long; a burst wakes it early, long before the ring is
 * full. */
static __always_inline void submit_batched(void *ring, void *rec, __u64 wake_bytes)
{
	__u64 flags = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) >= wake_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(rec, flags);
}

#endif
