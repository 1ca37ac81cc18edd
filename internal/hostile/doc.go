// Package hostile is the hostile-host part of the test suite: a real
// gopulsed against real processes that a local attacker could run — forged
// binaries, files swapped under the daemon, escape sequences in names, PID
// reuse, exec storms, runtime.GC() loops, saturation. Each test checks that
// the daemon stays within its bounds and keeps tracing the others exactly.
// It has tests only; `make test-hostile` runs it alone.
package hostile
