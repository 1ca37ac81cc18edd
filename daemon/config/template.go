package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Template returns the configuration file gopulse ships as
// /etc/gopulse/gopulse.yaml: every setting commented out with its default
// and what it does. Removing the "#" before a key gives the default
// configuration back (a test checks it).
func Template() []byte {
	var b strings.Builder
	b.WriteString(`# gopulsed configuration (YAML).
#
# Every setting is shown commented out with its default value: remove the
# "#" before a key and edit its value to change it. Command-line flags win
# over this file; the OTEL_EXPORTER_OTLP_* and OTEL_METRIC_EXPORT_*
# environment variables win over the export settings of this file.
#
# Check a change with:   gopulsed --check-config
# Apply it with:         systemctl reload gopulsed
# A reload applies the settings marked "reload"; the others are reported in
# the journal and need "systemctl restart gopulsed". Unknown keys are
# errors.
`)
	d := Defaults()
	var open []string // sections written so far
	for _, f := range fields {
		parts := strings.Split(f.key, ".")
		sections, leaf := parts[:len(parts)-1], parts[len(parts)-1]
		common := 0
		for common < len(sections) && common < len(open) && sections[common] == open[common] {
			common++
		}
		for i := common; i < len(sections); i++ {
			b.WriteString("\n" + strings.Repeat("  ", i) + sections[i] + ":\n")
		}
		if common == len(sections) {
			b.WriteString("\n")
		}
		open = slices.Clone(sections)
		indent := strings.Repeat("  ", len(sections))
		how := "restart"
		if f.live {
			how = "reload"
		}
		help := f.help
		if f.flag != "" {
			help += fmt.Sprintf(" [--%s; %s]", f.flag, how)
		} else {
			help += fmt.Sprintf(" [%s]", how)
		}
		for _, l := range wrap(help, 76-len(indent)) {
			b.WriteString(indent + "# " + l + "\n")
		}
		fmt.Fprintf(&b, "%s#%s: %s\n", indent, leaf, yamlValue(deref(f.ptr(&d))))
	}
	return []byte(b.String())
}

func yamlValue(v any) string {
	switch v := v.(type) {
	case string:
		if v == "" || strings.ContainsAny(v, ":#{}[],&*!|>'\"%@`") || strings.TrimSpace(v) != v {
			return strconv.Quote(v)
		}
		return v
	case time.Duration:
		s := v.String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return s
	case map[string]string:
		if len(v) == 0 {
			return "{}"
		}
		var parts []string
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range v {
				if !yield(k) {
					return
				}
			}
		}) {
			parts = append(parts, strconv.Quote(k)+": "+strconv.Quote(v[k]))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v)
}

func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}
