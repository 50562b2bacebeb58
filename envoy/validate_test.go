package envoy

import (
	"os"
	"strings"
	"testing"
)

func TestShippedBootstrapsValidate(t *testing.T) {
	for _, f := range []string{"sidecar.yaml", "front-proxy.yaml"} {
		t.Run(f, func(t *testing.T) {
			if err := ValidateBootstrapFile(f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBootstrapMutationsFail(t *testing.T) {
	base, err := os.ReadFile("sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	front, err := os.ReadFile("front-proxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	routerBlock := `          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`
	cases := []struct {
		name, src, old, new, want string
	}{
		{"router_before_ext_proc", string(base), routerBlock, "", "ext_proc must come before the router"},
		{"negative_message_timeout_inside_any", string(base), "message_timeout: 2s", "message_timeout: -1s", "MessageTimeout"},
		{"missing_http2", string(base), "          http2_protocol_options:\n            # sidecall's gRPC server allows pings this often (grpc-go's\n            # default enforcement would answer GOAWAY too_many_pings).\n            connection_keepalive: {interval: 30s, timeout: 5s}\n",
			"          http_protocol_options: {}\n", "must speak HTTP/2"},
		{"no_router", string(base), routerBlock, "", "no envoy.filters.http.router"},
		{"unknown_field", string(base), "allow_mode_override: true", "allow_mode_overide: true", "allow_mode_overide"},
		{"per_route_disabled_false", string(front), "disabled: true", "disabled: false", "Disabled"},
		{"unknown_ext_proc_cluster", string(base), "envoy_grpc: {cluster_name: sidecall}", "envoy_grpc: {cluster_name: nope}", `cluster "nope" is not defined`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(tc.src, tc.old) {
				t.Fatalf("test fixture: %q not found", tc.old)
			}
			src := strings.Replace(tc.src, tc.old, tc.new, 1)
			switch tc.name {
			case "router_before_ext_proc":
				src = strings.Replace(src, "          - name: envoy.filters.http.ext_proc\n", routerBlock+"          - name: envoy.filters.http.ext_proc\n", 1)
			case "no_router":
			}
			err := ValidateBootstrap([]byte(src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
