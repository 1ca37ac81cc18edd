package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Defaults shared by gopulsed and the gopulse CLI.
const (
	// DefaultSocketPath is where gopulsed listens and gopulse connects.
	DefaultSocketPath = "/run/gopulse/gopulse.sock"
	// DefaultSocketMode lets root and the members of the socket's group in.
	DefaultSocketMode os.FileMode = 0o660
	// SocketGroup is the group whose members may query gopulsed.
	SocketGroup = "gopulse"
	// SocketEnv names the environment variable that overrides the CLI's
	// default socket path.
	SocketEnv = "GOPULSE_SOCKET"
)

// maxSocketPath is the longest path that fits in sockaddr_un.sun_path on
// Linux (108 bytes including the terminating NUL).
const maxSocketPath = 107

// Listen opens the Unix socket gopulsed serves on.
//
// It creates the parent directory (0755) if missing. If a socket file is
// already there, Listen connects to it: when nobody answers (ECONNREFUSED,
// a stale socket left by a crashed daemon) it is removed; when something
// answers, Listen fails rather than steal the path from a live daemon. A
// file that is not a socket is never removed. The new socket is chmod-ed to
// mode (the daemon uses DefaultSocketMode).
//
// Closing the returned listener removes the socket file.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("listen: empty socket path")
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("listen on %s: socket path too long (%d bytes, at most %d)", path, len(path), maxSocketPath)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("listen on %s: creating directory: %w", path, err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// Lost a race with another daemon starting at the same time.
			return nil, fmt.Errorf("listen on %s: address in use (is another gopulsed starting?)", path)
		}
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode.Perm()); err != nil {
		ln.Close() // unlinks the socket
		return nil, fmt.Errorf("listen on %s: setting mode %#o: %w", path, mode.Perm(), err)
	}
	return ln, nil
}

// removeStaleSocket makes room at path for a new socket, removing only a
// socket that nobody listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen on %s: refusing to replace it: it exists and is not a socket (%s)", path, fi.Mode().Type())
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("listen on %s: another gopulsed is already listening there (stop it first, or use another socket path)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("listen on %s: cannot tell whether the existing socket is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("listen on %s: removing stale socket: %w", path, err)
	}
	return nil
}

// SetSocketGroup gives the socket at path to the named group (usually
// SocketGroup), so that its members can query the daemon through a 0660
// socket. It fails if the group does not exist.
func SetSocketGroup(path, group string) error {
	g, err := user.LookupGroup(group)
	if err != nil {
		return fmt.Errorf("socket %s: group %q: %w", path, group, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("socket %s: group %q has a non-numeric gid %q", path, group, g.Gid)
	}
	if err := os.Lchown(path, -1, gid); err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	return nil
}
