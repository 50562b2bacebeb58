package callout_test

import (
	"strings"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/internal/tracing/tracingtest"
)

const tracedConfig = `_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:1
    routes:
      - name: traced
        paths: ["/traced"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: user
                  request:
                    url: "{{CS}}/user?token=secret"
                - name: own
                  request:
                    url: "{{CS}}/own"
                    headers:
                      custom:
                        traceparent: 00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01
`

const (
	clientTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientParent = "00f067aa0ba902b7"
	clientTP     = "00-" + clientTrace + "-" + clientParent + "-01"
)

// spanIDOf is the parent-id field of a traceparent.
func spanIDOf(t *testing.T, tp string) string {
	t.Helper()
	f := strings.Split(tp, "-")
	if len(f) != 4 {
		t.Fatalf("bad traceparent %q", tp)
	}
	return f[2]
}

// A request traced in through the Envoy stand-in yields stream → plugin
// → one client span per callout at the in-process receiver, over either
// OTLP protocol; the callout and the upstream get the span ids as parents.
func TestTraceTreeCallout(t *testing.T) {
	for _, proto := range []string{"grpc", "http/protobuf"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			var rcv *tracingtest.Receiver
			if proto == "grpc" {
				rcv = tracingtest.GRPC(t)
			} else {
				rcv = tracingtest.HTTP(t)
			}
			tp := tracingtest.Provider(t, rcv)
			cs := startRecServer(t, nil)
			up := startEchoUpstream(t)
			h := envoytest.Start(t, fill(tracedConfig, "CS", cs.URL), envoytest.Options{Upstream: up.URL, TracerProvider: tp})

			resp, body := h.Get(t, "/traced", "traceparent", clientTP, "tracestate", "vendor=1", "baggage", "tenant=acme", "x-request-id", "rid-1")
			wantStatus(t, resp, body, 200)
			tracingtest.Flush(t, tp)
			spans := rcv.WaitFor(t, "stream span", func(s []tracingtest.Span) bool { return len(tracingtest.Find(s, "ext_proc traced")) == 1 })

			stream := tracingtest.One(t, spans, "ext_proc traced")
			if stream.TraceID != clientTrace || stream.ParentID != clientParent || stream.Kind != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("stream span not the client's child: %+v", stream)
			}
			if stream.Attrs["sidecall.route"] != "traced" || stream.Attrs["sidecall.request_id"] != "rid-1" || stream.Attrs["http.response.status_code"] != "200" {
				t.Errorf("stream attributes: %v", stream.Attrs)
			}
			plugin := tracingtest.One(t, spans, "plugin request-callout")
			if plugin.ParentID != stream.SpanID || plugin.Attrs["sidecall.phase"] != "access" {
				t.Errorf("plugin span %+v not under the stream %s", plugin, tracingtest.Dump(spans))
			}
			attempts := tracingtest.Find(spans, "GET")
			if len(attempts) != 2 {
				t.Fatalf("want 2 callout spans, got %s", tracingtest.Dump(spans))
			}
			byName := map[string]tracingtest.Span{}
			for _, a := range attempts {
				if a.ParentID != plugin.SpanID || a.Kind != tracepb.Span_SPAN_KIND_CLIENT {
					t.Errorf("callout span %+v not a client child of the plugin", a)
				}
				byName[a.Attrs["sidecall.callout"]] = a
			}
			user := byName["user"]
			if user.Attrs["http.request.method"] != "GET" || user.Attrs["url.full"] != cs.URL+"/user" ||
				user.Attrs["server.address"] != "127.0.0.1" || user.Attrs["http.response.status_code"] != "200" || user.Attrs["server.port"] == "" {
				t.Errorf("callout span attributes (url.full without the query): %v", user.Attrs)
			}

			// Each callout request carries its own attempt's span id, the
			// client's tracestate and baggage; the one the callout set
			// itself is kept.
			for _, r := range cs.All() {
				got := r.Header.Get("traceparent")
				switch r.Path {
				case "/user":
					if !strings.Contains(got, clientTrace) || spanIDOf(t, got) != user.SpanID {
						t.Errorf("callout traceparent %q, want the attempt span %s", got, user.SpanID)
					}
					if r.Header.Get("tracestate") != "vendor=1" || r.Header.Get("baggage") != "tenant=acme" {
						t.Errorf("callout tracestate %q baggage %q", r.Header.Get("tracestate"), r.Header.Get("baggage"))
					}
				case "/own":
					if got != "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01" {
						t.Errorf("the callout's own traceparent was replaced: %q", got)
					}
				}
			}
			// Latency samples carry the trace id as exemplar.
			for _, name := range []string{"sidecall_stream_duration_seconds", "sidecall_callout_duration_seconds"} {
				if got := exemplarTraceIDs(t, h, name); !got[clientTrace] {
					t.Errorf("%s exemplars %v, want trace %s", name, got, clientTrace)
				}
			}
			// The upstream request's parent is the stream span.
			e := envoytest.DecodeEcho(t, body)
			if got := e.Header("traceparent"); spanIDOf(t, got) != stream.SpanID || !strings.Contains(got, clientTrace) {
				t.Errorf("upstream traceparent %q, want the stream span %s", got, stream.SpanID)
			}
		})
	}
}

// With tracing on and no traceparent from the client, sidecall starts the
// trace and still sends it to the callout and the upstream.
func TestTraceStartsWithoutClientContext(t *testing.T) {
	t.Parallel()
	rcv := tracingtest.GRPC(t)
	tp := tracingtest.Provider(t, rcv)
	cs := startRecServer(t, nil)
	up := startEchoUpstream(t)
	h := envoytest.Start(t, fill(tracedConfig, "CS", cs.URL), envoytest.Options{Upstream: up.URL, TracerProvider: tp})
	resp, body := h.Get(t, "/traced")
	wantStatus(t, resp, body, 200)
	tracingtest.Flush(t, tp)
	spans := rcv.WaitFor(t, "stream span", func(s []tracingtest.Span) bool { return len(tracingtest.Find(s, "ext_proc traced")) == 1 })
	stream := tracingtest.One(t, spans, "ext_proc traced")
	if stream.ParentID != "" {
		t.Errorf("stream span has a parent: %+v", stream)
	}
	for _, r := range cs.All() {
		if r.Path == "/user" && !strings.Contains(r.Header.Get("traceparent"), stream.TraceID) {
			t.Errorf("callout traceparent %q, want trace %s", r.Header.Get("traceparent"), stream.TraceID)
		}
	}
	if got := envoytest.DecodeEcho(t, body).Header("traceparent"); spanIDOf(t, got) != stream.SpanID {
		t.Errorf("upstream traceparent %q, want the stream span %s", got, stream.SpanID)
	}
}

// With tracing off nothing is exported, no traceparent is made up, and the
// client's is copied to callouts verbatim, as before tracing existed.
func TestTracingOffSendsNothing(t *testing.T) {
	t.Parallel()
	rcv := tracingtest.GRPC(t)
	cs := startRecServer(t, nil)
	up := startEchoUpstream(t)
	h := envoytest.Start(t, fill(tracedConfig, "CS", cs.URL), envoytest.Options{Upstream: up.URL})

	resp, body := h.Get(t, "/traced")
	wantStatus(t, resp, body, 200)
	if got := envoytest.DecodeEcho(t, body).Header("traceparent"); got != "" {
		t.Errorf("upstream got traceparent %q with tracing off", got)
	}
	for _, r := range cs.All() {
		if r.Path == "/user" && (r.Header.Get("traceparent") != "" || r.Header.Get("baggage") != "") {
			t.Errorf("callout got trace headers with tracing off: %v", r.Header)
		}
	}

	cs.Reset()
	req := h.Request(t, "GET", "/traced", "", "traceparent", clientTP, "tracestate", "vendor=1", "baggage", "tenant=acme")
	resp, body = h.Do(t, req)
	wantStatus(t, resp, body, 200)
	if got := envoytest.DecodeEcho(t, body).Header("traceparent"); got != clientTP {
		t.Errorf("upstream traceparent %q, want the client's", got)
	}
	for _, r := range cs.All() {
		if r.Path == "/user" && (r.Header.Get("traceparent") != clientTP || r.Header.Get("tracestate") != "vendor=1" || r.Header.Get("baggage") != "") {
			t.Errorf("callout trace headers with tracing off: %v", r.Header)
		}
	}
	if n := rcv.Requests(); n != 0 {
		t.Errorf("receiver got %d export requests with tracing off", n)
	}
}

// exemplarTraceIDs are the trace_id exemplars on the histogram name.
func exemplarTraceIDs(t *testing.T, h *envoytest.Harness, name string) map[string]bool {
	t.Helper()
	mfs, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, b := range m.GetHistogram().GetBucket() {
				for _, l := range b.GetExemplar().GetLabel() {
					if l.GetName() == "trace_id" {
						ids[l.GetValue()] = true
					}
				}
			}
		}
	}
	return ids
}
