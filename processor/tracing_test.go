package processor

import (
	"context"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sidecall/sidecall/flows"
)

const clientTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func setHeader(resp *extprocv3.ProcessingResponse, name string) string {
	for _, h := range resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		if strings.EqualFold(h.GetHeader().GetKey(), name) {
			return string(h.GetHeader().GetRawValue())
		}
	}
	return ""
}

// The stream span is the client's child; the upstream request gets it as
// parent, and the response headers are asked for so the span ends with
// the status.
func TestStreamSpan(t *testing.T) {
	t.Parallel()
	snap, err := flows.Load("kong.yml", []byte(testConfig), flows.LoadOptions{Registry: registry()})
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	srv := New(Options{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))})
	st := newStream(srv, snap, context.Background())
	resp, err := st.handle(headers("GET", "/plain", true, "traceparent", clientTP, "x-request-id", "rid"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetModeOverride().GetResponseHeaderMode() != filterv3.ProcessingMode_SEND {
		t.Errorf("mode override %v: want response headers for the span's status", resp.GetModeOverride())
	}
	sc := st.span.SpanContext()
	if got, want := setHeader(resp, "traceparent"), "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01"; got != want {
		t.Errorf("upstream traceparent %q, want %q", got, want)
	}
	rh := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("503")}}}, EndOfStream: true}}}
	if _, err := st.handle(rh); err != nil {
		t.Fatal(err)
	}
	st.endSpan()
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended", len(spans))
	}
	s := spans[0]
	if s.Parent().SpanID().String() != "00f067aa0ba902b7" || s.Name() != "ext_proc plain" || s.Status().Code.String() != "Error" {
		t.Errorf("span %s parent %s status %v", s.Name(), s.Parent().SpanID(), s.Status())
	}
	attrs := map[string]string{}
	for _, kv := range s.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["sidecall.route"] != "plain" || attrs["sidecall.request_id"] != "rid" || attrs["http.response.status_code"] != "503" {
		t.Errorf("attributes %v", attrs)
	}
}

// Tracing off: no span, no header, no response headers asked for.
func TestTracingOffNoMutation(t *testing.T) {
	t.Parallel()
	snap, err := flows.Load("kong.yml", []byte(testConfig), flows.LoadOptions{Registry: registry()})
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(New(Options{}), snap, context.Background())
	resp, err := st.handle(headers("GET", "/plain", true, "traceparent", clientTP))
	if err != nil {
		t.Fatal(err)
	}
	if st.span != nil || resp.GetRequestHeaders().GetResponse() != nil ||
		resp.GetModeOverride().GetResponseHeaderMode() != filterv3.ProcessingMode_SKIP {
		t.Errorf("tracing off changed the reply: %v", resp)
	}
}

// BenchmarkHandlePassThroughTraced is BenchmarkHandlePassThrough with every
// stream sampled (spans dropped in process, no export).
func BenchmarkHandlePassThroughTraced(b *testing.B) {
	snap, err := flows.Load("kong.yml", []byte(testConfig), flows.LoadOptions{Registry: registry()})
	if err != nil {
		b.Fatal(err)
	}
	srv := New(Options{TracerProvider: sdktrace.NewTracerProvider()})
	msg := headers("GET", "/plain", true, "user-agent", "curl/8", "accept", "*/*", "x-request-id", "abc", "traceparent", clientTP)
	b.ReportAllocs()
	for b.Loop() {
		st := newStream(srv, snap, context.Background())
		if _, err := st.handle(msg); err != nil {
			b.Fatal(err)
		}
		st.endSpan()
	}
}
