package envoy

import (
	"os"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// extProcOf returns the ext_proc filter of a single-listener bootstrap.
func extProcOf(t *testing.T, src []byte) *extprocfilterv3.ExternalProcessor {
	t.Helper()
	js, err := yaml.YAMLToJSON(src)
	if err != nil {
		t.Fatal(err)
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, bs); err != nil {
		t.Fatal(err)
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	for _, hf := range hcm.GetHttpFilters() {
		if hf.GetName() == extProcFilter {
			ep := &extprocfilterv3.ExternalProcessor{}
			if err := hf.GetTypedConfig().UnmarshalTo(ep); err != nil {
				t.Fatal(err)
			}
			return ep
		}
	}
	t.Fatal("no ext_proc filter")
	return nil
}

// The harness default (SidecallDefaults) must match what ships.
func TestShippedMessageTimeoutMatchesBootstraps(t *testing.T) {
	for _, f := range []string{"sidecar.yaml", "front-proxy.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ep := extProcOf(t, b)
		if got := ep.GetMessageTimeout().AsDuration(); got != ShippedMessageTimeout {
			t.Errorf("%s: message_timeout %v, SidecallDefaults uses %v", f, got, ShippedMessageTimeout)
		}
		if !ep.GetMutationRules().GetAllowAllRouting().GetValue() {
			t.Errorf("%s: mutation_rules.allow_all_routing is not true, SidecallDefaults sets it", f)
		}
	}
}

func TestSidecarBootstrapCarriesTheConfig(t *testing.T) {
	var c Config
	SidecallDefaults(&c)
	c.FailureModeAllow, c.MaxMessageTimeout, c.StatusOnError = true, 3*time.Second, 503
	out, unsupported, err := SidecarBootstrap(c, 15001, 15000, "127.0.0.1:9000", "http://127.0.0.1:8080")
	if err != nil || len(unsupported) != 0 {
		t.Fatalf("unsupported %v, err %v", unsupported, err)
	}
	if err := ValidateBootstrap(out); err != nil {
		t.Fatalf("generated bootstrap does not validate: %v\n%s", err, out)
	}
	ep := extProcOf(t, out)
	if ep.GetMessageTimeout().AsDuration() != ShippedMessageTimeout || !ep.GetFailureModeAllow() ||
		ep.GetMaxMessageTimeout().AsDuration() != 3*time.Second || ep.GetStatusOnError().GetCode() != 503 ||
		!ep.GetAllowModeOverride() || ep.GetProcessingMode().GetResponseHeaderMode() != extprocfilterv3.ProcessingMode_SKIP {
		t.Fatalf("ext_proc %v", ep)
	}
	compact := strings.Join(strings.Fields(string(out)), "") // protojson varies its spacing
	for _, want := range []string{`"portValue":9000`, `"portValue":8080`, `"portValue":15001`} {
		if !strings.Contains(compact, want) {
			t.Errorf("bootstrap lacks %s", want)
		}
	}
	_, unsupported, _ = SidecarBootstrap(Config{MetadataContext: nil, GracefulClose: true}, 1, 2, "127.0.0.1:3", "http://127.0.0.1:4")
	if strings.Join(unsupported, ",") != "GracefulClose" {
		t.Fatalf("unsupported %v", unsupported)
	}
}
