// Package tracingtest is an in-process OTLP trace receiver (gRPC and
// HTTP/protobuf, on 127.0.0.1) and providers exporting to it, for tests
// that assert the spans sidecall sends.
package tracingtest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, flattened for assertions.
type Span struct {
	Name     string
	Kind     tracepb.Span_SpanKind
	TraceID  string // hex
	SpanID   string // hex
	ParentID string // hex, "" for a root
	Attrs    map[string]string
	Error    bool // status code ERROR
	Service  string
}

func (s Span) String() string { return fmt.Sprintf("%s(%s<-%s)", s.Name, s.SpanID, s.ParentID) }

// Receiver collects exported spans.
type Receiver struct {
	// Endpoint is the exporter endpoint: host:port for gRPC, a URL for HTTP.
	Endpoint string
	mu       sync.Mutex
	spans    []Span
	requests int
	changed  chan struct{}
}

func newReceiver() *Receiver { return &Receiver{changed: make(chan struct{}, 1)} }

func (r *Receiver) add(req *collectorpb.ExportTraceServiceRequest) {
	r.mu.Lock()
	r.requests++
	for _, rs := range req.GetResourceSpans() {
		svc := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				svc = value(kv.GetValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{Name: s.GetName(), Kind: s.GetKind(), TraceID: hex.EncodeToString(s.GetTraceId()),
					SpanID: hex.EncodeToString(s.GetSpanId()), ParentID: hex.EncodeToString(s.GetParentSpanId()),
					Attrs: map[string]string{}, Error: s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR, Service: svc}
				for _, kv := range s.GetAttributes() {
					sp.Attrs[kv.GetKey()] = value(kv.GetValue())
				}
				r.spans = append(r.spans, sp)
			}
		}
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func value(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	}
	return v.String()
}

// Spans returns the spans received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Requests is how many export requests arrived.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// WaitFor waits until ok holds for the received spans, or fails t.
func (r *Receiver) WaitFor(t testing.TB, what string, ok func([]Span) bool) []Span {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if s := r.Spans(); ok(s) {
			return s
		}
		select {
		case <-r.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("receiver: no %s in 10s; got %s", what, Dump(r.Spans()))
		}
	}
}

type grpcService struct {
	collectorpb.UnimplementedTraceServiceServer
	r *Receiver
}

func (g grpcService) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	g.r.add(req)
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// GRPC starts an OTLP/gRPC receiver (the collector's TraceService).
func GRPC(t testing.TB) *Receiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := newReceiver()
	r.Endpoint = l.Addr().String()
	g := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(g, grpcService{r: r})
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	return r
}

// HTTP starts an OTLP/HTTP protobuf receiver at /v1/traces.
func HTTP(t testing.TB) *Receiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := newReceiver()
	r.Endpoint = "http://" + l.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
			http.Error(w, "content-type "+ct, 415)
			return
		}
		var m collectorpb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &m); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		r.add(&m)
		out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

// Provider returns a provider sampling every span and exporting to r in
// batches (the production path), shut down when t ends. Call ForceFlush
// before reading r.
func Provider(t testing.TB, r *Receiver) *sdktrace.TracerProvider {
	t.Helper()
	ctx := context.Background()
	var exp sdktrace.SpanExporter
	var err error
	if strings.HasPrefix(r.Endpoint, "http://") {
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(r.Endpoint+"/v1/traces"))
	} else {
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(r.Endpoint), otlptracegrpc.WithInsecure())
	}
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(ctx)
	})
	return tp
}

// Flush exports what tp holds, failing t on an export error.
func Flush(t testing.TB, tp *sdktrace.TracerProvider) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
}

// Find returns the spans named name (or, with a trailing "*", starting so).
func Find(spans []Span, name string) []Span {
	var out []Span
	for _, s := range spans {
		if s.Name == name || strings.HasSuffix(name, "*") && strings.HasPrefix(s.Name, strings.TrimSuffix(name, "*")) {
			out = append(out, s)
		}
	}
	return out
}

// One returns the one span named name, failing t otherwise.
func One(t testing.TB, spans []Span, name string) Span {
	t.Helper()
	f := Find(spans, name)
	if len(f) != 1 {
		t.Fatalf("want one span %q, got %d in %s", name, len(f), Dump(spans))
	}
	return f[0]
}

// Parent returns s's parent among spans.
func Parent(spans []Span, s Span) (Span, bool) {
	for _, p := range spans {
		if p.SpanID == s.ParentID && p.TraceID == s.TraceID {
			return p, true
		}
	}
	return Span{}, false
}

// Dump renders spans as an indented tree, for failure messages.
func Dump(spans []Span) string {
	kids := map[string][]Span{}
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanID] = true
	}
	var roots []Span
	for _, s := range spans {
		if s.ParentID == "" || !ids[s.ParentID] {
			roots = append(roots, s)
		} else {
			kids[s.ParentID] = append(kids[s.ParentID], s)
		}
	}
	var b bytes.Buffer
	var walk func(s Span, depth int)
	walk = func(s Span, depth int) {
		keys := make([]string, 0, len(s.Attrs))
		for k := range s.Attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(&b, "\n%s%s [%s trace=%s parent=%s]", strings.Repeat("  ", depth), s.Name, s.Kind, s.TraceID, s.ParentID)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%s", k, s.Attrs[k])
		}
		for _, c := range kids[s.SpanID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}
