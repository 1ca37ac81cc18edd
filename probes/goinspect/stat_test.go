package goinspect_test

import (
	"os"
	"syscall"
	"testing"

	"github.com/gopulse/gopulse/probes/goinspect"
)

func statID(t *testing.T, fi os.FileInfo) goinspect.FileID {
	t.Helper()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatalf("no Stat_t for %s", fi.Name())
	}
	return goinspect.FileID{Dev: uint64(st.Dev), Ino: st.Ino}
}
