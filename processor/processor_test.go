package processor

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"gopkg.in/yaml.v3"

	"github.com/sidecall/sidecall/flows"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// panicPlugin panics in access; answerPlugin answers 418.
type panicPlugin struct{}

func (panicPlugin) Name() string                                  { return "panic" }
func (panicPlugin) Priority() int                                 { return 1 }
func (panicPlugin) Access(context.Context, *flows.Exchange) error { panic("boom") }

type bodyPlugin struct{}

func (bodyPlugin) Name() string       { return "body" }
func (bodyPlugin) Priority() int      { return 2 }
func (bodyPlugin) Needs() flows.Needs { return flows.Needs{RequestBody: true} }
func (bodyPlugin) Access(_ context.Context, x *flows.Exchange) error {
	x.SetBody([]byte(strings.ToUpper(string(x.Request.Body))))
	x.SetPath("/rewritten")
	x.SetRawQuery("a=1")
	return nil
}

func registry() *flows.Registry {
	r := flows.NewRegistry()
	flows.RegisterCorrelationID(r)
	r.Register("panic", 1, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return panicPlugin{}, nil })
	r.Register("body", 2, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return bodyPlugin{}, nil })
	return r
}

const testConfig = `
services:
  - name: svc
    url: http://127.0.0.1:1
    routes:
      - name: plain
        paths: ["/plain"]
      - name: corr
        paths: ["/corr"]
        plugins:
          - name: correlation-id
            config: {header_name: X-Correlation-ID, generator: uuid, echo_downstream: true}
      - name: boom
        paths: ["/boom"]
        plugins:
          - name: panic
      - name: body
        paths: ["/body"]
        plugins:
          - name: body
`

type harness struct {
	client extprocv3.ExternalProcessorClient
	health healthpb.HealthClient
	holder *Holder
}

func start(t *testing.T, cfg string) *harness {
	t.Helper()
	snap, err := flows.Load("kong.yml", []byte(cfg), flows.LoadOptions{Registry: registry()})
	if err != nil {
		t.Fatal(err)
	}
	h := &Holder{}
	h.Swap(snap)
	srv := New(Options{Holder: h})
	g := srv.GRPCServer()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
		h.Swap(nil)
	})
	return &harness{client: extprocv3.NewExternalProcessorClient(conn), health: healthpb.NewHealthClient(conn), holder: h}
}

func headers(method, path string, eos bool, extra ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte(method)}, {Key: ":path", RawValue: []byte(path)},
		{Key: ":scheme", RawValue: []byte("http")}, {Key: ":authority", RawValue: []byte("example.com")},
	}}
	for i := 0; i+1 < len(extra); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: extra[i], RawValue: []byte(extra[i+1])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: eos}}}
}

// exchange sends msgs one by one, reading a reply after each, then reads
// the final status.
func (h *harness) exchange(t *testing.T, ctx context.Context, msgs ...*extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := h.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*extprocv3.ProcessingResponse
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			break // the server ended the stream; Recv tells why
		}
		r, err := s.Recv()
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	_ = s.CloseSend()
	_, err = s.Recv()
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return out, err
}

func TestPassThroughIsOneMessageAndOK(t *testing.T) {
	h := start(t, testConfig)
	out, err := h.exchange(t, context.Background(), headers("GET", "/plain", true))
	if err != nil {
		t.Fatalf("stream ended with %v, want OK", err)
	}
	if len(out) != 1 {
		t.Fatalf("got %d replies", len(out))
	}
	rh := out[0].GetRequestHeaders()
	if rh == nil || rh.GetResponse() != nil {
		t.Fatalf("want an empty CONTINUE headers reply, got %v", out[0])
	}
	mo := out[0].GetModeOverride()
	if mo.GetResponseHeaderMode() != filterv3.ProcessingMode_SKIP || mo.GetRequestBodyMode() != filterv3.ProcessingMode_NONE {
		t.Errorf("mode_override %v: want response headers SKIP, body NONE", mo)
	}
}

func TestCorrelationIDMutationUsesRawValue(t *testing.T) {
	h := start(t, testConfig)
	resp := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}}}, EndOfStream: true}}}
	out, err := h.exchange(t, context.Background(), headers("GET", "/corr", true), resp)
	if err != nil || len(out) != 2 {
		t.Fatalf("err %v, %d replies", err, len(out))
	}
	if out[0].GetModeOverride().GetResponseHeaderMode() != filterv3.ProcessingMode_SEND {
		t.Errorf("echo_downstream needs response headers: %v", out[0].GetModeOverride())
	}
	set := out[0].GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()
	if len(set) != 1 || set[0].GetHeader().GetKey() != "x-correlation-id" || len(set[0].GetHeader().GetRawValue()) != 36 || set[0].GetHeader().GetValue() != "" {
		t.Fatalf("request mutation %v", set)
	}
	if set[0].GetAppend().GetValue() {
		t.Errorf("append must be false (overwrite)")
	}
	echo := out[1].GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()
	if len(echo) != 1 || string(echo[0].GetHeader().GetRawValue()) != string(set[0].GetHeader().GetRawValue()) {
		t.Fatalf("echo %v, want the same id", echo)
	}
}

func TestRouteSelectionOrder(t *testing.T) {
	h := start(t, testConfig)
	attr := func(name string) map[string]*structpb.Struct {
		return map[string]*structpb.Struct{attrNamespace: {Fields: map[string]*structpb.Value{"xds.route_name": structpb.NewStringValue(name)}}}
	}
	isCorr := func(out []*extprocv3.ProcessingResponse) bool {
		return len(out[0].GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()) == 1
	}
	// 1. attribute wins over the path.
	m := headers("GET", "/plain", true)
	m.Attributes = attr("corr")
	out, err := h.exchange(t, context.Background(), m)
	if err != nil || !isCorr(out) {
		t.Errorf("attribute: %v %v", err, out)
	}
	// 2. gRPC metadata.
	ctx := metadata.AppendToOutgoingContext(context.Background(), RouteMetadataKey, "corr")
	out, err = h.exchange(t, ctx, headers("GET", "/plain", true))
	if err != nil || !isCorr(out) {
		t.Errorf("metadata: %v %v", err, out)
	}
	// 3. metadata_context.
	m = headers("GET", "/plain", true)
	m.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"sidecall": {Fields: map[string]*structpb.Value{"route": structpb.NewStringValue("corr")}}}}
	out, err = h.exchange(t, context.Background(), m)
	if err != nil || !isCorr(out) {
		t.Errorf("metadata_context: %v %v", err, out)
	}
	// An unknown name falls through to path matching.
	m = headers("GET", "/plain", true)
	m.Attributes = attr("envoy-default-route")
	out, err = h.exchange(t, context.Background(), m)
	if err != nil || isCorr(out) {
		t.Errorf("fallthrough: %v %v", err, out)
	}
}

func TestPanicIs500ForThatRequestOnly(t *testing.T) {
	h := start(t, testConfig)
	out, err := h.exchange(t, context.Background(), headers("GET", "/boom", true, "x-request-id", "rid-1"))
	if err != nil || len(out) != 1 {
		t.Fatalf("err %v out %v", err, out)
	}
	ir := out[0].GetImmediateResponse()
	if ir.GetStatus().GetCode() != 500 {
		t.Fatalf("want 500, got %v", out[0])
	}
	var body map[string]string
	if err := json.Unmarshal(ir.GetBody(), &body); err != nil || body["request_id"] != "rid-1" || body["message"] == "" {
		t.Errorf("body %s", ir.GetBody())
	}
	if _, err := h.exchange(t, context.Background(), headers("GET", "/plain", true)); err != nil {
		t.Errorf("next request: %v", err)
	}
}

func TestBufferedBodyMutationSetsContentLength(t *testing.T) {
	h := start(t, testConfig)
	body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte("hello"), EndOfStream: true}}}
	out, err := h.exchange(t, context.Background(), headers("POST", "/body", false, "content-length", "5"), body)
	if err != nil || len(out) != 2 {
		t.Fatalf("err %v out %v", err, out)
	}
	if out[0].GetModeOverride().GetRequestBodyMode() != filterv3.ProcessingMode_BUFFERED {
		t.Errorf("want BUFFERED request body, got %v", out[0].GetModeOverride())
	}
	c := out[1].GetRequestBody().GetResponse()
	if string(c.GetBodyMutation().GetBody()) != "HELLO" || !c.GetClearRouteCache() {
		t.Fatalf("body reply %v", c)
	}
	got := map[string]string{}
	for _, o := range c.GetHeaderMutation().GetSetHeaders() {
		got[o.GetHeader().GetKey()] = string(o.GetHeader().GetRawValue())
	}
	if got["content-length"] != "5" || got[":path"] != "/rewritten?a=1" {
		t.Errorf("headers %v", got)
	}
}

func TestProtocolFaultsEndOnlyThatStream(t *testing.T) {
	h := start(t, testConfig)
	cases := map[string][]*extprocv3.ProcessingRequest{
		// The corr route keeps the stream open for response headers.
		"no request set":     {{}},
		"headers twice":      {headers("GET", "/corr", false), headers("GET", "/corr", false)},
		"body after end":     {headers("GET", "/corr", true), {Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{EndOfStream: true}}}},
		"trailers after end": {headers("GET", "/corr", true), {Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}}},
	}
	for name, msgs := range cases {
		t.Run(name, func(t *testing.T) {
			// A healthy stream stays open beside the faulty one.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			other, err := h.client.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := other.Send(headers("GET", "/corr", true)); err != nil {
				t.Fatal(err)
			}
			_, err = h.exchange(t, context.Background(), msgs...)
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("want FailedPrecondition, got %v", err)
			}
			if r, err := other.Recv(); err != nil || r.GetRequestHeaders() == nil {
				t.Fatalf("the other stream was affected: %v %v", r, err)
			}
		})
	}
}

func TestHealthAndDrain(t *testing.T) {
	h := start(t, testConfig)
	r, err := h.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: extprocv3.ExternalProcessor_ServiceDesc.ServiceName})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", r, err)
	}
}

func TestSnapshotClosedAfterItsStreams(t *testing.T) {
	h := start(t, testConfig)
	// A stream holds the current snapshot while open.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := h.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(headers("GET", "/corr", false)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	old := h.holder.Current()
	snap2, err := flows.Load("kong.yml", []byte(testConfig), flows.LoadOptions{Registry: registry()})
	if err != nil {
		t.Fatal(err)
	}
	h.holder.Swap(snap2)
	if h.holder.Current() == old {
		t.Fatal("swap did nothing")
	}
	// The open stream still finishes on the old snapshot.
	resp := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}}}, EndOfStream: true}}}
	if err := s.Send(resp); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil || len(r.GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()) != 1 {
		t.Fatalf("old stream reply %v %v", r, err)
	}
}
