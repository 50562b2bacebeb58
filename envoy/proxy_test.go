package envoy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	send     = extprocfilterv3.ProcessingMode_SEND
	skip     = extprocfilterv3.ProcessingMode_SKIP
	buffered = extprocfilterv3.ProcessingMode_BUFFERED
	streamed = extprocfilterv3.ProcessingMode_STREAMED
	partial  = extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL
)

// sidecallMode is the shipped bootstrap's mode.
func sidecallMode() *ProcessingMode {
	return &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: skip}
}

func TestStreamLifecycle(t *testing.T) {
	t.Run("pass_through_uses_one_message_and_closes_early", func(t *testing.T) {
		var traced []*StreamTrace
		e := setup(t, answer(contAll), Config{ProcessingMode: sidecallMode(), Trace: func(tr *StreamTrace) { traced = append(traced, tr) }})
		res, body := e.do(t, "GET", "/a?x=1", "")
		if len(traced) != 1 || traced[0] != e.p.LastTrace() || traced[0].Path != "/a?x=1" || traced[0].Status != 200 {
			t.Fatalf("trace callback got %d traces", len(traced))
		}
		wantStatus(t, res, 200)
		if body != "upstream:" {
			t.Fatalf("body %q", body)
		}
		tr := e.p.LastTrace()
		if tr.SentCount() != 1 || tr.ReceivedCount() != 1 || !tr.ClosedEarly {
			t.Fatalf("sent %d received %d early %v", tr.SentCount(), tr.ReceivedCount(), tr.ClosedEarly)
		}
		e.ps.waitEnd()
		if err := e.ps.stream(t, 0).endErr; !isNormalEnd(err) {
			t.Fatalf("server saw %v, want EOF or Canceled", err)
		}
	})
	t.Run("no_stream_when_route_disabled", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{Route: func(*http.Request) RouteSettings {
			return RouteSettings{Name: "healthz", Disabled: true}
		}})
		res, _ := e.do(t, "GET", "/healthz", "")
		wantStatus(t, res, 200)
		if n := e.p.Stats().StreamsStarted.Load(); n != 0 || e.ps.count() != 0 || e.p.LastTrace().Opened {
			t.Fatalf("streams started %d, processor saw %d", n, e.ps.count())
		}
	})
	t.Run("no_stream_when_every_phase_skipped", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: skip, ResponseHeaderMode: skip}})
		res, _ := e.do(t, "POST", "/", "body")
		wantStatus(t, res, 200)
		if e.ps.count() != 0 {
			t.Fatal("a stream was opened")
		}
	})
	t.Run("one_stream_per_request", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{ProcessingMode: sidecallMode()})
		for i := 0; i < 3; i++ {
			e.do(t, "GET", "/", "")
		}
		if n := e.p.Stats().StreamsStarted.Load(); n != 3 {
			t.Fatalf("streams_started %d", n)
		}
	})
	t.Run("first_message_can_be_response_headers", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: skip, ResponseHeaderMode: send}})
		e.do(t, "GET", "/", "")
		msgs := e.p.LastTrace().SentMessages()
		if len(msgs) != 1 || msgs[0].GetResponseHeaders() == nil || msgs[0].GetProtocolConfig() == nil {
			t.Fatalf("messages %v", e.p.LastTrace().SentKinds())
		}
	})
	t.Run("graceful_close_lets_server_see_eof", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{ProcessingMode: sidecallMode(), GracefulClose: true})
		e.do(t, "GET", "/", "")
		e.ps.waitEnd()
		if err := e.ps.stream(t, 0).endErr; err != io.EOF {
			t.Fatalf("server saw %v, want io.EOF", err)
		}
	})
}

func TestMessageContents(t *testing.T) {
	mdc := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"sidecall": {Fields: map[string]*structpb.Value{"route": structpb.NewStringValue("r1")}}}}
	cfg := Config{
		ProcessingMode:     &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: send, RequestBodyMode: buffered},
		RequestAttributes:  []string{"xds.route_name", "source.address", "destination.address", "request.path", "request.url_path", "request.method", "request.host", "request.headers['x-id']", "request.size"},
		ResponseAttributes: []string{"response.code"},
		MetadataContext:    mdc,
		InitialMetadata:    map[string]string{"a": "1", "x-sidecall-route": "filter"},
		Route: func(*http.Request) RouteSettings {
			return RouteSettings{Name: "orders", GRPCInitialMetadata: map[string]string{"x-sidecall-route": "orders"}}
		},
	}
	e := setup(t, answer(contAll), cfg)
	res, _ := e.do(t, "POST", "/Orders/1?q=2", "hello", "X-Id", "abc", "X-Multi", "1", "X-Multi", "2")
	wantStatus(t, res, 200)
	msgs := e.p.LastTrace().SentMessages()
	kinds := strings.Join(e.p.LastTrace().SentKinds(), ",")
	if kinds != "request_headers,request_body,response_headers" {
		t.Fatalf("kinds %s", kinds)
	}
	t.Run("protocol_config_only_on_first_message", func(t *testing.T) {
		pc := msgs[0].GetProtocolConfig()
		if pc == nil || pc.GetRequestBodyMode() != buffered || msgs[1].GetProtocolConfig() != nil || msgs[2].GetProtocolConfig() != nil {
			t.Fatalf("protocol_config %v / %v", pc, msgs[1].GetProtocolConfig())
		}
	})
	t.Run("metadata_context_on_every_message", func(t *testing.T) {
		for i, m := range msgs {
			if m.GetMetadataContext().GetFilterMetadata()["sidecall"].GetFields()["route"].GetStringValue() != "r1" {
				t.Fatalf("message %d lacks metadata_context", i)
			}
		}
	})
	t.Run("attributes_on_first_message_per_direction", func(t *testing.T) {
		a := msgs[0].GetAttributes()["envoy.filters.http.ext_proc"].GetFields()
		want := map[string]string{"xds.route_name": "orders", "source.address": "127.0.0.1:50000", "destination.address": "127.0.0.1:15001",
			"request.path": "/Orders/1?q=2", "request.url_path": "/Orders/1", "request.method": "POST", "request.host": "app.local", "request.headers['x-id']": "abc"}
		for k, v := range want {
			if got := a[k].GetStringValue(); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		if _, ok := a["request.size"]; ok {
			t.Error("unsupported attribute should be left out")
		}
		if msgs[1].GetAttributes() != nil {
			t.Error("attributes repeated on the body message")
		}
		if got := msgs[2].GetAttributes()["envoy.filters.http.ext_proc"].GetFields()["response.code"].GetNumberValue(); got != 200 {
			t.Errorf("response.code %v", got)
		}
	})
	t.Run("request_header_encoding", func(t *testing.T) {
		h := msgs[0].GetRequestHeaders()
		if h.GetEndOfStream() {
			t.Error("end_of_stream with a body")
		}
		hs := h.GetHeaders().GetHeaders()
		order := []string{":method", ":path", ":scheme", ":authority"}
		for i, k := range order {
			if hs[i].GetKey() != k {
				t.Fatalf("header %d is %q, want %q", i, hs[i].GetKey(), k)
			}
		}
		for k, v := range map[string]string{":method": "POST", ":path": "/Orders/1?q=2", ":scheme": "http", ":authority": "app.local", "x-id": "abc", "x-forwarded-proto": "http", "content-length": "5"} {
			if got, _ := headerOf(h.GetHeaders(), k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		multi := 0
		for _, hv := range hs {
			if hv.GetValue() != "" || hv.GetKey() != strings.ToLower(hv.GetKey()) {
				t.Errorf("header %q: value %q set or key not lower case", hv.GetKey(), hv.GetValue())
			}
			if hv.GetKey() == "x-multi" {
				multi++
			}
		}
		if id, ok := headerOf(h.GetHeaders(), "x-request-id"); !ok || len(id) != 36 {
			t.Errorf("x-request-id %q", id)
		}
		if _, ok := headerOf(h.GetHeaders(), "host"); ok || multi != 2 {
			t.Errorf("host entry present or x-multi entries %d", multi)
		}
		rh := msgs[2].GetResponseHeaders().GetHeaders()
		if s, _ := headerOf(rh, ":status"); s != "200" {
			t.Errorf(":status %q", s)
		}
	})
	t.Run("initial_metadata_merged_per_route", func(t *testing.T) {
		md := e.ps.stream(t, 0).md
		if md.Get("a")[0] != "1" || len(md.Get("x-sidecall-route")) != 1 || md.Get("x-sidecall-route")[0] != "orders" {
			t.Fatalf("metadata %v", md)
		}
	})
}

func TestFailures(t *testing.T) {
	slow := func(d time.Duration) script {
		return answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
			time.Sleep(d)
			return contAll(m)
		})
	}
	cases := []struct {
		name      string
		sc        script
		cfg       Config
		want      int
		details   string
		check     func(t *testing.T, e *env)
		upstreams int
	}{
		{name: "timeout_gives_504", sc: slow(300 * time.Millisecond), cfg: Config{MessageTimeout: 50 * time.Millisecond},
			want: 504, details: "ext_proc_error_per-message_timeout_exceeded",
			check: func(t *testing.T, e *env) {
				if e.p.Stats().MessageTimeouts.Load() != 1 {
					t.Fatal("message_timeouts not counted")
				}
			}},
		{name: "timeout_fail_open_continues", sc: slow(300 * time.Millisecond), cfg: Config{MessageTimeout: 50 * time.Millisecond, FailureModeAllow: true},
			want: 200, upstreams: 1,
			check: func(t *testing.T, e *env) {
				if e.p.Stats().FailureModeAllowed.Load() != 1 || !e.p.LastTrace().FailedOpen {
					t.Fatal("failure_mode_allowed not counted")
				}
			}},
		{name: "per_route_failure_mode_allow", sc: slow(300 * time.Millisecond), want: 200, upstreams: 1,
			cfg: Config{MessageTimeout: 50 * time.Millisecond, Route: func(*http.Request) RouteSettings { return RouteSettings{FailureModeAllow: ptr(true)} }}},
		{name: "override_message_timeout_extends_timer", want: 200, upstreams: 1,
			cfg: Config{MessageTimeout: 100 * time.Millisecond, MaxMessageTimeout: time.Second},
			sc:  overrideThenReply(time.Second, 250*time.Millisecond),
			check: func(t *testing.T, e *env) {
				if e.p.Stats().OverrideMessageTimeoutReceived.Load() != 1 || e.p.Stats().OverrideMessageTimeoutIgnored.Load() != 0 {
					t.Fatal("override not counted as accepted")
				}
			}},
		{name: "override_message_timeout_ignored_without_max", want: 504, details: "ext_proc_error_per-message_timeout_exceeded",
			cfg: Config{MessageTimeout: 100 * time.Millisecond},
			sc:  overrideThenReply(time.Second, 250*time.Millisecond),
			check: func(t *testing.T, e *env) {
				if e.p.Stats().OverrideMessageTimeoutIgnored.Load() != 1 {
					t.Fatal("override not counted as ignored")
				}
			}},
		{name: "server_ok_close_passes_through", want: 200, upstreams: 1,
			cfg: Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: send, RequestBodyMode: buffered}},
			sc: func(fs *fakeStream) error {
				fs.recv()
				return nil
			},
			check: func(t *testing.T, e *env) {
				if k := e.p.LastTrace().SentKinds(); len(k) != 1 || e.p.Stats().FailureModeAllowed.Load() != 0 || e.up.last(t).Body != "data" {
					t.Fatalf("sent %v", k)
				}
			}},
		{name: "grpc_error_gives_status_on_error", want: 500, details: "ext_proc_error_gRPC_error_13{boom_now}",
			sc: func(fs *fakeStream) error { fs.recv(); return status.Error(codes.Internal, "boom now") },
			check: func(t *testing.T, e *env) {
				if e.p.Stats().StreamsFailed.Load() != 1 {
					t.Fatal("streams_failed not counted")
				}
			}},
		{name: "grpc_error_custom_status_on_error", want: 503, cfg: Config{StatusOnError: 503},
			sc: func(fs *fakeStream) error { fs.recv(); return status.Error(codes.Unimplemented, "no") }},
		{name: "grpc_error_fail_open", want: 200, upstreams: 1, cfg: Config{FailureModeAllow: true},
			sc: func(fs *fakeStream) error { fs.recv(); return status.Error(codes.Internal, "x") }},
		{name: "spurious_wrong_oneof", want: 500, details: "spurious_message",
			sc: answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				return []*extprocv3.ProcessingResponse{{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}}
			}),
			check: func(t *testing.T, e *env) {
				if e.p.Stats().SpuriousMsgsReceived.Load() != 1 {
					t.Fatal("spurious not counted")
				}
			}},
		{name: "spurious_no_oneof", want: 500, details: "unhandled_message",
			sc: answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				return []*extprocv3.ProcessingResponse{{}}
			})},
		{name: "spurious_second_headers_reply", want: 500,
			cfg: Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: skip, RequestBodyMode: buffered}},
			sc: answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				if m.GetRequestBody() != nil {
					return []*extprocv3.ProcessingResponse{reply(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{}}, nil)}
				}
				return contAll(m)
			})},
		{name: "spurious_fail_open", want: 200, upstreams: 1, cfg: Config{FailureModeAllow: true},
			sc: answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				return []*extprocv3.ProcessingResponse{{}}
			})},
		{name: "immediate_response_when_disabled_is_spurious", want: 500, cfg: Config{DisableImmediateResponse: true},
			sc: answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				return []*extprocv3.ProcessingResponse{immediate(403, "no")}
			})},
		{name: "invalid_header_value_is_500_even_fail_open", want: 500, cfg: Config{FailureModeAllow: true},
			details: "Invalid_character_in_set_headers_mutation.",
			sc: answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				return []*extprocv3.ProcessingResponse{reply(m, &extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-a", "a\r\nb"))})}
			})},
		{name: "too_many_headers_is_500", want: 500, cfg: Config{MaxHeaderCount: 10},
			sc: answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				var set []*corev3.HeaderValueOption
				for i := 0; i < 8; i++ {
					set = append(set, setH("x-"+string(rune('a'+i)), "v"))
				}
				return []*extprocv3.ProcessingResponse{reply(m, &extprocv3.CommonResponse{HeaderMutation: mutation(set...)})}
			})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.ProcessingMode == nil {
				tc.cfg.ProcessingMode = sidecallMode()
			}
			e := setup(t, tc.sc, tc.cfg)
			res, _ := e.do(t, "POST", "/f", "data")
			wantStatus(t, res, tc.want)
			if tc.details != "" && e.p.LastTrace().Details != tc.details {
				t.Fatalf("details %q, want %q", e.p.LastTrace().Details, tc.details)
			}
			if e.up.count() != tc.upstreams {
				t.Fatalf("upstream saw %d requests, want %d", e.up.count(), tc.upstreams)
			}
			if tc.check != nil {
				tc.check(t, e)
			}
		})
	}
	t.Run("unreachable_processor_gives_500", func(t *testing.T) {
		up := startUpstream(t)
		p, err := New(Config{Upstream: up.URL, Target: "127.0.0.1:1", ProcessingMode: sidecallMode()})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		req, _ := http.NewRequest("GET", "http://x/", nil)
		res, err := p.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, res, 500)
		if !strings.HasPrefix(p.LastTrace().Details, "ext_proc_error_gRPC_error_14") {
			t.Fatalf("details %q", p.LastTrace().Details)
		}
	})
}

// overrideThenReply asks for a longer timeout, then replies after delay.
func overrideThenReply(override, delay time.Duration) script {
	return func(fs *fakeStream) error {
		for {
			m, ok := fs.recv()
			if !ok {
				return nil
			}
			fs.send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(override)})
			time.Sleep(delay)
			fs.send(cont(m))
		}
	}
}

func ptr[T any](v T) *T { return &v }

func immediate(code int, body string, set ...*corev3.HeaderValueOption) *extprocv3.ProcessingResponse {
	ir := &extprocv3.ImmediateResponse{Body: []byte(body), Details: "denied by test"}
	if code != 0 {
		ir.Status = &typev3.HttpStatus{Code: typev3.StatusCode(code)}
	}
	if len(set) > 0 {
		ir.Headers = mutation(set...)
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: ir}}
}

func TestAsRealHTTPServer(t *testing.T) {
	e := setup(t, onKind("request_headers", &extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-added", "1"))}),
		Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: send, RequestBodyMode: buffered}})
	front := httptest.NewServer(e.p)
	defer front.Close()
	res, err := http.Post(front.URL+"/real?x=1", "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	front.Client().CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	wantStatus(t, res, 200)
	if string(b) != "upstream:payload" {
		t.Fatalf("body %q", b)
	}
	s := e.up.last(t)
	if s.Header.Get("X-Added") != "1" || s.Path != "/real?x=1" || s.ContentLength != 7 {
		t.Fatalf("upstream %+v", s)
	}
	// The trace is recorded just after the response is written: wait for it.
	for i := 0; i < 300 && e.p.LastTrace() == nil; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	h := e.p.LastTrace().SentMessages()[0].GetRequestHeaders().GetHeaders()
	if cl, _ := headerOf(h, "content-length"); cl != "7" {
		t.Fatalf("content-length seen by processor %q", cl)
	}
	if src := e.p.LastTrace().SentMessages()[0]; src.GetAttributes() != nil {
		t.Fatal("no attributes configured, none expected")
	}
}
