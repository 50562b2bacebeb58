package flowcallout

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/sidecall/sidecall/flows"
)

// The loader refuses deeper configs; the run-time guard catches what it
// cannot see (a flow reached through another route's context).
func TestFlowRefusedBeyondTheDepthLimit(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	r := flows.NewRegistry()
	Register(r, nil)
	s, err := flows.Load("kong.yml", []byte(`
services:
  - name: flow
    url: `+srv.URL+`
  - name: main
    url: http://127.0.0.1:1
    routes: [{name: orders, paths: [/orders]}]
    plugins:
      - name: flow-callout
        config: {shared_flow_service_name: flow, on_flow_error_status: 403}
`), flows.LoadOptions{Registry: r})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := flows.NewExchange("id", flows.Request{Method: "GET", Path: "/orders"}, nil)
	x.Route = s.RouteByName("orders")
	ctx := context.WithValue(context.Background(), flowDepthKey{}, maxFlowDepth)
	if err := x.Route.Pipeline.Serve(ctx, flows.PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	if x.Reply == nil || x.Reply.Status != 403 {
		t.Fatalf("reply %+v, want the 403 of on_flow_error_status", x.Reply)
	}
	if hits.Load() != 0 {
		t.Error("the flow ran beyond the depth limit")
	}
}
