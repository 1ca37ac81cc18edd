// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * Process discovery: exec and exit of every process, from kernel
 * tracepoints (cheap; no uprobe). User space decides whether the new
 * executable is Go; exits are reported for thread-group leaders only.
 */
#include "gopulse.h"
#include <bpf/bpf_core_read.h>
#include "discovery.h"
#include "share.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, DISC_RING_BYTES);
} proc_events SEC(".maps");

DEFINE_LOST_COUNTER(proc_lost);

/* Per-UID shares of proc_events' exec events (share.h): one user's exec
 * storm, while the reader lags, does not crowd out other users' execs
 * (a lost exec costs a /proc rescan, and a short-lived process of
 * another user is missed). Exits are not shared: few, and a lost one is
 * found by the sweep. */
DEFINE_SHARES(proc_shares);

const struct disc_event *unused_disc_event __attribute__((unused));
const enum disc_contract *unused_disc_contract __attribute__((unused));
const enum disc_event_kind *unused_disc_event_kind __attribute__((unused));
const struct gp_share *unused_gp_share __attribute__((unused));
const enum share_contract *unused_share_contract __attribute__((unused));

static __always_inline struct disc_event *reserve(__u8 kind, __u32 pid)
{
	struct disc_event *e = bpf_ringbuf_reserve(&proc_events, sizeof(*e), 0);
	if (!e) {
		count_lost(&proc_lost);
		return 0;
	}
	e->pid = pid;
	e->kind = kind;
	e->ts = bpf_ktime_get_ns();
	e->ino = 0;
	e->dev = 0;
	e->filename[0] = 0;
	return e;
}

/* The executable's identity and name travel with the event: a short-lived
 * process may be gone (and /proc/PID/exe with it) before user space looks,
 * yet its binary should be probed for the next run. */
SEC("raw_tp/sched_process_exec")
int proc_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
	if (!share_take(&proc_shares, &proc_events, bpf_ktime_get_ns()))
		return 0;
	struct disc_event *e = reserve(DISC_EVENT_EXEC, current_tgid());
	if (!e)
		return 0;
	struct inode *inode = BPF_CORE_READ(bprm, file, f_inode);
	e->ino = BPF_CORE_READ(inode, i_ino);
	e->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	const char *name = BPF_CORE_READ(bprm, filename);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), name);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int proc_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)id != (__u32)(id >> 32))
		return 0;
	struct disc_event *e = reserve(DISC_EVENT_EXIT, id >> 32);
	if (e)
		bpf_ringbuf_submit(e, 0);
	return 0;
}
