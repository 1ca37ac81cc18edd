package main

import (
	"bytes"
	"encoding/json"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/daemon/api/apitest"
)

type fixtureData struct {
	socket string
	procs  []api.Process
	cycles map[int][]api.GCCycle
	status api.Status
}

func setup(t *testing.T) fixtureData {
	t.Helper()
	src := apitest.NewSource()
	procs, cycles, st := apitest.Fixture(src)
	sock := apitest.Serve(t, src, nil)
	t.Setenv(api.SocketEnv, "")
	old := now
	now = func() time.Time { return st.Started.Add(3*time.Hour + 2*time.Minute + 5*time.Second) }
	t.Cleanup(func() { now = old })
	return fixtureData{socket: sock, procs: procs, cycles: cycles, status: st}
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// row finds the table line whose first field is key and returns its fields.
func row(out, key string) []string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == key {
			return f
		}
	}
	return nil
}

func TestTableOutput(t *testing.T) {
	fx := setup(t)
	s := "--socket=" + fx.socket

	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, out string)
	}{
		{"ps running only", []string{s, "ps"}, func(t *testing.T, out string) {
			if row(out, "1234") == nil || row(out, "77") != nil {
				t.Errorf("want 1234 (running) and not 77 (exited):\n%s", out)
			}
		}},
		{"ps sort descending", []string{s, "ps", "-a", "--sort", "-total-pause"}, func(t *testing.T, out string) {
			if strings.Index(out, "\n77 ") > strings.Index(out, "\n1234 ") {
				t.Errorf("not sorted by total pause, descending:\n%s", out)
			}
		}},
		{"ps", []string{s, "ps", "--all"}, func(t *testing.T, out string) {
			want := map[string][]string{
				"PID":  {"PID", "EXE", "GO", "GC", "FORCED", "TOTAL-PAUSE", "LAST-PAUSE", "CYCLES/S", "HEAP", "GOAL", "GOGC", "LIMIT", "GOROUTINES", "HEAPLOCK-WAIT", "RELEASED", "RSS", "RUNQ-P99", "GSCHED-P99", "THREADS", "STATE"},
				"1234": {"1234", "gcload", "go1.22.3", "42", "3", "1.2ms", "66µs", "0.50", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "running"},
				"77":   {"77", "server", "go1.21.0", "7", "0", "2.5s", "250ms", "0.07", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "exited"},
			}
			for k, w := range want {
				if got := row(out, k); !reflect.DeepEqual(got, w) {
					t.Errorf("row %s = %q, want %q", k, got, w)
				}
			}
			if strings.Index(out, "\n77 ") > strings.Index(out, "\n1234 ") {
				t.Errorf("not sorted by PID:\n%s", out)
			}
		}},
		{"ps socket after command", []string{"ps", s}, func(t *testing.T, out string) {
			if row(out, "1234") == nil {
				t.Errorf("no row for 1234:\n%s", out)
			}
		}},
		{"gc", []string{s, "gc", "1234"}, func(t *testing.T, out string) {
			for _, want := range []string{
				"PID 1234  gcload  go1.22.3  (pie)\n  /usr/local/bin/gcload\n",
				"42 GC cycles (3 forced), 0.50/s; pause 1.2ms total, 66µs last; assist 3.4ms total (observed cycles)",
				"2 non-GC stop-the-world pauses, 1.1ms total",
				"running",
				"gc 12 @12.402s forced: 0.021+1.3+0.045 ms clock, pause 0.066 ms, assist 0.20 ms, 4->5->0 MB, 0 MB goal\n",
				"gc 13 @13.402s heap: 0.021+1.3+0.045 ms clock",
				"(last 20 of 42 cycles; --last N for more, 0 for all kept)",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("gc output lacks %q:\n%s", want, out)
				}
			}
			lines := gcLines(out)
			if len(lines) != 20 || !strings.HasPrefix(lines[0], "gc 11 ") || !strings.HasPrefix(lines[19], "gc 30 ") {
				t.Errorf("want cycles 11..30 oldest first, got %d lines:\n%s", len(lines), out)
			}
		}},
		{"gc last flag after pid", []string{"gc", "1234", "--last", "3", "--socket", fx.socket}, func(t *testing.T, out string) {
			if lines := gcLines(out); len(lines) != 3 || !strings.HasPrefix(lines[0], "gc 28 ") {
				t.Errorf("want cycles 28..30:\n%s", out)
			}
		}},
		{"gc last 0 is all, partial flagged", []string{s, "gc", "--last=0", "1234"}, func(t *testing.T, out string) {
			lines := gcLines(out)
			if len(lines) != 30 {
				t.Fatalf("want 30 cycles:\n%s", out)
			}
			if !strings.HasSuffix(lines[0], " (partial)") || strings.Contains(lines[1], "partial") {
				t.Errorf("partial flag wrong: %q / %q", lines[0], lines[1])
			}
		}},
		{"gc exited process", []string{s, "gc", "77"}, func(t *testing.T, out string) {
			for _, want := range []string{
				"(static, stripped)", "exited 20", "(the daemon kept the last 1 of 7 cycles)", "gc 7 @120.000s time: 0+0+0 ms clock, pause 250 ms, assist 0 ms, 0->0->0 MB, 0 MB goal",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("gc output lacks %q:\n%s", want, out)
				}
			}
		}},
		{"status", []string{s, "status"}, func(t *testing.T, out string) {
			for _, want := range []string{
				"gopulsed 0.1.0-test, up 3h2m5s (started 2025-03-01",
				"probe families: gc, stw\n",
				"processes: 2 traced, 1 dropped",
				"attach latency (last 2 binaries): 1.2ms 3.4ms (min 1.2ms, max 3.4ms)",
				"stw: symbol runtime.stopTheWorldWithSema not found",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("status lacks %q:\n%s", want, out)
				}
			}
			for k, w := range map[string][]string{
				"BINARY":                {"BINARY", "GO", "PROCESSES", "PROBES", "ERRORS"},
				"/usr/local/bin/gcload": {"/usr/local/bin/gcload", "go1.22.3", "1", "6", "-"},
				"FAMILY":                {"FAMILY", "EVENTS", "LOST", "HITS", "HITS/S", "TRAPS/S", "TRAPS/GC", "EST-COST"},
				"gc":                    {"gc", "1000", "2", "3000", "0", "0", "-", "0"},
				"stw":                   {"stw", "10", "0", "0", "0", "0", "-", "0"},
			} {
				if got := row(out, k); !reflect.DeepEqual(got, w) {
					t.Errorf("row %s = %q, want %q", k, got, w)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(tt.args...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			tt.check(t, out)
		})
	}
}

func gcLines(out string) []string {
	var l []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "gc ") {
			l = append(l, line)
		}
	}
	return l
}

func TestJSONOutput(t *testing.T) {
	fx := setup(t)
	t.Setenv(api.SocketEnv, fx.socket) // the environment gives the socket here

	tests := []struct {
		args []string
		into func() any
		want any
	}{
		{[]string{"ps", "-o", "json"}, func() any { return &[]api.Process{} }, &[]api.Process{fx.procs[0]}},
		{[]string{"ps", "--output=json", "-a"}, func() any { return &[]api.Process{} }, &[]api.Process{fx.procs[1], fx.procs[0]}},
		{[]string{"gc", "1234", "-o", "json", "--last", "5"}, func() any { return &api.GCHistory{} },
			&api.GCHistory{Process: fx.procs[0], Cycles: fx.cycles[1234][25:]}},
		{[]string{"gc", "-o=json", "1234"}, func() any { return &api.GCHistory{} },
			&api.GCHistory{Process: fx.procs[0], Cycles: fx.cycles[1234][10:]}},
		{[]string{"status", "-o", "json"}, func() any { return &api.Status{} }, &fx.status},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(tt.args...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if !strings.HasPrefix(out, "{\n  \"") && !strings.HasPrefix(out, "[\n  {") {
				t.Errorf("not indented JSON: %.40q", out)
			}
			got := tt.into()
			dec := json.NewDecoder(strings.NewReader(out))
			dec.DisallowUnknownFields()
			if err := dec.Decode(got); err != nil {
				t.Fatalf("decoding %q: %v", out, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decoded %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSocketSelection(t *testing.T) {
	fx := setup(t)
	bogus := filepath.Join(t.TempDir(), "nope.sock")

	t.Setenv(api.SocketEnv, fx.socket)
	if code, _, e := runCLI("ps"); code != 0 {
		t.Errorf("env socket: exit %d %s", code, e)
	}
	// The flag wins over the environment, before or after the command.
	for _, args := range [][]string{{"--socket", bogus, "ps"}, {"ps", "--socket", bogus}, {"-socket=" + bogus, "status"}} {
		code, _, e := runCLI(args...)
		want := "gopulse: cannot reach gopulsed at " + bogus + ": no such file (is gopulsed running? --socket overrides the path)\n"
		if code != 1 || e != want {
			t.Errorf("%q: exit %d, stderr %q, want 1 and %q", args, code, e, want)
		}
	}
	// After the command, it wins over the global flag too.
	if code, _, e := runCLI("--socket", bogus, "ps", "--socket", fx.socket); code != 0 {
		t.Errorf("command --socket over global: exit %d %s", code, e)
	}
	// Without flag nor environment: the default path.
	t.Setenv(api.SocketEnv, "")
	if _, _, e := runCLI("status"); !strings.Contains(e, api.DefaultSocketPath) {
		t.Errorf("default socket not used: %q", e)
	}
}

func TestErrors(t *testing.T) {
	fx := setup(t)
	s := "--socket=" + fx.socket

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr []string
		wantStdout []string
	}{
		// Help.
		{"help", []string{"help"}, 0, nil, []string{"Usage: gopulse [--socket PATH] <command>", "ps ", "gc PID", "status"}},
		{"--help", []string{"--help"}, 0, nil, []string{"Usage: gopulse"}},
		{"-h", []string{"-h"}, 0, nil, []string{"Usage: gopulse"}},
		{"help gc", []string{"help", "gc"}, 0, nil, []string{"Usage: gopulse [--socket PATH] gc [flags] PID", "-last N"}},
		{"ps bad sort", []string{s, "ps", "--sort", "nope"}, 2, []string{`bad --sort "nope"`, "cycles/s"}, nil},
		{"ps --help", []string{"ps", "--help"}, 0, nil, []string{"Usage: gopulse [--socket PATH] ps [flags]", "-o format"}},
		{"status -h", []string{s, "status", "-h"}, 0, nil, []string{"Usage: gopulse [--socket PATH] status"}},
		// Usage errors.
		{"no command", nil, 2, []string{"gopulse: missing command", "gopulse help"}, nil},
		{"unknown command", []string{"htop"}, 2, []string{`gopulse: unknown command "htop"`}, nil},
		{"help unknown", []string{"help", "htop"}, 2, []string{`unknown command "htop"`}, nil},
		{"help too many", []string{"help", "ps", "gc"}, 2, []string{"at most one"}, nil},
		{"unknown global flag", []string{"--sock", "x", "ps"}, 2, []string{"flag provided but not defined: -sock"}, nil},
		{"missing socket value", []string{"--socket"}, 2, []string{"flag needs an argument"}, nil},
		{"unknown flag", []string{s, "ps", "--bogus"}, 2, []string{"flag provided but not defined: -bogus", "gopulse ps --help"}, nil},
		{"bad output", []string{s, "ps", "-o", "yaml"}, 2, []string{`bad output format "yaml": expected table or json`}, nil},
		{"ps extra arg", []string{s, "ps", "1234"}, 2, []string{`ps takes no arguments, got "1234"`}, nil},
		{"status extra arg", []string{s, "status", "x"}, 2, []string{"status takes no arguments"}, nil},
		{"gc no pid", []string{s, "gc"}, 2, []string{"gc: missing PID"}, nil},
		{"gc two pids", []string{s, "gc", "1", "2"}, 2, []string{`gc: too many arguments: "2"`}, nil},
		{"gc bad pid", []string{s, "gc", "abc"}, 2, []string{`bad PID "abc": expected a process ID, a positive integer`}, nil},
		{"gc zero pid", []string{s, "gc", "0"}, 2, []string{`bad PID "0"`}, nil},
		{"gc negative pid", []string{s, "gc", "-5"}, 2, []string{"-5", "a PID is a positive integer"}, nil},
		{"gc negative pid after --", []string{s, "gc", "--", "-5"}, 2, []string{`bad PID "-5"`}, nil},
		{"gc bad last", []string{s, "gc", "1234", "--last", "x"}, 2, []string{`invalid value "x" for flag -last`}, nil},
		{"gc negative last", []string{s, "gc", "1234", "--last", "-1"}, 2, []string{"bad --last -1"}, nil},
		{"empty socket", []string{"--socket=", "ps"}, 2, []string{"empty --socket path"}, nil},
		// Runtime errors.
		{"gc unknown pid", []string{s, "gc", "4242"}, 1, []string{"gopulse: pid 4242: no such traced process"}, nil},
		{"gc unknown pid json", []string{s, "gc", "4242", "-o", "json"}, 1, []string{"gopulse: pid 4242: no such traced process"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.wantCode, errOut)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout %q lacks %q", out, w)
				}
			}
			if code != 0 && out != "" {
				t.Errorf("stdout not empty on error: %q", out)
			}
			if code == 0 && errOut != "" {
				t.Errorf("stderr not empty on success: %q", errOut)
			}
			if code != 0 && !strings.HasPrefix(errOut, "gopulse: ") {
				t.Errorf("stderr not prefixed with \"gopulse: \": %q", errOut)
			}
		})
	}
}

func TestEmptyDaemon(t *testing.T) {
	src := apitest.NewSource()
	sock := apitest.Serve(t, src, nil)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"ps"}, "no Go process traced\n"},
		{[]string{"ps", "-o", "json"}, "[]\n"},
		{[]string{"status"}, "no Go binary probed"},
		{[]string{"status", "-o", "json"}, `"probe_families": null`},
	} {
		code, out, e := runCLI(append([]string{"--socket", sock}, tt.args...)...)
		if code != 0 || !strings.Contains(out, tt.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %q", tt.args, code, out, e, tt.want)
		}
	}
}

func TestGctraceMS(t *testing.T) {
	for _, tt := range []struct {
		sec  float64
		want string
	}{
		{0, "0"}, {-1, "0"}, {0.0000004, "0"}, {21e-6, "0.021"}, {45e-6, "0.045"}, {66e-6, "0.066"},
		{0.2e-3, "0.20"}, {1.3e-3, "1.3"}, {1.34e-3, "1.3"}, {9.99e-3, "9.9"}, {10e-3, "10"}, {0.25, "250"}, {3, "3000"},
	} {
		if got := gctraceMS(tt.sec); got != tt.want {
			t.Errorf("gctraceMS(%g) = %q, want %q", tt.sec, got, tt.want)
		}
	}
}

func TestHumanSeconds(t *testing.T) {
	for _, tt := range []struct {
		sec  float64
		want string
	}{
		{0, "0"}, {850e-9, "850ns"}, {66e-6, "66µs"}, {12.5e-6, "12.5µs"}, {1.3e-3, "1.3ms"}, {1.2345e-3, "1.23ms"},
		{0.25, "250ms"}, {2.5, "2.5s"}, {59, "59s"}, {3723, "1h2m3s"}, {-0.001, "-1ms"},
	} {
		if got := humanSeconds(tt.sec); got != tt.want {
			t.Errorf("humanSeconds(%g) = %q, want %q", tt.sec, got, tt.want)
		}
	}
}

// The runtime gauges' columns show "-" until the daemon read them, and
// every column sorts, unknown figures last in both directions.
func TestPSRuntimeColumnsAndSort(t *testing.T) {
	src := apitest.NewSource()
	src.Add(api.Process{PID: 10, Exe: "/bin/a", GCCycles: 5, Runtime: &api.Runtime{
		GCGoalBytes: 8 << 20, GOGCPercent: 100, MemoryLimitBytes: math.MaxInt64, Goroutines: 12, HeapLiveBytes: 3 << 20}})
	src.Add(api.Process{PID: 20, Exe: "/bin/b", GCCycles: 50, Runtime: &api.Runtime{
		GCGoalBytes: 64 << 20, GOGCPercent: -1, MemoryLimitBytes: 64 << 20, Goroutines: 3, HeapLiveBytes: 60 << 20}})
	src.Add(api.Process{PID: 30, Exe: "/bin/c", GCCycles: 1})
	sock := apitest.Serve(t, src, nil)

	order := func(out string) []string {
		var pids []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			pids = append(pids, strings.Fields(l)[0])
		}
		return pids
	}
	for _, tt := range []struct {
		sort string
		want []string
	}{
		{"pid", []string{"10", "20", "30"}},
		{"-gc", []string{"20", "10", "30"}},
		{"GOAL", []string{"10", "20", "30"}},
		{"-goal", []string{"20", "10", "30"}},
		{"goroutines", []string{"20", "10", "30"}},
		{"-gogc", []string{"20", "10", "30"}}, // off is the largest
		{"exe", []string{"10", "20", "30"}},
		{"-exe", []string{"30", "20", "10"}},
	} {
		code, out, e := runCLI("--socket", sock, "ps", "--sort", tt.sort)
		if code != 0 {
			t.Fatalf("--sort %s: exit %d: %s", tt.sort, code, e)
		}
		if got := order(out); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("--sort %s: order %v, want %v\n%s", tt.sort, got, tt.want, out)
		}
	}
	_, out, _ := runCLI("--socket", sock, "ps")
	for pid, want := range map[string][]string{
		"10": {"8MiB", "100", "none", "12"},
		"20": {"64MiB", "off", "64MiB", "3"},
		"30": {"-", "-", "-", "-"},
	} {
		if got := row(out, pid)[9:13]; !reflect.DeepEqual(got, want) {
			t.Errorf("pid %s GOAL GOGC LIMIT GOROUTINES = %q, want %q", pid, got, want)
		}
	}
}

// A daemon that sends names raw (an older one, or a bug) still gets no
// control character onto the terminal: the CLI escapes at print.
func TestRawNamesEscaped(t *testing.T) {
	src := apitest.NewSource()
	raw := "/tmp/ev\x1b]0;pwned\x07il\u009b2J\x7f\xff"
	src.Add(api.Process{PID: 7, Exe: raw, GoVersion: "go1.26.8\x1b[31m", ServiceName: "svc\x1b[2J"})
	sock := apitest.Serve(t, src, nil)
	for _, args := range [][]string{{"ps"}, {"ps", "-a"}, {"ps", "-o", "json"}, {"gc", "7"}, {"gc", "7", "-o", "json"}, {"gc", "8"}} {
		_, out, e := runCLI(append([]string{"--socket", sock}, args...)...)
		for _, s := range []string{out, e} {
			for _, r := range s {
				if r != '\n' && r != '\t' && (r < 0x20 || r == 0x7f || 0x80 <= r && r <= 0x9f) {
					t.Errorf("%q: output holds control %U: %q", args, r, s)
					break
				}
			}
			if !utf8.ValidString(s) {
				t.Errorf("%q: output not valid UTF-8: %q", args, s)
			}
		}
		if args[len(args)-1] == "json" {
			if !json.Valid([]byte(out)) {
				t.Errorf("%q: output not valid JSON: %q", args, out)
			}
			var ps []api.Process
			if args[0] == "ps" {
				if err := json.Unmarshal([]byte(out), &ps); err != nil || len(ps) != 1 || !strings.HasPrefix(ps[0].Exe, "/tmp/ev\x1b]0;pwned") {
					t.Errorf("%q: decoded %+v, %v: want the name, JSON-escaped", args, ps, err)
				}
			}
		} else if args[0] == "ps" && !strings.Contains(out, `ev\x1b]0;pwned\x07il\u009b2J\x7f`+"\uFFFD") {
			t.Errorf("%q: name not shown escaped: %q", args, out)
		}
	}
}
