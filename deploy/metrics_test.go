package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var metricName = regexp.MustCompile(`sidecall_[a-z_]+`)

// knownMetrics reads deploy/grafana/METRICS.txt: the names sidecall exports. The lead's
// test scrapes /metrics and checks every one of them is there.
func knownMetrics(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "grafana", "METRICS.txt"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if !metricName.MatchString(l) || metricName.FindString(l) != l {
				t.Fatalf("METRICS.txt: %q is not a sidecall metric name", l)
			}
			m[l] = true
		}
	}
	return m
}

// unknownMetrics returns the sidecall_ metric names an expression uses that are not known,
// histogram series suffixes stripped.
func unknownMetrics(expr string, known map[string]bool) []string {
	var bad []string
	for _, n := range metricName.FindAllString(expr, -1) {
		base := n
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, s); ok && known[b] {
				base = b
			}
		}
		if !known[base] {
			bad = append(bad, n)
		}
	}
	return bad
}

// dashboardExprs returns every PromQL expression in the Grafana dashboard: panel targets
// (nested rows included) and templating queries.
func dashboardExprs(t *testing.T, b []byte) []string {
	t.Helper()
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs []string
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, raw := range ps {
			var p struct {
				Type    string            `json:"type"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			exprs = append(exprs, v.Definition)
		}
	}
	return exprs
}

type alertRules struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

func TestDashboardAndAlertMetrics(t *testing.T) {
	known := knownMetrics(t)
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "sidecall.json"))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	exprs := dashboardExprs(t, b)
	if len(exprs) < 20 {
		t.Fatalf("dashboard has only %d queries", len(exprs))
	}
	for _, e := range exprs {
		for _, n := range unknownMetrics(e, known) {
			t.Errorf("dashboard query uses %s, which sidecall does not export: %s", n, e)
		}
		for _, n := range metricName.FindAllString(e, -1) {
			used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")] = true
		}
	}
	ab, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ar alertRules
	if err := yaml.UnmarshalStrict(ab, &ar); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range ar.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s: needs expr, severity and summary", r.Alert)
			}
			for _, n := range unknownMetrics(r.Expr, known) {
				t.Errorf("alert %s uses %s, which sidecall does not export", r.Alert, n)
			}
		}
	}
	// The issue asks for these four.
	for _, a := range []string{"SidecallKafkaReplyTimeouts", "SidecallCalloutErrorRate", "SidecallConfigReloadFailed", "SidecallLuaTimeouts"} {
		if !alerts[a] {
			t.Errorf("no alert %s", a)
		}
	}
	// Every exported metric is on the dashboard.
	var missing []string
	for n := range known {
		if !used[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics not on the dashboard: %v", missing)
	}
}

func TestUnknownMetricIsCaught(t *testing.T) {
	known := map[string]bool{"sidecall_stream_duration_seconds": true}
	if bad := unknownMetrics(`histogram_quantile(0.9, rate(sidecall_stream_duration_seconds_bucket[5m]))`, known); len(bad) != 0 {
		t.Errorf("histogram bucket flagged: %v", bad)
	}
	if bad := unknownMetrics(`rate(sidecall_requests_totl[5m]) / rate(sidecall_stream_duration_seconds_count[5m])`, known); len(bad) != 1 || bad[0] != "sidecall_requests_totl" {
		t.Errorf("want sidecall_requests_totl flagged, got %v", bad)
	}
	if bad := unknownMetrics(`sidecall_nope_bucket`, known); len(bad) != 1 {
		t.Errorf("an unknown histogram must be flagged, got %v", bad)
	}
}

func TestExtensionPolicyChecksFail(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "envoy-gateway", "extension-policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	cases := map[string]string{
		"no processingMode": s[:strings.Index(s, "      # Without processingMode")],
		"no override":       strings.Replace(s, "allowModeOverride: true", "allowModeOverride: false", 1),
		"unknown field":     strings.Replace(s, "failOpen: false", "failOpenn: false", 1),
		"bad timeout":       strings.Replace(s, "messageTimeout: 10s", "messageTimeout: soon", 1),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			if bad == s {
				t.Fatal("fixture changed: replacement did not apply")
			}
			if _, err := decodeStream(splitDocs(t, []byte(bad))); err == nil {
				t.Fatal("the broken policy passed")
			}
		})
	}
}
