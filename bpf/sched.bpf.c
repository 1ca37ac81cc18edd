// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * sched probe family: how the OS threads of traced Go processes are
 * scheduled, from the kernel's sched_switch / sched_wakeup(_new) BTF
 * tracepoints. No uprobe: nothing runs in the traced program.
 *
 * Per thread: when it was queued (woken, or preempted while runnable),
 * switched in, switched out blocked. Run-queue latency = switched in -
 * queued; off-CPU = woken - switched out blocked; on-CPU = switched out -
 * switched in. Switches are voluntary (blocked) or involuntary (preempted),
 * as the kernel's nvcsw/nivcsw count them.
 */
#include "gopulse.h"
#include "sched.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct thread_state {
	__u64 queued;  /* runnable since; 0: not queued */
	__u64 on;      /* on CPU since; 0: not running */
	__u64 blocked; /* blocked since; 0: not blocked */
};

/* Entries are created by user space only (Track): no preallocation, the
 * memory follows the processes traced; max_entries (--max-pids) bounds. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SCHED_MAX_PROCS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* tgid */
	__type(value, struct sched_proc);
} sched_procs SEC(".maps");

/* A plain, preallocated hash (created from sched_switch, under the run
 * queue's lock: no allocation there), not an LRU: evicting a live
 * thread's state would count it again as a new thread and lose its
 * timestamps, silently rewriting its process's figures. Full, a thread is
 * counted in threads_dropped instead. Entries go when the thread exits. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SCHED_MAX_THREADS);
	__type(key, __u32); /* tid */
	__type(value, struct thread_state);
} sched_threads SEC(".maps");

const struct sched_proc *unused_sched_proc __attribute__((unused));
const enum sched_contract *unused_sched_contract __attribute__((unused));
const enum hist_contract *unused_hist_contract __attribute__((unused));

/* The most threads one process may hold in sched_threads (set by the
 * loader: a quarter of the map), so that one process spawning threads
 * cannot take every other process's room. */
volatile const __s64 sched_max_proc_threads = SCHED_MAX_THREADS / 4;

/* thread returns tid's state, creating it (and counting the thread) on
 * first sight. */
static __always_inline struct thread_state *thread(__u32 tid, struct sched_proc *p)
{
	struct thread_state *t = bpf_map_lookup_elem(&sched_threads, &tid);
	if (t)
		return t;
	if (p->threads >= sched_max_proc_threads) {
		__sync_fetch_and_add(&p->threads_dropped, 1);
		return 0;
	}
	struct thread_state zero = {};
	long err = bpf_map_update_elem(&sched_threads, &tid, &zero, BPF_NOEXIST);
	if (err == 0)
		__sync_fetch_and_add(&p->threads, 1);
	else if (err != -17 /* EEXIST: another CPU made it */)
		__sync_fetch_and_add(&p->threads_dropped, 1);
	return bpf_map_lookup_elem(&sched_threads, &tid);
}

static __always_inline void queued(struct task_struct *task, __u64 now)
{
	__u32 tgid = task->tgid, tid = task->pid;
	struct sched_proc *p = bpf_map_lookup_elem(&sched_procs, &tgid);
	if (!p)
		return;
	struct thread_state *t = thread(tid, p);
	if (!t)
		return;
	if (t->blocked) {
		__sync_fetch_and_add(&p->off_cpu_ns, now - t->blocked);
		t->blocked = 0;
	}
	if (!t->queued)
		t->queued = now;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sched_wakeup, struct task_struct *p)
{
	queued(p, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(sched_wakeup_new, struct task_struct *p)
{
	queued(p, bpf_ktime_get_ns());
	return 0;
}

/* Linux 5.18 made prev_state an argument of sched_switch (read before the
 * switch, race-free); before that the tracepoint has three arguments and
 * the state is read from prev itself (__state since 5.14, state before),
 * as the kernel's own trace output did then: a thread woken between its
 * decision to block and the tracepoint reads as runnable, so such a switch
 * counts as involuntary. Set by the loader from the kernel's BTF
 * (probes/sched). The verifier drops the branch the constant rules out, so
 * an older kernel never sees the access to a fourth argument. */
volatile const __u8 sched_prev_state_arg = 1;

struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline long task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	struct task_struct___pre514 *old = (void *)t;
	return BPF_CORE_READ(old, state);
}

SEC("tp_btf/sched_switch")
int sched_switch(__u64 *ctx)
{
	/* Arguments read by hand (BPF_PROG would declare a fixed number):
	 * preempt, prev, next[, prev_state]. */
	bool preempt = (bool)ctx[0];
	struct task_struct *prev = (struct task_struct *)ctx[1];
	struct task_struct *next = (struct task_struct *)ctx[2];
	/* Every context switch of the host comes here: leave at once when
	 * neither side is traced, before reading the clock. */
	__u32 tgid = prev->tgid, tid = prev->pid, ntgid = next->tgid;
	struct sched_proc *p = bpf_map_lookup_elem(&sched_procs, &tgid);
	struct sched_proc *np = bpf_map_lookup_elem(&sched_procs, &ntgid);
	/* (Tested one by one: compiled as one OR of the two pointers, the
	 * test would be refused by the verifier.) */
	barrier_var(p);
	if (!p && !np)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (p) {
		/* Looked up, not created: a thread is first seen when woken or
		 * switched in, and an exiting thread's last switch must not
		 * bring it back. */
		struct thread_state *t = bpf_map_lookup_elem(&sched_threads, &tid);
		if (t) {
			long prev_state;
			if (sched_prev_state_arg)
				prev_state = (long)(unsigned int)ctx[3];
			else
				prev_state = task_state(prev);
			if (t->on) {
				__sync_fetch_and_add(&p->on_cpu_ns, now - t->on);
				t->on = 0;
			}
			if (!preempt && prev_state) {
				__sync_fetch_and_add(&p->voluntary, 1);
				t->blocked = now;
			} else {
				__sync_fetch_and_add(&p->involuntary, 1);
				t->queued = now;
			}
		}
	}
	if (!np)
		return 0;
	struct thread_state *t = thread(next->pid, np);
	if (!t)
		return 0;
	if (t->queued) {
		__u64 d = now - t->queued;
		__sync_fetch_and_add(&np->rq_ns, d);
		__sync_fetch_and_add(&np->rq_hist[hist_bucket(d)], 1);
		t->queued = 0;
	}
	t->blocked = 0;
	t->on = now;
	return 0;
}

/* A thread that exits is no longer counted. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_exit, struct task_struct *task)
{
	__u32 tgid = task->tgid, tid = task->pid;
	struct thread_state *t = bpf_map_lookup_elem(&sched_threads, &tid);
	if (!t)
		return 0;
	bpf_map_delete_elem(&sched_threads, &tid);
	struct sched_proc *p = bpf_map_lookup_elem(&sched_procs, &tgid);
	if (p)
		__sync_fetch_and_add(&p->threads, -1);
	return 0;
}

/* A new program in a traced process (exec, or a reused PID's first exec):
 * its figures start from zero, before its first switch, so nothing of the
 * previous program is carried over. By now the other threads are gone
 * (de_thread); the exec'ing thread's state is dropped too (under its old
 * TID as well, when a non-leader exec'd) and made again, and counted, at
 * its next wakeup or switch in. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_exec, struct task_struct *task, pid_t old_pid)
{
	__u32 tgid = task->tgid, tid = task->pid, old = old_pid;
	struct sched_proc *p = bpf_map_lookup_elem(&sched_procs, &tgid);
	if (!p)
		return 0;
	bpf_map_delete_elem(&sched_threads, &tid);
	if (old != tid)
		bpf_map_delete_elem(&sched_threads, &old);
	__builtin_memset(p, 0, sizeof(*p));
	return 0;
}
