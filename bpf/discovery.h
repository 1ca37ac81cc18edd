/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
#ifndef GOPULSE_DISCOVERY_H
#define GOPULSE_DISCOVERY_H

enum disc_event_kind {
	DISC_EVENT_EXEC = 1,
	DISC_EVENT_EXIT = 2,
};

#define DISC_FILENAME_LEN 256

struct disc_event {
	__u64 ts; /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	__u64 ino; /* exec: the executable's inode */
	__u32 dev; /* exec: its filesystem, kernel dev_t (MAJOR << 20 | MINOR) */
	__u32 pid;
	__u8 kind;
	__u8 pad[7];
	char filename[DISC_FILENAME_LEN]; /* exec: as passed to execve */
};

#endif
