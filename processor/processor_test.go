package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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

// echoID sets x-correlation-id to a new 36-character id upstream and
// echoes it downstream: a request and a response header change.
type echoID struct{}

func (echoID) Name() string       { return "echo-id" }
func (echoID) Priority() int      { return 3 }
func (echoID) Needs() flows.Needs { return flows.Needs{ResponseHeaders: true} }
func (echoID) Access(_ context.Context, x *flows.Exchange) error {
	x.SetHeader("X-Correlation-ID", strings.Repeat("7", 36))
	return nil
}
func (echoID) HeaderFilter(_ context.Context, x *flows.Exchange) error {
	x.SetResponseHeader("X-Correlation-ID", x.Request.Headers.Get("x-correlation-id"))
	return nil
}

func registry() *flows.Registry {
	r := flows.NewRegistry()
	r.Register("echo-id", 3, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return echoID{}, nil })
	r.Register("panic", 1, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return panicPlugin{}, nil })
	r.Register("body", 2, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return bodyPlugin{}, nil })
	return r
}

// testConfig's routes keep the client's path and host (strip_path: false,
// preserve_host: true), so a pass-through reply carries no mutation.
const testConfig = `
services:
  - name: svc
    url: http://127.0.0.1:1
    routes:
      - name: plain
        paths: ["/plain"]
        strip_path: false
        preserve_host: true
      - name: corr
        paths: ["/corr"]
        strip_path: false
        preserve_host: true
        plugins:
          - name: echo-id
      - name: boom
        paths: ["/boom"]
        strip_path: false
        preserve_host: true
        plugins:
          - name: panic
      - name: body
        paths: ["/body"]
        strip_path: false
        preserve_host: true
        plugins:
          - name: body
`

type harness struct {
	client extprocv3.ExternalProcessorClient
	health healthpb.HealthClient
	holder *Holder
	srv    *Server
}

func start(t *testing.T, cfg string) *harness {
	t.Helper()
	return startWith(t, cfg, registry(), Options{})
}

// startWith serves cfg loaded with reg; o's Holder is set here.
func startWith(t *testing.T, cfg string, reg *flows.Registry, o Options) *harness {
	t.Helper()
	snap, err := flows.Load("kong.yml", []byte(cfg), flows.LoadOptions{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	h := &Holder{}
	h.Swap(snap)
	o.Holder = h
	srv := New(o)
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
	return &harness{client: extprocv3.NewExternalProcessorClient(conn), health: healthpb.NewHealthClient(conn), holder: h, srv: srv}
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
		if errors.Is(err, io.EOF) {
			// The server ended the stream OK with nothing more to ask; a
			// Send before that is seen may still have succeeded.
			return out, nil
		}
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

func TestHeaderMutationsUseRawValue(t *testing.T) {
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

func respHeaders() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}}}, EndOfStream: true}}}
}

// openCorr opens a stream on the corr route and reads the request headers
// reply; the stream then waits for the response headers.
func (h *harness) openCorr(t *testing.T, ctx context.Context) extprocv3.ExternalProcessor_ProcessClient {
	t.Helper()
	s, err := h.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(headers("GET", "/corr", true)); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil || r.GetModeOverride().GetResponseHeaderMode() != filterv3.ProcessingMode_SEND {
		t.Fatalf("corr request headers reply %v %v", r, err)
	}
	return s
}

// finish sends the response headers on s and reads the echo and the end.
func finish(t *testing.T, s extprocv3.ExternalProcessor_ProcessClient) {
	t.Helper()
	if err := s.Send(respHeaders()); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil || len(r.GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()) != 1 {
		t.Fatalf("response headers reply %v %v", r, err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("want the stream to end OK, got %v", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHealthAndDrain: SetServing flips both health entries, and Wait
// returns only once the open streams have ended.
func TestHealthAndDrain(t *testing.T) {
	h := start(t, testConfig)
	check := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, svc := range []string{"", extprocv3.ExternalProcessor_ServiceDesc.ServiceName} {
			r, err := h.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || r.GetStatus() != want {
				t.Fatalf("health %q: %v %v, want %v", svc, r, err, want)
			}
		}
	}
	check(healthpb.HealthCheckResponse_SERVING)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Wait(ctx); err != nil {
		t.Fatalf("Wait with no stream open: %v", err)
	}
	s := h.openCorr(t, ctx)
	h.srv.SetServing(false)
	check(healthpb.HealthCheckResponse_NOT_SERVING)
	// With a stream open, Wait gives up when its context ends.
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := h.srv.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait returned %v while a stream was open", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- h.srv.Wait(ctx) }()
	finish(t, s)
	if err := <-waited; err != nil {
		t.Fatalf("Wait after the stream ended: %v", err)
	}
	h.srv.SetServing(true)
	check(healthpb.HealthCheckResponse_SERVING)
}

// closerPlugin registers an OnClose hook per load; closed[i] reports
// whether the snapshot of the i-th load was closed.
type closerPlugin struct{}

func (closerPlugin) Name() string  { return "closer" }
func (closerPlugin) Priority() int { return 3 }

func closerRegistry(closed *[]*atomic.Bool) *flows.Registry {
	r := registry()
	r.Register("closer", 3, func(b *flows.Builder, _ *yaml.Node, _ flows.Path) (flows.Plugin, error) {
		c := &atomic.Bool{}
		*closed = append(*closed, c)
		b.OnClose(func() {
			if c.Swap(true) {
				panic("snapshot closed twice")
			}
		})
		return closerPlugin{}, nil
	})
	return r
}

const closerConfig = testConfig + `plugins:
  - name: closer
`

func TestSnapshotClosedAfterItsStreams(t *testing.T) {
	var closed []*atomic.Bool
	reg := closerRegistry(&closed)
	h := startWith(t, closerConfig, reg, Options{})
	// A stream holds the current snapshot while open.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := h.openCorr(t, ctx)
	old := h.holder.Current()
	snap2, err := flows.Load("kong.yml", []byte(closerConfig), flows.LoadOptions{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	h.holder.Swap(snap2)
	if h.holder.Current() == old || len(closed) != 2 {
		t.Fatalf("swap did nothing (%d loads)", len(closed))
	}
	if closed[0].Load() {
		t.Fatal("the old snapshot was closed while a stream still used it")
	}
	// Streams on the new snapshot come and go without closing the old one.
	if _, err := h.exchange(t, context.Background(), headers("GET", "/plain", true)); err != nil {
		t.Fatal(err)
	}
	if closed[0].Load() || closed[1].Load() {
		t.Fatalf("closed early: old %v new %v", closed[0].Load(), closed[1].Load())
	}
	// The open stream still finishes on the old snapshot, which then closes.
	finish(t, s)
	waitUntil(t, "the old snapshot to close", closed[0].Load)
	if closed[1].Load() {
		t.Fatal("the serving snapshot was closed")
	}
	// A retired snapshot no stream holds closes at once.
	snap3, err := flows.Load("kong.yml", []byte(closerConfig), flows.LoadOptions{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	h.holder.Swap(snap3)
	if !closed[1].Load() || closed[2].Load() {
		t.Fatalf("after an idle swap: second closed %v, third closed %v", closed[1].Load(), closed[2].Load())
	}
}

// TestMaxRecvMsgSize: a message over the limit ends its stream with
// ResourceExhausted; the next stream is served.
func TestMaxRecvMsgSize(t *testing.T) {
	m := NewMetrics(nil)
	h := startWith(t, testConfig, registry(), Options{MaxRecvMsgSize: 2048, Metrics: m})
	big := headers("GET", "/plain", true, "x-big", strings.Repeat("a", 4096))
	if _, err := h.exchange(t, context.Background(), big); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized message: want ResourceExhausted, got %v", err)
	}
	// grpc-go answers the client itself and ends the stream's context; the
	// rejection is still a recv error (Envoy turns it into a 500).
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := h.srv.Wait(wctx); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(m.streamErrors.WithLabelValues("recv")); v != 1 {
		t.Errorf("recv stream errors %v after an oversized message, want 1", v)
	}
	// Just under the limit is fine.
	near := headers("GET", "/plain", true, "x-big", strings.Repeat("a", 1500))
	out, err := h.exchange(t, context.Background(), near)
	if err != nil || len(out) != 1 || out[0].GetRequestHeaders() == nil {
		t.Fatalf("normal stream after the oversized one: %v %v", out, err)
	}
}

type failPlugin struct{}

func (failPlugin) Name() string  { return "fail" }
func (failPlugin) Priority() int { return 1 }
func (failPlugin) Access(context.Context, *flows.Exchange) error {
	return errors.New("kaput")
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// logLine returns the last JSON log line with message msg.
func logLine(t *testing.T, logs, msg string) (string, map[string]any) {
	t.Helper()
	lines := strings.Split(logs, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var m map[string]any
		if json.Unmarshal([]byte(lines[i]), &m) == nil && m["msg"] == msg {
			return lines[i], m
		}
	}
	t.Fatalf("no %q log line in:\n%s", msg, logs)
	return "", nil
}

// TestErrorLogsCarryRequestID: the log line of a failed (500) or panicked
// request carries the x-request-id Envoy sent, once.
func TestErrorLogsCarryRequestID(t *testing.T) {
	reg := registry()
	reg.Register("fail", 1, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return failPlugin{}, nil })
	var buf lockedBuf
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zap.DebugLevel))
	h := startWith(t, testConfig+`      - name: fail
        paths: ["/fail"]
        plugins:
          - name: fail
`, reg, Options{Log: log})
	// An empty id: Envoy sent none, so the 500 names a generated one, and
	// the logs must name the same.
	for _, c := range []struct{ path, id, msg string }{
		{"/fail", "rid-fail-1", "request failed"},
		{"/boom", "rid-panic-1", "panic while handling a message"},
		{"/boom", "rid-panic-2", "request failed"},
		{"/fail", "", "request failed"},
		{"/boom", "", "panic while handling a message"},
	} {
		hdrs := []string{}
		if c.id != "" {
			hdrs = append(hdrs, "x-request-id", c.id)
		}
		out, err := h.exchange(t, context.Background(), headers("GET", c.path, true, hdrs...))
		if err != nil || len(out) != 1 || out[0].GetImmediateResponse().GetStatus().GetCode() != 500 {
			t.Fatalf("%s: want a 500, got %v %v", c.path, out, err)
		}
		var body map[string]string
		if err := json.Unmarshal(out[0].GetImmediateResponse().GetBody(), &body); err != nil || body["request_id"] == "" {
			t.Fatalf("%s: reply body %s", c.path, out[0].GetImmediateResponse().GetBody())
		}
		want := c.id
		if want == "" {
			want = body["request_id"]
		} else if body["request_id"] != c.id {
			t.Errorf("%s: reply request_id %q, want %q", c.path, body["request_id"], c.id)
		}
		line, m := logLine(t, buf.String(), c.msg)
		if m["request_id"] != want {
			t.Errorf("%s %q: log request_id %v, want %q: %s", c.path, c.msg, m["request_id"], want, line)
		}
		// Log pipelines (Elasticsearch, Loki's json stage) reject or
		// mangle duplicate keys.
		if n := strings.Count(line, `"request_id":`); n != 1 {
			t.Errorf("%s %q: request_id appears %d times: %s", c.path, c.msg, n, line)
		}
	}
}

// TestClientCancelIsNotAStreamError: Envoy resets a stream it no longer
// needs; that is not a recv error. A protocol fault is counted.
func TestClientCancelIsNotAStreamError(t *testing.T) {
	m := NewMetrics(nil)
	h := startWith(t, testConfig, registry(), Options{Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	s := h.openCorr(t, ctx)
	if v := testutil.ToFloat64(m.active); v != 1 {
		t.Fatalf("active streams %v with one open", v)
	}
	cancel()
	if _, err := s.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("client side after cancel: %v", err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := h.srv.Wait(wctx); err != nil {
		t.Fatalf("the canceled stream did not end on the server: %v", err)
	}
	for _, reason := range []string{"recv", "send", "protocol"} {
		if v := testutil.ToFloat64(m.streamErrors.WithLabelValues(reason)); v != 0 {
			t.Errorf("a client cancel counted as a %s stream error (%v)", reason, v)
		}
	}
	if v := testutil.ToFloat64(m.active); v != 0 {
		t.Errorf("active streams %v after the cancel", v)
	}
	if _, err := h.exchange(t, context.Background(), &extprocv3.ProcessingRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("protocol fault: %v", err)
	}
	if v := testutil.ToFloat64(m.streamErrors.WithLabelValues("protocol")); v != 1 {
		t.Errorf("protocol stream errors %v, want 1", v)
	}
}

type headerPanicPlugin struct{}

func (headerPanicPlugin) Name() string  { return "hpanic" }
func (headerPanicPlugin) Priority() int { return 1 }
func (headerPanicPlugin) HeaderFilter(context.Context, *flows.Exchange) error {
	panic("header filter bug")
}

// TestHeaderFilterPanicIs500: a plugin that panics in header_filter gets
// the request a 500, not the process a crash (the 500 reply must not run
// the panicking pipeline again outside the recover).
func TestHeaderFilterPanicIs500(t *testing.T) {
	reg := registry()
	reg.Register("hpanic", 1, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return headerPanicPlugin{}, nil })
	m := NewMetrics(nil)
	h := startWith(t, testConfig+`      - name: hboom
        paths: ["/hboom"]
        plugins:
          - name: hpanic
`, reg, Options{Metrics: m})
	out, err := h.exchange(t, context.Background(), headers("GET", "/hboom", true, "x-request-id", "rid-h"), respHeaders())
	if err != nil || len(out) != 2 || out[1].GetImmediateResponse().GetStatus().GetCode() != 500 {
		t.Fatalf("want a 500 on the response headers, got %v %v", out, err)
	}
	if v := testutil.ToFloat64(m.panics); v < 1 {
		t.Errorf("panics_total %v", v)
	}
	if _, err := h.exchange(t, context.Background(), headers("GET", "/plain", true)); err != nil {
		t.Fatalf("next request: %v", err)
	}
}
