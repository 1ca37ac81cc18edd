// Package config is gopulsed's configuration: the YAML file
// (/etc/gopulse/gopulse.yaml), the command-line flags and, for the export
// settings, the standard OTEL_* environment.
//
// Precedence, lowest first: built-in defaults, the file, the environment
// (OTLP settings only, through exportconfig.FromEnv), flags given explicitly.
// Every error in the file names the file, the line and the key.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gopulse/gopulse/daemon/api"
	"github.com/gopulse/gopulse/exporters/exportconfig"
	"github.com/gopulse/gopulse/probes/catalog"
)

// DefaultPath is where gopulsed reads its configuration when --config is
// not given. A missing file at the default path is not an error.
const DefaultPath = "/etc/gopulse/gopulse.yaml"

// Config is everything gopulsed can be told.
type Config struct {
	Socket      string
	Probes      string
	History     int
	MaxPIDs     int
	MaxBinaries int
	// A non-root user's share of the two above (0: none).
	MaxPIDsPerUser     int
	MaxBinariesPerUser int
	ForgetAfter        time.Duration
	ProcRoot           string
	LogLevel           string
	LogFormat          string
	Export             exportconfig.Config
}

// Defaults returns the configuration before file, environment and flags.
func Defaults() Config {
	return Config{
		Socket:      api.DefaultSocketPath,
		Probes:      "default",
		History:     100,
		MaxPIDs:     4096,
		MaxBinaries: 1024,
		// A quarter each: a user's exec storm leaves three quarters
		// to everyone else.
		MaxPIDsPerUser:     1024,
		MaxBinariesPerUser: 256,
		ForgetAfter:        5 * time.Minute,
		ProcRoot:           "/proc",
		LogLevel:           "info",
		LogFormat:          "auto",
		Export:             exportconfig.Defaults(),
	}
}

// field is one setting: its key in the file, its flag (if any), how to
// reach it in a Config and whether a SIGHUP applies it.
type field struct {
	key  string // dotted path in the YAML file
	flag string // command-line flag, "" if none
	help string
	// live: a reload (SIGHUP) applies a change; otherwise it needs a
	// restart.
	live  bool
	ptr   func(*Config) any // *string, *int, *bool, *time.Duration or *map[string]string
	check func(v any) error // validates the value (nil: any)
}

var fields = []field{
	{key: "socket", flag: "socket", help: "Unix socket of the query API (mode 0660, group " + api.SocketGroup + "); under systemd, gopulsed.socket owns it",
		ptr: func(c *Config) any { return &c.Socket }, check: checkSocket},
	{key: "probes", flag: "probes", live: true, help: "probe families: default, all, or a comma list of " + catalog.Help(),
		ptr: func(c *Config) any { return &c.Probes }, check: checkProbes},
	{key: "history", flag: "history", help: "GC cycles kept per process",
		ptr: func(c *Config) any { return &c.History }, check: intRange(1, 100000)},
	// At most 262144 (probes.MaxProcEntries): the per-process BPF maps
	// are sized from it before they are loaded.
	{key: "max_pids", flag: "max-pids", help: "Go processes tracked at once (at most 262144: the kernel-side maps are sized from it); more are counted as dropped",
		ptr: func(c *Config) any { return &c.MaxPIDs }, check: intRange(1, 1<<18)},
	{key: "max_binaries", flag: "max-binaries", help: "Go executables (inodes) probed at once",
		ptr: func(c *Config) any { return &c.MaxBinaries }, check: intRange(1, 1<<16)},
	{key: "max_pids_per_user", flag: "max-pids-per-user", help: "running Go processes of one non-root user traced at once (0: no per-user share); more are counted as dropped",
		ptr: func(c *Config) any { return &c.MaxPIDsPerUser }, check: intRange(0, 1<<18)},
	{key: "max_binaries_per_user", flag: "max-binaries-per-user", help: "Go executables first run by one non-root user probed at once (0: no per-user share)",
		ptr: func(c *Config) any { return &c.MaxBinariesPerUser }, check: intRange(0, 1<<16)},
	{key: "forget_after", flag: "forget-after", help: "how long an exited process stays listed",
		ptr: func(c *Config) any { return &c.ForgetAfter }, check: positiveDuration},
	{key: "proc", flag: "proc", help: "procfs mount point",
		ptr: func(c *Config) any { return &c.ProcRoot }, check: nonEmpty},
	{key: "log.level", flag: "log-level", live: true, help: "debug, info, warn or error",
		ptr: func(c *Config) any { return &c.LogLevel }, check: checkLevel},
	{key: "log.format", flag: "log-format", help: "auto (journal under systemd, else text), text, json or journal",
		ptr: func(c *Config) any { return &c.LogFormat }, check: oneOf("auto", "text", "json", "journal")},
	{key: "export.interval", flag: "export-interval", live: true, help: "OTLP push interval (else OTEL_METRIC_EXPORT_INTERVAL)",
		ptr: func(c *Config) any { return &c.Export.Interval }, check: positiveDuration},
	{key: "export.per_service", flag: "export-per-service", live: true, help: "export series per service instead of per PID",
		ptr: func(c *Config) any { return &c.Export.PerService }},
	{key: "export.max_processes", flag: "export-max-processes", live: true, help: "processes exported as separate series",
		ptr: func(c *Config) any { return &c.Export.MaxProcesses }, check: intRange(1, 1<<22)},
	{key: "export.prometheus.listen", flag: "prometheus-listen", live: true, help: "address of the Prometheus /metrics endpoint (empty disables)",
		ptr: func(c *Config) any { return &c.Export.PrometheusListen }, check: checkListen},
	{key: "export.prometheus.web_config_file", flag: "web.config.file", live: true, help: "TLS and basic-auth configuration of the /metrics endpoint, the format of Prometheus' exporter-toolkit (node-exporter's --web.config.file; empty: plain HTTP, no authentication)",
		ptr: func(c *Config) any { return &c.Export.PrometheusWebConfig }, check: absPath},
	{key: "export.otlp.endpoint", flag: "otlp-endpoint", live: true, help: "OTLP collector URL, e.g. http://127.0.0.1:4317 (empty: OTEL_EXPORTER_OTLP_ENDPOINT, else no push)",
		ptr: func(c *Config) any { return &c.Export.OTLPEndpoint }},
	{key: "export.otlp.protocol", flag: "otlp-protocol", live: true, help: "grpc or http/protobuf (else OTEL_EXPORTER_OTLP_PROTOCOL)",
		ptr: func(c *Config) any { return &c.Export.OTLPProtocol }, check: oneOf("grpc", "http/protobuf")},
	{key: "export.otlp.insecure", flag: "otlp-insecure", live: true, help: "push without TLS",
		ptr: func(c *Config) any { return &c.Export.OTLPInsecure }},
	{key: "export.otlp.headers", live: true, help: "extra request headers, e.g. for authentication (else OTEL_EXPORTER_OTLP_HEADERS)",
		ptr: func(c *Config) any { return &c.Export.OTLPHeaders }},
	{key: "export.otlp.certificate", live: true, help: "CA bundle to verify the collector (else OTEL_EXPORTER_OTLP_CERTIFICATE)",
		ptr: func(c *Config) any { return &c.Export.OTLPCertificate }},
	{key: "export.otlp.timeout", live: true, help: "push timeout (else OTEL_EXPORTER_OTLP_TIMEOUT)",
		ptr: func(c *Config) any { return &c.Export.Timeout }, check: positiveDuration},
}

func fieldByKey(key string) *field {
	for i := range fields {
		if fields[i].key == key {
			return &fields[i]
		}
	}
	return nil
}

// Keys lists the file's keys, in file order.
func Keys() []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = f.key
	}
	return out
}

// Error is a configuration error. File and Line are set for errors in the
// file; Flag for a flag; Env for an environment variable.
type Error struct {
	File string
	Line int
	Key  string
	Flag string
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.Flag != "":
		return fmt.Sprintf("--%s: %s", e.Flag, e.Msg)
	case e.File != "" && e.Key != "":
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
	case e.File != "":
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.Msg
}

// Flags holds the command-line flags of gopulsed; Parse fills it.
type Flags struct {
	ConfigPath  string
	ExplicitCfg bool // --config was given
	CheckOnly   bool // --check-config
	CheckKernel bool // --check-kernel
	values      Config
	set         []string // keys of the flags given explicitly
}

// Parse parses gopulsed's command line. It does not read the file.
func Parse(args []string, fset *flag.FlagSet) (*Flags, error) {
	fl := &Flags{values: Defaults()}
	fset.StringVar(&fl.ConfigPath, "config", DefaultPath, "configuration file (a missing default file is fine)")
	fset.BoolVar(&fl.CheckOnly, "check-config", false, "validate the configuration (file, environment, flags), print the result and exit 0 or 1")
	fset.BoolVar(&fl.CheckKernel, "check-kernel", false, "probe the kernel's features, print which probe families can run (and with which fallbacks), exit 1 if one of the configured families cannot")
	for i := range fields {
		f := &fields[i]
		if f.flag == "" {
			continue
		}
		switch p := f.ptr(&fl.values).(type) {
		case *string:
			fset.StringVar(p, f.flag, *p, f.help)
		case *int:
			fset.IntVar(p, f.flag, *p, f.help)
		case *bool:
			fset.BoolVar(p, f.flag, *p, f.help)
		case *time.Duration:
			fset.DurationVar(p, f.flag, *p, f.help)
		default:
			panic(fmt.Sprintf("config: flag for %s of type %T", f.key, p))
		}
	}
	if err := fset.Parse(args); err != nil {
		return nil, err
	}
	if fset.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fset.Arg(0))
	}
	fset.Visit(func(ff *flag.Flag) {
		if ff.Name == "config" {
			fl.ExplicitCfg = true
			return
		}
		for _, f := range fields {
			if f.flag == ff.Name {
				fl.set = append(fl.set, f.key)
			}
		}
	})
	for _, key := range fl.set {
		f := fieldByKey(key)
		if f.check == nil {
			continue
		}
		if err := f.check(deref(f.ptr(&fl.values))); err != nil {
			return nil, &Error{Flag: f.flag, Msg: err.Error()}
		}
	}
	return fl, nil
}

// Load reads the configuration: defaults, then the file (fl.ConfigPath),
// then the OTEL_* environment through exportconfig.FromEnv (getenv is
// os.Getenv in production), then the flags given explicitly.
func Load(fl *Flags, getenv func(string) string) (Config, error) {
	return load(fl, getenv, exportconfig.FromEnv)
}

type envOverlay func(exportconfig.Config, func(string) string) (exportconfig.Config, error)

func load(fl *Flags, getenv func(string) string, fromEnv envOverlay) (Config, error) {
	c := Defaults()
	if err := c.readFile(fl.ConfigPath, fl.ExplicitCfg); err != nil {
		return c, err
	}
	exp, err := fromEnv(c.Export, getenv)
	if err != nil {
		return c, fmt.Errorf("environment: %w", err)
	}
	c.Export = exp
	for _, key := range fl.set {
		f := fieldByKey(key)
		assign(f.ptr(&c), f.ptr(&fl.values))
	}
	c.Export.HostName, _ = os.Hostname()
	return c, nil
}

// Families returns the probe families c.Probes names.
func (c Config) Families() ([]string, error) { return catalog.Parse(c.Probes) }

func (c *Config) readFile(path string, explicit bool) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return c.parse(path, b)
}

// Parse reads a configuration file's content over c (for tests and
// --check-config); name is the file name errors give.
func (c *Config) Parse(name string, data []byte) error { return c.parse(name, data) }

func (c *Config) parse(name string, data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return yamlError(name, err)
	}
	if len(doc.Content) == 0 { // empty or comments only
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	return c.walk(name, "", root)
}

// walk applies a mapping node whose keys are below prefix.
func (c *Config) walk(name, prefix string, n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		what := "the file"
		if prefix != "" {
			what = prefix
		}
		return &Error{File: name, Line: n.Line, Key: strings.TrimSuffix(prefix, "."),
			Msg: fmt.Sprintf("want a mapping of keys (%s), got %s", what, describe(n))}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key := prefix + kn.Value
		if kn.Kind != yaml.ScalarNode {
			return &Error{File: name, Line: kn.Line, Msg: "keys must be plain names"}
		}
		if prev, dup := seen[kn.Value]; dup {
			return &Error{File: name, Line: kn.Line, Key: key, Msg: fmt.Sprintf("given twice (first on line %d)", prev)}
		}
		seen[kn.Value] = kn.Line
		if f := fieldByKey(key); f != nil {
			if err := setNode(f.ptr(c), vn); err != nil {
				return &Error{File: name, Line: vn.Line, Key: key, Msg: err.Error()}
			}
			if f.check != nil {
				if err := f.check(deref(f.ptr(c))); err != nil {
					return &Error{File: name, Line: vn.Line, Key: key, Msg: err.Error()}
				}
			}
			continue
		}
		if isSection(key) {
			if vn.Kind == yaml.ScalarNode && vn.Tag == "!!null" {
				continue // "export:" with everything below commented out
			}
			if err := c.walk(name, key+".", vn); err != nil {
				return err
			}
			continue
		}
		return &Error{File: name, Line: kn.Line, Key: key, Msg: "unknown key" + suggest(prefix)}
	}
	return nil
}

// isSection reports whether some key lies below key.
func isSection(key string) bool {
	for _, f := range fields {
		if strings.HasPrefix(f.key, key+".") {
			return true
		}
	}
	return false
}

// suggest lists the keys known at a level, for "unknown key" errors.
func suggest(prefix string) string {
	var names []string
	for _, f := range fields {
		if rest, ok := strings.CutPrefix(f.key, prefix); ok {
			name, _, _ := strings.Cut(rest, ".")
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	where := "at the top level"
	if prefix != "" {
		where = "under " + strings.TrimSuffix(prefix, ".")
	}
	return fmt.Sprintf(" (known %s: %s)", where, strings.Join(names, ", "))
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!null":
		return "nothing (null)"
	case "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	}
	return fmt.Sprintf("%s %q", strings.TrimPrefix(n.Tag, "!!"), n.Value)
}

func setNode(p any, n *yaml.Node) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch p := p.(type) {
	case *string:
		if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
			return fmt.Errorf("want a string, got %s", describe(n))
		}
		*p = n.Value
	case *int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return fmt.Errorf("want an integer, got %s", describe(n))
		}
		v, err := strconv.ParseInt(n.Value, 0, 64)
		if err != nil || v != int64(int(v)) {
			return fmt.Errorf("want an integer, got %q", n.Value)
		}
		*p = int(v)
	case *bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return fmt.Errorf("want true or false, got %s", describe(n))
		}
		v, err := strconv.ParseBool(strings.ToLower(n.Value))
		if err != nil {
			return fmt.Errorf("want true or false, got %q", n.Value)
		}
		*p = v
	case *time.Duration:
		if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
			return fmt.Errorf("want a duration such as 30s, 5m or 1h30m, got %s", describe(n))
		}
		v, err := time.ParseDuration(n.Value)
		if err != nil {
			return fmt.Errorf("want a duration such as 30s, 5m or 1h30m, got %q", n.Value)
		}
		*p = v
	case *map[string]string:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			*p = nil
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("want a mapping of names to strings, got %s", describe(n))
		}
		m := map[string]string{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
				return fmt.Errorf("line %d: want name: value", k.Line)
			}
			if _, dup := m[k.Value]; dup {
				return fmt.Errorf("line %d: %q given twice", k.Line, k.Value)
			}
			m[k.Value] = v.Value
		}
		if len(m) == 0 {
			m = nil
		}
		*p = m
	default:
		panic(fmt.Sprintf("config: field of type %T", p))
	}
	return nil
}

// yamlError turns a YAML syntax error ("yaml: line 3: ...") into file:line.
func yamlError(name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(num); err == nil {
				// yaml.v3 gives parser errors (unlike scanner errors) a
				// 0-based line; its parser's messages are these.
				if strings.HasPrefix(tail, "did not find expected") {
					line++
				}
				return &Error{File: name, Line: line, Msg: "YAML syntax: " + tail}
			}
		}
	}
	return &Error{File: name, Line: 1, Msg: "YAML syntax: " + msg}
}

func deref(p any) any {
	switch p := p.(type) {
	case *string:
		return *p
	case *int:
		return *p
	case *bool:
		return *p
	case *time.Duration:
		return *p
	case *map[string]string:
		return *p
	}
	panic(fmt.Sprintf("config: deref %T", p))
}

func assign(dst, src any) {
	switch d := dst.(type) {
	case *string:
		*d = *src.(*string)
	case *int:
		*d = *src.(*int)
	case *bool:
		*d = *src.(*bool)
	case *time.Duration:
		*d = *src.(*time.Duration)
	case *map[string]string:
		*d = maps.Clone(*src.(*map[string]string))
	default:
		panic(fmt.Sprintf("config: assign %T", d))
	}
}

// Checks.

func intRange(lo, hi int) func(any) error {
	return func(v any) error {
		if n := v.(int); n < lo || n > hi {
			return fmt.Errorf("%d out of range: want %d..%d", n, lo, hi)
		}
		return nil
	}
}

func positiveDuration(v any) error {
	if d := v.(time.Duration); d <= 0 {
		return fmt.Errorf("%v: want a positive duration", d)
	}
	return nil
}

func nonEmpty(v any) error {
	if v.(string) == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func oneOf(vals ...string) func(any) error {
	return func(v any) error {
		if !slices.Contains(vals, v.(string)) {
			return fmt.Errorf("%q: want %s", v, strings.Join(vals, ", "))
		}
		return nil
	}
}

func checkSocket(v any) error {
	s := v.(string)
	switch {
	case s == "":
		return errors.New("must not be empty")
	case !strings.HasPrefix(s, "/"):
		return fmt.Errorf("%q: want an absolute path", s)
	case len(s) > 107:
		return fmt.Errorf("%q: too long for a Unix socket (%d bytes, at most 107)", s, len(s))
	}
	return nil
}

func checkProbes(v any) error {
	_, err := catalog.Parse(v.(string))
	return err
}

func checkLevel(v any) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(v.(string))); err != nil {
		return fmt.Errorf("%q: want debug, info, warn or error", v)
	}
	return nil
}

// absPath accepts "" or an absolute path (the daemon's working directory
// is no place to look for a file).
func absPath(v any) error {
	if s := v.(string); s != "" && !strings.HasPrefix(s, "/") {
		return fmt.Errorf("%q: want an absolute path", s)
	}
	return nil
}

func checkListen(v any) error {
	s := v.(string)
	if s == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return fmt.Errorf("%q: want host:port, e.g. 127.0.0.1:9464", s)
	}
	return nil
}

// Change is one setting that differs between two configurations.
type Change struct {
	Key      string
	Old, New string
	// Live: applied by a reload; otherwise it takes a restart.
	Live bool
}

// Diff lists the settings that differ from old to new, in file order.
// Secrets (OTLP headers) are not shown.
func Diff(old, new Config) []Change {
	var out []Change
	for _, f := range fields {
		a, b := show(deref(f.ptr(&old))), show(deref(f.ptr(&new)))
		if a == b {
			continue
		}
		if f.key == "export.otlp.headers" {
			a, b = "(hidden)", "(hidden, changed)"
		}
		out = append(out, Change{Key: f.key, Old: a, New: b, Live: f.live})
	}
	return out
}

func show(v any) string {
	if m, ok := v.(map[string]string); ok {
		keys := slices.Sorted(maps.Keys(m))
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s;", k, m[k])
		}
		return b.String()
	}
	return fmt.Sprint(v)
}

// Describe lists every setting with its value, for --check-config.
func (c Config) Describe() []string {
	var out []string
	for _, f := range fields {
		v := show(deref(f.ptr(&c)))
		if f.key == "export.otlp.headers" && v != "" {
			v = "(set, hidden)"
		}
		out = append(out, fmt.Sprintf("%s: %s", f.key, v))
	}
	return out
}
