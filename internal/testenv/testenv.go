// Package testenv holds what the project's tests share about their
// environment: privilege checks that skip locally but fail in CI.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where a test that
// cannot run is a failure, not a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips the test, or fails it in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot stops the test unless it runs as root (loading BPF programs
// and attaching uprobes need CAP_BPF and CAP_PERFMON).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root to load BPF programs")
	}
}
