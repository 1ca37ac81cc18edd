package goinspect

import "fmt"

// AttachPath names this very file for as long as the Binary is open: the
// kernel resolves /proc/self/fd/N to the open inode, so uprobes can be
// attached after the process that ran it exited, when the file was
// deleted, or when it lives in another mount namespace.
func (b *Binary) AttachPath() string {
	return fmt.Sprintf("/proc/self/fd/%d", b.file.Fd())
}
