package sanitize

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"clean", "/usr/bin/api-server", 256, "/usr/bin/api-server"},
		{"unicode kept", "/opt/ü/服务", 256, "/opt/ü/服务"},
		{"ansi escape", "evil\x1b[31mred", 256, `evil\x1b[31mred`},
		{"newline and tab", "a\nb\tc", 256, `a\x0ab\x09c`},
		{"DEL", "a\x7fb", 256, `a\x7fb`},
		{"C1 CSI", "a\u009b31mb", 256, `a\u009b31mb`},
		{"bidi override", "txt.\u202eexe", 256, `txt.\u202eexe`},
		{"invalid bytes", "a\xffb\xc3", 256, "a\uFFFDb\uFFFD"},
		{"overlong NUL", "a\xc0\x80b", 256, "a\uFFFD\uFFFDb"},
		{"surrogate", "a\xed\xa0\x80b", 256, "a\uFFFD\uFFFD\uFFFDb"},
		{"cut with mark", strings.Repeat("x", 10), 8, "xxxxx…"},
		{"exact fit not cut", strings.Repeat("x", 8), 8, strings.Repeat("x", 8)},
		{"cut at rune boundary", "ab服务服务", 9, "ab服…"},
		{"escape not split", "abcd\x1b", 7, "abcd…"},
		{"tiny max", "abc", 2, "ab"},
		{"zero max", "abc", 0, ""},
		{"empty", "", 256, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := String(tc.in, tc.max)
			if got != tc.want {
				t.Errorf("String(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
			check(t, tc.in, got, tc.max)
		})
	}
}

func TestCleanDoesNotAllocate(t *testing.T) {
	s := "/usr/local/bin/some-service"
	if n := testing.AllocsPerRun(100, func() { _ = Path(s) }); n != 0 {
		t.Errorf("Path of a clean string: %v allocations, want 0", n)
	}
}

// check asserts what String promises of every output.
func check(t *testing.T, in, got string, max int) {
	t.Helper()
	if !utf8.ValidString(got) {
		t.Errorf("String(%q) = %q: not valid UTF-8", in, got)
	}
	if len(got) > max {
		t.Errorf("String(%q, %d) = %q: %d bytes", in, max, got, len(got))
	}
	for _, r := range got {
		if Control(r) {
			t.Errorf("String(%q) = %q: holds control %U", in, got, r)
		}
	}
	if again := String(got, max); again != got {
		t.Errorf("not idempotent: %q then %q", got, again)
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "go1.26.8", "a\x1b[2Jb", "\xff\xfe", "\u009b\u202e", strings.Repeat("é", 200)} {
		f.Add(s, 16)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 0 || max > 1<<16 {
			return
		}
		check(t, s, String(s, max), max)
	})
}

func TestWriter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		json   bool
		writes []string
		want   string
	}{
		{"plain table", false, []string{"PID\tEXE\n1\tapi\n"}, "PID\tEXE\n1\tapi\n"},
		{"escape in table", false, []string{"1\tev\x1b]0;pwned\x07il\n"}, "1\tev\\x1b]0;pwned\\x07il\n"},
		{"C1 and DEL", false, []string{"a\u009bb\x7f"}, `a\u009bb\x7f`},
		{"invalid", false, []string{"a\xffb"}, "a\uFFFDb"},
		{"rune split across writes", false, []string{"a\xe6", "\x9c\x8db"}, "a服b"},
		{"C1 split across writes", false, []string{"a\xc2", "\x9bb"}, `a\u009bb`},
		{"incomplete at end", false, []string{"a\xe6\x9c"}, "a\uFFFD"},
		{"json C1", true, []string{`{"exe":"a` + "\u009b\x7f" + `"}` + "\n"}, `{"exe":"a\u009b\u007f"}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			w := NewWriter(&out, tc.json)
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("got %q, want %q", out.String(), tc.want)
			}
			if tc.json && !json.Valid(out.Bytes()) {
				t.Errorf("not valid JSON: %q", out.String())
			}
		})
	}
}

func FuzzWriter(f *testing.F) {
	f.Add([]byte("a\x1b[31m\xe6\x9c\x8d\xff"), 3, false)
	f.Fuzz(func(t *testing.T, p []byte, split int, js bool) {
		var out bytes.Buffer
		w := NewWriter(&out, js)
		if split < 0 || split > len(p) {
			split = len(p) / 2
		}
		w.Write(p[:split])
		w.Write(p[split:])
		w.Flush()
		if !utf8.Valid(out.Bytes()) {
			t.Fatalf("%q: output %q not valid UTF-8", p, out.Bytes())
		}
		for _, r := range out.String() {
			if r != '\n' && r != '\t' && Control(r) {
				t.Fatalf("%q: output %q holds control %U", p, out.String(), r)
			}
		}
		if js {
			// A JSON document stays one, with the same value.
			var v, v2 any
			if json.Unmarshal(p, &v) == nil && utf8.Valid(p) {
				if err := json.Unmarshal(out.Bytes(), &v2); err != nil {
					t.Fatalf("%q: JSON broken: %q: %v", p, out.Bytes(), err)
				}
			}
		}
	})
}
