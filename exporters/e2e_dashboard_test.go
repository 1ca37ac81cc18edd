package exporters

// The fleet views shipped in the package (packaging/fleet): every query of
// the Grafana dashboard, and every rule's expression, evaluated by a real
// Prometheus scraping a real gopulsed that traces fixtures which exercise
// each figure; every dashboard query must return data.

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gopulse/gopulse/internal/e2etest"
	"github.com/gopulse/gopulse/internal/fixturebuild"
	"github.com/gopulse/gopulse/internal/testenv"
)

type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Record string `yaml:"record"`
			Alert  string `yaml:"alert"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// gaugeMetrics are the runtime gauges' metrics (go.memory.gc.goal,
// go.memory.limit): queries on them need data only once the daemon
// exports them.
var gaugeMetrics = regexp.MustCompile(`go_memory_gc_goal_bytes|go_memory_limit_bytes`)

// dashboardQueries returns the dashboard's queries (panels' expressions,
// and label_values() variables as their series selector), with the
// template variables set to match everything.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../packaging/fleet/gopulse-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	// The fixtures' services only: the data must come from them, not
	// from whatever else runs on the host.
	subst := strings.NewReplacer("$__rate_interval", "30s", `"$job"`, `".*"`, `"$instance"`, `".*"`, `"$service"`, `"fleet-.*"`, `"$pid"`, `".*"`)
	qs := map[string]string{}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			qs[p.Title+" #"+string(rune('A'+i))] = subst.Replace(tg.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.*), *(\w+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, s)
		}
		qs["variable "+v.Name] = subst.Replace(m[1])
	}
	if len(qs) < 10 {
		t.Fatalf("only %d dashboard queries", len(qs))
	}
	return qs
}

func TestE2EDashboardAndRules(t *testing.T) {
	testenv.RequireRoot(t)
	queries := dashboardQueries(t)
	rb, err := os.ReadFile("../packaging/fleet/gopulse-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules ruleFile
	if err := yaml.Unmarshal(rb, &rules); err != nil {
		t.Fatal(err)
	}

	shape := fixturebuild.Shapes()[0]
	sick := fixturebuild.Build(t, "sick", shape)
	heaplock := fixturebuild.Build(t, "heaplock", shape)
	listen := freePort(t)
	d := e2etest.StartDaemon(t, "--prometheus-listen", listen, "--probes", "all")
	prom := startPrometheus(t, listen)
	// Known binaries: the fixtures below are traced from their start.
	e2etest.RunFixtureUntil(t, sick, nil, "done", "-mode", "healthy")
	hl := e2etest.StartFixture(t, heaplock, nil, "-iters", "10", "-workers", "2")
	hl.Expect("final")
	_ = hl.Cmd.Wait()
	d.WaitBinary(t, sick)
	d.WaitBinary(t, heaplock)
	// GC and assists (gccpu), memory released (churn), goroutine
	// scheduling (sched), heap-lock contention (heaplock).
	for _, mode := range []string{"gccpu", "churn", "sched"} {
		e2etest.StartFixture(t, sick, []string{"OTEL_SERVICE_NAME=fleet-" + mode}, "-mode", mode, "-duration", "40s", "-hold")
	}
	e2etest.StartFixture(t, heaplock, []string{"OTEL_SERVICE_NAME=fleet-heaplock"}, "-iters", "200000", "-hold")

	gauges := len(prom.query(t, `count({__name__=~"go_memory_gc_goal_bytes|go_memory_limit_bytes"})`)) > 0
	pending := map[string]string{}
	for name, q := range queries {
		if !gauges && gaugeMetrics.MatchString(q) {
			t.Logf("%s: pending the runtime-gauge metrics (not exported by this daemon yet): %s", name, q)
			continue
		}
		pending[name] = q
	}
	// Every rule's expression must be valid PromQL on the real series, and
	// the recording rules return data (the alerts need their thresholds).
	// The rules are not loaded here: a recorded name is replaced by its
	// expression.
	var recorded []string
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			expr := r.Expr
			for i := len(recorded) - 2; i >= 0; i -= 2 {
				expr = strings.ReplaceAll(expr, recorded[i], "("+recorded[i+1]+")")
			}
			if r.Record != "" {
				recorded = append(recorded, r.Record, expr)
				pending["recording rule "+r.Record] = expr
			} else {
				alerts = append(alerts, r.Alert, expr)
			}
		}
	}
	total := len(pending)
	deadline := time.Now().Add(90 * time.Second)
	for len(pending) > 0 && time.Now().Before(deadline) {
		for name, q := range pending {
			if len(prom.query(t, q)) > 0 { // fails the test on a PromQL error
				delete(pending, name)
			}
		}
		time.Sleep(time.Second)
	}
	for name, q := range pending {
		t.Errorf("%q returned no data:\n%s", name, q)
	}
	t.Logf("%d of %d dashboard queries and recording rules returned data", total-len(pending), total)
	for i := 0; i < len(alerts); i += 2 {
		t.Logf("alert %s: %d series firing now", alerts[i], len(prom.query(t, alerts[i+1])))
	}
}
