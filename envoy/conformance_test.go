package envoy

// Conformance: the stand-in held to Envoy's own ext_proc tests.
//
// Each case is one behaviour a processor can observe or depend on, named
// after what Envoy does, and run against the stand-in with a scripted
// ext_proc server on 127.0.0.1. The comment above each case names the
// Envoy test that shows the behaviour (file under
// test/extensions/filters/http/ext_proc/ of the Envoy repository, then
// suite.test). A case whose differs field is set documents a deliberate
// difference: it asserts what the stand-in does, and the field says why.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	dflt   = extprocfilterv3.ProcessingMode_DEFAULT
	none   = extprocfilterv3.ProcessingMode_NONE
	duplex = extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
)

// conformance is one behaviour.
type conformance struct {
	name    string
	differs string // set when the stand-in deliberately differs: why
	cfg     Config
	proc    script // nil: no processor is listening (cfg.Target is dialled)
	up      func(w http.ResponseWriter, r *http.Request, body []byte)
	req     request
	check   func(o *outcome)
	// defaultTimer keeps MessageTimeout 0 (Envoy's 200ms default); other
	// cases get 2s unless they set one, so a slow race-detector run is not
	// mistaken for a processor timeout.
	defaultTimer bool
}

// request is what the client sends.
type request struct {
	method, path string
	body         string
	chunks       []string      // body written in pieces, gap apart, chunked
	gap          time.Duration // between chunks; 0 means 20ms
	before       func(i int)   // if set, called before chunk i > 0 instead of the gap
	chunked      bool          // chunked encoding even for an empty body
	header       []string      // name, value pairs
	trailer      http.Header
	cancelAfter  time.Duration // the client gives up after this long
}

// outcome is what the client, the upstream, the processor and the
// stand-in saw.
type outcome struct {
	t       *testing.T
	e       *env
	res     *http.Response // nil when Envoy reset the downstream stream
	err     error
	body    string
	tr      *StreamTrace
	elapsed time.Duration
}

func runConformance(t *testing.T, cases []conformance) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.differs != "" {
				t.Logf("deliberate difference from Envoy: %s", c.differs)
			}
			o := c.run(t)
			c.check(o)
		})
	}
}

func (c conformance) run(t *testing.T) *outcome {
	t.Helper()
	up := startUpstream(t)
	up.reply = c.up
	cfg := c.cfg
	cfg.Upstream = up.URL
	if cfg.MessageTimeout == 0 && !c.defaultTimer {
		cfg.MessageTimeout = 2 * time.Second
	}
	e := &env{up: up}
	if c.proc != nil {
		e.ps = startFake(t, c.proc)
		conn, err := grpc.NewClient(e.ps.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		cfg.Conn = conn
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	e.p = p

	req := c.req
	if req.method == "" {
		req.method = "GET"
	}
	if req.path == "" {
		req.path = "/"
	}
	var body io.Reader
	switch {
	case len(req.chunks) > 0 || req.chunked:
		gap := req.gap
		if gap == 0 {
			gap = 20 * time.Millisecond
		}
		pr, pw := io.Pipe()
		go func() {
			for i, ch := range req.chunks {
				switch {
				case i > 0 && req.before != nil:
					req.before(i)
				case i > 0:
					time.Sleep(gap)
				}
				if _, err := io.WriteString(pw, ch); err != nil {
					return
				}
			}
			pw.Close()
		}()
		body = pr
	case req.body != "":
		body = strings.NewReader(req.body)
	}
	ctx := context.Background()
	if req.cancelAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.cancelAfter)
		defer cancel()
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, "http://app.local"+req.path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(req.header); i += 2 {
		hr.Header.Add(req.header[i], req.header[i+1])
	}
	if req.trailer != nil {
		hr.Trailer = req.trailer
	}
	start := time.Now()
	res, err := p.Do(hr)
	o := &outcome{t: t, e: e, res: res, err: err, elapsed: time.Since(start), tr: p.LastTrace()}
	if res != nil {
		b, _ := io.ReadAll(res.Body)
		o.body = string(b)
	}
	return o
}

// processorDone waits until the processor's handlers returned; only call
// it when the processor saw a stream (its WaitGroup must not be at zero).
func (o *outcome) processorDone() { o.e.ps.waitEnd() }

func (o *outcome) status(want int) {
	o.t.Helper()
	if o.res == nil {
		o.t.Fatalf("no response (%v), want status %d", o.err, want)
	}
	if o.res.StatusCode != want {
		o.t.Fatalf("status %d, want %d (details %q, body %q)", o.res.StatusCode, want, o.tr.Details, o.body)
	}
}

func (o *outcome) details(want string) {
	o.t.Helper()
	if o.tr.Details != want {
		o.t.Fatalf("response code details %q, want %q", o.tr.Details, want)
	}
}

func (o *outcome) kinds(want string) {
	o.t.Helper()
	if got := strings.Join(o.tr.SentKinds(), ","); got != want {
		o.t.Fatalf("Envoy sent %s, want %s", got, want)
	}
}

// stats checks counters by their Envoy names: "name", value, ...
func (o *outcome) stats(kv ...any) {
	o.t.Helper()
	s := o.e.p.Stats().Snapshot()
	for i := 0; i+1 < len(kv); i += 2 {
		name := kv[i].(string)
		if got := s[name]; got != int64(kv[i+1].(int)) {
			o.t.Errorf("%s = %d, want %d (all: %v)", name, got, kv[i+1], s)
		}
	}
}

func (o *outcome) upstreams(want int) {
	o.t.Helper()
	if n := o.e.up.count(); n != want {
		o.t.Fatalf("upstream saw %d requests, want %d", n, want)
	}
}

func (o *outcome) upstream() seen {
	o.t.Helper()
	return o.e.up.last(o.t)
}

// sent returns the i-th message Envoy sent.
func (o *outcome) sent(i int) *extprocv3.ProcessingRequest {
	o.t.Helper()
	m := o.tr.SentMessages()
	if i >= len(m) {
		o.t.Fatalf("Envoy sent %d messages, want at least %d", len(m), i+1)
	}
	return m[i]
}

// ---- processor scripts and reply builders ----

// silent reads every message and never answers.
func silent(fs *fakeStream) error {
	for {
		if _, ok := fs.recv(); !ok {
			return nil
		}
	}
}

// each answers every message with fn(m); a nil result means CONTINUE.
func each(fn func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse) script {
	return answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		if r := fn(m); r != nil {
			return []*extprocv3.ProcessingResponse{r}
		}
		return contAll(m)
	})
}

// kindIs reports whether m is the message of the named kind.
func kindIs(m *extprocv3.ProcessingRequest, k string) bool { return requestKind(m) == k }

func bodyTo(s string) *extprocv3.BodyMutation {
	return &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte(s)}}
}

func clearBody() *extprocv3.BodyMutation {
	return &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true}}
}

func removeH(names ...string) *extprocv3.HeaderMutation {
	return &extprocv3.HeaderMutation{RemoveHeaders: names}
}

func manySets(n int) *extprocv3.HeaderMutation {
	hm := &extprocv3.HeaderMutation{}
	for i := 0; i < n; i++ {
		k := "x-test-header-internal-" + strconv.Itoa(i)
		hm.SetHeaders = append(hm.SetHeaders, setH(k, k))
	}
	return hm
}

func mode(reqH, respH extprocfilterv3.ProcessingMode_HeaderSendMode, reqB, respB extprocfilterv3.ProcessingMode_BodySendMode,
	reqT, respT extprocfilterv3.ProcessingMode_HeaderSendMode) *ProcessingMode {
	return &ProcessingMode{RequestHeaderMode: reqH, ResponseHeaderMode: respH, RequestBodyMode: reqB,
		ResponseBodyMode: respB, RequestTrailerMode: reqT, ResponseTrailerMode: respT}
}

func ir(code typev3.StatusCode, body, details string, set ...*corev3.HeaderValueOption) *extprocv3.ProcessingResponse {
	r := &extprocv3.ImmediateResponse{Status: &typev3.HttpStatus{Code: code}, Body: []byte(body), Details: details}
	if len(set) > 0 {
		r.Headers = mutation(set...)
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: r}}
}

func override(d time.Duration) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(d)}
}

// withTrailers is an upstream that answers a body and trailer x-test-trailers.
func withTrailers(w http.ResponseWriter, _ *http.Request, _ []byte) {
	w.Header().Set("Trailer", "X-Test-Trailers")
	w.WriteHeader(200)
	_, _ = io.WriteString(w, strings.Repeat("b", 100))
	w.Header().Set("X-Test-Trailers", "Yes")
}

func withContentLength(body string) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = io.WriteString(w, body)
	}
}

func metaStruct(kv ...string) *structpb.Value {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.Fields[kv[i]] = structpb.NewStringValue(kv[i+1])
	}
	return structpb.NewStructValue(s)
}

func withMeta(r *extprocv3.ProcessingResponse, ns string, v *structpb.Value) *extprocv3.ProcessingResponse {
	if r.DynamicMetadata == nil {
		r.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{}}
	}
	r.DynamicMetadata.Fields[ns] = v
	return r
}

var (
	_ = fmt.Sprint
	_ = net.JoinHostPort
	_ = codes.OK
	_ = status.Error
	_ = wrapperspb.Bool
	_ = mutationrulesv3.HeaderMutationRules{}
)

func TestConformanceLifecycle(t *testing.T) {
	runConformance(t, []conformance{
		// filter_test.cc HttpFilterTest.SimplestPost
		{name: "opens_one_stream_and_sends_both_header_phases_by_default", proc: answer(contAll),
			req: request{method: "POST", body: "foo", header: []string{"Content-Type", "text/plain"}},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers")
				if o.sent(0).GetRequestHeaders().GetEndOfStream() {
					o.t.Error("request_headers end_of_stream set although a body follows")
				}
				o.stats("streams_started", 1, "stream_msgs_sent", 2, "stream_msgs_received", 2, "streams_closed", 1)
			}},
		// filter_test.cc HttpFilterTest.ResponseTrailerMutationExceedSizeLimit (protocol_config on the
		// response headers message, which is the first, and not on the trailers message)
		{name: "sends_protocol_config_on_the_first_message_only", proc: answer(contAll),
			cfg: Config{ProcessingMode: mode(skip, send, none, none, skip, send)}, up: withTrailers,
			check: func(o *outcome) {
				o.status(200)
				o.kinds("response_headers,response_trailers")
				if o.sent(0).GetProtocolConfig() == nil || o.sent(1).GetProtocolConfig() != nil {
					o.t.Fatalf("protocol_config %v / %v", o.sent(0).GetProtocolConfig(), o.sent(1).GetProtocolConfig())
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.PerRouteDisable
		{name: "opens_no_stream_when_the_route_disables_the_filter", proc: answer(contAll),
			cfg: Config{Route: func(*http.Request) RouteSettings { return RouteSettings{Disabled: true} }},
			check: func(o *outcome) {
				o.status(200)
				o.upstreams(1)
				o.stats("streams_started", 0)
				if o.e.ps.count() != 0 || o.tr.Opened {
					o.t.Fatal("a stream was opened")
				}
			}},
		// filter_test.cc HttpFilterTest.ProcessingModeResponseHeadersOnly
		{name: "sends_only_response_headers_when_request_headers_skip", proc: answer(contAll),
			cfg: Config{ProcessingMode: mode(skip, send, none, none, skip, skip)},
			req: request{method: "POST", body: "foo"},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("response_headers")
				o.stats("streams_started", 1, "stream_msgs_sent", 1, "stream_msgs_received", 1, "streams_closed", 1)
			}},
		// filter_test.cc HttpFilterTest.ProcessingModeRequestHeadersOnly
		{name: "sends_only_request_headers_when_response_headers_skip", proc: answer(contAll),
			cfg: Config{ProcessingMode: mode(send, skip, none, none, skip, skip)},
			req: request{method: "POST", body: "foo"},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers")
				o.stats("stream_msgs_sent", 1, "stream_msgs_received", 1, "streams_closed", 1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetBufferedButNoBodies
		{name: "sets_end_of_stream_on_the_headers_of_bodiless_messages", proc: answer(contAll),
			cfg: Config{ProcessingMode: mode(send, send, buffered, buffered, skip, skip)},
			up: func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Length", "0")
				w.WriteHeader(200)
			},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers")
				if !o.sent(0).GetRequestHeaders().GetEndOfStream() || !o.sent(1).GetResponseHeaders().GetEndOfStream() {
					o.t.Fatal("end_of_stream not set on headers without a body")
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetHeadersNonUtf8WithValueInString
		{name: "sends_header_values_as_raw_value_bytes", proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			if kindIs(m, "request_headers") {
				return reply(m, &extprocv3.CommonResponse{HeaderMutation: removeH("x-bad-utf8")})
			}
			return nil
		}),
			cfg: Config{ProcessingMode: mode(send, skip, none, none, skip, skip)},
			req: request{header: []string{"X-Bad-Utf8", "valid_prefix\xc3(valid_suffix"}},
			check: func(o *outcome) {
				o.status(200)
				for _, h := range o.sent(0).GetRequestHeaders().GetHeaders().GetHeaders() {
					if h.GetValue() != "" || len(h.GetRawValue()) == 0 {
						o.t.Errorf("header %q: value %q, raw_value %q", h.GetKey(), h.GetValue(), h.GetRawValue())
					}
				}
				if v, _ := headerOf(o.sent(0).GetRequestHeaders().GetHeaders(), "x-bad-utf8"); v != "valid_prefix\xc3(valid_suffix" {
					o.t.Errorf("x-bad-utf8 = %q", v)
				}
				if o.upstream().Header.Get("X-Bad-Utf8") != "" {
					o.t.Error("x-bad-utf8 not removed")
				}
			}},
		// filter_test.cc HttpFilterTest.SendDynamicMetadata
		{name: "forwards_only_the_forwarding_namespaces_on_every_message", proc: answer(contAll),
			cfg: Config{
				MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
					"request.has.data":  metaStruct("data", "request").GetStructValue(),
					"not.selected.data": metaStruct("data", "request").GetStructValue(),
				}},
				ForwardingNamespaces: []string{"request.has.data", "neither.have.data"},
			},
			check: func(o *outcome) {
				o.status(200)
				for i, m := range o.tr.SentMessages() {
					fm := m.GetMetadataContext().GetFilterMetadata()
					if fm["request.has.data"].GetFields()["data"].GetStringValue() != "request" {
						o.t.Errorf("message %d lacks request.has.data", i)
					}
					if _, ok := fm["not.selected.data"]; ok {
						o.t.Errorf("message %d forwards an unlisted namespace", i)
					}
					if _, ok := fm["neither.have.data"]; ok {
						o.t.Errorf("message %d invents a namespace", i)
					}
				}
			}},
		// filter_test.cc HttpFilterTest.PostAndClose; ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndCloseStream
		{name: "continues_unmodified_when_the_server_closes_with_ok", proc: func(fs *fakeStream) error {
			fs.recv()
			return nil
		},
			req: request{method: "POST", body: "data"},
			check: func(o *outcome) {
				o.status(200)
				o.upstreams(1)
				if o.upstream().Body != "data" {
					o.t.Fatalf("upstream body %q", o.upstream().Body)
				}
				o.kinds("request_headers")
				o.stats("streams_started", 1, "stream_msgs_sent", 1, "streams_closed", 1, "failure_mode_allowed", 0)
			}},
		// ordering_test.cc OrderingTest.GrpcCloseAfter; ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndCloseStreamOnResponse
		{name: "ignores_the_processor_after_an_ok_close_between_messages", proc: func(fs *fakeStream) error {
			for {
				m, ok := fs.recv()
				if !ok {
					return nil
				}
				if kindIs(m, "response_headers") {
					return nil
				}
				fs.send(cont(m))
			}
		},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers")
				if o.body != "upstream:" {
					o.t.Fatalf("body %q", o.body)
				}
			}},
		// filter_test.cc HttpFilterTest.PostAndDownstreamReset; ext_proc_integration_test.cc ExtProcIntegrationTest.ResponseMessageTimeoutDownstreamDisconnect
		{name: "closes_the_stream_without_a_timeout_when_the_client_goes_away", proc: silent,
			cfg: Config{MessageTimeout: 5 * time.Second},
			req: request{cancelAfter: 100 * time.Millisecond},
			check: func(o *outcome) {
				if o.elapsed > 2*time.Second {
					o.t.Fatalf("took %v: Envoy stops waiting when the downstream goes away", o.elapsed)
				}
				o.stats("streams_started", 1, "stream_msgs_sent", 1, "streams_closed", 1, "message_timeouts", 0)
				o.upstreams(0)
			}},
	})
}

// onRequestHeaders answers request_headers with cr and everything else
// with CONTINUE; the mode is the shipped one (response headers SKIP).
func onRequestHeaders(cr *extprocv3.CommonResponse) script { return onKind("request_headers", cr) }

func TestConformanceHeaderMutations(t *testing.T) {
	sidecar := Config{ProcessingMode: sidecallMode()}
	rules := func(r *mutationrulesv3.HeaderMutationRules) Config {
		return Config{ProcessingMode: sidecallMode(), MutationRules: r}
	}
	respOnly := Config{ProcessingMode: mode(skip, send, none, none, skip, skip)}
	runConformance(t, []conformance{
		// mutation_utils_test.cc MutationUtils.TestApplyMutations ("Default of append is false")
		{name: "overwrites_a_header_when_append_is_unset", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-replace-this", "nope"))}),
			req:  request{header: []string{"X-Replace-This", "Yes", "X-Replace-This", "Again"}},
			check: func(o *outcome) {
				o.status(200)
				if v := o.upstream().Header.Values("X-Replace-This"); len(v) != 1 || v[0] != "nope" {
					o.t.Fatalf("x-replace-this = %q", v)
				}
			}},
		// filter_test.cc HttpFilterTest.PostAndChangeHeaders
		{name: "applies_set_append_and_remove_from_a_headers_reply", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders:    []*corev3.HeaderValueOption{setH("x-new-header", "new"), addH("x-some-other-header", "no")},
				RemoveHeaders: []string{"x-do-we-want-this"}}}),
			req: request{method: "POST", body: "foo", header: []string{"X-Some-Other-Header", "yes", "X-Do-We-Want-This", "no"}},
			check: func(o *outcome) {
				o.status(200)
				h := o.upstream().Header
				if h.Get("X-New-Header") != "new" || strings.Join(h.Values("X-Some-Other-Header"), ",") != "yes,no" || h.Get("X-Do-We-Want-This") != "" {
					o.t.Fatalf("upstream headers %v", h)
				}
			}},
		// mutation_utils_test.cc MutationUtils.TestApplyMutations: mutation_utils.cc reads only the
		// deprecated append field; append_action is never consulted (Envoy issue 36982)
		{name: "reads_append_and_not_append_action", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "x-a", RawValue: []byte("new")},
				AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD}}}}),
			req: request{header: []string{"X-A", "old"}},
			check: func(o *outcome) {
				o.status(200)
				if v := o.upstream().Header.Values("X-A"); len(v) != 1 || v[0] != "new" {
					o.t.Fatalf("x-a = %q: append_action must not append", v)
				}
			}},
		// mutation_utils_test.cc MutationUtils.TestApplyMutations ("remove is applied before append")
		{name: "removes_before_it_sets", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders: []*corev3.HeaderValueOption{addH("x-remove-and-append-this", "4")}, RemoveHeaders: []string{"x-remove-and-append-this"}}}),
			req: request{header: []string{"X-Remove-And-Append-This", "old"}},
			check: func(o *outcome) {
				o.status(200)
				if v := o.upstream().Header.Values("X-Remove-And-Append-This"); len(v) != 1 || v[0] != "4" {
					o.t.Fatalf("x-remove-and-append-this = %q", v)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetHeadersNonUtf8WithValueInBytes
		// (replies are read from raw_value only since Envoy 1.32)
		{name: "reads_header_values_from_raw_value_only", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				setH("x-new-utf8", "valid_prefix\xc3(valid_suffix"),
				{Header: &corev3.HeaderValue{Key: "x-value-only", Value: "ignored"}}}}}),
			check: func(o *outcome) {
				o.status(200)
				h := o.upstream().Header
				if h.Get("X-New-Utf8") != "valid_prefix\xc3(valid_suffix" {
					o.t.Errorf("x-new-utf8 = %q", h.Get("X-New-Utf8"))
				}
				if v, ok := h["X-Value-Only"]; !ok || v[0] != "" {
					o.t.Errorf("x-value-only = %q, want present and empty", v)
				}
			}},
		// filter_test.cc HttpFilterTest.IgnoreInvalidHeaderMutations
		{name: "ignores_host_changes_by_default", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: mutation(setH("Host", "wrong:1234"))}),
			check: func(o *outcome) {
				o.status(200)
				if o.upstream().Host != "app.local" {
					o.t.Fatalf("host %q", o.upstream().Host)
				}
				o.stats("rejected_header_mutations", 1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetPathHeader
		{name: "sets_path_but_ignores_scheme_authority_and_method_by_default", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: mutation(setH(":path", "/mutated_path/bluh"),
				setH(":scheme", "https"), setH(":authority", "new_host"), setH(":method", "POST"))}),
			check: func(o *outcome) {
				o.status(200)
				s := o.upstream()
				if s.Path != "/mutated_path/bluh" || s.Method != "GET" || s.Host != "app.local" {
					o.t.Fatalf("upstream saw %s %s host %s", s.Method, s.Path, s.Host)
				}
				o.stats("rejected_header_mutations", 3)
			}},
		// mutation_utils_test.cc MutationUtils.TestApplyMutations (X-Envoy-StrangeThing);
		// filter_test.cc HttpFilterTest.IgnoreInvalidHeaderMutations (remove x-envoy-special-thing)
		{name: "ignores_x_envoy_headers_by_default", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders: []*corev3.HeaderValueOption{setH("X-Envoy-StrangeThing", "Yes")}, RemoveHeaders: []string{"x-envoy-special-thing"}}}),
			req: request{header: []string{"X-Envoy-Special-Thing", "kept"}},
			check: func(o *outcome) {
				o.status(200)
				h := o.upstream().Header
				if h.Get("X-Envoy-Strangething") != "" || h.Get("X-Envoy-Special-Thing") != "kept" {
					o.t.Fatalf("upstream headers %v", h)
				}
				o.stats("rejected_header_mutations", 2)
			}},
		// mutation_utils_test.cc MutationUtils.TestApplyMutations ("Attempts to remove \":\" and \"host\" headers should be ignored")
		{name: "never_removes_pseudo_headers_or_host", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: removeH("host", ":method", ":path")}),
			req:  request{path: "/keep"},
			check: func(o *outcome) {
				o.status(200)
				s := o.upstream()
				if s.Host != "app.local" || s.Method != "GET" || s.Path != "/keep" {
					o.t.Fatalf("upstream saw %s %s host %s", s.Method, s.Path, s.Host)
				}
				o.stats("rejected_header_mutations", 3)
			}},
		// mutation_utils_test.cc MutationUtils.TestNonAppendableHeaders
		{name: "ignores_appending_to_a_pseudo_header", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: mutation(setH(":path", "/foo"), addH(":path", "/baz"))}),
			check: func(o *outcome) {
				o.status(200)
				if o.upstream().Path != "/foo" {
					o.t.Fatalf("path %q", o.upstream().Path)
				}
				o.stats("rejected_header_mutations", 1)
			}},
		// filter_test.cc HttpFilterTest.FailOnInvalidHeaderMutations
		{name: "fails_the_request_on_a_disallowed_mutation_with_disallow_is_error",
			cfg:  rules(&mutationrulesv3.HeaderMutationRules{DisallowIsError: wrapperspb.Bool(true)}),
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: mutation(setH("Host", "wrong:1234"))}),
			check: func(o *outcome) {
				o.status(500)
				o.upstreams(0)
				o.stats("rejected_header_mutations", 1)
			}},
		// mutation_utils_test.cc MutationUtils.TestSetHeaderWithInvalidCharacter (value); ext_proc.cc
		// answers any non-precondition processing error with a local reply, fail-open or not
		{name: "fails_the_request_on_an_invalid_header_value_even_with_failure_mode_allow",
			cfg:  Config{ProcessingMode: sidecallMode(), FailureModeAllow: true},
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-append-this", "value\r"))}),
			check: func(o *outcome) {
				o.status(500)
				o.details("Invalid_character_in_set_headers_mutation.")
				o.upstreams(0)
				o.stats("failure_mode_allowed", 0, "rejected_header_mutations", 1)
			}},
		// mutation_utils_test.cc MutationUtils.TestSetHeaderWithInvalidCharacter (key)
		{name: "fails_the_request_on_an_invalid_header_name", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-append-this\n", "value"))}),
			check: func(o *outcome) {
				o.status(500)
				o.upstreams(0)
			}},
		// mutation_utils_test.cc MutationUtils.TestRemoveHeaderWithInvalidCharacter
		{name: "fails_the_request_on_an_invalid_name_to_remove", cfg: sidecar,
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: removeH("host\n")}),
			check: func(o *outcome) {
				o.status(500)
				o.details("Invalid_character_in_remove_headers_mutation.")
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.SetHostHeaderRoutingSucceeded
		{name: "changes_authority_with_allow_all_routing_and_reroutes_on_clear_route_cache",
			cfg: Config{ProcessingMode: sidecallMode(),
				MutationRules: &mutationrulesv3.HeaderMutationRules{AllowAllRouting: wrapperspb.Bool(true)},
				Route:         func(r *http.Request) RouteSettings { return RouteSettings{Name: "vhost-" + r.Host} }},
			proc: onRequestHeaders(&extprocv3.CommonResponse{ClearRouteCache: true, HeaderMutation: mutation(setH(":authority", "new_host"))}),
			check: func(o *outcome) {
				o.status(200)
				if o.upstream().Host != "new_host" || o.tr.Route != "vhost-new_host" {
					o.t.Fatalf("upstream host %q, route %q", o.upstream().Host, o.tr.Route)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetHeadersOnResponse
		{name: "sets_the_response_status", cfg: respOnly,
			proc: onKind("response_headers", &extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-response-processed", "1"), setH(":status", "201"))}),
			check: func(o *outcome) {
				o.status(201)
				if o.res.Header.Get("X-Response-Processed") != "1" {
					o.t.Fatal("x-response-processed missing")
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetHeadersOnResponseBadStatus
		{name: "ignores_a_status_below_200_and_applies_the_rest", cfg: respOnly,
			proc: onKind("response_headers", &extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-response-processed", "1"), setH(":status", "100"))}),
			check: func(o *outcome) {
				o.status(200)
				if o.res.Header.Get("X-Response-Processed") != "1" {
					o.t.Fatal("x-response-processed missing")
				}
				o.stats("rejected_header_mutations", 1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetHeadersOnResponseTwoStatuses
		{name: "ignores_a_second_appended_status", cfg: respOnly,
			proc:  onKind("response_headers", &extprocv3.CommonResponse{HeaderMutation: mutation(setH(":status", "201"), addH(":status", "202"))}),
			check: func(o *outcome) { o.status(201) }},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.SetHeaderMutationFailWithRequestHeader
		{name: "fails_when_set_headers_outnumber_max_headers_count",
			cfg:  Config{ProcessingMode: sidecallMode(), MaxHeaderCount: 50, MaxHeadersKB: 30},
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: manySets(60)}),
			check: func(o *outcome) {
				o.status(500)
				o.upstreams(0)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RemoveHeaderMutationFailWithResponseHeader
		{name: "fails_when_remove_headers_outnumber_max_headers_count_on_the_response",
			cfg: Config{ProcessingMode: mode(skip, send, none, none, skip, skip), MaxHeaderCount: 50},
			proc: func() script {
				rm := &extprocv3.HeaderMutation{}
				for i := 0; i < 60; i++ {
					rm.RemoveHeaders = append(rm.RemoveHeaders, "x-test-header-internal-"+strconv.Itoa(i))
				}
				return onKind("response_headers", &extprocv3.CommonResponse{HeaderMutation: rm})
			}(),
			check: func(o *outcome) { o.status(500) }},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.HeaderMutationResultSizeFailWithRequestTrailer
		{name: "fails_when_the_mutated_map_outgrows_max_headers_kb",
			cfg:  Config{ProcessingMode: mode(skip, skip, none, none, send, skip), MaxHeaderCount: 50, MaxHeadersKB: 1},
			proc: onKind("request_trailers", &extprocv3.CommonResponse{HeaderMutation: manySets(5)}),
			req:  request{method: "POST", chunks: []string{"abc"}, trailer: http.Header{"X-Trailer-Foo": {strings.Repeat("a", 950)}}},
			check: func(o *outcome) {
				o.status(500)
				o.kinds("request_trailers")
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.HeaderMutationCheckPassWithHcmSizeConfig
		{name: "applies_mutations_within_the_hcm_limits",
			cfg:  Config{ProcessingMode: sidecallMode(), MaxHeaderCount: 50, MaxHeadersKB: 30},
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: manySets(20)}),
			check: func(o *outcome) {
				o.status(200)
				if o.upstream().Header.Get("X-Test-Header-Internal-19") == "" {
					o.t.Fatal("mutation not applied")
				}
			}},
		// ext_proc_misc_integration_test.cc ExtProcStatusOnErrorIntegrationTest.ProcessingErrorCustomStatus
		{name: "answers_status_on_error_for_a_failed_mutation",
			cfg: Config{ProcessingMode: sidecallMode(), StatusOnError: 422,
				MutationRules: &mutationrulesv3.HeaderMutationRules{DisallowIsError: wrapperspb.Bool(true), DisallowSystem: wrapperspb.Bool(true)}},
			proc:  onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: mutation(setH(":system-header", "invalid"))}),
			check: func(o *outcome) { o.status(422) }},
	})
}

func TestConformanceBodies(t *testing.T) {
	reqBuffered := Config{ProcessingMode: mode(send, send, buffered, none, skip, skip)}
	runConformance(t, []conformance{
		// filter_test.cc HttpFilterTest.PostAndChangeRequestBodyBufferedComesFast
		{name: "buffers_the_whole_body_into_one_message", cfg: reqBuffered, proc: answer(contAll),
			req: request{method: "POST", chunks: []string{"Hello", ", ", "there, ", "World!"}},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,request_body,response_headers")
				b := o.sent(1).GetRequestBody()
				if string(b.GetBody()) != "Hello, there, World!" || !b.GetEndOfStream() {
					o.t.Fatalf("body message %q eos %v", b.GetBody(), b.GetEndOfStream())
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetBodyOnBoth
		{name: "replaces_both_bodies_when_content_length_is_kept_consistent",
			cfg: Config{ProcessingMode: mode(send, send, buffered, buffered, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				switch requestKind(m) {
				case "request_headers":
					return reply(m, &extprocv3.CommonResponse{HeaderMutation: mutation(setH("content-length", "13"))})
				case "request_body":
					return reply(m, &extprocv3.CommonResponse{BodyMutation: bodyTo("Hello, World!")})
				case "response_headers":
					return reply(m, &extprocv3.CommonResponse{HeaderMutation: removeH("content-length")})
				case "response_body":
					return reply(m, &extprocv3.CommonResponse{BodyMutation: bodyTo("123")})
				}
				return nil
			}),
			up:  withContentLength("original response"),
			req: request{method: "POST", body: "Replace this!"},
			check: func(o *outcome) {
				o.status(200)
				if s := o.upstream(); s.Body != "Hello, World!" || s.ContentLength != 13 {
					o.t.Fatalf("upstream body %q length %d", s.Body, s.ContentLength)
				}
				if o.body != "123" {
					o.t.Fatalf("client body %q", o.body)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.MismatchedContentLengthAndBodyLength
		{name: "rejects_a_body_mutation_that_contradicts_content_length",
			cfg: Config{ProcessingMode: mode(send, skip, buffered, none, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				switch requestKind(m) {
				case "request_headers":
					return reply(m, &extprocv3.CommonResponse{HeaderMutation: mutation(setH("content-length", "11"))})
				case "request_body":
					return reply(m, &extprocv3.CommonResponse{BodyMutation: bodyTo("Hello, World!")})
				}
				return nil
			}),
			req: request{method: "POST", body: "Replace this!"},
			check: func(o *outcome) {
				o.status(500)
				o.details("mismatch_between_content_length_and_the_length_of_the_mutated_body")
				o.upstreams(0)
			}},
		// filter_test.cc HttpFilterTest.PostAndChangeBothBodiesBufferedOneChunk
		{name: "clears_a_buffered_body_with_clear_body",
			cfg: Config{ProcessingMode: mode(skip, skip, buffered, buffered, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				switch requestKind(m) {
				case "request_body":
					return reply(m, &extprocv3.CommonResponse{BodyMutation: clearBody()})
				case "response_body":
					return reply(m, &extprocv3.CommonResponse{BodyMutation: bodyTo("Hello, World!")})
				}
				return nil
			}),
			req: request{method: "POST", body: strings.Repeat("x", 100)},
			check: func(o *outcome) {
				o.status(200)
				if s := o.upstream(); s.Body != "" {
					o.t.Fatalf("upstream body %q", s.Body)
				}
				if o.body != "Hello, World!" {
					o.t.Fatalf("client body %q", o.body)
				}
				o.stats("streams_started", 1, "stream_msgs_sent", 2, "stream_msgs_received", 2)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RemoveRequestContentLengthInBufferedMode
		{name: "removes_content_length_for_a_buffered_body_without_headers",
			cfg:  Config{ProcessingMode: mode(skip, skip, buffered, none, skip, skip)},
			proc: onKind("request_body", &extprocv3.CommonResponse{BodyMutation: bodyTo("Hello, World!")}),
			req:  request{method: "POST", body: "test!"},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_body")
				if s := o.upstream(); s.ContentLength != -1 || s.Body != "Hello, World!" {
					o.t.Fatalf("upstream length %d body %q", s.ContentLength, s.Body)
				}
			}},
		// filter_misc_test.cc HttpFilter2Test.LastDecodeDataCallExceedsStreamBufferLimitWouldJustRaiseHighWatermark
		// (its comment: a BUFFERED request body over the buffer limit ends in a 413 local reply)
		{name: "answers_413_to_a_buffered_request_over_the_buffer_limit",
			cfg: Config{ProcessingMode: mode(send, skip, buffered, none, skip, skip), BufferLimit: 8}, proc: answer(contAll),
			req: request{method: "POST", body: "0123456789"},
			check: func(o *outcome) {
				o.status(413)
				o.upstreams(0)
			}},
		// filter_misc_test.cc HttpFilter2Test.LastEncodeDataCallExceedsStreamBufferLimitWouldJustRaiseHighWatermark
		// (its comment: a BUFFERED response body over the limit ends in a 500)
		{name: "answers_500_to_a_buffered_response_over_the_buffer_limit",
			cfg: Config{ProcessingMode: mode(skip, send, none, buffered, skip, skip), BufferLimit: 8}, proc: answer(contAll),
			up: withContentLength("0123456789"),
			check: func(o *outcome) {
				o.status(500)
			}},
		// filter_misc_test.cc HttpFilter2Test.LastDecodeDataCallExceedsStreamBufferLimitWouldJustRaiseHighWatermark
		{name: "lets_a_body_over_the_limit_through_when_no_body_is_processed",
			cfg: Config{BufferLimit: 10},
			proc: onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: mutation(setH("foo", "gift-from-external-server"),
				setH(":path", "/mutated_path/bluh"))}),
			req: request{method: "POST", path: "/bluh", body: "Definitely more than 10 bytes data."},
			check: func(o *outcome) {
				o.status(200)
				s := o.upstream()
				if s.Path != "/mutated_path/bluh" || s.Header.Get("Foo") != "gift-from-external-server" || s.Body != "Definitely more than 10 bytes data." {
					o.t.Fatalf("upstream %+v", s)
				}
			}},
		// filter_test.cc HttpFilterTest.PostFastAndBigRequestPartialBuffering
		{name: "sends_a_partial_body_once_the_limit_is_passed_and_streams_the_rest",
			cfg: Config{ProcessingMode: mode(send, send, partial, none, skip, skip), BufferLimit: 10000}, proc: answer(contAll),
			req: request{method: "POST", chunks: []string{strings.Repeat("a", 5000), strings.Repeat("b", 6000), strings.Repeat("c", 2000)}},
			check: func(o *outcome) {
				o.status(200)
				b := o.sent(1).GetRequestBody()
				if len(b.GetBody()) < 10000 || b.GetEndOfStream() {
					o.t.Fatalf("partial body message of %d bytes, eos %v", len(b.GetBody()), b.GetEndOfStream())
				}
				if len(o.upstream().Body) != 13000 {
					o.t.Fatalf("upstream got %d bytes", len(o.upstream().Body))
				}
			}},
		// filter_test.cc HttpFilterTest.PostAndChangeBothBodiesBufferedPartialMultiChunk
		{name: "treats_a_partial_body_under_the_limit_like_a_buffered_one",
			cfg: Config{ProcessingMode: mode(skip, skip, partial, partial, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				if kindIs(m, "request_body") {
					return reply(m, &extprocv3.CommonResponse{BodyMutation: bodyTo("Changed it!")})
				}
				return nil
			}),
			up:  withContentLength(strings.Repeat("r", 300)),
			req: request{method: "POST", chunks: []string{strings.Repeat("x", 100), ""}},
			check: func(o *outcome) {
				o.status(200)
				if o.upstream().Body != "Changed it!" {
					o.t.Fatalf("upstream body %q", o.upstream().Body)
				}
				rb := o.sent(1).GetResponseBody()
				if len(rb.GetBody()) != 300 || !rb.GetEndOfStream() || o.body != strings.Repeat("r", 300) {
					o.t.Fatalf("response body message %d bytes eos %v, client got %d bytes", len(rb.GetBody()), rb.GetEndOfStream(), len(o.body))
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RemoveRequestContentLengthInBufferedPartialMode
		{name: "removes_content_length_for_a_partial_body",
			cfg:  Config{ProcessingMode: mode(send, skip, partial, none, skip, skip)},
			proc: onKind("request_body", &extprocv3.CommonResponse{BodyMutation: bodyTo("Hello, World!")}),
			req:  request{method: "POST", body: "test!"},
			check: func(o *outcome) {
				o.status(200)
				if s := o.upstream(); s.ContentLength != -1 || s.Body != "Hello, World!" {
					o.t.Fatalf("upstream length %d body %q", s.ContentLength, s.Body)
				}
			}},
		// filter_test.cc HttpFilterTest.PostStreamingBodies; filter_test.cc HttpFilterTest.StreamingDataSmallChunk
		{name: "streams_one_message_per_chunk_and_forwards_each_reply_in_order",
			cfg: Config{ProcessingMode: mode(send, skip, streamed, none, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				if b := m.GetRequestBody(); b != nil {
					return reply(m, &extprocv3.CommonResponse{BodyMutation: bodyTo(strings.ToUpper(string(b.GetBody())))})
				}
				return nil
			}),
			req: request{method: "POST", chunks: []string{"chunk0-", "chunk1-", "chunk2-"}, gap: 40 * time.Millisecond},
			check: func(o *outcome) {
				o.status(200)
				if o.upstream().Body != "CHUNK0-CHUNK1-CHUNK2-" {
					o.t.Fatalf("upstream body %q", o.upstream().Body)
				}
				eos := 0
				for _, m := range o.tr.SentMessages()[1:] {
					if m.GetRequestBody().GetEndOfStream() {
						eos++
					}
				}
				if eos != 1 || o.tr.SentCount() < 3 {
					o.t.Fatalf("%d messages, %d with end_of_stream", o.tr.SentCount(), eos)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RemoveRequestContentLengthAfterStreamedProcessing
		{name: "drops_content_length_and_ignores_setting_it_in_streamed_mode",
			cfg: Config{ProcessingMode: mode(send, skip, streamed, none, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				switch requestKind(m) {
				case "request_headers":
					return reply(m, &extprocv3.CommonResponse{HeaderMutation: mutation(setH("content-length", "13"))})
				case "request_body":
					return reply(m, &extprocv3.CommonResponse{BodyMutation: bodyTo("Hello, World!")})
				}
				return nil
			}),
			req: request{method: "POST", body: "Replace this!"},
			check: func(o *outcome) {
				o.status(200)
				if s := o.upstream(); s.ContentLength != -1 || s.Body != "Hello, World!" {
					o.t.Fatalf("upstream length %d body %q", s.ContentLength, s.Body)
				}
				if v, _ := headerOf(o.sent(0).GetRequestHeaders().GetHeaders(), "content-length"); v != "13" {
					o.t.Fatalf("the processor should still see the client's content-length, got %q", v)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RemoveResponseContentLength
		{name: "removes_the_response_content_length_in_streamed_mode",
			cfg:  Config{ProcessingMode: mode(skip, send, none, streamed, skip, skip)},
			proc: onKind("response_body", &extprocv3.CommonResponse{BodyMutation: bodyTo("Hello, World!")}),
			up:   withContentLength(strings.Repeat("u", 100)),
			check: func(o *outcome) {
				o.status(200)
				if o.res.Header.Get("Content-Length") != "" || o.body != "Hello, World!" {
					o.t.Fatalf("content-length %q body %q", o.res.Header.Get("Content-Length"), o.body)
				}
			}},
		// filter_test.cc HttpFilterTest.StreamingBodyMutateLastChunk
		{name: "streams_the_response_body_chunk_by_chunk",
			cfg: Config{ProcessingMode: mode(skip, skip, none, streamed, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				if b := m.GetResponseBody(); b != nil {
					return reply(m, &extprocv3.CommonResponse{BodyMutation: bodyTo("<" + string(b.GetBody()) + ">")})
				}
				return nil
			}),
			up: func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				for i := 0; i < 3; i++ {
					_, _ = io.WriteString(w, strconv.Itoa(i))
					w.(http.Flusher).Flush()
					time.Sleep(40 * time.Millisecond)
				}
			},
			check: func(o *outcome) {
				o.status(200)
				var want string
				for _, m := range o.tr.SentMessages() {
					if b := m.GetResponseBody(); b != nil {
						want += "<" + string(b.GetBody()) + ">"
					}
				}
				if o.body != want || !strings.Contains(o.body, "2") {
					o.t.Fatalf("client body %q, want %q", o.body, want)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.BufferBodyOverrideGetRequestNoBody
		{name: "sends_no_body_message_for_a_request_without_body", cfg: reqBuffered, proc: answer(contAll),
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers")
				if !o.sent(0).GetRequestHeaders().GetEndOfStream() {
					o.t.Fatal("end_of_stream not set")
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.BufferBodyOverridePostWithEmptyBody
		{name: "sends_an_empty_body_message_for_an_empty_body_after_headers", cfg: reqBuffered, proc: answer(contAll),
			req: request{method: "POST", chunked: true},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,request_body,response_headers")
				if o.sent(0).GetRequestHeaders().GetEndOfStream() {
					o.t.Fatal("headers end_of_stream set before the (empty) body")
				}
				if b := o.sent(1).GetRequestBody(); len(b.GetBody()) != 0 || !b.GetEndOfStream() {
					o.t.Fatalf("body %q eos %v", b.GetBody(), b.GetEndOfStream())
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetBodyAndHeadersOnResponse
		{name: "applies_header_and_body_mutations_of_a_buffered_response_body_reply",
			cfg: Config{ProcessingMode: mode(send, send, none, buffered, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				switch requestKind(m) {
				case "response_headers":
					return reply(m, &extprocv3.CommonResponse{HeaderMutation: mutation(setH("content-length", "13"))})
				case "response_body":
					return reply(m, &extprocv3.CommonResponse{BodyMutation: bodyTo("Hello, World!"),
						HeaderMutation: mutation(setH("x-testing-response-header", "Yes"))})
				}
				return nil
			}),
			up: withContentLength(strings.Repeat("u", 100)),
			check: func(o *outcome) {
				o.status(200)
				if o.res.Header.Get("X-Testing-Response-Header") != "Yes" || o.res.Header.Get("Content-Length") != "13" || o.body != "Hello, World!" {
					o.t.Fatalf("headers %v body %q", o.res.Header, o.body)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetBodyAndHeadersOnResponsePartialBuffered
		{name: "applies_header_mutations_of_a_partial_body_reply_and_drops_content_length",
			cfg: Config{ProcessingMode: mode(send, send, none, partial, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				switch requestKind(m) {
				case "response_headers":
					return reply(m, &extprocv3.CommonResponse{HeaderMutation: mutation(setH("content-length", "100"))})
				case "response_body":
					return reply(m, &extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-testing-response-header", "Yes"))})
				}
				return nil
			}),
			up: withContentLength(strings.Repeat("u", 100)),
			check: func(o *outcome) {
				o.status(200)
				if o.res.Header.Get("X-Testing-Response-Header") != "Yes" || o.res.Header.Get("Content-Length") != "" {
					o.t.Fatalf("headers %v", o.res.Header)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetBodyOnResponse
		{name: "sends_the_response_body_alone_when_response_headers_skip",
			cfg:  Config{ProcessingMode: mode(send, skip, none, buffered, skip, skip)},
			proc: onKind("response_body", &extprocv3.CommonResponse{BodyMutation: bodyTo("Hello, World!")}),
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_body")
				if !o.sent(1).GetResponseBody().GetEndOfStream() || o.body != "Hello, World!" {
					o.t.Fatalf("client body %q", o.body)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.ConvertGetToPost
		{name: "turns_a_get_into_a_post_with_continue_and_replace", cfg: Config{},
			proc: onRequestHeaders(&extprocv3.CommonResponse{Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE,
				HeaderMutation: mutation(setH(":method", "POST"), setH("content-type", "text/plain")), BodyMutation: bodyTo("Hello, Server!")}),
			check: func(o *outcome) {
				o.status(200)
				s := o.upstream()
				if s.Method != "POST" || s.Header.Get("Content-Type") != "text/plain" || s.Body != "Hello, Server!" {
					o.t.Fatalf("upstream %s %q %q", s.Method, s.Header.Get("Content-Type"), s.Body)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.ReplaceCompleteRequestBuffered
		{name: "skips_the_configured_body_message_after_continue_and_replace", cfg: reqBuffered,
			proc: onRequestHeaders(&extprocv3.CommonResponse{Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE, BodyMutation: bodyTo("Hello, Server!")}),
			req:  request{method: "POST", body: "Replace this!"},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers")
				if s := o.upstream(); s.Body != "Hello, Server!" || s.ContentLength != -1 {
					o.t.Fatalf("upstream body %q length %d", s.Body, s.ContentLength)
				}
			}},
		// filter_test.cc HttpFilterTest.ReplaceCompleteResponseBuffered
		{name: "replaces_the_whole_response_and_drains_the_upstream_body",
			cfg: Config{ProcessingMode: mode(send, send, none, buffered, skip, skip)},
			proc: onKind("response_headers", &extprocv3.CommonResponse{Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE,
				HeaderMutation: mutation(setH("x-test-header", "true")), BodyMutation: bodyTo("Hello, World!")}),
			up: withContentLength(strings.Repeat("u", 200)),
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers")
				if o.body != "Hello, World!" || o.res.Header.Get("X-Test-Header") != "true" {
					o.t.Fatalf("headers %v body %q", o.res.Header, o.body)
				}
				o.stats("stream_msgs_sent", 2, "stream_msgs_received", 2, "streams_closed", 1)
			}},
	})
}

func TestConformanceTrailers(t *testing.T) {
	runConformance(t, []conformance{
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetHeadersAndTrailersOnResponse
		{name: "sends_response_trailers_and_applies_their_mutation",
			cfg:  Config{ProcessingMode: mode(send, send, none, none, skip, send)},
			proc: onKind("response_trailers", &extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-modified-trailers", "xxx"))}),
			up:   withTrailers,
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers,response_trailers")
				if v, _ := headerOf(o.sent(2).GetResponseTrailers().GetTrailers(), "x-test-trailers"); v != "Yes" {
					o.t.Fatalf("trailers message %v", o.sent(2).GetResponseTrailers())
				}
				if o.res.Trailer.Get("X-Test-Trailers") != "Yes" || o.res.Trailer.Get("X-Modified-Trailers") != "xxx" {
					o.t.Fatalf("client trailers %v", o.res.Trailer)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.NoTrailersOnResponseWithModeSendHeaderTrailer
		{name: "invents_no_trailers_message_when_there_are_none",
			cfg: Config{ProcessingMode: mode(send, send, none, none, skip, send)}, proc: answer(contAll),
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers")
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetOnlyTrailersOnResponse
		{name: "sends_only_trailers_when_both_header_phases_skip",
			cfg:  Config{ProcessingMode: mode(skip, skip, none, none, skip, send)},
			proc: onKind("response_trailers", &extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-modified-trailers", "xxx"))}),
			up:   withTrailers,
			check: func(o *outcome) {
				o.status(200)
				o.kinds("response_trailers")
				if o.res.Trailer.Get("X-Modified-Trailers") != "xxx" || o.res.Trailer.Get("X-Test-Trailers") != "Yes" {
					o.t.Fatalf("client trailers %v", o.res.Trailer)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndSetBodyAndHeadersAndTrailersOnResponse
		{name: "marks_a_buffered_body_not_final_when_trailers_follow",
			cfg: Config{ProcessingMode: mode(send, send, none, buffered, skip, send)}, proc: answer(contAll),
			up: withTrailers,
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers,response_body,response_trailers")
				if o.sent(2).GetResponseBody().GetEndOfStream() {
					o.t.Fatal("body end_of_stream set although trailers follow")
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.ClientSendHeaderTrailerFilterConfigedSendAll;
		// ext_proc_integration_test.cc ExtProcIntegrationTest.SkipHeaderTrailerSendBodyClientSendAll
		{name: "sends_request_trailers_after_a_buffered_body",
			cfg:  Config{ProcessingMode: mode(send, skip, buffered, none, send, skip)},
			proc: onKind("request_trailers", &extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-trailer-foo", "changed"))}),
			req:  request{method: "POST", chunks: []string{"0123456789"}, trailer: http.Header{"X-Trailer-Foo": {"yes"}}},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,request_body,request_trailers")
				if o.sent(1).GetRequestBody().GetEndOfStream() {
					o.t.Fatal("body end_of_stream set although trailers follow")
				}
				if s := o.upstream(); s.Trailer.Get("X-Trailer-Foo") != "changed" || s.Body != "0123456789" {
					o.t.Fatalf("upstream trailers %v body %q", s.Trailer, s.Body)
				}
			}},
	})
}

// immediateOn answers the message of kind k with r, everything else CONTINUE.
func immediateOn(k string, r *extprocv3.ProcessingResponse) script {
	return each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		if kindIs(m, k) {
			return r
		}
		return nil
	})
}

func TestConformanceImmediateResponses(t *testing.T) {
	notAuthorized := func() *extprocv3.ProcessingResponse {
		return ir(typev3.StatusCode_Unauthorized, `{"reason": "Not authorized"}`, "Failed because you are not authorized")
	}
	checkNotAuthorized := func(o *outcome) {
		o.t.Helper()
		o.status(401)
		if o.body != `{"reason": "Not authorized"}` {
			o.t.Fatalf("body %q", o.body)
		}
		o.details("Failed_because_you_are_not_authorized")
	}
	strict := func(r *mutationrulesv3.HeaderMutationRules) Config { return Config{MutationRules: r} }
	runConformance(t, []conformance{
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndRespondImmediately;
		// filter_test.cc HttpFilterTest.PostAndRespondImmediately (stats)
		{name: "answers_an_immediate_response_to_request_headers_without_the_upstream",
			proc: immediateOn("request_headers", ir(typev3.StatusCode_Unauthorized, `{"reason": "Not authorized"}`, "Failed because you are not authorized",
				setH("x-failure-reason", "testing"), setH("content-type", "application/json"))),
			check: func(o *outcome) {
				checkNotAuthorized(o)
				if o.res.Header.Get("X-Failure-Reason") != "testing" || o.res.Header.Get("Content-Type") != "application/json" {
					o.t.Fatalf("headers %v", o.res.Header)
				}
				o.upstreams(0)
				o.stats("streams_started", 1, "stream_msgs_sent", 1, "stream_msgs_received", 1, "streams_closed", 1, "immediate_responses_sent", 1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndRespondImmediatelyOnResponse
		{name: "answers_an_immediate_response_to_response_headers",
			proc: immediateOn("response_headers", notAuthorized()), check: func(o *outcome) {
				checkNotAuthorized(o)
				o.upstreams(1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndRespondImmediatelyOnRequestBody
		{name: "answers_an_immediate_response_to_the_request_body",
			cfg:  Config{ProcessingMode: mode(send, send, buffered, none, skip, skip)},
			proc: immediateOn("request_body", notAuthorized()), req: request{method: "POST", body: "Replace this!"},
			check: func(o *outcome) {
				checkNotAuthorized(o)
				o.upstreams(0)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndRespondImmediatelyOnResponseBody
		{name: "answers_an_immediate_response_to_a_buffered_response_body",
			cfg:  Config{ProcessingMode: mode(send, send, none, buffered, skip, skip)},
			proc: immediateOn("response_body", notAuthorized()), check: checkNotAuthorized},
		// filter_test.cc HttpFilterTest.RespondImmediatelyDefault
		{name: "answers_200_when_the_immediate_response_has_no_status",
			proc: immediateOn("request_headers", &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
				ImmediateResponse: &extprocv3.ImmediateResponse{}}}),
			check: func(o *outcome) {
				o.status(200)
				o.details("")
				if o.body != "" {
					o.t.Fatalf("body %q", o.body)
				}
				o.upstreams(0)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndRespondImmediatelyWithBadStatus
		{name: "answers_200_instead_of_a_status_below_200",
			proc: immediateOn("request_headers", ir(typev3.StatusCode_Continue, `{"reason": "Because"}`, "Failed because we said so")),
			req:  request{method: "POST", body: "Replace this!"},
			check: func(o *outcome) {
				o.status(200)
				if o.body != `{"reason": "Because"}` {
					o.t.Fatalf("body %q", o.body)
				}
			}},
		// filter_test.cc HttpFilterTest.PostAndRespondImmediately ("Got_a_bad_request")
		{name: "replaces_whitespace_in_details_with_underscores",
			proc:  immediateOn("request_headers", ir(typev3.StatusCode_BadRequest, "Bad request", "Got a bad request")),
			check: func(o *outcome) { o.status(400); o.details("Got_a_bad_request") }},
		// filter_test.cc HttpFilterTest.PostAndRespondImmediately (x-another-thing 1 and 2)
		{name: "applies_appended_headers_to_the_local_reply",
			proc: immediateOn("request_headers", ir(typev3.StatusCode_BadRequest, "Bad request", "Got a bad request",
				setH("content-type", "text/plain"), addH("x-another-thing", "1"), addH("x-another-thing", "2"))),
			check: func(o *outcome) {
				o.status(400)
				if v := o.res.Header.Values("X-Another-Thing"); strings.Join(v, ",") != "1,2" {
					o.t.Fatalf("x-another-thing %q", v)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndRespondImmediatelyWithEnvoyHeaderMutation
		{name: "drops_x_envoy_headers_from_the_local_reply_without_failing",
			cfg:  strict(&mutationrulesv3.HeaderMutationRules{DisallowIsError: wrapperspb.Bool(true), AllowEnvoy: wrapperspb.Bool(false)}),
			proc: immediateOn("request_headers", ir(typev3.StatusCode_Unauthorized, "", "", setH("x-envoy-foo", "bar"))),
			check: func(o *outcome) {
				o.status(401)
				if o.res.Header.Get("X-Envoy-Foo") != "" {
					o.t.Fatal("x-envoy-foo sent")
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndRespondImmediatelyWithSystemHeaderMutation
		{name: "drops_system_headers_from_the_local_reply",
			cfg:   strict(&mutationrulesv3.HeaderMutationRules{DisallowIsError: wrapperspb.Bool(true), DisallowSystem: wrapperspb.Bool(true)}),
			proc:  immediateOn("request_headers", ir(typev3.StatusCode_Unauthorized, "", "", setH(":foo", "bar"))),
			check: func(o *outcome) { o.status(401) }},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndImmediateRespondMutationAllowEnvoy
		{name: "keeps_x_envoy_and_host_on_the_local_reply_when_the_rules_allow_them",
			cfg:  strict(&mutationrulesv3.HeaderMutationRules{AllowEnvoy: wrapperspb.Bool(true), AllowAllRouting: wrapperspb.Bool(true)}),
			proc: immediateOn("request_headers", ir(typev3.StatusCode_Unauthorized, "", "", setH("x-envoy-foo", "bar"), setH("host", "test"))),
			check: func(o *outcome) {
				o.status(401)
				if o.res.Header.Get("X-Envoy-Foo") != "bar" || o.res.Header.Get("Host") != "test" {
					o.t.Fatalf("headers %v", o.res.Header)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndRespondImmediatelyWithInvalidCharacter
		{name: "sends_the_local_reply_despite_an_invalid_header_name",
			proc:  immediateOn("request_headers", ir(typev3.StatusCode_Unauthorized, "", "", setH("x-failure-reason\n", "testing"))),
			check: func(o *outcome) { o.status(401) }},
		// filter_test.cc HttpFilterTest.RespondImmediatelyGrpcError
		{name: "passes_grpc_status_to_a_grpc_client",
			proc: immediateOn("request_headers", func() *extprocv3.ProcessingResponse {
				r := ir(typev3.StatusCode_Forbidden, "denied", "")
				r.GetImmediateResponse().GrpcStatus = &extprocv3.GrpcStatus{Status: 999}
				return r
			}()),
			req: request{method: "POST", body: "\x00\x00\x00\x00\x00", header: []string{"Content-Type", "application/grpc"}},
			check: func(o *outcome) {
				o.status(200)
				if o.res.Header.Get("Grpc-Status") != "999" || o.res.Header.Get("Grpc-Message") != "denied" || o.res.Header.Get("Content-Type") != "application/grpc" {
					o.t.Fatalf("headers %v", o.res.Header)
				}
			}},
		// filter_test.cc HttpFilterTest.PostAndRespondImmediatelyWithDisabledConfig
		{name: "treats_an_immediate_response_as_spurious_when_disabled",
			cfg:  Config{DisableImmediateResponse: true},
			proc: immediateOn("request_headers", ir(typev3.StatusCode_BadRequest, "Bad request", "Got a bad request")),
			check: func(o *outcome) {
				o.status(500)
				o.details("unhandled_immediate_response_due_to_config_disabled_it")
				o.stats("stream_msgs_sent", 1, "spurious_msgs_received", 1, "stream_msgs_received", 0, "streams_closed", 1)
			}},
		// filter_test.cc HttpFilterTest.RespondImmediatelyWithBinaryBody
		{name: "sends_a_binary_body_unchanged",
			proc: immediateOn("response_headers", ir(typev3.StatusCode_BadRequest, "non-utf-8 compliant field\x80\x81", "Got a bad request")),
			check: func(o *outcome) {
				o.status(400)
				if o.body != "non-utf-8 compliant field\x80\x81" {
					o.t.Fatalf("body %q", o.body)
				}
			}},
		// ordering_test.cc OrderingTest.ExtraAfterImmediateResponse
		{name: "ignores_replies_after_an_immediate_response",
			proc: func(fs *fakeStream) error {
				m, _ := fs.recv()
				fs.send(ir(typev3.StatusCode_InternalServerError, "", ""))
				fs.send(cont(m))
				return silent(fs)
			},
			check: func(o *outcome) {
				o.status(500)
				o.stats("spurious_msgs_received", 0, "immediate_responses_sent", 1)
			}},
	})
}

// grpcFail reads one message and ends the RPC with code and message.
func grpcFail(c codes.Code, msg string) script {
	return func(fs *fakeStream) error {
		fs.recv()
		return status.Error(c, msg)
	}
}

func TestConformanceFailures(t *testing.T) {
	failOpen := Config{FailureModeAllow: true}
	runConformance(t, []conformance{
		// filter_test.cc HttpFilterTest.PostAndFail
		{name: "answers_500_when_the_stream_fails_on_request_headers", proc: grpcFail(codes.Internal, "error message"),
			check: func(o *outcome) {
				o.status(500)
				o.details("ext_proc_error_gRPC_error_13{error_message}")
				o.upstreams(0)
				o.stats("streams_started", 1, "stream_msgs_sent", 1, "streams_failed", 1, "streams_closed", 0)
			}},
		// filter_test.cc HttpFilterTest.PostAndFailOnResponse; ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndFailStreamOnResponse
		{name: "answers_500_when_the_stream_fails_on_response_headers",
			proc: func(fs *fakeStream) error {
				m, _ := fs.recv()
				fs.send(cont(m))
				fs.recv()
				return status.Error(codes.Internal, "boom")
			},
			check: func(o *outcome) {
				o.status(500)
				o.stats("stream_msgs_sent", 2, "stream_msgs_received", 1, "streams_failed", 1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndFailStreamOutOfLine; ordering_test.cc OrderingTest.GrpcErrorOutOfLine
		{name: "answers_500_when_the_stream_fails_between_messages",
			proc: func(fs *fakeStream) error {
				m, _ := fs.recv()
				fs.send(cont(m))
				return status.Error(codes.Internal, "later")
			},
			check: func(o *outcome) {
				o.status(500)
				o.stats("streams_failed", 1)
			}},
		// filter_test.cc HttpFilterTest.PostAndIgnoreFailure
		{name: "continues_when_the_stream_fails_with_failure_mode_allow", cfg: failOpen, proc: grpcFail(codes.Internal, "x"),
			req: request{method: "POST", body: "foo"},
			check: func(o *outcome) {
				o.status(200)
				o.upstreams(1)
				o.kinds("request_headers")
				o.stats("streams_started", 1, "stream_msgs_sent", 1, "streams_closed", 1, "failure_mode_allowed", 1)
			}},
		// ordering_test.cc FastFailOrderingTest.GrpcErrorOnStartRequestHeaders; ext_proc_integration_test.cc ExtProcIntegrationTest.GetAndFailStreamWithInvalidServer
		{name: "answers_500_when_the_processor_cannot_be_reached", cfg: Config{Target: "127.0.0.1:1"},
			check: func(o *outcome) {
				o.status(500)
				if !strings.HasPrefix(o.tr.Details, "ext_proc_error_gRPC_error_14") {
					o.t.Fatalf("details %q", o.tr.Details)
				}
				o.upstreams(0)
			}},
		// ordering_test.cc FastFailOrderingTest.GrpcErrorIgnoredOnStartRequestHeaders
		{name: "continues_when_the_unreachable_processor_is_allowed_to_fail", cfg: Config{Target: "127.0.0.1:1", FailureModeAllow: true},
			check: func(o *outcome) {
				o.status(200)
				o.upstreams(1)
				o.stats("failure_mode_allowed", 1)
			}},
		// ext_proc_misc_integration_test.cc ExtProcStatusOnErrorIntegrationTest.GrpcStreamErrorCustomStatus
		{name: "answers_status_on_error_when_the_stream_fails", cfg: Config{StatusOnError: 503},
			proc: func(fs *fakeStream) error {
				m, _ := fs.recv()
				fs.send(cont(m))
				return status.Error(codes.Internal, "")
			},
			check: func(o *outcome) { o.status(503) }},
		// ext_proc_misc_integration_test.cc ExtProcStatusOnErrorIntegrationTest.GrpcStreamErrorDefaultStatus
		{name: "answers_500_when_status_on_error_is_unset",
			proc: func(fs *fakeStream) error {
				m, _ := fs.recv()
				fs.send(cont(m))
				return status.Error(codes.Internal, "")
			},
			check: func(o *outcome) { o.status(500) }},
		// filter_misc_test.cc FailureModeAllowOverrideTest.FilterDisallowRouteAllow
		{name: "lets_the_route_allow_failure_when_the_filter_does_not",
			cfg:  Config{Route: func(*http.Request) RouteSettings { return RouteSettings{FailureModeAllow: ptr(true)} }},
			proc: grpcFail(codes.Internal, "error_message"),
			check: func(o *outcome) {
				o.status(200)
				o.stats("failure_mode_allowed", 1)
			}},
		// filter_misc_test.cc FailureModeAllowOverrideTest.FilterAllowRouteDisallow
		{name: "lets_the_route_forbid_failure_when_the_filter_allows_it",
			cfg: Config{FailureModeAllow: true, Route: func(*http.Request) RouteSettings {
				return RouteSettings{FailureModeAllow: ptr(false)}
			}},
			proc: grpcFail(codes.Internal, "error_message"),
			check: func(o *outcome) {
				o.status(500)
				o.details("ext_proc_error_gRPC_error_13{error_message}")
			}},
		// filter_test.cc HttpFilterTest.OutOfOrderFailClose
		{name: "fails_closed_on_a_reply_for_another_phase",
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
			}),
			req: request{method: "POST", body: "foo"},
			check: func(o *outcome) {
				o.status(500)
				o.details("spurious_message")
				o.upstreams(0)
				o.stats("stream_msgs_sent", 1, "spurious_msgs_received", 1, "streams_closed", 1, "failure_mode_allowed", 0, "stream_msgs_received", 0)
			}},
		// filter_test.cc HttpFilterTest.OutOfOrderFailOpen
		{name: "continues_unmodified_after_a_reply_for_another_phase_with_failure_mode_allow", cfg: failOpen,
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
			}),
			req: request{method: "POST", body: "foo"},
			check: func(o *outcome) {
				o.status(200)
				o.upstreams(1)
				o.stats("stream_msgs_sent", 1, "spurious_msgs_received", 1, "failure_mode_allowed", 1, "stream_msgs_received", 0, "streams_closed", 1)
			}},
		// filter_test.cc HttpFilterTest.OutOfOrderPerRouteOverrideFailOpen
		{name: "lets_the_route_fail_open_on_a_spurious_reply",
			cfg: Config{Route: func(*http.Request) RouteSettings { return RouteSettings{FailureModeAllow: ptr(true)} }},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
			}),
			req: request{method: "POST", body: "foo"},
			check: func(o *outcome) {
				o.status(200)
				o.stats("spurious_msgs_received", 1, "failure_mode_allowed", 1)
			}},
		// ordering_test.cc OrderingTest.IncorrectRequestHeadersReply
		{name: "ignores_the_processor_after_a_wrong_reply_with_failure_mode_allow", cfg: failOpen,
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
			}),
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers")
				o.stats("spurious_msgs_received", 1, "failure_mode_allowed", 1)
			}},
		// ordering_test.cc OrderingTest.IncorrectRequestBodyReply
		{name: "treats_a_reply_for_the_other_direction_as_spurious",
			cfg: Config{FailureModeAllow: true, ProcessingMode: mode(send, send, buffered, buffered, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				if kindIs(m, "request_body") {
					return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
				}
				return nil
			}),
			req: request{method: "POST", body: "Hello!"},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,request_body")
				if o.upstream().Body != "Hello!" {
					o.t.Fatalf("upstream body %q", o.upstream().Body)
				}
			}},
		// ordering_test.cc OrderingTest.TotallyInvalidResponse
		{name: "treats_a_reply_without_oneof_as_spurious", cfg: failOpen,
			proc: each(func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				return &extprocv3.ProcessingResponse{}
			}),
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers")
				o.stats("spurious_msgs_received", 1, "failure_mode_allowed", 1)
			}},
		// ordering_test.cc OrderingTest.ExtraReply
		{name: "treats_a_second_headers_reply_as_spurious", cfg: failOpen,
			proc: answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				if kindIs(m, "request_headers") {
					return []*extprocv3.ProcessingResponse{cont(m), cont(m)}
				}
				return contAll(m)
			}),
			up: func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				time.Sleep(100 * time.Millisecond) // the extra reply lands first
				_, _ = io.WriteString(w, "ok")
			},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers")
				o.stats("spurious_msgs_received", 1)
			}},
	})
}

// replyAfter answers every message with CONTINUE after d.
func replyAfter(d time.Duration) script {
	return answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		time.Sleep(d)
		return contAll(m)
	})
}

// silentOn answers every message except those of kind k, which it ignores.
func silentOn(k string) script {
	return answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		if kindIs(m, k) {
			return nil
		}
		return contAll(m)
	})
}

func TestConformanceMessageTimer(t *testing.T) {
	const timeoutDetails = "ext_proc_error_per-message_timeout_exceeded"
	firstChunkSeen := make(chan struct{})
	// run answers messages of kind with steps (a time.Duration waits, a
	// *ProcessingResponse is sent), then CONTINUE unless noReply; other
	// messages get CONTINUE at once.
	run := func(kind string, noReply bool, steps ...any) script {
		return func(fs *fakeStream) error {
			for {
				m, ok := fs.recv()
				if !ok {
					return nil
				}
				if !kindIs(m, kind) && kind != "*" {
					fs.send(cont(m))
					continue
				}
				for _, s := range steps {
					switch v := s.(type) {
					case time.Duration:
						time.Sleep(v)
					case *extprocv3.ProcessingResponse:
						fs.send(v)
					}
				}
				if !noReply {
					fs.send(cont(m))
				}
			}
		}
	}
	runConformance(t, []conformance{
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestMessageTimeout
		{name: "answers_504_when_request_headers_get_no_reply_in_time",
			cfg: Config{MessageTimeout: 200 * time.Millisecond}, proc: silent,
			check: func(o *outcome) {
				o.status(504)
				o.details(timeoutDetails)
				o.upstreams(0)
				if o.elapsed < 190*time.Millisecond {
					o.t.Fatalf("answered after %v, before the 200ms timer", o.elapsed)
				}
				o.stats("message_timeouts", 1, "streams_closed", 1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.ResponseMessageTimeout
		{name: "answers_504_when_response_headers_get_no_reply_in_time",
			cfg: Config{MessageTimeout: 200 * time.Millisecond}, proc: silentOn("response_headers"),
			check: func(o *outcome) {
				o.status(504)
				o.details(timeoutDetails)
				o.upstreams(1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestMessageTimeoutIgnoreError
		{name: "continues_after_a_request_timeout_with_failure_mode_allow",
			cfg: Config{MessageTimeout: 200 * time.Millisecond, FailureModeAllow: true}, proc: silent,
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers") // the response headers message is never sent
				o.stats("message_timeouts", 1, "failure_mode_allowed", 1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.ResponseMessageTimeoutIgnoreError
		{name: "continues_after_a_response_timeout_with_failure_mode_allow",
			cfg: Config{MessageTimeout: 200 * time.Millisecond, FailureModeAllow: true}, proc: silentOn("response_headers"),
			check: func(o *outcome) {
				o.status(200)
				if o.body != "upstream:" {
					o.t.Fatalf("body %q", o.body)
				}
			}},
		// ordering_test.cc OrderingTest.DefaultOrderingGetWithTimer (enabled on every send, disabled on every reply)
		{name: "times_each_message_separately",
			cfg:  Config{MessageTimeout: 1200 * time.Millisecond, ProcessingMode: mode(send, send, buffered, none, skip, skip)},
			proc: replyAfter(500 * time.Millisecond),
			req:  request{method: "POST", body: "abc"},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,request_body,response_headers")
				if o.elapsed < 1500*time.Millisecond {
					o.t.Fatalf("took %v; the point is a total above the 1.2s timer", o.elapsed)
				}
				o.stats("message_timeouts", 0)
			}},
		// ordering_test.cc OrderingTest.DefaultOrderingGetWithTimer (every handled reply disables the
		// timer; processor_state.cc does so for a STREAMED chunk reply even with more chunks
		// outstanding), ext_proc_full_duplex_integration_test.cc
		// ExtProcIntegrationTest.ServerWaitTooLongBeforeSendRespDuplexStreamed (then only the HCM
		// stream_idle_timeout ends the wait)
		{name: "stops_the_timer_on_a_streamed_reply_with_chunks_still_outstanding",
			// The timer is long enough that a loaded machine delivers the
			// second chunk before it fires.
			cfg: Config{MessageTimeout: 4 * time.Second, StreamIdleTimeout: 6 * time.Second,
				ProcessingMode: mode(send, skip, streamed, none, skip, skip)},
			proc: func(fs *fakeStream) error {
				m, _ := fs.recv()
				fs.send(cont(m))
				first, _ := fs.recv()
				close(firstChunkSeen)
				if _, ok := fs.recv(); !ok { // the second chunk is out: answer only the first
					return nil
				}
				fs.send(cont(first))
				return silent(fs)
			},
			req: request{method: "POST", chunks: []string{"one", "two"}, before: func(int) { <-firstChunkSeen }},
			check: func(o *outcome) {
				o.status(504)
				o.details("stream_idle_timeout")
				if o.elapsed < 5990*time.Millisecond {
					o.t.Fatalf("answered after %v", o.elapsed)
				}
				o.stats("message_timeouts", 0)
			}},
		// ordering_test.cc OrderingTest.TimeoutOnRequestBody
		{name: "times_out_the_request_body_message",
			cfg:  Config{MessageTimeout: 200 * time.Millisecond, ProcessingMode: mode(send, send, buffered, buffered, skip, skip)},
			proc: silentOn("request_body"), req: request{method: "POST", body: "Dummy data 1"},
			check: func(o *outcome) {
				o.status(504)
				o.upstreams(0)
			}},
		// ordering_test.cc OrderingTest.TimeoutOnResponseBody
		{name: "times_out_the_response_body_message",
			cfg:  Config{MessageTimeout: 200 * time.Millisecond, ProcessingMode: mode(send, send, buffered, buffered, skip, skip)},
			proc: silentOn("response_body"), req: request{method: "POST", body: "Dummy data 1"},
			check: func(o *outcome) {
				o.status(504)
				o.details(timeoutDetails)
			}},
		// ordering_test.cc OrderingTest.GrpcErrorAfterTimeout
		{name: "ignores_a_grpc_error_after_the_timeout",
			cfg: Config{MessageTimeout: 100 * time.Millisecond},
			proc: func(fs *fakeStream) error {
				fs.recv()
				time.Sleep(300 * time.Millisecond)
				return status.Error(codes.Internal, "late")
			},
			check: func(o *outcome) {
				o.status(504)
				o.details(timeoutDetails)
				if o.tr.Failure != "timeout" {
					o.t.Fatalf("failure %q", o.tr.Failure)
				}
				o.stats("streams_failed", 0)
			}},
		// ext_proc_misc_integration_test.cc ExtProcStatusOnErrorIntegrationTest.MessageTimeoutReturnsGatewayTimeout
		{name: "answers_504_on_timeout_whatever_status_on_error_says",
			cfg: Config{MessageTimeout: 100 * time.Millisecond, StatusOnError: 502}, proc: silent,
			check: func(o *outcome) { o.status(504) }},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestMessageNewTimeoutNoMutation
		{name: "extends_the_timer_with_override_message_timeout",
			cfg:  Config{MessageTimeout: 300 * time.Millisecond, MaxMessageTimeout: 10 * time.Second},
			proc: run("request_headers", false, override(10*time.Second), 500*time.Millisecond),
			check: func(o *outcome) {
				o.status(200)
				o.stats("override_message_timeout_received", 1, "override_message_timeout_ignored", 0, "message_timeouts", 0)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestAndResponseMessageNewTimeoutWithHeaderMutation
		{name: "extends_the_timer_in_both_directions",
			cfg: Config{MessageTimeout: 300 * time.Millisecond, MaxMessageTimeout: 10 * time.Second},
			proc: func(fs *fakeStream) error {
				for {
					m, ok := fs.recv()
					if !ok {
						return nil
					}
					fs.send(override(10 * time.Second))
					time.Sleep(500 * time.Millisecond)
					if kindIs(m, "request_headers") {
						fs.send(reply(m, &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
							SetHeaders: []*corev3.HeaderValueOption{setH("x-new-header", "new")}, RemoveHeaders: []string{"x-remove-this"}}}))
						continue
					}
					fs.send(cont(m))
				}
			},
			req: request{header: []string{"X-Remove-This", "yes"}},
			check: func(o *outcome) {
				o.status(200)
				if h := o.upstream().Header; h.Get("X-New-Header") != "new" || h.Get("X-Remove-This") != "" {
					o.t.Fatalf("upstream headers %v", h)
				}
				o.stats("override_message_timeout_received", 2, "message_timeouts", 0)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestMessageNoMutationMultipleNewTimeout
		{name: "accepts_only_the_first_override_per_message",
			cfg:  Config{MessageTimeout: 300 * time.Millisecond, MaxMessageTimeout: 10 * time.Second},
			proc: run("request_headers", false, override(10*time.Second), 100*time.Millisecond, override(10*time.Millisecond), 500*time.Millisecond),
			check: func(o *outcome) {
				o.status(200)
				o.stats("override_message_timeout_received", 1, "override_message_timeout_ignored", 1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestMessageNewTimeoutNegativeTestTimeoutNotAcceptedDefaultMax
		{name: "ignores_override_message_timeout_without_max_message_timeout",
			cfg:  Config{MessageTimeout: 300 * time.Millisecond},
			proc: run("request_headers", false, override(500*time.Millisecond), 500*time.Millisecond),
			check: func(o *outcome) {
				o.status(504)
				o.stats("override_message_timeout_ignored", 1, "override_message_timeout_received", 0, "stream_msgs_received", 0)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestMessageNewTimeoutNegativeTestTimeoutTooBigWithSmallMax
		{name: "ignores_an_override_above_max_message_timeout",
			cfg:  Config{MessageTimeout: 300 * time.Millisecond, MaxMessageTimeout: 100 * time.Millisecond},
			proc: run("request_headers", false, override(500*time.Millisecond), 500*time.Millisecond),
			check: func(o *outcome) {
				o.status(504)
				o.stats("override_message_timeout_ignored", 1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestMessageNewTimeoutNegativeTestTimeoutTooSmall
		{name: "ignores_an_override_below_one_millisecond",
			cfg:  Config{MessageTimeout: 300 * time.Millisecond, MaxMessageTimeout: 10 * time.Second},
			proc: run("request_headers", false, override(0), 500*time.Millisecond),
			check: func(o *outcome) {
				o.status(504)
				o.stats("override_message_timeout_ignored", 1)
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestMessageNewTimeoutOutOfBounds
		{name: "ignores_an_override_out_of_duration_range",
			cfg: Config{MessageTimeout: 300 * time.Millisecond, MaxMessageTimeout: 100 * time.Millisecond},
			proc: run("request_headers", false, &extprocv3.ProcessingResponse{OverrideMessageTimeout: &durationpb.Duration{Seconds: 1_000_000_000_000}},
				500*time.Millisecond),
			check: func(o *outcome) {
				o.status(504)
				o.stats("override_message_timeout_ignored", 1)
			}},
		// filter_extra_test.cc HttpFilterExtraTest.OverrideMessageTimeout (accepted up to
		// max_message_timeout); ext_proc_integration_test.cc ExtProcIntegrationTest.RequestMessageTimeout
		// (the timer still fires)
		{name: "fires_the_extended_timer_at_the_override",
			cfg:  Config{MessageTimeout: 250 * time.Millisecond, MaxMessageTimeout: 600 * time.Millisecond},
			proc: run("request_headers", true, override(600*time.Millisecond)),
			check: func(o *outcome) {
				o.status(504)
				o.details(timeoutDetails)
				if o.elapsed < 580*time.Millisecond {
					o.t.Fatalf("timed out after %v, before the 600ms override", o.elapsed)
				}
				o.stats("override_message_timeout_received", 1, "message_timeouts", 1)
			}},
	})
}

// overrideOnHeaders answers request_headers with CONTINUE and mode_override m.
func overrideOnHeaders(m *ProcessingMode) script {
	return each(func(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		if kindIs(req, "request_headers") {
			r := cont(req)
			r.ModeOverride = m
			return r
		}
		return nil
	})
}

func TestConformanceModeOverride(t *testing.T) {
	runConformance(t, []conformance{
		// filter_test.cc HttpFilterTest.ProcessingModeOverrideResponseHeaders
		{name: "applies_a_mode_override_from_the_headers_reply",
			cfg:  Config{AllowModeOverride: true, ProcessingMode: mode(send, send, streamed, streamed, send, send)},
			proc: overrideOnHeaders(mode(dflt, skip, none, none, skip, skip)),
			req:  request{method: "POST", body: "foo"},
			up:   withTrailers,
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers")
				o.stats("stream_msgs_sent", 1, "stream_msgs_received", 1, "streams_closed", 1)
			}},
		// filter_test.cc HttpFilterTest.DisableResponseModeOverride
		{name: "ignores_mode_override_without_allow_mode_override",
			cfg:  Config{ProcessingMode: mode(send, send, none, none, skip, skip)},
			proc: overrideOnHeaders(mode(dflt, skip, none, none, dflt, dflt)),
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers")
			}},
		// allowed_override_modes_set_test.cc AllowedOverrideModesSetTest.EnforcesOtherFields
		{name: "drops_a_mode_override_outside_allowed_override_modes",
			cfg: Config{AllowModeOverride: true, ProcessingMode: mode(send, skip, none, none, skip, skip),
				AllowedOverrideModes: []*ProcessingMode{mode(send, skip, buffered, none, skip, skip)}},
			proc: overrideOnHeaders(mode(dflt, dflt, buffered, streamed, dflt, dflt)),
			req:  request{method: "POST", body: "data"},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers")
			}},
		// allowed_override_modes_set_test.cc AllowedOverrideModesSetTest.IgnoresRequestHeaderMode
		{name: "ignores_request_header_mode_when_matching_allowed_override_modes",
			cfg: Config{AllowModeOverride: true, ProcessingMode: mode(send, skip, none, none, skip, skip),
				AllowedOverrideModes: []*ProcessingMode{mode(send, skip, buffered, none, skip, skip)}},
			proc: overrideOnHeaders(mode(skip, dflt, buffered, none, dflt, dflt)),
			req:  request{method: "POST", body: "data"},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,request_body")
			}},
		// filter_test.cc HttpFilterTest.GetStreamingBodyAndChangeMode (mode_override on a body reply:
		// every later chunk is still sent, stream_msgs_sent 7)
		{name: "ignores_a_mode_override_on_a_body_reply",
			cfg: Config{AllowModeOverride: true, ProcessingMode: mode(send, send, none, streamed, skip, skip)},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				if kindIs(m, "response_body") {
					r := cont(m)
					r.ModeOverride = &ProcessingMode{ResponseBodyMode: none}
					return r
				}
				return nil
			}),
			up: func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				for i := 0; i < 3; i++ {
					_, _ = io.WriteString(w, strings.Repeat(strconv.Itoa(i), 100))
					w.(http.Flusher).Flush()
					time.Sleep(40 * time.Millisecond)
				}
			},
			check: func(o *outcome) {
				o.status(200)
				var body string
				n := 0
				for _, m := range o.tr.SentMessages() {
					if b := m.GetResponseBody(); b != nil {
						body += string(b.GetBody())
						n++
					}
				}
				if n < 2 || body != o.body || len(body) != 300 {
					o.t.Fatalf("%d response_body messages carrying %d bytes; the override must not stop them", n, len(body))
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.PerRouteProcessingMode
		{name: "replaces_the_filter_mode_with_the_route_mode",
			cfg: Config{Route: func(r *http.Request) RouteSettings {
				if r.URL.Path != "/foo" {
					return RouteSettings{}
				}
				return RouteSettings{ProcessingMode: &ProcessingMode{ResponseBodyMode: buffered}}
			}},
			proc: answer(contAll), req: request{path: "/foo"},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers,response_body")
				if b := o.sent(2).GetResponseBody(); string(b.GetBody()) != "upstream:" || !b.GetEndOfStream() {
					o.t.Fatalf("response body message %q", b.GetBody())
				}
			}},
	})
}

func TestConformanceRouteCache(t *testing.T) {
	var routed int
	route := func(r *http.Request) RouteSettings {
		routed++
		return RouteSettings{Name: "route-" + r.URL.Path}
	}
	withRoute := func(c Config) Config {
		c.Route = route
		if c.ProcessingMode == nil {
			c.ProcessingMode = mode(send, send, none, buffered, skip, skip)
		}
		return c
	}
	clearWith := func(hm *extprocv3.HeaderMutation) script {
		return each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			switch requestKind(m) {
			case "request_headers", "response_body":
				return reply(m, &extprocv3.CommonResponse{ClearRouteCache: true, HeaderMutation: hm})
			}
			return nil
		})
	}
	newPath := mutation(setH(":path", "/v2"))
	rc := func(name string, cfg Config, proc script, check func(o *outcome)) conformance {
		return conformance{name: name, cfg: withRoute(cfg), proc: proc, req: request{path: "/v1"}, check: func(o *outcome) {
			o.status(200)
			check(o)
			routed = 0
		}}
	}
	runConformance(t, []conformance{
		// filter_test.cc HttpFilterTest.ClearRouteCacheHeaderMutation (a response-path clear does nothing)
		rc("clears_the_route_cache_with_a_header_mutation", Config{}, clearWith(newPath), func(o *outcome) {
			if routed != 2 || o.tr.Route != "route-/v2" {
				o.t.Fatalf("route ran %d times, route %q", routed, o.tr.Route)
			}
			o.stats("clear_route_cache_ignored", 0, "clear_route_cache_disabled", 0)
		}),
		// filter_test.cc HttpFilterTest.ClearRouteCacheUnchanged
		rc("ignores_clear_route_cache_without_a_header_mutation", Config{}, clearWith(nil), func(o *outcome) {
			if routed != 1 {
				o.t.Fatalf("route ran %d times", routed)
			}
			o.stats("clear_route_cache_ignored", 1, "clear_route_cache_disabled", 0)
		}),
		// filter_test.cc HttpFilterTest.ClearRouteCacheUnchangedNoClearFlag
		rc("counts_nothing_without_clear_route_cache", Config{}, onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: newPath}), func(o *outcome) {
			if routed != 1 || o.upstream().Path != "/v2" {
				o.t.Fatalf("route ran %d times, upstream path %q", routed, o.upstream().Path)
			}
			o.stats("clear_route_cache_ignored", 0, "clear_route_cache_disabled", 0)
		}),
		// filter_test.cc HttpFilterTest.ClearRouteCacheDisabledHeaderMutation
		rc("never_clears_with_disable_clear_route_cache", Config{DisableClearRouteCache: true}, clearWith(newPath), func(o *outcome) {
			if routed != 1 {
				o.t.Fatalf("route ran %d times", routed)
			}
			o.stats("clear_route_cache_disabled", 1, "clear_route_cache_ignored", 0)
		}),
		// filter_test.cc HttpFilterTest.FilterRouteCacheActionSetToClearHeaderMutation
		rc("clears_on_any_header_mutation_with_route_cache_action_clear", Config{RouteCacheAction: extprocfilterv3.ExternalProcessor_CLEAR,
			ProcessingMode: mode(send, send, none, none, skip, skip)},
			onRequestHeaders(&extprocv3.CommonResponse{HeaderMutation: newPath}), func(o *outcome) {
				if routed != 2 || o.tr.Route != "route-/v2" {
					o.t.Fatalf("route ran %d times, route %q", routed, o.tr.Route)
				}
			}),
		// filter_test.cc HttpFilterTest.FilterRouteCacheActionSetToClearNoHeaderMutation
		rc("still_needs_a_header_mutation_with_route_cache_action_clear", Config{RouteCacheAction: extprocfilterv3.ExternalProcessor_CLEAR,
			ProcessingMode: mode(send, send, none, none, skip, skip)},
			onRequestHeaders(&extprocv3.CommonResponse{ClearRouteCache: true}), func(o *outcome) {
				if routed != 1 {
					o.t.Fatalf("route ran %d times", routed)
				}
				o.stats("clear_route_cache_ignored", 1, "clear_route_cache_disabled", 0)
			}),
		// filter_test.cc HttpFilterTest.FilterRouteCacheActionSetToRetainWithHeaderMutation
		rc("never_clears_with_route_cache_action_retain", Config{RouteCacheAction: extprocfilterv3.ExternalProcessor_RETAIN,
			ProcessingMode: mode(send, send, none, none, skip, skip)},
			onRequestHeaders(&extprocv3.CommonResponse{ClearRouteCache: true, HeaderMutation: newPath}), func(o *outcome) {
				if routed != 1 {
					o.t.Fatalf("route ran %d times", routed)
				}
				o.stats("clear_route_cache_disabled", 1)
			}),
	})
	// filter_test.cc HttpFilterTest.ClearRouteCacheDisableRouteCacheActionBothSet
	t.Run("rejects_disable_clear_route_cache_together_with_route_cache_action", func(t *testing.T) {
		_, err := New(Config{Upstream: "http://127.0.0.1:1", Target: "127.0.0.1:1", DisableClearRouteCache: true,
			RouteCacheAction: extprocfilterv3.ExternalProcessor_CLEAR})
		if err == nil || !strings.Contains(err.Error(), "disable_clear_route_cache") {
			t.Fatalf("New: %v", err)
		}
	})
}

func TestConformanceMetadataAndAttributes(t *testing.T) {
	respOnly := func(recv ...string) Config {
		return Config{ProcessingMode: mode(skip, send, none, none, skip, skip), ReceivingNamespaces: recv}
	}
	writeOn := func(k, ns string, kv ...string) script {
		return each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			if kindIs(m, k) {
				return withMeta(cont(m), ns, metaStruct(kv...))
			}
			return nil
		})
	}
	runConformance(t, []conformance{
		// filter_test.cc HttpFilterTest.EmitDynamicMetadata
		{name: "writes_dynamic_metadata_into_a_receiving_namespace", cfg: respOnly("envoy.filters.http.ext_proc"),
			proc: writeOn("response_headers", "envoy.filters.http.ext_proc", "foo", "bar"),
			check: func(o *outcome) {
				o.status(200)
				if v := o.tr.DynamicMetadata["envoy.filters.http.ext_proc"].GetFields()["foo"].GetStringValue(); v != "bar" {
					o.t.Fatalf("dynamic metadata %v", o.tr.DynamicMetadata)
				}
			}},
		// filter_test.cc HttpFilterTest.EmitDynamicMetadataArbitraryNamespace
		{name: "writes_dynamic_metadata_into_any_listed_namespace", cfg: respOnly("envoy.filters.http.ext_authz"),
			proc: writeOn("response_headers", "envoy.filters.http.ext_authz", "foo", "bar"),
			check: func(o *outcome) {
				if v := o.tr.DynamicMetadata["envoy.filters.http.ext_authz"].GetFields()["foo"].GetStringValue(); v != "bar" {
					o.t.Fatalf("dynamic metadata %v", o.tr.DynamicMetadata)
				}
			}},
		// filter_test.cc HttpFilterTest.DisableEmitDynamicMetadata
		{name: "writes_no_dynamic_metadata_without_receiving_namespaces", cfg: respOnly(),
			proc: writeOn("response_headers", "envoy.filters.http.ext_proc", "foo", "bar"),
			check: func(o *outcome) {
				if len(o.tr.DynamicMetadata) != 0 {
					o.t.Fatalf("dynamic metadata %v", o.tr.DynamicMetadata)
				}
			}},
		// filter_test.cc HttpFilterTest.DisableEmittingDynamicMetadataToDisallowedNamespaces
		{name: "writes_no_dynamic_metadata_into_unlisted_namespaces", cfg: respOnly("envoy.filters.http.ext_proc"),
			proc: writeOn("response_headers", "envoy.filters.http.ext_authz", "foo", "bar"),
			check: func(o *outcome) {
				if len(o.tr.DynamicMetadata) != 0 {
					o.t.Fatalf("dynamic metadata %v", o.tr.DynamicMetadata)
				}
			}},
		// filter_test.cc HttpFilterTest.EmitDynamicMetadataUseLast (the later write wins; Envoy's
		// StreamInfo::setDynamicMetadata merges, so keys not rewritten stay, which that test's mock
		// does not model); ext_proc_integration_test.cc ExtProcIntegrationTest.SendAndReceiveDynamicMetadata
		{name: "merges_later_writes_into_the_namespace",
			cfg: Config{ProcessingMode: mode(send, send, none, none, skip, skip), ReceivingNamespaces: []string{"envoy.filters.http.ext_proc"}},
			proc: each(func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				if kindIs(m, "request_headers") {
					return withMeta(cont(m), "envoy.filters.http.ext_proc", metaStruct("bat", "baz", "foo", "first"))
				}
				return withMeta(cont(m), "envoy.filters.http.ext_proc", metaStruct("foo", "bar"))
			}),
			check: func(o *outcome) {
				f := o.tr.DynamicMetadata["envoy.filters.http.ext_proc"].GetFields()
				if f["foo"].GetStringValue() != "bar" || f["bat"].GetStringValue() != "baz" {
					o.t.Fatalf("dynamic metadata %v", f)
				}
			}},
		// filter_test.cc HttpFilterTest.GrpcServiceMetadataOverride; ext_proc_integration_test.cc ExtProcIntegrationTest.PerRouteGrpcMetadata
		{name: "merges_route_grpc_initial_metadata_by_key",
			cfg: Config{ProcessingMode: sidecallMode(), InitialMetadata: map[string]string{"a": "a", "b": "b"},
				Route: func(*http.Request) RouteSettings {
					return RouteSettings{GRPCInitialMetadata: map[string]string{"b": "c", "c": "c"}}
				}},
			proc: answer(contAll),
			check: func(o *outcome) {
				o.status(200)
				md := o.e.ps.stream(o.t, 0).md
				if strings.Join(md.Get("a"), ",") != "a" || strings.Join(md.Get("b"), ",") != "c" || strings.Join(md.Get("c"), ",") != "c" {
					o.t.Fatalf("initial metadata %v", md)
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestResponseAttributes (request
		// attributes on the first request message, response attributes on the first response one, none after)
		{name: "sends_attributes_once_per_direction",
			cfg: Config{ProcessingMode: mode(send, send, none, none, skip, send),
				RequestAttributes: []string{"request.path", "request.method", "request.scheme"}, ResponseAttributes: []string{"response.code"}},
			proc: answer(contAll), up: withTrailers,
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,response_headers,response_trailers")
				a := o.sent(0).GetAttributes()["envoy.filters.http.ext_proc"].GetFields()
				if a["request.path"].GetStringValue() != "/" || a["request.method"].GetStringValue() != "GET" || a["request.scheme"].GetStringValue() != "http" {
					o.t.Fatalf("request attributes %v", a)
				}
				r := o.sent(1).GetAttributes()["envoy.filters.http.ext_proc"].GetFields()
				if r["response.code"].GetNumberValue() != 200 || r["request.method"] != nil {
					o.t.Fatalf("response attributes %v", r)
				}
				if len(o.sent(2).GetAttributes()) != 0 {
					o.t.Fatal("attributes repeated on the trailers message")
				}
			}},
		// ext_proc_integration_test.cc ExtProcIntegrationTest.RequestResponseAttributes
		// ("did not include the attribute which was not yet available")
		{name: "leaves_out_attributes_not_yet_available",
			cfg:  Config{ProcessingMode: sidecallMode(), RequestAttributes: []string{"request.method", "response.code"}},
			proc: answer(contAll),
			check: func(o *outcome) {
				a := o.sent(0).GetAttributes()["envoy.filters.http.ext_proc"].GetFields()
				if _, ok := a["response.code"]; ok || len(a) != 1 {
					o.t.Fatalf("attributes %v", a)
				}
			}},
	})
}

// streamedBody is a FULL_DUPLEX_STREAMED body reply for direction dir
// ("request" or "response").
func streamedBody(dir, body string, eos bool) *extprocv3.ProcessingResponse {
	br := &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
		Mutation: &extprocv3.BodyMutation_StreamedResponse{StreamedResponse: &extprocv3.StreamedBodyResponse{Body: []byte(body), EndOfStream: eos}}}}}
	if dir == "request" {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}}
}

// duplexLog is what a FULL_DUPLEX_STREAMED processor saw and sent.
type duplexLog struct {
	mu       sync.Mutex
	received string // body bytes received
	sent     string // body bytes streamed back
	msgs     int    // body messages received
}

func (l *duplexLog) add(recv, sent string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.received += recv
	l.sent += sent
	if recv != "" {
		l.msgs++
	}
}

func (l *duplexLog) get() (string, string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.received, l.sent, l.msgs
}

// readDuplexBody reads body messages until end_of_stream (or trailers).
func readDuplexBody(fs *fakeStream, log *duplexLog) (trailers bool, ok bool) {
	for {
		m, ok := fs.recv()
		if !ok {
			return false, false
		}
		if m.GetRequestTrailers() != nil || m.GetResponseTrailers() != nil {
			return true, true
		}
		b := m.GetRequestBody()
		if b == nil {
			b = m.GetResponseBody()
		}
		log.add(string(b.GetBody()), "")
		if b.GetEndOfStream() {
			return false, true
		}
	}
}

func TestConformanceFullDuplex(t *testing.T) {
	reqDuplex := Config{ProcessingMode: mode(send, skip, duplex, none, send, skip)}
	headersReply := reply(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{}},
		&extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-new-header", "new"))})
	big := strings.Repeat("s", 64*1024)

	log1 := &duplexLog{}
	log2 := &duplexLog{}
	log3 := &duplexLog{}
	log4 := &duplexLog{}
	runConformance(t, []conformance{
		// ext_proc_full_duplex_integration_test.cc ExtProcIntegrationTest.ServerWaitForBodyBeforeSendsHeaderRespDuplexStreamed
		{name: "streams_the_body_without_waiting_and_forwards_what_the_processor_streams_back", cfg: reqDuplex,
			proc: func(fs *fakeStream) error {
				fs.recv()
				if _, ok := readDuplexBody(fs, log1); !ok {
					return nil
				}
				fs.send(headersReply)
				_, _, n := log1.get()
				for i := 0; i < 2*n; i++ {
					fs.send(streamedBody("request", "r", i == 2*n-1))
					log1.add("", "r")
				}
				return silent(fs)
			},
			req: request{method: "POST", body: big},
			check: func(o *outcome) {
				o.status(200)
				got, sent, n := log1.get()
				if got != big || n == 0 {
					o.t.Fatalf("processor received %d bytes in %d messages", len(got), n)
				}
				s := o.upstream()
				if s.Body != sent || s.Header.Get("X-New-Header") != "new" || s.ContentLength != -1 {
					o.t.Fatalf("upstream body %q header %q length %d", s.Body, s.Header.Get("X-New-Header"), s.ContentLength)
				}
				if pc := o.sent(0).GetProtocolConfig(); pc.GetRequestBodyMode() != duplex {
					o.t.Fatalf("protocol_config %v", pc)
				}
			}},
		// ext_proc_full_duplex_integration_test.cc ExtProcIntegrationTest.ServerWaitForBodyAndTrailerBeforeSendsHeaderRespDuplexStreamedSmallBody
		{name: "sends_trailers_right_after_the_body_and_ends_the_body_with_the_trailers_reply", cfg: reqDuplex,
			proc: func(fs *fakeStream) error {
				fs.recv()
				if tr, ok := readDuplexBody(fs, log2); !ok || !tr {
					return nil
				}
				fs.send(headersReply)
				fs.send(streamedBody("request", "half", false))
				log2.add("", "half")
				fs.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
					RequestTrailers: &extprocv3.TrailersResponse{HeaderMutation: mutation(setH("x-new-trailer", "new"))}}})
				return silent(fs)
			},
			req: request{method: "POST", chunks: []string{"sss", "sss"}, trailer: http.Header{"X-Trailer-Foo": {"yes"}}},
			check: func(o *outcome) {
				o.status(200)
				o.kinds("request_headers,request_body,request_body,request_trailers")
				s := o.upstream()
				if s.Body != "half" || s.Trailer.Get("X-Trailer-Foo") != "yes" || s.Trailer.Get("X-New-Trailer") != "new" {
					o.t.Fatalf("upstream body %q trailers %v", s.Body, s.Trailer)
				}
			}},
		// ext_proc_full_duplex_integration_test.cc ExtProcIntegrationTest.ServerSendBodyRespWithouRecvEntireBodyDuplexStreamed
		{name: "accepts_body_replies_before_the_whole_body_arrived", cfg: reqDuplex,
			proc: func(fs *fakeStream) error {
				fs.recv()
				i := 0
				for {
					m, ok := fs.recv()
					if !ok {
						return nil
					}
					if m.GetRequestTrailers() != nil {
						fs.send(streamedBody("request", "END", false))
						log3.add("", "END")
						fs.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
							RequestTrailers: &extprocv3.TrailersResponse{}}})
						return silent(fs)
					}
					if i == 0 {
						fs.send(headersReply)
					}
					fs.send(streamedBody("request", strconv.Itoa(i), false))
					log3.add(string(m.GetRequestBody().GetBody()), strconv.Itoa(i))
					i++
				}
			},
			req: request{method: "POST", chunks: []string{"aaa", "bbb", "ccc"}, gap: 40 * time.Millisecond,
				trailer: http.Header{"X-Trailer-Foo": {"yes"}}},
			check: func(o *outcome) {
				o.status(200)
				got, sent, _ := log3.get()
				if got != "aaabbbccc" || o.upstream().Body != sent || !strings.HasSuffix(sent, "END") {
					o.t.Fatalf("processor got %q sent %q; upstream got %q", got, sent, o.upstream().Body)
				}
			}},
		// ext_proc_full_duplex_integration_test.cc ExtProcIntegrationTest.DuplexStreamedInBothDirection
		{name: "streams_both_directions", cfg: Config{ProcessingMode: mode(send, send, duplex, duplex, send, send)},
			proc: func(fs *fakeStream) error {
				fs.recv()
				if _, ok := readDuplexBody(fs, log4); !ok {
					return nil
				}
				fs.send(headersReply)
				fs.send(streamedBody("request", "to-upstream", true))
				m, ok := fs.recv()
				if !ok || m.GetResponseHeaders() == nil {
					return nil
				}
				if _, ok := readDuplexBody(fs, log4); !ok {
					return nil
				}
				fs.send(reply(m, &extprocv3.CommonResponse{}))
				for i := 0; i < 3; i++ {
					fs.send(streamedBody("response", "R", i == 2))
				}
				return silent(fs)
			},
			req: request{method: "POST", body: strings.Repeat("s", 8*1024)},
			check: func(o *outcome) {
				o.status(200)
				if o.upstream().Body != "to-upstream" || o.body != "RRR" {
					o.t.Fatalf("upstream got %q, client got %q", o.upstream().Body, o.body)
				}
				if k := strings.Join(o.tr.SentKinds(), ","); !strings.HasPrefix(k, "request_headers,request_body") || !strings.Contains(k, "response_headers,response_body") {
					o.t.Fatalf("Envoy sent %s", k)
				}
			}},
		// ext_proc_full_duplex_integration_test.cc ExtProcIntegrationTest.ServerSendOutOfOrderResponseDuplexStreamed
		{name: "fails_closed_on_a_body_reply_before_the_headers_reply_even_with_failure_mode_allow",
			cfg: Config{FailureModeAllow: true, ProcessingMode: mode(send, skip, duplex, none, send, skip)},
			proc: func(fs *fakeStream) error {
				fs.recv()
				if _, ok := readDuplexBody(fs, &duplexLog{}); !ok {
					return nil
				}
				fs.send(streamedBody("request", "r", true))
				return silent(fs)
			},
			req: request{method: "POST", body: "data"},
			check: func(o *outcome) {
				o.status(500)
				o.details("spurious_message")
				o.upstreams(0)
				o.stats("failure_mode_allowed", 0)
			}},
		// ext_proc_full_duplex_integration_test.cc ExtProcIntegrationTest.ServerWaitTooLongBeforeSendRespDuplexStreamed
		{name: "answers_504_when_the_hcm_stream_idle_timeout_fires",
			cfg: Config{StreamIdleTimeout: 300 * time.Millisecond, ProcessingMode: mode(send, skip, duplex, none, send, skip)}, proc: silent,
			req: request{method: "POST", body: "data"},
			check: func(o *outcome) {
				o.status(504)
				o.details("stream_idle_timeout")
				o.stats("message_timeouts", 0)
			}},
		// ext_proc_full_duplex_integration_test.cc ExtProcIntegrationTest.ServerWaitTooLongBeforeSendRespDuplexStreamed
		// (FULL_DUPLEX_STREAMED runs no message timer: only the stream idle timeout applies)
		{name: "runs_no_message_timer",
			cfg: Config{MessageTimeout: 100 * time.Millisecond, ProcessingMode: mode(send, skip, duplex, none, send, skip)},
			proc: func(fs *fakeStream) error {
				fs.recv()
				if _, ok := readDuplexBody(fs, &duplexLog{}); !ok {
					return nil
				}
				time.Sleep(300 * time.Millisecond)
				fs.send(headersReply)
				fs.send(streamedBody("request", "late", true))
				return silent(fs)
			},
			req: request{method: "POST", body: "data"},
			check: func(o *outcome) {
				o.status(200)
				if o.upstream().Body != "late" {
					o.t.Fatalf("upstream body %q", o.upstream().Body)
				}
				o.stats("message_timeouts", 0)
			}},
	})
}

func TestConformanceDeliberateDifferences(t *testing.T) {
	runConformance(t, []conformance{
		// filter_local_reply_streaming_test.cc StreamingLocalReplyTest.LocalHeadersOnlyRequestAndResponse
		{name: "streamed_immediate_response_is_answered_as_an_unhandled_reply",
			differs: "StreamedImmediateResponse (Envoy 1.37+) is not modelled; the stand-in treats it as a reply it does " +
				"not know, which fails closed like any unhandled reply, so a processor relying on it fails loudly",
			proc: immediateOn("request_headers", &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_StreamedImmediateResponse{
				StreamedImmediateResponse: &extprocv3.StreamedImmediateResponse{Response: &extprocv3.StreamedImmediateResponse_HeadersResponse{
					HeadersResponse: &extprocv3.HttpHeaders{EndOfStream: true, Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
						{Key: ":status", RawValue: []byte("200")}}}}}}}}),
			check: func(o *outcome) {
				o.status(500)
				o.details("unhandled_message")
				o.stats("spurious_msgs_received", 1)
			}},
		// ordering_test.cc OrderingTest.DefaultOrderingGetWithTimer (the filter's 200ms default timer)
		{name: "message_timeout_zero_means_the_200ms_default", defaultTimer: true,
			differs: "Config.MessageTimeout is a Go duration whose zero value means unset, so 0 gives Envoy's 200ms " +
				"default; in Envoy an explicit message_timeout: 0s fires at once",
			proc: answer(contAll),
			check: func(o *outcome) {
				o.status(200)
				if o.e.p.cfg.MessageTimeout != 200*time.Millisecond {
					o.t.Fatalf("message timeout %v", o.e.p.cfg.MessageTimeout)
				}
			}},
	})
}
