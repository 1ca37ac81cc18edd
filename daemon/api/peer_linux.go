package api

import (
	"context"
	"net"
	"syscall"
)

type peerKey struct{}

// peer is the process at the other end of a Unix connection.
type peer struct {
	pid, uid, gid int
}

// withPeer records the connecting process's credentials (SO_PEERCRED) in
// the connection's context, for the request log.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, peer{pid: int(cred.Pid), uid: int(cred.Uid), gid: int(cred.Gid)})
}

func peerAttrs(ctx context.Context) []any {
	p, ok := ctx.Value(peerKey{}).(peer)
	if !ok {
		return nil
	}
	return []any{"peer_pid", p.pid, "peer_uid", p.uid, "peer_gid", p.gid}
}
