package deploy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sidecall/sidecall/envoy"
)

// TestShippedEnvoyBootstraps runs every bootstrap sidecall ships through
// both validators: the envoy package's (deep Any validation, filter order,
// HTTP/2 cluster) and this package's sidecall-specific checks
// (allow_mode_override, xds.route_name).
func TestShippedEnvoyBootstraps(t *testing.T) {
	files, _ := filepath.Glob("../envoy/*.yaml")
	files = append(files, "compose/envoy.yaml")
	if len(files) < 3 {
		t.Fatalf("want the sidecar, front-proxy and compose bootstraps, found %v", files)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := envoy.ValidateBootstrap(data); err != nil {
			t.Errorf("%s: envoy.ValidateBootstrap: %v", f, err)
		}
		if err := validateBootstrap(data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
