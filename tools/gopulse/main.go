// Command gopulse queries gopulsed, the daemon that traces the Go runtime
// (GC cycles, pauses...) of the Go processes on this host.
//
//	gopulse [--socket PATH] ps|gc PID|status [-o table|json]
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
