// Package sanitize makes strings that come from the host (executable
// names and paths, Go version strings, environment values, cgroup paths)
// safe to keep, print and export. Any local user chooses those bytes: a
// file name can carry terminal escapes (printed to the admin by the CLI)
// or invalid UTF-8 (one such attribute fails a whole OTLP batch). The
// daemon cleans each string once, where it enters; the CLI escapes again
// when it prints (Writer), in case a daemon did not.
//
// The result is valid UTF-8 (each invalid byte becomes U+FFFD), holds no
// control character (C0, DEL, C1, and the bidirectional overrides that
// reorder what a terminal shows) — each is written visibly instead, \x1b or
// \u0085 or \u202e — and is at most a given number of bytes (cut at a rune
// boundary, the cut marked with "…").
package sanitize

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

const (
	// MaxName bounds a name: an executable's base name, a Go version, a
	// service name, a systemd unit, a container id.
	MaxName = 256
	// MaxPath bounds a path (Linux's PATH_MAX).
	MaxPath = 4096
	// ellipsis marks a cut string.
	ellipsis = "…"
)

// Name cleans a name and caps it at MaxName bytes.
func Name(s string) string { return String(s, MaxName) }

// Path cleans a path and caps it at MaxPath bytes.
func Path(s string) string { return String(s, MaxPath) }

// String cleans s and caps it at max bytes (max < len("…")+1 means no
// room for the mark: the cut is then silent). A clean string is returned
// as is, without allocating.
func String(s string, max int) string {
	if len(s) <= max && clean(s) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), max))
	limit := max - len(ellipsis)
	if limit < 0 {
		limit = max
	}
	cut := false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && size == 1:
			piece = string(utf8.RuneError)
		case Control(r):
			piece = Escape(r)
		default:
			piece = s[i : i+size]
		}
		i += size
		// The mark needs room only when more follows.
		room := max
		if i < len(s) {
			room = limit
		}
		if b.Len()+len(piece) > room {
			cut = true
			break
		}
		b.WriteString(piece)
	}
	if cut && limit != max && b.Len()+len(ellipsis) <= max {
		b.WriteString(ellipsis)
	}
	return b.String()
}

// clean reports whether s is valid UTF-8 without control characters.
func clean(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || Control(r) {
			return false
		}
		i += size
	}
	return true
}

// Control reports whether r must not reach a terminal raw: the C0 and C1
// control characters, DEL, and the bidirectional embedding, override and
// isolate characters (they reorder the text shown after them).
func Control(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, 0x80 <= r && r <= 0x9f:
		return true
	case 0x202a <= r && r <= 0x202e, 0x2066 <= r && r <= 0x2069:
		return true
	}
	return false
}

// Escape writes a control character visibly: \xNN below U+0080, \uNNNN
// above.
func Escape(r rune) string {
	if r < 0x80 {
		return fmt.Sprintf(`\x%02x`, r)
	}
	return fmt.Sprintf(`\u%04x`, r)
}
