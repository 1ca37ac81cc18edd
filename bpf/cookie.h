/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* gp_cookie: per-probe constants of uprobe programs, with or without BPF
 * attach cookies. Included by the families whose uprobes read constants. */
#ifndef GOPULSE_COOKIE_H
#define GOPULSE_COOKIE_H

#include "gopulse.h"

/* Per-probe constants (struct offsets, registers) of uprobe programs.
 *
 * With BPF attach cookies (bpf_get_attach_cookie, Linux 5.15) each uprobe
 * link carries its own. Without them (gp_no_cookies, set by the loader from
 * a feature probe, see probes/cookies.go) the attacher writes the same
 * values into gp_cookies, keyed by what the program can see of its probe:
 * the traced executable (mm->exe_file's device and inode) and the probe's
 * address relative to the executable's first code byte (mm->start_code), the
 * same in every process of the binary, PIE or not. A uprobe runs with its
 * ip set to the probed instruction (handle_swbp). The verifier drops the
 * branch the constant rules out, so the helper is never seen by a kernel
 * that lacks it. */
volatile const __u8 gp_no_cookies = 0;

struct gp_cookie_key {
	__u64 ino;
	__u64 dev; /* the kernel's dev_t of the file system (sb->s_dev) */
	__u64 off; /* probe address - mm->start_code */
};

#define GP_COOKIE_ENTRIES 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GP_COOKIE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* empty where cookies work */
	__type(key, struct gp_cookie_key);
	__type(value, __u64);
} gp_cookies SEC(".maps");

static __always_inline __u64 gp_cookie(struct pt_regs *ctx)
{
	if (!gp_no_cookies)
		return bpf_get_attach_cookie(ctx);
	__u64 ip = GP_PC(ctx);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	struct inode *inode = BPF_CORE_READ(mm, exe_file, f_inode);
	struct gp_cookie_key key = {
		.ino = BPF_CORE_READ(inode, i_ino),
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
		.off = ip - BPF_CORE_READ(mm, start_code),
	};
	__u64 *v = bpf_map_lookup_elem(&gp_cookies, &key);
	return v ? *v : 0;
}

#endif
