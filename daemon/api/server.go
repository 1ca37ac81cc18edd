package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
)

// Source is what the server serves; the daemon's aggregator implements it.
// Its methods are called concurrently from request goroutines.
type Source interface {
	// Processes lists the traced Go processes, sorted by PID.
	Processes() []Process
	// GCHistory returns the process and its last GC cycles, oldest first;
	// last <= 0 means all the cycles kept. An unknown pid gives an error
	// wrapping ErrNoProcess.
	GCHistory(pid int, last int) (GCHistory, error)
	Status() Status
}

// Drainer is implemented by a Source whose figures arrive asynchronously
// (the daemon's ring-buffer readers): the server calls Drain before each
// answer, so that the answer includes everything recorded before the
// request arrived. Drain bounds its own wait.
type Drainer interface {
	Drain(ctx context.Context)
}

// Follower is implemented by a Source that streams a process's GC cycles
// as they complete (GET /v1/gc/PID/follow).
type Follower interface {
	// FollowGC returns pid's last cycles kept (last <= 0: none) and a
	// channel of the cycles completed after them, in order, each once;
	// the channel is closed when the process exited and its last events
	// were read, or after stop. An unknown pid gives an error wrapping
	// ErrNoProcess.
	FollowGC(pid, last int) (history []GCCycle, cycles <-chan GCCycle, stop func(), err error)
}

// ErrNoProcess is wrapped by Source.GCHistory for a pid it does not trace,
// and by Client.GCHistory when the daemon answers so.
var ErrNoProcess = errors.New("no such traced process")

// Limits of the API.
const (
	// MaxLast caps the number of GC cycles one /v1/gc request returns.
	MaxLast = 10000
	// MaxPID is Linux's PID_MAX_LIMIT: no pid is as large.
	MaxPID = 1 << 22
)

// Route paths.
const (
	PathPS     = "/v1/ps"
	PathGC     = "/v1/gc/" // followed by the pid
	PathStatus = "/v1/status"
	// PathGC + PID + PathFollowSuffix streams the cycles (newline-
	// delimited JSON GCCycle objects, one flushed per completed cycle).
	PathFollowSuffix = "/follow"
)

// Server serves a Source as JSON over HTTP/1.1 on a Unix socket.
type Server struct {
	src     Source
	log     *slog.Logger
	handler http.Handler
	// stopping is closed when the server shuts down, to end the streams
	// (which would otherwise hold the graceful shutdown to its timeout).
	stopping chan struct{}

	// Timeouts, settable by tests.
	readHeaderTimeout time.Duration
	readTimeout       time.Duration
	writeTimeout      time.Duration
	idleTimeout       time.Duration
	shutdownTimeout   time.Duration
	maxHeaderBytes    int

	// authorize, when set, vets each request's peer and answers the
	// refused ones itself (see authz_linux.go).
	authorize func(http.ResponseWriter, *http.Request) bool
}

// NewServer returns a server for src that logs to log (nil: discard).
func NewServer(src Source, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		src:               src,
		log:               log,
		readHeaderTimeout: 5 * time.Second,
		readTimeout:       10 * time.Second,
		writeTimeout:      30 * time.Second,
		idleTimeout:       60 * time.Second,
		shutdownTimeout:   3 * time.Second,
		maxHeaderBytes:    8 << 10,
		stopping:          make(chan struct{}),
	}
	mux := http.NewServeMux()
	route := func(path string, h http.HandlerFunc) {
		mux.Handle("GET "+path, h) // GET also matches HEAD
		// Same path, any other method: more general than "GET path",
		// more specific than "/".
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed,
				fmt.Sprintf("method %s not allowed on %s: use GET", r.Method, r.URL.Path))
		})
	}
	route(PathPS, s.handlePS)
	route(PathGC+"{pid}", s.handleGC)
	route(PathGC+"{pid}"+PathFollowSuffix, s.handleFollow)
	route(PathStatus, s.handleStatus)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound,
			fmt.Sprintf("unknown route %s %s: the API has GET %s, GET %sPID?last=N, GET %sPID%s?last=N and GET %s",
				r.Method, r.URL.Path, PathPS, PathGC, PathGC, PathFollowSuffix, PathStatus))
	})
	s.handler = s.middleware(mux)
	return s
}

// Handler returns the server's HTTP handler (routes, recovery, logging).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers requests on ln until ctx is cancelled, then shuts down
// gracefully (waiting a few seconds at most for requests in flight) and
// returns nil. It closes ln in all cases; for a Unix listener from Listen
// that removes the socket file. A failure of the listener before ctx is
// cancelled is returned.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.readHeaderTimeout,
		ReadTimeout:       s.readTimeout,
		WriteTimeout:      s.writeTimeout,
		IdleTimeout:       s.idleTimeout,
		MaxHeaderBytes:    s.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ConnContext:       withPeer,
	}
	var stopOnce sync.Once
	srv.RegisterOnShutdown(func() { stopOnce.Do(func() { close(s.stopping) }) })
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		// Serve has closed ln.
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("api server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("api server: graceful shutdown timed out, closing connections",
			"timeout", s.shutdownTimeout, "err", err)
		srv.Close()
	}
	<-errc
	return nil
}

// statusWriter records what a handler answered, for logging and to know
// whether a 500 can still be sent after a panic.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// middleware logs each request at debug level and turns a panic in a
// handler into a logged 500 instead of a dropped connection.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				attrs := []any{
					"method", r.Method, "path", r.URL.Path,
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()),
				}
				attrs = append(attrs, peerAttrs(r.Context())...)
				s.log.Error("api: handler panicked", attrs...)
				if sw.status == 0 {
					writeError(sw, http.StatusInternalServerError,
						"internal error in gopulsed (logged by the daemon)")
				}
			}
			if s.log.Enabled(r.Context(), slog.LevelDebug) {
				attrs := []any{
					"method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery,
					"status", sw.status, "bytes", sw.bytes, "duration", time.Since(start),
				}
				attrs = append(attrs, peerAttrs(r.Context())...)
				s.log.Debug("api request", attrs...)
			}
		}()
		if s.authorize != nil && !s.authorize(sw, r) {
			return
		}
		next.ServeHTTP(sw, r)
	})
}

// fresh lets the source catch up with what was recorded before r arrived.
func (s *Server) fresh(r *http.Request) {
	if d, ok := s.src.(Drainer); ok {
		d.Drain(r.Context())
	}
}

func (s *Server) handlePS(w http.ResponseWriter, r *http.Request) {
	s.fresh(r)
	ps := s.src.Processes()
	if ps == nil {
		ps = []Process{}
	}
	writeJSON(w, http.StatusOK, ps)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	s.fresh(r)
	writeJSON(w, http.StatusOK, s.src.Status())
}

// pathPID reads the {pid} of the path, answering 400 when it is bad.
func pathPID(w http.ResponseWriter, r *http.Request) (int, bool) {
	raw := r.PathValue("pid")
	pid, err := strconv.Atoi(raw)
	if err != nil || pid <= 0 || pid >= MaxPID {
		writeError(w, http.StatusBadRequest,
			fmt.Sprintf("bad pid %q: expected a process ID, a decimal integer from 1 to %d", raw, MaxPID-1))
		return 0, false
	}
	return pid, true
}

// streamWriteTimeout bounds each write of a stream: a client that stops
// reading is dropped, not waited on.
const streamWriteTimeout = 30 * time.Second

// handleFollow streams a process's GC cycles as they complete, one JSON
// object a line, until the process exits, the client goes or the server
// stops. ?last=N first sends the last N cycles kept (absent or 0: none).
func (s *Server) handleFollow(w http.ResponseWriter, r *http.Request) {
	pid, ok := pathPID(w, r)
	if !ok {
		return
	}
	last := 0
	if _, asked := r.URL.Query()["last"]; asked {
		n, err := parseLast(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if r.URL.Query().Get("last") != "0" {
			last = n
		}
	}
	f, ok := s.src.(Follower)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this gopulsed cannot stream GC cycles")
		return
	}
	s.fresh(r)
	history, cycles, stop, err := f.FollowGC(pid, last)
	if errors.Is(err, ErrNoProcess) {
		writeError(w, http.StatusNotFound,
			fmt.Sprintf("pid %d: %v (gopulse ps lists the traced Go processes)", pid, ErrNoProcess))
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("pid %d: follow GC: %v", pid, err))
		return
	}
	defer stop()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	send := func(c *GCCycle) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if c != nil {
			b, err := json.Marshal(c)
			if err != nil {
				return false
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	w.WriteHeader(http.StatusOK)
	for i := range history {
		if !send(&history[i]) {
			return
		}
	}
	if !send(nil) { // the header (and history) now: the client knows it follows
		return
	}
	for {
		select {
		case c, ok := <-cycles:
			if !ok || !send(&c) {
				return
			}
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		}
	}
}

func (s *Server) handleGC(w http.ResponseWriter, r *http.Request) {
	pid, ok := pathPID(w, r)
	if !ok {
		return
	}
	last, err := parseLast(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.fresh(r)
	h, err := s.src.GCHistory(pid, last)
	if errors.Is(err, ErrNoProcess) {
		writeError(w, http.StatusNotFound,
			fmt.Sprintf("pid %d: %v (gopulse ps lists the traced Go processes)", pid, ErrNoProcess))
		return
	}
	if err != nil {
		s.log.Error("api: GC history", "pid", pid, "last", last, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("pid %d: GC history: %v", pid, err))
		return
	}
	// Defend the contract against a Source that returns more than asked.
	if len(h.Cycles) > last {
		h.Cycles = h.Cycles[len(h.Cycles)-last:]
	}
	if h.Cycles == nil {
		h.Cycles = []GCCycle{}
	}
	writeJSON(w, http.StatusOK, h)
}

// parseLast reads ?last=N: absent or 0 means all kept, anything above
// MaxLast is capped. The result is in 1..MaxLast.
func parseLast(r *http.Request) (int, error) {
	q := r.URL.Query()
	vals, ok := q["last"]
	if !ok {
		return MaxLast, nil
	}
	if len(vals) != 1 {
		return 0, fmt.Errorf("bad last: given %d times, expected once", len(vals))
	}
	n, err := strconv.Atoi(vals[0])
	if err != nil || n < 0 {
		if ne := (*strconv.NumError)(nil); errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) && vals[0][0] != '-' {
			return MaxLast, nil // absurdly large: cap it
		}
		return 0, fmt.Errorf("bad last %q: expected the number of most recent cycles, a non-negative integer (0 = all kept, at most %d)", vals[0], MaxLast)
	}
	if n == 0 || n > MaxLast {
		return MaxLast, nil
	}
	return n, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		// Only non-finite floats can get here; report, don't send junk.
		code = http.StatusInternalServerError
		b, _ = json.Marshal(Error{Error: "encoding answer: " + err.Error()})
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(b)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}
