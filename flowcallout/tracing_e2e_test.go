package flowcallout_test

import (
	"strings"
	"testing"

	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/internal/tracing/tracingtest"
)

// A traced request through nested shared flows: stream → plugin
// flow-callout → flow flow-a → (its HTTP call, and plugin flow-callout →
// flow flow-b → its HTTP call); each flow service gets its own call's span
// as parent.
func TestTraceTreeFlowCallout(t *testing.T) {
	a := startFlowServer(t, 200, `{"from":"a"}`)
	b := startFlowServer(t, 200, `{"from":"b"}`)
	cfg := `_format_version: "3.0"
services:
  - name: flow-a
    url: ` + a.URL + `/a?key=secret
    plugins:
      - name: flow-callout
        config:
          shared_flow_service_name: flow-b
  - name: flow-b
    url: ` + b.URL + `/b
  - name: api
    url: http://127.0.0.1:1
    routes:
      - name: orders
        paths: [/api/orders]
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: flow-a
`
	rcv := tracingtest.GRPC(t)
	tp := tracingtest.Provider(t, rcv)
	h := envoytest.Start(t, cfg, envoytest.Options{TracerProvider: tp})
	resp, body := h.Get(t, "/api/orders", "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	wantStatus(t, resp, body, 200)
	tracingtest.Flush(t, tp)
	spans := rcv.WaitFor(t, "flow spans", func(s []tracingtest.Span) bool {
		return len(tracingtest.Find(s, "flow flow-b")) == 1 && len(tracingtest.Find(s, "ext_proc orders")) == 1
	})
	stream := tracingtest.One(t, spans, "ext_proc orders")
	fa := tracingtest.One(t, spans, "flow flow-a")
	fb := tracingtest.One(t, spans, "flow flow-b")
	if p, _ := tracingtest.Parent(spans, fa); p.Name != "plugin flow-callout" || p.ParentID != stream.SpanID {
		t.Fatalf("flow-a not under the stream's plugin:%s", tracingtest.Dump(spans))
	}
	if p, _ := tracingtest.Parent(spans, fb); p.Name != "plugin flow-callout" || p.ParentID != fa.SpanID {
		t.Fatalf("flow-b not under flow-a's plugin:%s", tracingtest.Dump(spans))
	}
	for _, c := range []struct {
		flow tracingtest.Span
		rec  *envoytest.Recorder
	}{{fa, a}, {fb, b}} {
		var call tracingtest.Span
		for _, s := range tracingtest.Find(spans, "GET") {
			if s.ParentID == c.flow.SpanID {
				call = s
			}
		}
		if call.SpanID == "" || call.Attrs["http.response.status_code"] != "200" || strings.Contains(call.Attrs["url.full"], "secret") {
			t.Fatalf("no clean HTTP span under %s:%s", c.flow.Name, tracingtest.Dump(spans))
		}
		if tp := c.rec.Only(t).Header.Get("traceparent"); !strings.Contains(tp, "-"+call.SpanID+"-") {
			t.Errorf("%s got traceparent %q, want its call span %s", c.flow.Name, tp, call.SpanID)
		}
	}
}
