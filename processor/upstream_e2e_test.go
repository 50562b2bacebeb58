package processor_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/envoy"
	"github.com/sidecall/sidecall/envoy/envoytest"
)

// upstreamConfig routes to a recording upstream whose service path is
// /base, one route per strip_path / path_handling / preserve_host case,
// and one whose flow-callout makes Envoy buffer the body first.
func upstreamConfig(upstream, flow string) string {
	return `
_format_version: "3.0"
services:
  - name: flow
    url: ` + flow + `/check
  - name: app
    url: ` + upstream + `/base
    routes:
      - name: strip
        paths: ["/api"]
      - name: keep
        paths: ["/keep"]
        strip_path: false
        preserve_host: true
      - name: v1
        paths: ["/v1"]
        path_handling: v1
      - name: regex
        paths: ["~/orders/(?<id>\\d+)"]
      - name: buffered
        paths: ["/flow"]
        plugins:
          - name: flow-callout
            config: {shared_flow_service_name: flow}
`
}

// noRoutingMutations is an Envoy whose ext_proc filter keeps Envoy's
// default mutation_rules (allow_all_routing unset), unlike the shipped ones.
func noRoutingMutations(c *envoy.Config) {
	envoy.SidecallDefaults(c)
	c.MutationRules = nil
}

// The upstream gets what Kong would send: the route's path stripped and
// joined to the service path, and the service's host unless preserve_host.
func TestE2EUpstreamPathAndHost(t *testing.T) {
	up := envoytest.Record(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	flow := envoytest.Record(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	h := envoytest.Start(t, upstreamConfig(up.URL, flow.URL), envoytest.Options{Upstream: up.URL, Envoy: envoytest.ShippedEnvoy})
	front, _ := url.Parse(h.URL)
	service := strings.TrimPrefix(up.URL, "http://")
	for _, c := range []struct {
		method, path, body string
		uri, host          string
	}{
		{"GET", "/api/orders?x=1&y", "", "/base/orders?x=1&y", service},
		{"GET", "/api", "", "/base", service},
		{"GET", "/keep/x", "", "/base/keep/x", front.Host},
		{"GET", "/v1req", "", "/basereq", service},
		{"GET", "/orders/12/items", "", "/base/items", service},
		{"GET", "/api/../../admin", "", "/base/admin", service},
		{"POST", "/flow/x", "payload", "/base/x", service},
	} {
		up.Reset()
		req := h.Request(t, c.method, "/", c.body)
		req.URL.Opaque = "//" + req.URL.Host + c.path // as written: no client-side cleaning
		resp, body := h.Do(t, req)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", c.method, c.path, resp.StatusCode, body)
		}
		got := up.Only(t)
		if got.URI != c.uri || got.Host != c.host {
			t.Errorf("%s %s: the upstream got %s with Host %s, want %s with Host %s", c.method, c.path, got.URI, got.Host, c.uri, c.host)
		}
		if c.body != "" && got.Body != c.body {
			t.Errorf("%s %s: the upstream got body %q", c.method, c.path, got.Body)
		}
	}
}

// Without allow_all_routing in the filter's mutation_rules (the shipped
// Envoy configs set it), Envoy drops the :authority change: the client's
// Host reaches the upstream, as with preserve_host: true. The path still
// follows the route.
func TestE2EUpstreamHostNeedsAllowAllRouting(t *testing.T) {
	up := envoytest.Record(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	h := envoytest.Start(t, upstreamConfig(up.URL, up.URL), envoytest.Options{Upstream: up.URL, Envoy: noRoutingMutations})
	front, _ := url.Parse(h.URL)
	resp, body := h.Get(t, "/api/orders")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := up.Only(t); got.URI != "/base/orders" || got.Host != front.Host {
		t.Errorf("the upstream got %s with Host %s", got.URI, got.Host)
	}
}
