package service

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/user"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/gopulse/gopulse/daemon/api"
)

// Listener returns the API's listener: the Unix socket systemd passed
// (gopulsed.socket, LISTEN_FDS) or else one of our own at path, given to
// group when that group exists. activated reports which.
func Listener(log *slog.Logger, path, group string) (ln net.Listener, activated bool, err error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, false, fmt.Errorf("socket activation: %w", err)
	}
	var unix []net.Listener
	for _, l := range lns {
		if l == nil {
			continue
		}
		if _, ok := l.(*net.UnixListener); ok {
			unix = append(unix, l)
			continue
		}
		log.Warn("socket activation: ignoring a socket that is not a Unix stream socket", "addr", l.Addr().String())
		l.Close()
	}
	switch len(unix) {
	case 0:
		if len(lns) > 0 {
			return nil, false, errors.New("socket activation: systemd passed no Unix stream socket (check ListenStream= in gopulsed.socket)")
		}
	case 1:
		ln = unix[0]
		if got := ln.Addr().String(); got != path {
			log.Warn("socket activation: systemd's socket is not at the configured path; serving on systemd's",
				"systemd", got, "configured", path)
		}
		return ln, true, nil
	default:
		for _, l := range unix {
			l.Close()
		}
		return nil, false, fmt.Errorf("socket activation: systemd passed %d Unix sockets, want 1", len(unix))
	}

	ln, err = api.Listen(path, api.DefaultSocketMode)
	if err != nil {
		return nil, false, err
	}
	if _, gerr := user.LookupGroup(group); gerr != nil {
		log.Warn("socket group does not exist: only root can query the daemon", "group", group, "socket", path)
		return ln, false, nil
	}
	if err := api.SetSocketGroup(path, group); err != nil {
		// The peer check still lets root in.
		log.Warn("cannot give the socket to its group: only root can query the daemon", "err", err)
	}
	return ln, false, nil
}
