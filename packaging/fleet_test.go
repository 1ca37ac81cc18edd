package packaging

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gopulse/gopulse/internal/testenv"
)

// The alerting rules are valid and pass their unit tests (promtool, from
// the Debian package prometheus).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Unavailable(t, "no promtool (Debian package prometheus): %v", err)
	}
	for _, args := range [][]string{
		{"check", "rules", "gopulse-alerts.yml"},
		{"test", "rules", "gopulse-alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "fleet"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
}

// The dashboard is Grafana JSON with a query in every panel (their data
// is checked against a real Prometheus in exporters' e2e tests).
func TestDashboardWellFormed(t *testing.T) {
	b, err := os.ReadFile("fleet/gopulse-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string            `json:"type"`
			Title   string            `json:"title"`
			Targets []json.RawMessage `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard without uid or panels")
	}
	rows := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			rows++
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
	if rows != 3 {
		t.Errorf("%d rows, want 3 (fleet, service, process)", rows)
	}
}
