package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecall/sidecall/envoy"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/processor"
)

// shippedSidecallConfigs are the example and deploy configs whose budgets the shipped
// Envoy settings must cover.
func shippedSidecallConfigs(t *testing.T) []string {
	t.Helper()
	root := repoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	return append(files, filepath.Join(root, "deploy", "config", "kong.yml"),
		filepath.Join(root, "deploy", "compose", "sidecall", "kong.yml"))
}

// worstBudget is the largest Pipeline.Budget (access or response side) over every route,
// global and service pipeline of the shipped sidecall configs, with where it is.
func worstBudget(t *testing.T) (time.Duration, string) {
	t.Helper()
	var worst time.Duration
	where := ""
	see := func(file, what string, p *flows.Pipeline) {
		for _, ph := range []flows.Phase{flows.PhaseAccess, flows.PhaseBodyFilter} {
			if b := p.Budget(ph); b > processor.DefaultEnvoyMaxMessageTimeout-processor.OverrideMargin {
				t.Logf("%s: %s (%s): budget %v", filepath.Base(file), what, ph, b)
			}
			if b := p.Budget(ph); b > worst {
				worst, where = b, fmt.Sprintf("%s: %s (%s)", filepath.Base(file), what, ph)
			}
		}
	}
	for _, f := range shippedSidecallConfigs(t) {
		snap, err := flows.LoadFile(f, flows.LoadOptions{Registry: registry(), NoProvision: true,
			LookupEnv: func(string) (string, bool) { return placeholder, true }})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		see(f, "global plugins", snap.Global)
		for _, r := range snap.Routes {
			see(f, "route "+r.Name, r.Pipeline)
		}
		snap.Close()
	}
	return worst, where
}

// TestShippedTimeoutsCoverBudgets: Envoy must let sidecall finish its slowest shipped route
// within the plugins' own timeouts. Where Envoy takes override_message_timeout
// (max_message_timeout set), sidecall asks for the budget plus processor.OverrideMargin, up
// to --envoy-max-message-timeout (default 10s). checkExtProc holds every shipped bootstrap and
// EnvoyFilter (plain and rendered) to max_message_timeout >= that default, and
// checkExtensionPolicy holds Envoy Gateway's messageTimeout (it has no max_message_timeout)
// to it; this test checks the default covers the worst budget of the shipped configs.
func TestShippedTimeoutsCoverBudgets(t *testing.T) {
	worst, where := worstBudget(t)
	t.Logf("worst budget %v at %s", worst, where)
	if worst == 0 {
		t.Fatal("no budget at all: the plugins report none")
	}
	need := worst + processor.OverrideMargin
	if need > processor.DefaultEnvoyMaxMessageTimeout {
		t.Errorf("%s: budget %v (+%v margin) exceeds --envoy-max-message-timeout's default %v: lower the config's timeouts",
			where, worst, processor.OverrideMargin, processor.DefaultEnvoyMaxMessageTimeout)
	}
	if envoy.ShippedMaxMessageTimeout < processor.DefaultEnvoyMaxMessageTimeout {
		t.Errorf("envoy.ShippedMaxMessageTimeout %v < --envoy-max-message-timeout default %v",
			envoy.ShippedMaxMessageTimeout, processor.DefaultEnvoyMaxMessageTimeout)
	}
	root := repoRoot(t)
	for _, f := range []string{"envoy/sidecar.yaml", "envoy/front-proxy.yaml", "deploy/compose/envoy.yaml"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "max_message_timeout: "+durationYAML(envoy.ShippedMaxMessageTimeout)) {
			t.Errorf("%s: want max_message_timeout: %s (envoy.ShippedMaxMessageTimeout)", f, durationYAML(envoy.ShippedMaxMessageTimeout))
		}
	}
}

// durationYAML writes d as Envoy's YAML duration ("10s").
func durationYAML(d time.Duration) string { return fmt.Sprintf("%gs", d.Seconds()) }
