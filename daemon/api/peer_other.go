//go:build !linux

package api

import (
	"context"
	"net"
)

func withPeer(ctx context.Context, _ net.Conn) context.Context { return ctx }

func peerAttrs(context.Context) []any { return nil }
