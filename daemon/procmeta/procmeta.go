// Package procmeta tells who a process is, for the labels fleet tooling
// groups by: its service name, systemd unit and container.
//
// Everything here is best effort: a file that cannot be read (the process
// exited, no permission, no cgroup v2) only means less is known, never an
// error. Reads are bounded, so a huge environment costs at most maxEnviron
// bytes.
package procmeta

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gopulse/gopulse/probes/sanitize"
)

// Info is what procmeta learns of a process.
type Info struct {
	ServiceName string // OTEL_SERVICE_NAME, else systemd unit, else executable name
	SystemdUnit string // e.g. "api.service", from the cgroup path
	ContainerID string // 64-hex id from the cgroup path, if in a container
}

const (
	// maxEnviron bounds the bytes read from /proc/PID/environ (ARG_MAX
	// on Linux is typically 2 MiB; services rarely have more than a few
	// KiB of environment).
	maxEnviron = 256 << 10
	maxCgroup  = 64 << 10
)

// Describe reads procRoot/PID/{environ,cgroup}; exe is the executable's
// path (its base name is the last resort for the service name).
func Describe(procRoot string, pid int, exe string) Info {
	if procRoot == "" {
		procRoot = "/proc"
	}
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	var info Info
	if cg, err := readBounded(filepath.Join(dir, "cgroup"), maxCgroup); err == nil {
		info.SystemdUnit, info.ContainerID = ParseCgroup(string(cg))
	}
	if env, err := readBounded(filepath.Join(dir, "environ"), maxEnviron); err == nil {
		info.ServiceName = EnvValue(env, "OTEL_SERVICE_NAME")
		if info.ServiceName == "" {
			info.ServiceName = serviceFromResourceAttrs(EnvValue(env, "OTEL_RESOURCE_ATTRIBUTES"))
		}
	}
	if info.ServiceName == "" && info.SystemdUnit != "" {
		info.ServiceName = strings.TrimSuffix(info.SystemdUnit, ".service")
	}
	if info.ServiceName == "" {
		info.ServiceName = exeName(exe)
	}
	// Whatever the source, the process's owner chose these bytes.
	info.ServiceName = sanitize.Name(info.ServiceName)
	info.SystemdUnit = sanitize.Name(info.SystemdUnit)
	info.ContainerID = sanitize.Name(info.ContainerID)
	return info
}

func exeName(exe string) string {
	exe = strings.TrimSuffix(exe, " (deleted)")
	if exe == "" {
		return ""
	}
	return filepath.Base(exe)
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// EnvValue returns the value of key in a NUL-separated environment block
// (as /proc/PID/environ), "" when absent. A truncated last entry is
// ignored.
func EnvValue(environ []byte, key string) string {
	prefix := []byte(key + "=")
	for len(environ) > 0 {
		entry := environ
		i := bytes.IndexByte(environ, 0)
		if i >= 0 {
			entry, environ = environ[:i], environ[i+1:]
		} else {
			environ = nil // possibly truncated: still usable if complete
		}
		if bytes.HasPrefix(entry, prefix) {
			return clean(string(entry[len(prefix):]))
		}
	}
	return ""
}

// serviceFromResourceAttrs finds service.name in an OTEL_RESOURCE_ATTRIBUTES
// value ("k=v,k2=v2", values percent-encoded).
func serviceFromResourceAttrs(s string) string {
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == "service.name" {
			return clean(strings.TrimSpace(v))
		}
	}
	return ""
}

// clean keeps a name printable (valid UTF-8, control characters escaped)
// and bounded.
func clean(s string) string {
	return sanitize.Name(strings.TrimSpace(s))
}

// ParseCgroup reads the content of /proc/PID/cgroup and returns the
// process's systemd unit (service or scope of a system or user manager)
// and container id, either possibly empty.
func ParseCgroup(content string) (unit, container string) {
	// Prefer the unified (v2) hierarchy "0::/path"; with cgroup v1, the
	// name=systemd or another controller's line carries the same path.
	var paths []string
	for _, line := range strings.Split(content, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			paths = append([]string{parts[2]}, paths...)
		} else {
			paths = append(paths, parts[2])
		}
	}
	for _, p := range paths {
		if container == "" {
			container = containerID(p)
		}
		if unit == "" {
			unit = systemdUnit(p)
		}
	}
	return unit, container
}

// containerID finds a container runtime's 64-hex id in a cgroup path:
// docker-ID.scope, /docker/ID, cri-containerd-ID.scope, crio-ID.scope,
// libpod-ID.scope, /kubepods/.../ID and the like.
func containerID(path string) string {
	segs := strings.Split(path, "/")
	for i := len(segs) - 1; i >= 0; i-- {
		s := strings.TrimSuffix(segs[i], ".scope")
		for _, prefix := range []string{"docker-", "cri-containerd-", "crio-", "libpod-", "containerd-", ""} {
			if id, ok := strings.CutPrefix(s, prefix); ok && isHex64(id) {
				return id
			}
		}
		// crio-conmon-ID is the monitor, not the container.
	}
	return ""
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// systemdUnit returns the innermost .service of a cgroup path, e.g.
// "nginx.service" for /system.slice/nginx.service or
// /user.slice/user-1000.slice/user@1000.service/app.slice/foo.service; a
// container's scope or a session's scope is not a unit we name a service
// after, and user@UID.service is the manager, not the unit of the process
// below it.
func systemdUnit(path string) string {
	segs := strings.Split(path, "/")
	for i := len(segs) - 1; i >= 0; i-- {
		s := segs[i]
		if !strings.HasSuffix(s, ".service") {
			continue
		}
		if strings.HasPrefix(s, "user@") && i != len(segs)-1 {
			// The user manager itself only when the process sits in it.
			continue
		}
		return s
	}
	return ""
}
