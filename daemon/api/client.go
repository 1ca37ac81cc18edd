package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxAnswerBytes bounds what the client reads from the daemon.
const maxAnswerBytes = 64 << 20

// Client queries gopulsed over its Unix socket.
type Client struct {
	socketPath string
	hc         *http.Client
	stream     *http.Client // no overall timeout: streams last until cancelled
}

// NewClient returns a client for the daemon listening at socketPath
// (DefaultSocketPath if empty).
func NewClient(socketPath string) *Client {
	if socketPath == "" {
		socketPath = DefaultSocketPath
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		DisableCompression:     true,
		MaxIdleConns:           2,
		IdleConnTimeout:        30 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &Client{
		socketPath: socketPath,
		hc:         &http.Client{Transport: tr, Timeout: 60 * time.Second},
		stream:     &http.Client{Transport: tr},
	}
}

// SocketPath is the socket the client connects to.
func (c *Client) SocketPath() string { return c.socketPath }

// Processes lists the traced Go processes, sorted by PID.
func (c *Client) Processes(ctx context.Context) ([]Process, error) {
	var ps []Process
	if err := c.get(ctx, PathPS, &ps); err != nil {
		return nil, err
	}
	return ps, nil
}

// GCHistory returns the last GC cycles of pid, oldest first; last <= 0 asks
// for all the cycles the daemon kept (at most MaxLast). An unknown pid gives
// a *StatusError that wraps ErrNoProcess.
func (c *Client) GCHistory(ctx context.Context, pid, last int) (GCHistory, error) {
	var h GCHistory
	path := PathGC + strconv.Itoa(pid)
	if last > 0 {
		path += "?last=" + strconv.Itoa(last)
	}
	err := c.get(ctx, path, &h)
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		se.err = ErrNoProcess
	}
	return h, err
}

// maxStreamLine bounds one line of a stream (a GCCycle is ~600 bytes).
const maxStreamLine = 64 << 10

// FollowGC streams pid's GC cycles as they complete: first its last
// cycles kept (last <= 0: none), then each new one, to fn, in order. It
// returns nil when the daemon ends the stream (the process exited), the
// context's error when ctx is done, or fn's error. An unknown pid gives a
// *StatusError that wraps ErrNoProcess.
func (c *Client) FollowGC(ctx context.Context, pid, last int, fn func(GCCycle) error) error {
	path := PathGC + strconv.Itoa(pid) + PathFollowSuffix
	if last > 0 {
		path += "?last=" + strconv.Itoa(last)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://gopulsed"+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.stream.Do(req)
	if err != nil {
		return connError(c.socketPath, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		err := statusError(resp, body)
		if se := (*StatusError)(nil); errors.As(err, &se) && se.Code == http.StatusNotFound {
			se.err = ErrNoProcess
		}
		return err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4096), maxStreamLine)
	for sc.Scan() {
		var cy GCCycle
		if err := json.Unmarshal(sc.Bytes(), &cy); err != nil {
			return fmt.Errorf("cannot decode a cycle streamed by gopulsed for %s: %v", path, err)
		}
		if err := fn(cy); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return connError(c.socketPath, err)
	}
	return ctx.Err()
}

// Status returns the daemon's health.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.get(ctx, PathStatus, &st)
	return st, err
}

// StatusError is a non-2xx answer of the daemon; its text is the daemon's.
type StatusError struct {
	Code    int    // HTTP status code
	Message string // the daemon's error text
	err     error  // ErrNoProcess for an unknown pid
}

func (e *StatusError) Error() string { return e.Message }
func (e *StatusError) Unwrap() error { return e.err }

// ConnError is a failure to reach the daemon; its text says what to do.
type ConnError struct {
	SocketPath string
	Err        error // the underlying network error
	msg        string
}

func (e *ConnError) Error() string { return e.msg }
func (e *ConnError) Unwrap() error { return e.Err }

func (c *Client) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://gopulsed"+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return connError(c.socketPath, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return connError(c.socketPath, err)
	}
	if len(body) > maxAnswerBytes {
		return fmt.Errorf("answer of gopulsed for %s is larger than %d MiB", path, maxAnswerBytes>>20)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return statusError(resp, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("cannot decode the answer of gopulsed for %s: %v", path, err)
	}
	return nil
}

func statusError(resp *http.Response, body []byte) error {
	var e Error
	msg := ""
	if json.Unmarshal(body, &e) == nil {
		msg = e.Error
	}
	if msg == "" {
		msg = "gopulsed answered " + resp.Status
		if t := strings.TrimSpace(string(body)); t != "" {
			if len(t) > 200 {
				t = t[:200] + "..."
			}
			msg += ": " + t
		}
	}
	return &StatusError{Code: resp.StatusCode, Message: msg}
}

// connError turns a transport error into a message that tells the user
// what is wrong and what to do.
func connError(socketPath string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	dial := errors.As(err, &oe) && oe.Op == "dial"
	prefix := "cannot reach gopulsed at " + socketPath + ": "
	var msg string
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		msg = "gopulsed at " + socketPath + " did not answer in time"
	case errors.Is(err, context.Canceled):
		msg = "request to gopulsed at " + socketPath + " cancelled"
	case dial && errors.Is(err, syscall.ENOENT):
		msg = prefix + "no such file (is gopulsed running? --socket overrides the path)"
	case dial && (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)):
		msg = prefix + "permission denied (membership of group " + SocketGroup + " or root is needed)"
	case dial && errors.Is(err, syscall.ECONNREFUSED):
		msg = prefix + "connection refused (stale socket or not a socket: is gopulsed running? --socket overrides the path)"
	case dial && errors.Is(err, syscall.ENOTDIR):
		msg = prefix + "a parent of the path is not a directory (--socket overrides the path)"
	case dial:
		msg = prefix + oe.Err.Error()
	default:
		msg = "talking to gopulsed at " + socketPath + ": " + err.Error()
	}
	return &ConnError{SocketPath: socketPath, Err: err, msg: msg}
}
