// Package procmeta tells who a process is, for the labels fleet tooling
// groups by: its service name, systemd unit and container.
package procmeta

// Info is what procmeta learns of a process.
type Info struct {
	ServiceName string // OTEL_SERVICE_NAME, else systemd unit, else executable name
	SystemdUnit string // e.g. "api.service", from the cgroup path
	ContainerID string // 64-hex id from the cgroup path, if in a container
}

// Describe reads procRoot/PID/{environ,cgroup}; exe is the executable's
// path (its base name is the last resort for the service name).
func Describe(procRoot string, pid int, exe string) Info {
	return Info{}
}
