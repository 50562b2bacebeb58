package processor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"gopkg.in/yaml.v3"

	"github.com/sidecall/sidecall/flows"
)

// respBodyPlugin needs the whole response body and changes nothing.
type respBodyPlugin struct{}

func (respBodyPlugin) Name() string  { return "resp-body" }
func (respBodyPlugin) Priority() int { return 4 }
func (respBodyPlugin) Needs() flows.Needs {
	return flows.Needs{ResponseHeaders: true, ResponseBody: true}
}
func (respBodyPlugin) BodyFilter(context.Context, *flows.Exchange) error { return nil }

// hugePlugin makes a reply or a change too large for one gRPC message:
// "reply" answers 200 with 8 MiB (kong.response.exit(200, string.rep("a",
// 8 MiB))), "body" and "header" change the upstream request by 9 MiB,
// "response" replaces the response body with 9 MiB in header_filter.
type hugePlugin struct{ mode string }

func (hugePlugin) Name() string  { return "huge" }
func (hugePlugin) Priority() int { return 5 }
func (p hugePlugin) Needs() flows.Needs {
	return flows.Needs{ResponseHeaders: p.mode == "response"}
}

func (p hugePlugin) Access(_ context.Context, x *flows.Exchange) error {
	switch p.mode {
	case "reply":
		x.Respond(200, nil, bytes.Repeat([]byte("a"), 8<<20))
	case "body":
		x.SetBody(bytes.Repeat([]byte("b"), 9<<20))
	case "header":
		x.SetHeader("x-big", strings.Repeat("h", 9<<20))
	}
	return nil
}

func (p hugePlugin) HeaderFilter(_ context.Context, x *flows.Exchange) error {
	if p.mode == "response" {
		x.SetResponseBody(bytes.Repeat([]byte("r"), 9<<20))
	}
	return nil
}

func securityRegistry() *flows.Registry {
	r := registry()
	r.Register("resp-body", 4, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return respBodyPlugin{}, nil })
	for _, mode := range []string{"reply", "body", "header", "response"} {
		r.Register("huge-"+mode, 5, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return hugePlugin{mode}, nil })
	}
	return r
}

const securityConfig = testConfig + `      - name: respbody
        paths: ["/respbody"]
        plugins:
          - name: resp-body
      - name: huge-reply
        paths: ["/huge-reply"]
        plugins:
          - name: huge-reply
      - name: huge-body
        paths: ["/huge-body"]
        plugins:
          - name: huge-body
      - name: huge-header
        paths: ["/huge-header"]
        plugins:
          - name: huge-header
      - name: huge-response
        paths: ["/huge-response"]
        plugins:
          - name: huge-response
`

func reqBody(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

func respBody(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

func respHeadersMore() *extprocv3.ProcessingRequest {
	m := respHeaders()
	m.GetResponseHeaders().EndOfStream = false
	return m
}

// wantJSONError checks r is an ImmediateResponse with status and
// sidecall's JSON error body naming message and request id.
func wantJSONError(t *testing.T, r *extprocv3.ProcessingResponse, status int, message, id string) {
	t.Helper()
	ir := r.GetImmediateResponse()
	if ir == nil || int(ir.GetStatus().GetCode()) != status {
		t.Fatalf("want an immediate %d, got %.300v", status, r)
	}
	var body map[string]string
	if err := json.Unmarshal(ir.GetBody(), &body); err != nil || body["message"] != message || body["request_id"] != id {
		t.Errorf("body %s, want message %q and request_id %q", ir.GetBody(), message, id)
	}
	ct := ""
	for _, o := range ir.GetHeaders().GetSetHeaders() {
		if o.GetHeader().GetKey() == "content-type" {
			ct = string(o.GetHeader().GetRawValue())
		}
	}
	if ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
}

// rss is the process's resident set size (VmRSS), in bytes.
func rss(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmRSS in /proc/self/status")
	return 0
}

// heapInuse is the Go heap in use now, garbage included (no GC).
func heapInuse() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// TestManyBodyChunksAre413Or502WithBoundedMemory: bodies sent in many 7 MiB
// chunks are buffered only up to --max-body-size (default 8 MiB) across all
// chunks: the request gets 413 and the response 502, as soon as the limit
// is passed, and the process's memory stays bounded. Without the limit, 60
// request chunks took the RSS from 79 MiB to 1.8 GiB. The test stops at
// 100 MiB above its start (RSS and Go heap), whatever the code does; under
// the race detector, whose shadow memory multiplies the RSS of every heap
// byte it sees, the RSS bound is 400 MiB.
func TestManyBodyChunksAre413Or502WithBoundedMemory(t *testing.T) {
	const chunk, limit = 7 << 20, 100 << 20
	rssLimit := int64(limit)
	if raceEnabled {
		rssLimit = 4 * limit
	}
	m := NewMetrics(nil)
	// Each 7 MiB chunk must pass the gRPC limit to reach the body limit.
	h := startWith(t, securityConfig, securityRegistry(), Options{Metrics: m, MaxRecvMsgSize: 16 << 20})
	data := bytes.Repeat([]byte("c"), chunk) // one slice, sent again and again
	for _, c := range []struct {
		name, path string
		open       []*extprocv3.ProcessingRequest // before the body chunks
		chunks     int
		body       func([]byte, bool) *extprocv3.ProcessingRequest
		status     int
		message    string
		counter    string
	}{
		{"request", "/body", nil, 60, reqBody, 413, "request body too large", "request_body_too_large"},
		{"response", "/respbody", []*extprocv3.ProcessingRequest{respHeadersMore()}, 40, respBody, 502, "response body too large", "response_body_too_large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			runtime.GC()
			debug.FreeOSMemory()
			base, heapBase := rss(t), heapInuse()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := h.client.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			id := "rid-" + c.name
			open := append([]*extprocv3.ProcessingRequest{headers("POST", c.path, false, "x-request-id", id)}, c.open...)
			for _, msg := range open {
				if err := s.Send(msg); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Recv(); err != nil {
					t.Fatal(err)
				}
			}
			var answer *extprocv3.ProcessingResponse
			peak, heapPeak, sent := int64(0), int64(0), 0
			for i := 0; i < c.chunks && answer == nil; i++ {
				if err := s.Send(c.body(data, i == c.chunks-1)); err != nil {
					break // the server ended the stream; Recv says why
				}
				sent++
				r, err := s.Recv()
				if err != nil {
					t.Fatalf("after %d chunks: %v", sent, err)
				}
				if r.GetImmediateResponse() != nil {
					answer = r
				}
				if d := rss(t) - base; d > peak {
					peak = d
					if d > rssLimit {
						t.Fatalf("RSS grew by %d MiB after %d chunks of 7 MiB", d>>20, sent)
					}
				}
				if d := heapInuse() - heapBase; d > heapPeak {
					heapPeak = d
					if d > limit {
						t.Fatalf("the Go heap grew by %d MiB after %d chunks of 7 MiB", d>>20, sent)
					}
				}
			}
			if answer == nil {
				t.Fatalf("no local reply after %d chunks of 7 MiB", sent)
			}
			wantJSONError(t, answer, c.status, c.message, id)
			if sent != 2 { // 7 MiB fits 8 MiB, 14 MiB does not
				t.Errorf("answered after %d chunks, want 2", sent)
			}
			if _, err := s.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("want the stream to end OK after the reply, got %v", err)
			}
			if v := testutil.ToFloat64(m.streamErrors.WithLabelValues(c.counter)); v != 1 {
				t.Errorf("%s counted %v times, want 1", c.counter, v)
			}
			t.Logf("peaks above the start: RSS %d MiB, heap in use %d MiB", peak>>20, heapPeak>>20)
		})
	}
}

// TestBodyLimitCountsEveryChunk: the limit is on the whole body, across
// chunks: a body exactly at it reaches the plugins, one byte more is 413
// (request) or 502 (response), and nothing is buffered past it.
func TestBodyLimitCountsEveryChunk(t *testing.T) {
	m := NewMetrics(nil)
	h := startWith(t, securityConfig, securityRegistry(), Options{Metrics: m, MaxBodySize: 10})
	ctx := context.Background()

	out, err := h.exchange(t, ctx, headers("POST", "/body", false), reqBody([]byte("hello"), false), reqBody([]byte("world"), true))
	if err != nil || len(out) != 3 || string(out[2].GetRequestBody().GetResponse().GetBodyMutation().GetBody()) != "HELLOWORLD" {
		t.Fatalf("a body at the limit: %v %v", out, err)
	}
	out, err = h.exchange(t, ctx, headers("POST", "/body", false, "x-request-id", "r1"),
		reqBody([]byte("hello"), false), reqBody([]byte("world"), false), reqBody([]byte("!"), true))
	if err != nil || len(out) != 4 {
		t.Fatalf("a body one byte over: %v %v", out, err)
	}
	wantJSONError(t, out[3], 413, "request body too large", "r1")

	out, err = h.exchange(t, ctx, headers("GET", "/respbody", true), respHeadersMore(),
		respBody([]byte("0123456789"), true))
	if err != nil || len(out) != 3 || out[2].GetResponseBody() == nil {
		t.Fatalf("a response body at the limit: %v %v", out, err)
	}
	out, err = h.exchange(t, ctx, headers("GET", "/respbody", true, "x-request-id", "r2"), respHeadersMore(),
		respBody([]byte("0123456789a"), true))
	if err != nil || len(out) != 3 {
		t.Fatalf("a response body one byte over: %v %v", out, err)
	}
	wantJSONError(t, out[2], 502, "response body too large", "r2")

	for reason, want := range map[string]float64{"request_body_too_large": 1, "response_body_too_large": 1, "recv": 0, "send": 0} {
		if v := testutil.ToFloat64(m.streamErrors.WithLabelValues(reason)); v != want {
			t.Errorf("%s: %v, want %v", reason, v, want)
		}
	}
	// A route whose plugins need no body buffers none: no limit applies.
	out, err = h.exchange(t, ctx, headers("POST", "/plain", false), reqBody([]byte("0123456789abcdef"), true))
	if err != nil || len(out) != 1 || out[0].GetImmediateResponse() != nil {
		t.Fatalf("pass-through with a body: %v %v", out, err)
	}
}

// TestOversizedReplyIs500JSON: a local reply or a change that would not
// fit one gRPC message (grpc-go would end the stream with
// ResourceExhausted: an empty 500 from Envoy, or with failure_mode_allow
// the request going upstream unchanged) is replaced by sidecall's 500 JSON
// error with the request id, logged once at error and counted.
func TestOversizedReplyIs500JSON(t *testing.T) {
	var buf lockedBuf
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zap.DebugLevel))
	m := NewMetrics(nil)
	h := startWith(t, securityConfig, securityRegistry(), Options{Metrics: m, Log: log})
	for i, c := range []struct {
		name, path string
		more       []*extprocv3.ProcessingRequest
		what       string
	}{
		{"local reply of 8 MiB", "/huge-reply", nil, "a local reply"},
		{"request body of 9 MiB", "/huge-body", nil, "a header or body mutation"},
		{"request header of 9 MiB", "/huge-header", nil, "a header or body mutation"},
		{"response body of 9 MiB", "/huge-response", []*extprocv3.ProcessingRequest{respHeaders()}, "a header or body mutation"},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := "rid-big-" + strconv.Itoa(i)
			out, err := h.exchange(t, context.Background(), append([]*extprocv3.ProcessingRequest{headers("GET", c.path, true, "x-request-id", id)}, c.more...)...)
			if err != nil || len(out) != 1+len(c.more) {
				t.Fatalf("want every reply and the stream to end OK, got %d replies, %v", len(out), err)
			}
			wantJSONError(t, out[len(out)-1], 500, "reply too large", id)
			if v := testutil.ToFloat64(m.streamErrors.WithLabelValues("reply_too_large")); v != float64(i+1) {
				t.Errorf("reply_too_large %v, want %d", v, i+1)
			}
			var lines []string
			for _, l := range strings.Split(buf.String(), "\n") {
				if strings.Contains(l, `"`+id+`"`) {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 || !strings.Contains(lines[0], `"level":"error"`) || !strings.Contains(lines[0], c.what) ||
				!strings.Contains(lines[0], "--max-recv-msg-size") {
				t.Errorf("want one error log line naming %q and the limit, got %q", c.what, lines)
			}
		})
	}
	for _, reason := range []string{"send", "recv"} {
		if v := testutil.ToFloat64(m.streamErrors.WithLabelValues(reason)); v != 0 {
			t.Errorf("%s stream errors %v", reason, v)
		}
	}
	if _, err := h.exchange(t, context.Background(), headers("GET", "/plain", true)); err != nil {
		t.Fatalf("next request: %v", err)
	}
}

// TestReplyReplacementFitsATinyLimit: even with a gRPC limit too small for
// sidecall's JSON error, the replacement is sent (the status alone).
func TestReplyReplacementFitsATinyLimit(t *testing.T) {
	srv := New(Options{MaxRecvMsgSize: 40})
	st := newStream(srv, nil, context.Background())
	st.x = flows.NewExchange(strings.Repeat("i", 100), flows.Request{}, nil)
	st.x.Reply = &flows.Reply{Status: 200, Body: bytes.Repeat([]byte("a"), 2048)}
	out := st.tooLarge(st.immediate())
	if ir := out.GetImmediateResponse(); ir.GetStatus().GetCode() != 500 || len(ir.GetBody()) != 0 {
		t.Fatalf("got %v", out)
	}
	if n := proto.Size(out); n > 40 {
		t.Errorf("replacement of %d bytes", n)
	}
}

// TestSkippedRequestHeadersFailClosed: on a route whose Envoy settings skip
// the request headers, the first message is a body, trailers or the
// response: the access plugins (authentication, say) cannot run, so the
// stream is answered 500 instead of letting the request through. A route
// without access plugins carries on as before.
func TestSkippedRequestHeadersFailClosed(t *testing.T) {
	var buf lockedBuf
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zap.DebugLevel))
	m := NewMetrics(nil)
	h := startWith(t, securityConfig, securityRegistry(), Options{Metrics: m, Log: log})
	onRoute := func(route string, msg *extprocv3.ProcessingRequest) *extprocv3.ProcessingRequest {
		msg.Attributes = map[string]*structpb.Struct{attrNamespace: {Fields: map[string]*structpb.Value{
			"xds.route_name": structpb.NewStringValue(route)}}}
		return msg
	}
	trailers := func() *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{
			RequestTrailers: &extprocv3.HttpTrailers{Trailers: &corev3.HeaderMap{}}}}
	}
	n := 0
	for name, first := range map[string]func() *extprocv3.ProcessingRequest{
		"request_body":     func() *extprocv3.ProcessingRequest { return reqBody([]byte(`{"a":1}`), true) },
		"request_trailers": trailers,
		"response_headers": respHeaders,
	} {
		t.Run(name, func(t *testing.T) {
			// corr's echo-id runs in access: it must not be skipped.
			out, err := h.exchange(t, context.Background(), onRoute("corr", first()))
			if err != nil || len(out) != 1 {
				t.Fatalf("%d replies, %v", len(out), err)
			}
			ir := out[0].GetImmediateResponse()
			if ir.GetStatus().GetCode() != 500 {
				t.Fatalf("want a 500, got %v", out[0])
			}
			var body map[string]string
			if err := json.Unmarshal(ir.GetBody(), &body); err != nil || body["message"] != "request headers not processed" || body["request_id"] == "" {
				t.Errorf("body %s", ir.GetBody())
			}
			n++
			if v := testutil.ToFloat64(m.streamErrors.WithLabelValues("headers_skipped")); v != float64(n) {
				t.Errorf("headers_skipped %v, want %d", v, n)
			}
			line, l := logLine(t, buf.String(), "request failed")
			if l["level"] != "error" || l["request_id"] != body["request_id"] || !strings.Contains(line, "began with "+name) ||
				!strings.Contains(line, "request_header_mode") {
				t.Errorf("log %s", line)
			}
			if c := strings.Count(buf.String(), body["request_id"]); c != 1 {
				t.Errorf("the request id is in %d log lines, want 1", c)
			}

			// No access plugin: answered as before, not counted.
			out, err = h.exchange(t, context.Background(), onRoute("plain", first()))
			if err != nil || len(out) != 1 || out[0].GetImmediateResponse() != nil {
				t.Fatalf("pass-through route: %v %v", out, err)
			}
			if v := testutil.ToFloat64(m.streamErrors.WithLabelValues("headers_skipped")); v != float64(n) {
				t.Errorf("headers_skipped %v, want %d", v, n)
			}
		})
	}
	// The response-only plugin keeps working when the request headers are
	// skipped (its route has no access plugin).
	out, err := h.exchange(t, context.Background(), onRoute("respbody", respHeadersMore()), respBody([]byte("x"), true))
	if err != nil || len(out) != 2 || out[1].GetResponseBody() == nil {
		t.Fatalf("response-only route: %v %v", out, err)
	}
}
