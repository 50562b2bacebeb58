package envoy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// onKind answers messages of one kind with cr, everything else CONTINUE.
func onKind(kind string, cr *extprocv3.CommonResponse) script {
	return answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		if requestKind(m) == kind {
			return []*extprocv3.ProcessingResponse{reply(m, cr)}
		}
		return contAll(m)
	})
}

func TestHeaderMutations(t *testing.T) {
	cases := []struct {
		name  string
		mut   *extprocv3.HeaderMutation
		rules *mutationrulesv3.HeaderMutationRules
		check func(t *testing.T, s seen, e *env)
	}{
		{name: "raw_value_only_value_field_gives_empty_header",
			mut: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-v", Value: "ignored"}}}},
			check: func(t *testing.T, s seen, _ *env) {
				if v, ok := s.Header["X-V"]; !ok || v[0] != "" {
					t.Fatalf("x-v = %q", v)
				}
			}},
		{name: "append_false_by_default_overwrites_and_append_action_ignored",
			mut: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", RawValue: []byte("new")},
				AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD}, addH("x-a", "2")}},
			check: func(t *testing.T, s seen, _ *env) {
				if got := strings.Join(s.Header.Values("X-A"), ","); got != "new,2" {
					t.Fatalf("x-a %q", got)
				}
			}},
		{name: "default_rules_drop_routing_and_envoy_headers",
			mut: mutation(setH("host", "evil"), setH(":authority", "evil"), setH(":method", "DELETE"), setH(":scheme", "https"), setH("x-envoy-foo", "1"), setH(":path", "/new?z=1")),
			check: func(t *testing.T, s seen, e *env) {
				if s.Host != "app.local" || s.Method != "POST" || s.Header.Get("X-Envoy-Foo") != "" || s.Path != "/new?z=1" {
					t.Fatalf("upstream saw %+v", s)
				}
				if n := e.p.Stats().RejectedHeaderMutations.Load(); n != 5 {
					t.Fatalf("rejected_header_mutations %d", n)
				}
			}},
		{name: "pseudo_and_host_never_removable_others_are",
			mut: &extprocv3.HeaderMutation{RemoveHeaders: []string{":path", "host", "x-a"}},
			check: func(t *testing.T, s seen, e *env) {
				if s.Path != "/m" || s.Header.Get("X-A") != "" || e.p.Stats().RejectedHeaderMutations.Load() != 2 {
					t.Fatalf("upstream saw %+v", s)
				}
			}},
		{name: "allow_all_routing_and_allow_envoy",
			rules: &mutationrulesv3.HeaderMutationRules{AllowAllRouting: wrapperspb.Bool(true), AllowEnvoy: wrapperspb.Bool(true)},
			mut:   mutation(setH(":authority", "other.local"), setH("x-envoy-foo", "1")),
			check: func(t *testing.T, s seen, _ *env) {
				if s.Host != "other.local" || s.Header.Get("X-Envoy-Foo") != "1" {
					t.Fatalf("upstream saw %+v", s)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, onKind("request_headers", &extprocv3.CommonResponse{HeaderMutation: tc.mut}),
				Config{ProcessingMode: sidecallMode(), MutationRules: tc.rules})
			res, _ := e.do(t, "POST", "/m", "data", "X-A", "old")
			wantStatus(t, res, 200)
			tc.check(t, e.up.last(t), e)
		})
	}
	t.Run("disallow_is_error_gives_500", func(t *testing.T) {
		e := setup(t, onKind("request_headers", &extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-envoy-x", "1"))}),
			Config{ProcessingMode: sidecallMode(), MutationRules: &mutationrulesv3.HeaderMutationRules{DisallowIsError: wrapperspb.Bool(true)}})
		res, _ := e.do(t, "GET", "/", "")
		wantStatus(t, res, 500)
	})
}

func TestBodyModes(t *testing.T) {
	bufMode := &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: skip, RequestBodyMode: buffered}
	t.Run("buffered_one_message_eos_and_content_length_kept", func(t *testing.T) {
		e := setup(t, onKind("request_body", &extprocv3.CommonResponse{
			HeaderMutation: mutation(setH("content-length", "3")),
			BodyMutation:   &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("new")}}}),
			Config{ProcessingMode: bufMode})
		res, _ := e.do(t, "POST", "/", "hello world")
		wantStatus(t, res, 200)
		msgs := e.p.LastTrace().SentMessages()
		if len(msgs) != 2 || string(msgs[1].GetRequestBody().GetBody()) != "hello world" || !msgs[1].GetRequestBody().GetEndOfStream() {
			t.Fatalf("messages %v", e.p.LastTrace().SentKinds())
		}
		if s := e.up.last(t); s.Body != "new" || s.ContentLength != 3 {
			t.Fatalf("upstream %+v", s)
		}
	})
	t.Run("buffered_content_length_mismatch_is_500", func(t *testing.T) {
		e := setup(t, onKind("request_body", &extprocv3.CommonResponse{
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("new")}}}),
			Config{ProcessingMode: bufMode, FailureModeAllow: true})
		res, _ := e.do(t, "POST", "/", "hello world")
		wantStatus(t, res, 500)
		if d := e.p.LastTrace().Details; d != "mismatch_between_content_length_and_the_length_of_the_mutated_body" {
			t.Fatalf("details %q", d)
		}
	})
	t.Run("buffered_over_limit_is_413", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{ProcessingMode: bufMode, BufferLimit: 8})
		res, _ := e.do(t, "POST", "/", "0123456789")
		wantStatus(t, res, 413)
		if e.up.count() != 0 {
			t.Fatal("upstream contacted")
		}
	})
	t.Run("buffered_response_over_limit_is_500", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: skip, ResponseHeaderMode: send, ResponseBodyMode: buffered}, BufferLimit: 8})
		res, _ := e.do(t, "GET", "/", "")
		wantStatus(t, res, 500)
	})
	t.Run("buffered_partial_sends_limit_then_passes_rest", func(t *testing.T) {
		e := setup(t, onKind("request_body", &extprocv3.CommonResponse{
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("HEAD-")}}}),
			Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: skip, RequestBodyMode: partial}, BufferLimit: 4})
		res, _ := e.do(t, "POST", "/", "abcdefgh")
		wantStatus(t, res, 200)
		b := e.p.LastTrace().SentMessages()[1].GetRequestBody()
		if string(b.GetBody()) != "abcd" || b.GetEndOfStream() {
			t.Fatalf("partial message %q eos %v", b.GetBody(), b.GetEndOfStream())
		}
		if s := e.up.last(t); s.Body != "HEAD-efgh" || s.Header.Get("Content-Length") != "" {
			t.Fatalf("upstream %+v", s)
		}
	})
	t.Run("buffered_with_header_skip_strips_content_length", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: skip, ResponseHeaderMode: skip, RequestBodyMode: buffered}})
		e.do(t, "POST", "/", "abc")
		if k := e.p.LastTrace().SentKinds(); len(k) != 1 || k[0] != "request_body" {
			t.Fatalf("kinds %v", k)
		}
		if s := e.up.last(t); s.ContentLength != -1 || s.Body != "abc" {
			t.Fatalf("upstream %+v", s)
		}
	})
	t.Run("streamed_pipelined_one_reply_per_chunk_in_order", func(t *testing.T) {
		e := setup(t, answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
			if b := m.GetRequestBody(); b != nil {
				return []*extprocv3.ProcessingResponse{reply(m, &extprocv3.CommonResponse{
					BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte(strings.ToUpper(string(b.GetBody())))}}})}
			}
			return contAll(m)
		}), Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: skip, RequestBodyMode: streamed}})
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < 3; i++ {
				fmt.Fprintf(pw, "chunk%d-", i)
				time.Sleep(30 * time.Millisecond)
			}
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", "http://app.local/s", pr)
		req.Header.Set("Content-Length", "21")
		res, err := e.p.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, res, 200)
		s := e.up.last(t)
		if s.Body != "CHUNK0-CHUNK1-CHUNK2-" || s.ContentLength != -1 {
			t.Fatalf("upstream %+v", s)
		}
		var eos int
		var joined string
		for _, m := range e.p.LastTrace().SentMessages()[1:] {
			joined += string(m.GetRequestBody().GetBody())
			if m.GetRequestBody().GetEndOfStream() {
				eos++
			}
		}
		if joined != "chunk0-chunk1-chunk2-" || eos != 1 || e.p.LastTrace().SentCount() < 3 {
			t.Fatalf("chunks %q eos %d sent %d", joined, eos, e.p.LastTrace().SentCount())
		}
		if got, _ := headerOf(e.p.LastTrace().SentMessages()[0].GetRequestHeaders().GetHeaders(), "content-length"); got != "21" {
			t.Fatalf("processor should still see content-length, got %q", got)
		}
	})
	t.Run("continue_and_replace_replaces_body_and_stops_direction", func(t *testing.T) {
		e := setup(t, onKind("request_headers", &extprocv3.CommonResponse{
			Status:         extprocv3.CommonResponse_CONTINUE_AND_REPLACE,
			HeaderMutation: mutation(setH(":method", "PUT")),
			BodyMutation:   &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("replaced")}}}),
			Config{ProcessingMode: bufMode})
		res, _ := e.do(t, "POST", "/", "original")
		wantStatus(t, res, 200)
		if s := e.up.last(t); s.Body != "replaced" || s.Method != "PUT" {
			t.Fatalf("upstream %+v", s)
		}
		if k := e.p.LastTrace().SentKinds(); len(k) != 1 {
			t.Fatalf("kinds %v", k)
		}
	})
	t.Run("trailers_sent_only_when_present_and_mutated", func(t *testing.T) {
		e := setup(t, onKind("request_trailers", &extprocv3.CommonResponse{HeaderMutation: mutation(setH("x-t", "changed"))}),
			Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: skip, RequestTrailerMode: send}})
		pr, pw := io.Pipe()
		go func() { io.WriteString(pw, "abc"); pw.Close() }()
		req, _ := http.NewRequest("POST", "http://app.local/t", pr)
		req.Trailer = http.Header{"X-T": {"orig"}}
		res, err := e.p.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, res, 200)
		if k := strings.Join(e.p.LastTrace().SentKinds(), ","); k != "request_headers,request_trailers" {
			t.Fatalf("kinds %s", k)
		}
		if s := e.up.last(t); s.Trailer.Get("X-T") != "changed" || s.Body != "abc" {
			t.Fatalf("upstream %+v", s)
		}
		// No trailers: none invented.
		e.do(t, "POST", "/t", "abc")
		if k := e.p.LastTrace().SentKinds(); len(k) != 1 {
			t.Fatalf("kinds %v", k)
		}
	})
}

func TestModeOverride(t *testing.T) {
	askBody := func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		r := cont(m)
		if m.GetRequestHeaders() != nil {
			r.ModeOverride = &ProcessingMode{RequestBodyMode: buffered}
		}
		return []*extprocv3.ProcessingResponse{r}
	}
	cases := []struct {
		name  string
		cfg   Config
		kinds string
	}{
		{"honoured_with_allow_mode_override", Config{AllowModeOverride: true}, "request_headers,request_body"},
		{"ignored_without_allow_mode_override", Config{}, "request_headers"},
		{"dropped_when_not_in_allowed_list", Config{AllowModeOverride: true, AllowedOverrideModes: []*ProcessingMode{{ResponseHeaderMode: send}}}, "request_headers"},
		{"allowed_list_match", Config{AllowModeOverride: true, AllowedOverrideModes: []*ProcessingMode{{ResponseHeaderMode: skip, RequestBodyMode: buffered}}}, "request_headers,request_body"},
		{"ignored_with_send_body_without_waiting", Config{AllowModeOverride: true, SendBodyWithoutWaiting: true}, "request_headers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.ProcessingMode = sidecallMode()
			e := setup(t, answer(askBody), tc.cfg)
			res, _ := e.do(t, "POST", "/", "data")
			wantStatus(t, res, 200)
			if k := strings.Join(e.p.LastTrace().SentKinds(), ","); k != tc.kinds {
				t.Fatalf("kinds %s, want %s", k, tc.kinds)
			}
		})
	}
	t.Run("default_header_keeps_base_and_applies_to_response", func(t *testing.T) {
		e := setup(t, answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
			r := cont(m)
			if m.GetRequestHeaders() != nil {
				r.ModeOverride = &ProcessingMode{ResponseHeaderMode: send}
			}
			return []*extprocv3.ProcessingResponse{r}
		}), Config{ProcessingMode: sidecallMode(), AllowModeOverride: true})
		e.do(t, "GET", "/", "")
		if k := strings.Join(e.p.LastTrace().SentKinds(), ","); k != "request_headers,response_headers" {
			t.Fatalf("kinds %s", k)
		}
	})
	// mode_override: body modes always come from the override, so one with no body
	// field turns a BUFFERED base into NONE (the body is never sent).
	t.Run("no_body_field_turns_buffered_base_into_none", func(t *testing.T) {
		base := func() *ProcessingMode {
			return &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: skip, RequestBodyMode: buffered}
		}
		withOverride := func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
			r := cont(m)
			if m.GetRequestHeaders() != nil {
				r.ModeOverride = &ProcessingMode{ResponseHeaderMode: send}
			}
			return []*extprocv3.ProcessingResponse{r}
		}
		// Control: without the override the base buffers the body.
		e := setup(t, answer(contAll), Config{ProcessingMode: base(), AllowModeOverride: true})
		res, _ := e.do(t, "POST", "/", "data")
		wantStatus(t, res, 200)
		if k := strings.Join(e.p.LastTrace().SentKinds(), ","); k != "request_headers,request_body" {
			t.Fatalf("base mode: kinds %s", k)
		}
		e = setup(t, answer(withOverride), Config{ProcessingMode: base(), AllowModeOverride: true})
		res, body := e.do(t, "POST", "/", "data")
		wantStatus(t, res, 200)
		if k := strings.Join(e.p.LastTrace().SentKinds(), ","); k != "request_headers,response_headers" {
			t.Fatalf("override without a body field: kinds %s, want request_headers,response_headers", k)
		}
		if body != "upstream:data" {
			t.Errorf("the body did not reach the upstream unprocessed: %q", body)
		}
	})
	t.Run("route_mode_replaces_filter_mode", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{ProcessingMode: sidecallMode(), Route: func(*http.Request) RouteSettings {
			return RouteSettings{ProcessingMode: &ProcessingMode{RequestHeaderMode: skip, ResponseHeaderMode: send}}
		}})
		e.do(t, "GET", "/", "")
		if k := strings.Join(e.p.LastTrace().SentKinds(), ","); k != "response_headers" {
			t.Fatalf("kinds %s", k)
		}
	})
}

func TestClearRouteCache(t *testing.T) {
	var calls int
	route := func(r *http.Request) RouteSettings {
		calls++
		return RouteSettings{Name: "r-" + r.URL.Path}
	}
	t.Run("honoured_with_header_mutation", func(t *testing.T) {
		calls = 0
		e := setup(t, onKind("request_headers", &extprocv3.CommonResponse{ClearRouteCache: true, HeaderMutation: mutation(setH(":path", "/v2"))}),
			Config{ProcessingMode: sidecallMode(), Route: route})
		e.do(t, "GET", "/v1", "")
		if calls != 2 || e.p.LastTrace().Route != "r-/v2" || e.p.Stats().RouteCacheCleared.Load() != 1 {
			t.Fatalf("route calls %d route %q", calls, e.p.LastTrace().Route)
		}
	})
	t.Run("ignored_without_header_mutation", func(t *testing.T) {
		calls = 0
		e := setup(t, onKind("request_headers", &extprocv3.CommonResponse{ClearRouteCache: true}),
			Config{ProcessingMode: sidecallMode(), Route: route})
		e.do(t, "GET", "/v1", "")
		if calls != 1 || e.p.Stats().ClearRouteCacheIgnored.Load() != 1 {
			t.Fatalf("route calls %d ignored %d", calls, e.p.Stats().ClearRouteCacheIgnored.Load())
		}
	})
}

func TestImmediateResponse(t *testing.T) {
	cases := []struct {
		name     string
		resp     *extprocv3.ProcessingResponse
		mode     *ProcessingMode
		status   int
		ctype    string
		body     string
		upstream int
	}{
		{"missing_status_becomes_200", immediate(0, "hi"), nil, 200, "text/plain", "hi", 0},
		{"status_below_200_becomes_200", immediate(100, ""), nil, 200, "", "", 0},
		{"own_content_type_kept_envoy_headers_dropped", immediate(403, `{"message":"no"}`, setH("content-type", "application/json"), setH("x-envoy-a", "1"), setH("x-b", "2")),
			nil, 403, "application/json", `{"message":"no"}`, 0},
		{"on_response_path", immediate(418, "tea"), &ProcessingMode{RequestHeaderMode: skip, ResponseHeaderMode: send}, 418, "text/plain", "tea", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mode := tc.mode
			if mode == nil {
				mode = sidecallMode()
			}
			e := setup(t, answer(func(*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				return []*extprocv3.ProcessingResponse{tc.resp}
			}), Config{ProcessingMode: mode})
			res, body := e.do(t, "GET", "/", "")
			wantStatus(t, res, tc.status)
			if res.Header.Get("Content-Type") != tc.ctype || body != tc.body || res.Header.Get("X-Envoy-A") != "" {
				t.Fatalf("content-type %q body %q headers %v", res.Header.Get("Content-Type"), body, res.Header)
			}
			if e.up.count() != tc.upstream || e.p.Stats().ImmediateResponsesSent.Load() != 1 {
				t.Fatalf("upstream %d immediate %d", e.up.count(), e.p.Stats().ImmediateResponsesSent.Load())
			}
			if e.p.LastTrace().Details != "denied_by_test" {
				t.Fatalf("details %q", e.p.LastTrace().Details)
			}
		})
	}
}

func TestResponsePath(t *testing.T) {
	t.Run("status_and_header_mutation", func(t *testing.T) {
		e := setup(t, onKind("response_headers", &extprocv3.CommonResponse{HeaderMutation: mutation(setH(":status", "201"), setH("x-r", "1"))}),
			Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: skip, ResponseHeaderMode: send}})
		res, body := e.do(t, "GET", "/", "")
		wantStatus(t, res, 201)
		if res.Header.Get("X-R") != "1" || res.Header.Get("X-Up") != "1" || body != "upstream:" {
			t.Fatalf("headers %v body %q", res.Header, body)
		}
		h := e.p.LastTrace().SentMessages()[0].GetResponseHeaders().GetHeaders()
		if s, _ := headerOf(h, ":status"); s != "200" {
			t.Fatalf(":status %q", s)
		}
	})
	t.Run("buffered_response_body_mutation", func(t *testing.T) {
		e := setup(t, onKind("response_body", &extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: []string{"content-length"}},
			BodyMutation:   &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("rewritten")}}}),
			Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: skip, ResponseHeaderMode: send, ResponseBodyMode: buffered}})
		res, body := e.do(t, "GET", "/", "")
		wantStatus(t, res, 200)
		if body != "rewritten" {
			t.Fatalf("body %q", body)
		}
	})
	t.Run("upstream_failure_is_503_sent_to_processor", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: skip, ResponseHeaderMode: send}})
		e.up.Close()
		res, _ := e.do(t, "GET", "/", "")
		wantStatus(t, res, 503)
		if k := e.p.LastTrace().SentKinds(); len(k) != 1 || k[0] != "response_headers" {
			t.Fatalf("kinds %v", k)
		}
	})
	t.Run("local_error_reply_not_sent_to_processor", func(t *testing.T) {
		e := setup(t, func(fs *fakeStream) error {
			for {
				m, ok := fs.recv()
				if !ok {
					return nil
				}
				if m.GetRequestHeaders() != nil {
					fs.send(&extprocv3.ProcessingResponse{})
				}
			}
		}, Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: send}})
		res, _ := e.do(t, "GET", "/", "")
		wantStatus(t, res, 500)
		if k := e.p.LastTrace().SentKinds(); len(k) != 1 {
			t.Fatalf("kinds %v", k)
		}
	})
	t.Run("stats_snapshot_names", func(t *testing.T) {
		e := setup(t, answer(contAll), Config{ProcessingMode: sidecallMode()})
		e.do(t, "GET", "/", "")
		s := e.p.Stats().Snapshot()
		if s["streams_started"] != 1 || s["stream_msgs_sent"] != 1 || s["stream_msgs_received"] != 1 {
			t.Fatalf("stats %v", s)
		}
	})
}

func TestStreamedVariants(t *testing.T) {
	upper := answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		var b []byte
		if m.GetRequestBody() != nil {
			b = m.GetRequestBody().GetBody()
		} else if m.GetResponseBody() != nil {
			b = m.GetResponseBody().GetBody()
		} else {
			return contAll(m)
		}
		return []*extprocv3.ProcessingResponse{reply(m, &extprocv3.CommonResponse{
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte(strings.ToUpper(string(b)))}}})}
	})
	t.Run("response_streamed", func(t *testing.T) {
		e := setup(t, upper, Config{ProcessingMode: &ProcessingMode{RequestHeaderMode: skip, ResponseHeaderMode: send, ResponseBodyMode: streamed}})
		res, body := e.do(t, "GET", "/", "")
		wantStatus(t, res, 200)
		if body != "UPSTREAM:" || res.Header.Get("Content-Length") != "" {
			t.Fatalf("body %q headers %v", body, res.Header)
		}
		if k := strings.Join(e.p.LastTrace().SentKinds(), ","); k != "response_headers,response_body" {
			t.Fatalf("kinds %s", k)
		}
		if !e.p.LastTrace().ClosedEarly {
			t.Fatal("STREAMED stream should close once the last chunk is answered")
		}
	})
	t.Run("send_body_without_waiting", func(t *testing.T) {
		e := setup(t, upper, Config{SendBodyWithoutWaiting: true,
			ProcessingMode: &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: skip, RequestBodyMode: streamed}})
		res, _ := e.do(t, "POST", "/", "abc")
		wantStatus(t, res, 200)
		if s := e.up.last(t); s.Body != "ABC" {
			t.Fatalf("upstream %+v", s)
		}
		if !e.p.LastTrace().SentMessages()[0].GetProtocolConfig().GetSendBodyWithoutWaitingForHeaderResponse() {
			t.Fatal("protocol_config lacks send_body_without_waiting_for_header_response")
		}
	})
	t.Run("streamed_body_timeout_is_504", func(t *testing.T) {
		e := setup(t, answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
			if m.GetRequestBody() != nil {
				return nil
			}
			return contAll(m)
		}), Config{MessageTimeout: 50 * time.Millisecond,
			ProcessingMode: &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: skip, RequestBodyMode: streamed}})
		res, _ := e.do(t, "POST", "/", "abc")
		wantStatus(t, res, 504)
	})
	t.Run("streamed_body_timeout_fail_open_passes_chunk", func(t *testing.T) {
		e := setup(t, answer(func(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
			if m.GetRequestBody() != nil {
				return nil
			}
			return contAll(m)
		}), Config{MessageTimeout: 50 * time.Millisecond, FailureModeAllow: true,
			ProcessingMode: &ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: skip, RequestBodyMode: streamed}})
		res, _ := e.do(t, "POST", "/", "abc")
		wantStatus(t, res, 200)
		if s := e.up.last(t); s.Body != "abc" {
			t.Fatalf("upstream %+v", s)
		}
	})
}
