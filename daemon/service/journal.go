package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/coreos/go-systemd/v22/journal"
)

// NewLogger returns gopulsed's logger. format is auto, text, json or
// journal; auto picks journal when stderr is connected to the journal
// (JOURNAL_STREAM, as under systemd) and the journal's socket is there,
// else text on w.
func NewLogger(format string, level slog.Leveler, w io.Writer) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "auto":
		if ok, _ := journal.StderrIsJournalStream(); ok && journal.Enabled() {
			return slog.New(NewJournalHandler(level, "gopulsed", w)), nil
		}
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "journal":
		if !journal.Enabled() {
			return nil, fmt.Errorf("log format journal: the journal's socket is not there (is systemd-journald running?)")
		}
		return slog.New(NewJournalHandler(level, "gopulsed", w)), nil
	}
	return nil, fmt.Errorf("log format %q: want auto, text, json or journal", format)
}

// JournalHandler is a slog.Handler that sends each record to the systemd
// journal as a structured entry: MESSAGE is the message followed by its
// attributes as key=value (what journalctl shows), and each attribute is
// also a field of its own (PEER_UID=65534; a group's attributes are
// prefixed by the group's name, GROUP_KEY), for journalctl FIELD=value
// queries and -o json. PRIORITY follows the level.
type JournalHandler struct {
	level    slog.Leveler
	ident    string
	fallback io.Writer
	prefix   string      // group prefix of the fields, "G1_G2_"
	attrs    []flatAttr  // from WithAttrs
	send     sendFunc    // journal.Send, replaceable in tests
	mu       *sync.Mutex // guards fallback writes
}

type sendFunc func(msg string, pri journal.Priority, vars map[string]string) error

type flatAttr struct {
	key   string // dotted name for MESSAGE
	field string // journal field name
	val   string
}

// NewJournalHandler returns a handler for records at level or above,
// tagged SYSLOG_IDENTIFIER=ident. Entries the journal refuses are written
// to fallback as text.
func NewJournalHandler(level slog.Leveler, ident string, fallback io.Writer) *JournalHandler {
	return &JournalHandler{level: level, ident: ident, fallback: fallback, send: journal.Send, mu: &sync.Mutex{}}
}

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	min := slog.LevelInfo
	if h.level != nil {
		min = h.level.Level()
	}
	return l >= min
}

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append([]flatAttr(nil), h.attrs...)
	for _, a := range as {
		h2.attrs = flatten(h2.attrs, strings.ReplaceAll(strings.ToLower(h.prefix), "_", "."), h.prefix, a)
	}
	return &h2
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + fieldName(name) + "_"
	return &h2
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := append([]flatAttr(nil), h.attrs...)
	dotted := strings.ReplaceAll(strings.ToLower(h.prefix), "_", ".")
	r.Attrs(func(a slog.Attr) bool {
		attrs = flatten(attrs, dotted, h.prefix, a)
		return true
	})
	var msg strings.Builder
	msg.WriteString(r.Message)
	vars := map[string]string{}
	for _, a := range attrs {
		fmt.Fprintf(&msg, " %s=%s", a.key, quote(a.val))
		name := a.field
		if reserved[name] {
			name = "ATTR_" + name
		}
		vars[name] = a.val
	}
	vars["SYSLOG_IDENTIFIER"] = h.ident
	vars["SLOG_LEVEL"] = r.Level.String()
	if r.PC != 0 {
		fs := runtime.CallersFrames([]uintptr{r.PC})
		f, _ := fs.Next()
		if f.File != "" {
			vars["CODE_FILE"] = f.File
			vars["CODE_LINE"] = strconv.Itoa(f.Line)
			vars["CODE_FUNC"] = f.Function
		}
	}
	if err := h.send(msg.String(), priority(r.Level), vars); err != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		_, werr := fmt.Fprintf(h.fallback, "%s %s %s (journal: %v)\n", r.Time.Format(time.RFC3339), r.Level, msg.String(), err)
		return werr
	}
	return nil
}

// reserved are fields the handler sets itself or journald owns.
var reserved = map[string]bool{
	"MESSAGE": true, "MESSAGE_ID": true, "PRIORITY": true, "CODE_FILE": true, "CODE_LINE": true,
	"CODE_FUNC": true, "SYSLOG_IDENTIFIER": true, "SYSLOG_FACILITY": true, "SYSLOG_PID": true,
	"SLOG_LEVEL": true, "ERRNO": true, "INVOCATION_ID": true, "USER_INVOCATION_ID": true,
}

func flatten(out []flatAttr, dotted, prefix string, a slog.Attr) []flatAttr {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return out
	}
	if a.Value.Kind() == slog.KindGroup {
		gd, gp := dotted, prefix
		if a.Key != "" {
			gd, gp = dotted+a.Key+".", prefix+fieldName(a.Key)+"_"
		}
		for _, g := range a.Value.Group() {
			out = flatten(out, gd, gp, g)
		}
		return out
	}
	var val string
	switch a.Value.Kind() {
	case slog.KindTime:
		val = a.Value.Time().Format(time.RFC3339Nano)
	default:
		val = a.Value.String()
	}
	return append(out, flatAttr{key: dotted + a.Key, field: prefix + fieldName(a.Key), val: val})
}

// fieldName turns an attribute key into a journal field name: upper-case
// letters, digits and underscores, not starting with an underscore or a
// digit.
func fieldName(k string) string {
	var b strings.Builder
	for _, r := range k {
		switch {
		case r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			b.WriteRune(unicode.ToUpper(r))
		default:
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_")
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		s = "F" + s
	}
	return s
}

func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=") || !strconv.CanBackquote(s) {
		return strconv.Quote(s)
	}
	return s
}

func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}
