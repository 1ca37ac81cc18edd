package probes

// Env is what a family needs to know of the host it runs on, given by the
// daemon when it loads the family (daemon/tracer/registry.go).
type Env struct {
	// ProcRoot is procfs's mount point, the daemon's --proc ("" is /proc).
	ProcRoot string
}

// Proc returns the procfs mount point.
func (e Env) Proc() string {
	if e.ProcRoot == "" {
		return "/proc"
	}
	return e.ProcRoot
}
