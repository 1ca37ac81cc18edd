// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * mheaplock probe family: contention of runtime.mheap_.lock (and, as one
 * figure, of the other runtime-internal locks) in traced Go processes.
 *
 * Only the contended path is observed. A runtime lock that cannot be had by
 * spinning puts its thread to sleep in futex(2); the syscalls:sys_enter_futex
 * / sys_exit_futex tracepoints time that sleep without any trap in the
 * traced program.
 *
 *  - Go < 1.24 (lock_futex.go): lock2 sleeps with futexsleep(&l.key,
 *    mutex_sleeping=2): the futex address is the lock itself and the value
 *    2 tells a lock from a note (notes wait for 0). Tracepoints only.
 *  - Go >= 1.24 (lock_spinbit.go): lock2 queues its M on the lock and
 *    sleeps on the M's own semaphore (semasleep), so the futex address says
 *    nothing. A uprobe on lock2's `CALL runtime.semasleep` instruction (found
 *    by disassembly; taken only when the thread is about to sleep) reads
 *    the lock address from the register the preceding CMPXCHG used (on
 *    arm64, where no register holds it there, from lock2's argument spill
 *    slot on the stack) and marks the thread; its next futex sleep on a negative semaphore value
 *    (semasleep's; notes wait for 0) within MARK_TTL_NS is the lock wait.
 *
 * Wait time is the futex sleep (spinning and the final re-acquisition are
 * not counted), so it is at most what the runtime itself counts.
 */
#include "gopulse.h"
#include "cookie.h"
#include "mheaplock.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define FUTEX_WAIT 0
#define FUTEX_WAIT_BITSET 9
#define FUTEX_CMD_MASK 0x7f /* ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME) */
#define MUTEX_SLEEPING 2
/* A mark older than this when the thread reaches futex is stale: semasleep
 * returned at once (the semaphore was already posted). */
#define MARK_TTL_NS 2000000

struct lock_wait {
	__u64 marked; /* spinbit: when lock2 decided to sleep */
	__u64 start;  /* futex sleep began; 0: not sleeping */
	__u32 mheap;  /* the lock is mheap_.lock */
	__u32 _pad;
};

/* Entries are created by user space only (Track): no preallocation;
 * max_entries (--max-pids) bounds. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LOCK_MAX_PROCS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* tgid */
	__type(value, struct lock_proc);
} lock_procs SEC(".maps");

/* A plain hash, not an LRU: an eviction would lose another thread's wait
 * silently. Full, the sleep is counted in lock_proc.dropped. Entries go at
 * the futex's return, or at the thread's exit (a mark semasleep never
 * slept on). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LOCK_MAX_THREADS);
	__type(key, __u32); /* tid */
	__type(value, struct lock_wait);
} lock_waits SEC(".maps");

const struct lock_proc *unused_lock_proc __attribute__((unused));
const enum lock_contract *unused_lock_contract __attribute__((unused));
const enum hist_contract *unused_hist_contract __attribute__((unused));

/* Cookie of the lock2 site: see enum lock_contract (LOCK_COOKIE_DEREF,
 * LOCK_REG_SP); probes/mheaplock writes it. */
#if defined(__TARGET_ARCH_x86)
#define LOCK_NREGS 16
#else
#define LOCK_NREGS 32
#endif
static __always_inline __u64 reg_value(struct pt_regs *ctx, __u32 r)
{
	/* Constant-offset context reads only (the verifier refuses computed
	 * ones), then an indexed read of the copy. */
	__u64 regs[LOCK_NREGS];
#if defined(__TARGET_ARCH_x86)
	regs[0] = ctx->ax;
	regs[1] = ctx->cx;
	regs[2] = ctx->dx;
	regs[3] = ctx->bx;
	regs[4] = ctx->sp;
	regs[5] = ctx->bp;
	regs[6] = ctx->si;
	regs[7] = ctx->di;
	regs[8] = ctx->r8;
	regs[9] = ctx->r9;
	regs[10] = ctx->r10;
	regs[11] = ctx->r11;
	regs[12] = ctx->r12;
	regs[13] = ctx->r13;
	regs[14] = ctx->r14;
	regs[15] = ctx->r15;
#else
	/* X0-X30, then SP as LOCK_REG_SP (31: XZR/SP in encodings). */
#pragma unroll
	for (int i = 0; i < 31; i++)
		regs[i] = GP_REGS(ctx)->regs[i];
	regs[LOCK_REG_SP] = GP_REGS(ctx)->sp;
#endif
	return regs[r & (LOCK_NREGS - 1)];
}

/* The lock's address at a lock2 site, from its cookie. */
static __always_inline __u64 lock_addr(struct pt_regs *ctx, __u64 cookie)
{
	__u64 addr = reg_value(ctx, cookie & 0xff) + (__s64)(__s32)(cookie >> 32);
	if (cookie & LOCK_COOKIE_DEREF) {
		__u64 v = 0;
		if (bpf_probe_read_user(&v, sizeof(v), (const void *)addr))
			return 0;
		addr = v;
	}
	return addr;
}

/* A contended acquisition: count it for its lock and remember the thread's
 * wait until its futex sleep ends. */
static __always_inline void begin_wait(struct lock_proc *p, __u32 tid, struct lock_wait *w)
{
	if (w->mheap)
		__sync_fetch_and_add(&p->contended, 1);
	else
		__sync_fetch_and_add(&p->other_contended, 1);
	if (bpf_map_update_elem(&lock_waits, &tid, w, BPF_ANY))
		__sync_fetch_and_add(&p->dropped, 1);
}

SEC("uprobe")
int lock_sleep(struct pt_regs *ctx)
{
	__u64 cookie = gp_cookie(ctx);
	__u64 addr = lock_addr(ctx, cookie);
	__u32 tgid = current_tgid(), tid = current_tid();
	struct lock_proc *p = bpf_map_lookup_elem(&lock_procs, &tgid);
	if (!p)
		return 0;
	struct lock_wait w = {.marked = bpf_ktime_get_ns(), .mheap = addr == p->mheap_addr};
	begin_wait(p, tid, &w);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_futex")
int lock_futex_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tgid = current_tgid();
	struct lock_proc *p = bpf_map_lookup_elem(&lock_procs, &tgid);
	if (!p)
		return 0;
	__u32 cmd = (__u32)ctx->args[1] & FUTEX_CMD_MASK;
	if (cmd != FUTEX_WAIT && cmd != FUTEX_WAIT_BITSET)
		return 0;
	__u32 tid = current_tid();
	__u64 now = bpf_ktime_get_ns();
	if (p->spinbit) {
		/* semasleep waits on m.waitsema after decrementing it: the value
		 * is negative. Notes (M parking, ...) wait for 0: a mark left by
		 * a semasleep that returned at once must not claim them. */
		if ((__s32)ctx->args[2] >= 0)
			return 0;
		struct lock_wait *w = bpf_map_lookup_elem(&lock_waits, &tid);
		if (!w || w->start)
			return 0;
		if (now - w->marked > MARK_TTL_NS) {
			bpf_map_delete_elem(&lock_waits, &tid);
			return 0;
		}
		w->start = now;
		return 0;
	}
	if ((__u32)ctx->args[2] != MUTEX_SLEEPING)
		return 0; /* a note, not a lock */
	struct lock_wait w = {.start = now, .mheap = ctx->args[0] == p->mheap_addr};
	begin_wait(p, tid, &w);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_futex")
int lock_futex_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = current_tid();
	struct lock_wait *w = bpf_map_lookup_elem(&lock_waits, &tid);
	if (!w || !w->start)
		return 0;
	__u64 d = bpf_ktime_get_ns() - w->start;
	__u32 mheap = w->mheap;
	bpf_map_delete_elem(&lock_waits, &tid);
	__u32 tgid = current_tgid();
	struct lock_proc *p = bpf_map_lookup_elem(&lock_procs, &tgid);
	if (!p)
		return 0;
	if (mheap) {
		__sync_fetch_and_add(&p->wait_ns, d);
		__sync_fetch_and_add(&p->wait_hist[hist_bucket(d)], 1);
	} else {
		__sync_fetch_and_add(&p->other_wait_ns, d);
	}
	return 0;
}

/* A new program in a traced process (exec, or a reused PID's first exec):
 * the lock's address belongs to the old program, so the entry goes, and
 * the tracer makes the new program's (Track) before its figures count. */
SEC("raw_tp/sched_process_exec")
int lock_exec(void *ctx)
{
	__u32 tgid = current_tgid();
	bpf_map_delete_elem(&lock_procs, &tgid);
	return 0;
}

/* A thread that exits leaves no wait behind (one hash delete per thread
 * exit on the host, a miss for nearly all). */
SEC("raw_tp/sched_process_exit")
int lock_thread_exit(void *ctx)
{
	__u32 tid = current_tid();
	bpf_map_delete_elem(&lock_waits, &tid);
	return 0;
}
