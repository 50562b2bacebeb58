package processor

import (
	"context"
	"testing"
)

// The route's upstream path and host go out as raw_value :path and
// :authority without clear_route_cache: Envoy keeps the route it chose.
func TestRouteUpstreamMutation(t *testing.T) {
	h := start(t, `
services:
  - name: svc
    url: http://orders.internal:8080/v2
    routes:
      - name: orders
        paths: ["/orders"]
`)
	out, err := h.exchange(t, context.Background(), headers("GET", "/orders/42?x=1", true))
	if err != nil || len(out) != 1 {
		t.Fatalf("err %v, %d replies", err, len(out))
	}
	c := out[0].GetRequestHeaders().GetResponse()
	got := map[string]string{}
	for _, o := range c.GetHeaderMutation().GetSetHeaders() {
		if o.GetHeader().GetValue() != "" || o.GetAppend().GetValue() {
			t.Errorf("%v: want raw_value only, append false", o)
		}
		got[o.GetHeader().GetKey()] = string(o.GetHeader().GetRawValue())
	}
	if len(got) != 2 || got[":path"] != "/v2/42?x=1" || got[":authority"] != "orders.internal:8080" {
		t.Errorf("set headers %v", got)
	}
	if c.GetClearRouteCache() {
		t.Error("the route's own rewrite must not clear Envoy's route cache")
	}
}
