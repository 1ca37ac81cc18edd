package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopulse/gopulse/exporters/exportconfig"
)

func noEnv(string) string { return "" }

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gopulse.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func parseFlags(t *testing.T, args ...string) *Flags {
	t.Helper()
	fs := flag.NewFlagSet("gopulsed", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fl, err := Parse(args, fs)
	if err != nil {
		t.Fatalf("Parse(%q): %v", args, err)
	}
	return fl
}

func loadFile(t *testing.T, content string, args ...string) (Config, error) {
	t.Helper()
	p := writeFile(t, content)
	return Load(parseFlags(t, append([]string{"--config", p}, args...)...), noEnv)
}

const goodFile = `# a full configuration
socket: /run/gp/api.sock
probes: all
history: 500
max_pids: 100
max_binaries: 10
max_pids_per_user: 30
max_binaries_per_user: 5
forget_after: 90s
proc: /host/proc
log:
  level: debug
  format: json
export:
  interval: 15s
  per_service: true
  max_processes: 50
  prometheus:
    listen: 127.0.0.1:9999
    web_config_file: /etc/gopulse/web.yml
  otlp:
    endpoint: http://collector:4318
    protocol: http/protobuf
    insecure: true
    headers:
      authorization: Bearer x
    certificate: /etc/ssl/ca.pem
    timeout: 3s
`

func TestGoodFile(t *testing.T) {
	got, err := loadFile(t, goodFile)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Socket = "/run/gp/api.sock"
	want.Probes = "all"
	want.History = 500
	want.MaxPIDs = 100
	want.MaxBinaries = 10
	want.MaxPIDsPerUser, want.MaxBinariesPerUser = 30, 5
	want.ForgetAfter = 90 * time.Second
	want.ProcRoot = "/host/proc"
	want.LogLevel = "debug"
	want.LogFormat = "json"
	want.Export.Interval = 15 * time.Second
	want.Export.PerService = true
	want.Export.MaxProcesses = 50
	want.Export.PrometheusListen = "127.0.0.1:9999"
	want.Export.PrometheusWebConfig = "/etc/gopulse/web.yml"
	want.Export.OTLPEndpoint = "http://collector:4318"
	want.Export.OTLPProtocol = "http/protobuf"
	want.Export.OTLPInsecure = true
	want.Export.OTLPHeaders = map[string]string{"authorization": "Bearer x"}
	want.Export.OTLPCertificate = "/etc/ssl/ca.pem"
	want.Export.Timeout = 3 * time.Second
	want.Export.HostName = got.Export.HostName
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	// Every key of the table is in the good file: a new setting must be
	// added to this test.
	for _, k := range Keys() {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !regexp.MustCompile(`(?m)^\s*` + leaf + `:`).MatchString(goodFile) {
			t.Errorf("key %s missing from goodFile", k)
		}
	}
}

func TestEmptyAndCommentOnlyFiles(t *testing.T) {
	for _, content := range []string{"", "# nothing\n", "log:\nexport:\n  otlp:\n", "---\n"} {
		got, err := loadFile(t, content)
		if err != nil {
			t.Errorf("%q: %v", content, err)
			continue
		}
		want := Defaults()
		want.Export.HostName = got.Export.HostName
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %+v, want defaults", content, got)
		}
	}
}

// The shipped file parses to the defaults as it is, and with every key
// uncommented too: its comments say the defaults truly.
func TestTemplate(t *testing.T) {
	tmpl := string(Template())
	uncomment := regexp.MustCompile(`(?m)^(\s*)#([a-z_]+:)`)
	if n := len(uncomment.FindAllString(tmpl, -1)); n != len(fields) {
		t.Errorf("template has %d commented settings, want %d (one per key)", n, len(fields))
	}
	for name, content := range map[string]string{
		"as shipped":  tmpl,
		"uncommented": uncomment.ReplaceAllString(tmpl, "$1$2"),
	} {
		var c Config = Defaults()
		c.History = -1 // must be overwritten by the uncommented file
		if name == "as shipped" {
			c.History = 100
		}
		if err := c.Parse("gopulse.yaml", []byte(content)); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, content)
		}
		if !reflect.DeepEqual(c, Defaults()) {
			t.Errorf("%s: parses to %+v, want the defaults %+v", name, c, Defaults())
		}
	}
	// The file in the repository is the generated one.
	shipped, err := os.ReadFile("../../packaging/gopulse.yaml")
	if err == nil && string(shipped) != tmpl {
		t.Errorf("packaging/gopulse.yaml differs from config.Template(): regenerate it with go run ./packaging/genconfig > packaging/gopulse.yaml")
	}
}

func TestFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		line          int
		key, msg      string // key "" for errors about no key
	}{
		{"unknown top-level key", "history: 5\nhistroy: 6\n", 2, "histroy", "unknown key (known at the top level: socket, probes"},
		{"unknown nested key", "export:\n  otlp:\n    endpont: http://x\n", 3, "export.otlp.endpont", "unknown key (known under export.otlp: endpoint, protocol"},
		{"not an integer", "max_pids: many\n", 1, "max_pids", `want an integer, got the string "many"`},
		{"float for integer", "history: 1.5\n", 1, "history", `want an integer, got float "1.5"`},
		{"out of range", "\n\nhistory: 0\n", 3, "history", "0 out of range: want 1..100000"},
		{"not a bool", "export:\n  per_service: yes\n", 2, "export.per_service", `want true or false, got the string "yes"`},
		{"bad duration", "forget_after: 5 minutes\n", 1, "forget_after", `want a duration such as 30s`},
		{"negative duration", "export:\n  interval: -1s\n", 2, "export.interval", "want a positive duration"},
		{"bad enum", "log:\n  format: xml\n", 2, "log.format", `"xml": want auto, text, json, journal`},
		{"bad level", "log:\n  level: loud\n", 2, "log.level", `"loud": want debug, info, warn or error`},
		{"bad probes", "probes: gc,nosuch\n", 1, "probes", `unknown probe family "nosuch"`},
		{"relative socket", "socket: gopulse.sock\n", 1, "socket", "want an absolute path"},
		{"bad listen", "export:\n  prometheus:\n    listen: 9464\n", 3, "export.prometheus.listen", "want host:port"},
		{"relative web config", "export:\n  prometheus:\n    web_config_file: web.yml\n", 3, "export.prometheus.web_config_file", "want an absolute path"},
		{"bad protocol", "export:\n  otlp:\n    protocol: http/json\n", 3, "export.otlp.protocol", "want grpc, http/protobuf"},
		{"duplicate key", "history: 5\nlog:\n  level: info\nhistory: 6\n", 4, "history", "given twice (first on line 1)"},
		{"section not a mapping", "log: debug\n", 1, "log", "want a mapping of keys (log.), got the string \"debug\""},
		{"list for string", "proc:\n  - /proc\n", 2, "proc", "want a string, got a list"},
		{"null for string", "socket:\n", 1, "socket", "want a string, got nothing (null)"},
		{"headers not a map", "export:\n  otlp:\n    headers: x=y\n", 3, "export.otlp.headers", "want a mapping of names to strings"},
		{"top level not a mapping", "- a\n- b\n", 1, "", "want a mapping of keys (the file), got a list"},
		{"syntax error", "history: 5\nlog:\n  level: [debug\n", 3, "", "YAML syntax: did not find expected ',' or ']'"},
		{"scanner error", "history: 5\nlog:\n  level: \"debug\n", 3, "", "YAML syntax: found unexpected end of stream"},
		{"tab indentation", "log:\n\tlevel: debug\n", 2, "", "YAML syntax:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.content)
			_, err := Load(parseFlags(t, "--config", p), noEnv)
			if err == nil {
				t.Fatalf("no error for %q", tc.content)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *config.Error", err, err)
			}
			if ce.File != p || ce.Line != tc.line || ce.Key != tc.key {
				t.Errorf("error %q: at %s:%d key %q, want %s:%d key %q", err, ce.File, ce.Line, ce.Key, p, tc.line, tc.key)
			}
			prefix := p + ":" + strconv.Itoa(tc.line) + ": "
			if tc.key != "" {
				prefix += tc.key + ": "
			}
			if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tc.msg) {
				t.Errorf("error %q: want prefix %q and %q in it", msg, prefix, tc.msg)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	dir := t.TempDir()
	// An explicit --config must exist.
	fl := parseFlags(t, "--config", filepath.Join(dir, "nope.yaml"))
	if _, err := Load(fl, noEnv); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("explicit missing file: err = %v, want an error naming it", err)
	}
	// The default path may be missing: pretend it is one in dir.
	fl = parseFlags(t)
	fl.ConfigPath = filepath.Join(dir, "absent.yaml")
	c, err := Load(fl, noEnv)
	if err != nil {
		t.Fatalf("missing default file: %v", err)
	}
	if c.History != Defaults().History {
		t.Errorf("missing default file: not the defaults: %+v", c)
	}
	// A directory is not a file.
	if _, err := Load(parseFlags(t, "--config", dir), noEnv); err == nil {
		t.Errorf("directory as --config: no error")
	}
}

func TestFlagsWin(t *testing.T) {
	content := "history: 50\nprobes: gc\nlog:\n  level: warn\nexport:\n  per_service: true\n  otlp:\n    endpoint: http://file:4317\n"
	c, err := loadFile(t, content, "--history", "70", "--log-level", "error", "--export-per-service=false", "--otlp-endpoint", "http://flag:4317")
	if err != nil {
		t.Fatal(err)
	}
	if c.History != 70 || c.LogLevel != "error" || c.Export.PerService || c.Export.OTLPEndpoint != "http://flag:4317" {
		t.Errorf("flags did not win: %+v", c)
	}
	if c.Probes != "gc" {
		t.Errorf("probes = %q, want the file's gc (no flag given)", c.Probes)
	}
	// A flag equal to the default still wins over the file.
	c, err = loadFile(t, content, "--history", "100")
	if err != nil {
		t.Fatal(err)
	}
	if c.History != 100 {
		t.Errorf("--history 100 (the default) over file's 50: got %d", c.History)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--history", "0"}, "--history: 0 out of range"},
		{[]string{"--log-format", "xml"}, `--log-format: "xml": want`},
		{[]string{"--probes", "nope"}, `--probes: unknown probe family "nope"`},
		{[]string{"--socket", "rel.sock"}, "--socket: \"rel.sock\": want an absolute path"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
	} {
		fs := flag.NewFlagSet("gopulsed", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		_, err := Parse(tc.args, fs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.args, err, tc.want)
		}
	}
}

// Precedence for the export settings: file < environment < flags.
func TestEnvPrecedence(t *testing.T) {
	p := writeFile(t, "export:\n  otlp:\n    endpoint: http://file:4317\n    protocol: grpc\n  interval: 30s\n")
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317",
		"OTEL_METRIC_EXPORT_INTERVAL": "5000", // ms
	}
	getenv := func(k string) string { return env[k] }

	// The overlay gets the file's values as its base.
	var base exportconfig.Config
	spy := func(b exportconfig.Config, ge func(string) string) (exportconfig.Config, error) {
		base = b
		return exportconfig.FromEnv(b, ge)
	}
	c, err := load(parseFlags(t, "--config", p), getenv, spy)
	if err != nil {
		t.Fatal(err)
	}
	if base.OTLPEndpoint != "http://file:4317" || base.Interval != 30*time.Second {
		t.Errorf("environment overlay got base %+v, want the file's settings", base)
	}
	if c.Export.OTLPEndpoint != "http://env:4317" || c.Export.Interval != 5*time.Second {
		t.Errorf("environment did not win over the file: %+v", c.Export)
	}
	// Flags win over the environment.
	c, err = Load(parseFlags(t, "--config", p, "--otlp-endpoint", "http://flag:4317"), getenv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Export.OTLPEndpoint != "http://flag:4317" || c.Export.Interval != 5*time.Second {
		t.Errorf("flag did not win over the environment: %+v", c.Export)
	}
	// Without environment, the file's.
	c, err = Load(parseFlags(t, "--config", p), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Export.OTLPEndpoint != "http://file:4317" {
		t.Errorf("file's endpoint lost: %+v", c.Export)
	}
	// A bad variable is an error that says it comes from the environment.
	env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "carrier-pigeon"
	_, err = Load(parseFlags(t, "--config", p), getenv)
	if err == nil || !strings.Contains(err.Error(), "environment: ") || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Errorf("bad OTEL_EXPORTER_OTLP_PROTOCOL: err = %v, want it named", err)
	}
}

func TestDiff(t *testing.T) {
	a := Defaults()
	b := a
	b.Probes = "gc"
	b.Socket = "/run/x.sock"
	b.Export.OTLPHeaders = map[string]string{"k": "secret"}
	got := Diff(a, b)
	want := []Change{
		{Key: "socket", Old: a.Socket, New: "/run/x.sock", Live: false},
		{Key: "probes", Old: "default", New: "gc", Live: true},
		{Key: "export.otlp.headers", Old: "(hidden)", New: "(hidden, changed)", Live: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Diff = %+v\nwant %+v", got, want)
	}
	if d := Diff(a, a); len(d) != 0 {
		t.Errorf("Diff of equal configs = %+v", d)
	}
}
