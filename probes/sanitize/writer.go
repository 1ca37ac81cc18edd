package sanitize

import (
	"bytes"
	"fmt"
	"io"
	"unicode/utf8"
)

// Writer passes text to a terminal (or a pipe) with every control
// character but newline and tab escaped and every invalid byte replaced
// by U+FFFD, whatever the text holds: the CLI's last line of defence
// against a daemon that sent a raw name. In JSON mode the escapes are
// JSON's (\u001b), so that they stay valid inside a string (encoding/json
// already escapes C0 and invalid UTF-8, but neither DEL nor C1); a raw
// CR becomes a space.
//
// A rune split across two writes is put back together; Flush writes what
// is left of an incomplete one.
type Writer struct {
	w       io.Writer
	json    bool
	pending []byte // start of a rune split across writes, < utf8.UTFMax bytes
	buf     bytes.Buffer
}

// NewWriter returns a Writer on w; json selects JSON escapes.
func NewWriter(w io.Writer, json bool) *Writer { return &Writer{w: w, json: json} }

// Write escapes p and writes it on; it reports len(p) on success.
func (sw *Writer) Write(p []byte) (int, error) {
	in := p
	if len(sw.pending) > 0 {
		in = append(sw.pending, p...)
		sw.pending = nil
	}
	sw.buf.Reset()
	for i := 0; i < len(in); {
		c := in[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\n' || c == '\t' || !Control(rune(c)):
				sw.buf.WriteByte(c)
			case c == '\r' && sw.json:
				// Valid JSON holds a raw CR only as whitespace between
				// tokens, where a space means the same.
				sw.buf.WriteByte(' ')
			default:
				sw.buf.WriteString(sw.escape(rune(c)))
			}
			i++
			continue
		}
		if !utf8.FullRune(in[i:]) {
			sw.pending = append([]byte(nil), in[i:]...)
			break
		}
		r, size := utf8.DecodeRune(in[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			sw.buf.WriteRune(utf8.RuneError)
		case Control(r):
			sw.buf.WriteString(sw.escape(r))
		default:
			sw.buf.Write(in[i : i+size])
		}
		i += size
	}
	if _, err := sw.w.Write(sw.buf.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes an incomplete rune left by the last Write as U+FFFD.
func (sw *Writer) Flush() error {
	if len(sw.pending) == 0 {
		return nil
	}
	sw.pending = nil
	_, err := io.WriteString(sw.w, string(utf8.RuneError))
	return err
}

func (sw *Writer) escape(r rune) string {
	if sw.json {
		return fmt.Sprintf(`\u%04x`, r)
	}
	return Escape(r)
}
