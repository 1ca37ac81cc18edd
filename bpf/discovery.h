/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
#ifndef GOPULSE_DISCOVERY_H
#define GOPULSE_DISCOVERY_H

enum disc_event_kind {
	DISC_EVENT_EXEC = 1,
	DISC_EVENT_EXIT = 2,
};

/* Sizes user space relies on, generated for Go (bpf2go -type). */
enum disc_contract {
	DISC_FILENAME_LEN = 256,
	DISC_RING_BYTES = 1 << 18,
};

/* No hidden padding in what user space reads. */
#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"

struct disc_event {
	__u64 ts; /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	__u64 ino; /* exec: the executable's inode */
	__u32 dev; /* exec: its filesystem, kernel dev_t (MAJOR << 20 | MINOR) */
	__u32 pid;
	__u8 kind;
	__u8 pad[7];
	char filename[DISC_FILENAME_LEN]; /* exec: as passed to execve */
};

#pragma clang diagnostic pop

#endif
