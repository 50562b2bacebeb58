package flowcallout_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/flowcallout"
	"github.com/sidecall/sidecall/flows"
)

// End-to-end tests of the complete shared flows: parameters, the response
// phase (PostProxy hook), apply_flow_response, and what each costs on the
// ext_proc stream.

// sfRecorder answers every request 200 with a small JSON body.
func sfRecorder(t *testing.T) *envoytest.Recorder {
	return envoytest.Record(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
}

// sfUpstream answers 201 with x-up and set-cookie headers and a text body
// naming the path.
func sfUpstream(t *testing.T) *envoytest.Recorder {
	return envoytest.Record(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/plain")
		w.Header().Set("x-up", "u1")
		w.Header().Set("set-cookie", "s=1")
		w.WriteHeader(201)
		_, _ = io.WriteString(w, "upstream-body:"+r.URL.Path)
	})
}

// Parameters reach the flow's plugins (Lua and a template, here a nested
// flow-callout's parameter) and the flow as headers; afterwards the
// caller's kong.ctx.shared.flow_parameters is what it was before.
func TestSharedFlowE2EParameters(t *testing.T) {
	flow := sfRecorder(t)
	cfg := `_format_version: "3.0"
services:
  - name: inner-flow
    url: ` + flow.URL + `/inner
  - name: param-flow
    url: ` + flow.URL + `/check
    plugins:
      - name: pre-function
        config:
          access:
            - |
              local p = kong.ctx.shared.flow_parameters
              kong.service.request.set_header("X-Lua-User", p and p.user or "none")
              kong.service.request.set_header("X-Lua-Tier", p and p.tier or "none")
      - name: flow-callout
        config:
          shared_flow_service_name: inner-flow
          parameters:
            - {name: tier, value: "$(shared.flow_parameters.tier)-inner"}
          parameters_as_headers: X-Inner
      - name: post-function
        config:
          access:
            - |
              local p = kong.ctx.shared.flow_parameters
              kong.service.request.set_header("X-Lua-After-Inner", p and p.tier or "none")
  - name: api
    url: ` + "http://127.0.0.1:1" + `
    routes:
      - name: fresh
        paths: [/fresh]
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: param-flow
              parameters:
                - {name: user, value: '$(headers["x-client"])'}
                - {name: tier, value: gold}
              parameters_as_headers: X-Param
          - name: post-function
            config:
              access:
                - kong.service.request.set_header("X-After", type(kong.ctx.shared.flow_parameters))
      - name: outer
        paths: [/outer]
        plugins:
          - name: pre-function
            config:
              access:
                - kong.ctx.shared.flow_parameters = "mine"
          - name: flow-callout
            config:
              shared_flow_service_name: param-flow
              parameters:
                - {name: user, value: fixed}
          - name: post-function
            config:
              access:
                - kong.service.request.set_header("X-After", tostring(kong.ctx.shared.flow_parameters))
      - name: badvalue
        paths: [/bad]
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: inner-flow
              store_flow_response_in_shared_context_key: r
              on_flow_error_continue: true
              parameters:
                - {name: v, value: "a\nb"}
              parameters_as_headers: X-Param
          - name: post-function
            config:
              access:
                - kong.service.request.set_header("X-Stored", kong.ctx.shared.r.status .. "," .. tostring(kong.ctx.shared.r.failed))
`
	h := envoytest.Start(t, cfg, envoytest.Options{})

	resp, body := h.Get(t, "/fresh", "X-Client", "c1")
	wantStatus(t, resp, body, 200)
	reqs := flow.All()
	if len(reqs) != 2 || reqs[0].Path != "/inner/fresh" || reqs[1].Path != "/check/fresh" {
		t.Fatalf("flow requests %+v, want the inner flow then the outer one", reqs)
	}
	inner, outer := reqs[0], reqs[1]
	if got := inner.Header.Get("X-Inner-Tier"); got != "gold-inner" {
		t.Errorf("inner flow X-Inner-Tier %q, want gold-inner (a template on shared.flow_parameters)", got)
	}
	for k, want := range map[string]string{"X-Param-User": "c1", "X-Param-Tier": "gold", "X-Lua-User": "c1",
		"X-Lua-Tier": "gold", "X-Lua-After-Inner": "gold"} {
		if got := outer.Header.Get(k); got != want {
			t.Errorf("flow got %s: %q, want %q", k, got, want)
		}
	}
	e := envoytest.DecodeEcho(t, body)
	if got := e.Header("X-After"); got != "nil" {
		t.Errorf("caller's flow_parameters after the flow: %q, want nil", got)
	}
	if e.Header("X-Param-User") != "" {
		t.Errorf("parameter header leaked to the upstream: %v", e.Headers)
	}

	flow.Reset()
	resp, body = h.Get(t, "/outer")
	wantStatus(t, resp, body, 200)
	if got := flow.Last(t).Header.Get("X-Lua-User"); got != "fixed" {
		t.Errorf("flow X-Lua-User %q, want fixed", got)
	}
	if got := flow.Last(t).Header.Get("X-Param-User"); got != "" {
		t.Errorf("X-Param-User %q sent without parameters_as_headers", got)
	}
	if got := envoytest.DecodeEcho(t, body).Header("X-After"); got != "mine" {
		t.Errorf("caller's flow_parameters after the flow: %q, want mine (restored)", got)
	}

	flow.Reset()
	resp, body = h.Get(t, "/bad")
	wantStatus(t, resp, body, 200)
	if flow.Count() != 0 {
		t.Errorf("the flow was called with a CR/LF parameter header")
	}
	if got := envoytest.DecodeEcho(t, body).Header("X-Stored"); got != "400,true" {
		t.Errorf("stored status,failed %q, want 400,true", got)
	}
}

func TestSharedFlowE2EBadParameterConfigs(t *testing.T) {
	for _, tc := range []struct{ extra, want string }{
		{"parameters: [{value: x}]", "parameters[0].name: required field missing"},
		{"parameters: [{name: a, value: x}, {name: a, value: y}]", `parameter "a" is listed twice`},
		{"parameters: [{name: 'a b', value: x}]\n              parameters_as_headers: X-P", "not a valid header name"},
		{"parameters_as_headers: 'X P'", "not a valid header name prefix"},
		{"phase: later", "must be access or response"},
		{"apply_flow_response: true", "only with phase: response"},
		{"parameters: [{name: a, value: '$(('}]", "parameters[0].value"},
	} {
		cfg := `_format_version: "3.0"
services:
  - name: f
    url: http://127.0.0.1:1/f
  - name: api
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: [/r]
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: f
              ` + tc.extra + "\n"
		res := flows.NewResources()
		s, err := flows.Load("kong.yml", []byte(cfg), flows.LoadOptions{Registry: flowRegistry(), Resources: res})
		if s != nil {
			s.Close()
		}
		res.Close()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.extra, err, tc.want)
		}
	}
}

// responseFlowConfig: route /api/orders with a response-phase flow-callout
// (extra config appended) and a post-function body_filter that appends the
// stored result's status and failed to the client body.
func responseFlowConfig(flowURL, upURL, extra string) string {
	return `_format_version: "3.0"
services:
  - name: post-flow
    url: ` + flowURL + `/hook
    plugins:
      - name: pre-function
        config:
          access:
            - kong.service.request.set_header("X-Access-Ran", "1")
          header_filter:
            - |
              kong.response.set_header("X-Flow-Saw", tostring(kong.response.get_status()))
              local p = kong.ctx.shared.flow_parameters
              kong.response.set_header("X-Flow-Param", p and p.step or "none")
  - name: api
    url: ` + upURL + `
    routes:
      - name: orders
        paths: [/api/orders]
        strip_path: false
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: post-flow
              phase: response
              store_flow_response_in_shared_context_key: post
              on_flow_error_status: 502
              on_flow_error_body: Post-processing failed.
              parameters:
                - {name: step, value: '$(headers["x-step"])'}
              parameters_as_headers: X-Param
` + extra + `
          - name: post-function
            config:
              body_filter:
                - |
                  local r = kong.ctx.shared.post
                  if r then
                    kong.response.set_raw_body(kong.response.get_raw_body() .. "|stored=" .. r.status .. "," .. tostring(r.failed))
                  end
`
}

// The response-phase flow gets the upstream's response: its plugins run
// their response phases on it (not access), then the flow's URL gets a
// POST with the response's headers and body, the request's path and
// X-Upstream-Status. The client gets the upstream response; later
// body_filter plugins see the stored result. Envoy is asked for the
// response, not for the request body.
func TestSharedFlowE2EResponsePhase(t *testing.T) {
	flow := sfRecorder(t)
	up := sfUpstream(t)
	h := envoytest.Start(t, responseFlowConfig(flow.URL, up.URL, ""), envoytest.Options{Upstream: up.URL})
	req := h.Request(t, "PUT", "/api/orders/42?x=1", `{"order":42}`, "X-Step", "s1", "Content-Type", "application/json")
	resp, body, tr := h.DoTraced(t, req)
	wantStatus(t, resp, body, 201)
	if want := "upstream-body:/api/orders/42|stored=200,false"; string(body) != want {
		t.Errorf("client body %q, want %q", body, want)
	}
	if resp.Header.Get("X-Up") != "u1" || resp.Header.Get("X-Flow-Saw") != "" {
		t.Errorf("client headers %v", resp.Header)
	}
	if up.Only(t).Body != `{"order":42}` {
		t.Errorf("upstream got body %q", up.Only(t).Body)
	}
	r := flow.Only(t)
	if r.Method != "POST" || r.Path != "/hook/api/orders/42" || r.Query != "x=1" {
		t.Errorf("flow got %s %s?%s, want POST /hook/api/orders/42?x=1", r.Method, r.Path, r.Query)
	}
	if r.Body != "upstream-body:/api/orders/42" {
		t.Errorf("flow got body %q, want the upstream's", r.Body)
	}
	for k, want := range map[string]string{"X-Upstream-Status": "201", "X-Up": "u1", "Content-Type": "text/plain",
		"X-Flow-Saw": "201", "X-Flow-Param": "s1", "X-Param-Step": "s1", "X-Access-Ran": ""} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("flow got %s: %q, want %q", k, got, want)
		}
	}
	if got, want := tr.SentKinds(), []string{"request_headers", "response_headers", "response_body"}; !slices.Equal(got, want) {
		t.Errorf("ext_proc messages %v, want %v (no request body)", got, want)
	}
	if n := flowRuns(t, h, "post-flow", flowcallout.ResultOK); n != 1 {
		t.Errorf("flow runs ok = %v, want 1", n)
	}
}

// apply_flow_response: the client gets the flow's status, headers and body.
func TestSharedFlowE2EApplyFlowResponse(t *testing.T) {
	const flowBody = `{"rewritten":true,"by":"post-flow"}`
	flow := envoytest.Record(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		w.Header().Set("x-flow", "f1")
		w.Header().Add("x-multi", "a")
		w.Header().Add("x-multi", "b")
		w.Header().Set("connection", "keep-alive")
		w.WriteHeader(202)
		_, _ = io.WriteString(w, flowBody)
	})
	up := sfUpstream(t)
	h := envoytest.Start(t, responseFlowConfig(flow.URL, up.URL, "              apply_flow_response: true"),
		envoytest.Options{Upstream: up.URL})
	for _, method := range []string{"GET", "HEAD"} {
		resp, body := h.Do(t, h.Request(t, method, "/api/orders/7", ""))
		wantStatus(t, resp, body, 202)
		want := flowBody + "|stored=202,false"
		if method == "HEAD" {
			want = ""
		}
		if string(body) != want {
			t.Errorf("%s: client body %q, want %q", method, body, want)
		}
		if resp.Header.Get("X-Flow") != "f1" || resp.Header.Get("Content-Type") != "application/json" ||
			!slices.Equal(resp.Header.Values("X-Multi"), []string{"a", "b"}) {
			t.Errorf("%s: client headers %v, want the flow's", method, resp.Header)
		}
		if v := resp.Header.Get("X-Up"); v != "" || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("%s: upstream headers kept: %v", method, resp.Header)
		}
		if method == "GET" && resp.ContentLength != int64(len(want)) {
			t.Errorf("%s: content-length %d, body %d bytes", method, resp.ContentLength, len(want))
		}
	}
}

// A failing response-phase flow answers on_flow_error_*, once; with
// on_flow_error_continue the upstream response goes on.
func TestSharedFlowE2EResponsePhaseError(t *testing.T) {
	flow := envoytest.Record(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		_, _ = io.WriteString(w, "flow broke")
	})
	up := sfUpstream(t)
	h := envoytest.Start(t, responseFlowConfig(flow.URL, up.URL, "              apply_flow_response: true"),
		envoytest.Options{Upstream: up.URL})
	resp, body := h.Get(t, "/api/orders/1", "X-Request-ID", "rid-1")
	wantStatus(t, resp, body, 502)
	// The route's later body_filter (post-function) sees the reply too, as
	// every response-phase plugin does; its own JSON comes first.
	var m map[string]any
	reply, _, _ := strings.Cut(string(body), "|")
	if err := json.Unmarshal([]byte(reply), &m); err != nil || m["message"] != "Post-processing failed." || m["request_id"] != "rid-1" {
		t.Errorf("client body %s, want the on_flow_error_body message", body)
	}
	if resp.Header.Get("X-Up") != "" {
		t.Errorf("the upstream's headers reached the client with the error: %v", resp.Header)
	}
	if n := flow.Count(); n != 1 {
		t.Errorf("flow called %d times, want 1 (the error reply does not run it again)", n)
	}
	if n := flowRuns(t, h, "post-flow", flowcallout.ResultStatus); n != 1 {
		t.Errorf("flow runs error_status = %v", n)
	}

	if err := h.Reload(responseFlowConfig(flow.URL, up.URL, "              apply_flow_response: true\n              on_flow_error_continue: true")); err != nil {
		t.Fatal(err)
	}
	resp, body = h.Get(t, "/api/orders/2")
	wantStatus(t, resp, body, 201)
	if want := "upstream-body:/api/orders/2|stored=500,true"; string(body) != want || resp.Header.Get("X-Up") != "u1" {
		t.Errorf("continue: body %q headers %v, want the upstream's with %q", body, resp.Header, want)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Errorf("content-length %d for %d bytes", resp.ContentLength, len(body))
	}

	// A flow that cannot be reached: 502 stored, same answer.
	if err := h.Reload(responseFlowConfig(deadURL(t), up.URL, "")); err != nil {
		t.Fatal(err)
	}
	resp, body = h.Get(t, "/api/orders/3")
	wantStatus(t, resp, body, 502)
	if !strings.Contains(string(body), "Post-processing failed.") {
		t.Errorf("body %s", body)
	}
}

// A local reply (an access-phase answer) does not run the response flow.
func TestSharedFlowE2EResponsePhaseSkipsLocalReplies(t *testing.T) {
	flow := sfRecorder(t)
	up := sfUpstream(t)
	cfg := strings.Replace(responseFlowConfig(flow.URL, up.URL, ""), "          - name: post-function\n",
		"          - name: pre-function\n            config:\n              access: ['return kong.response.exit(401, \"no\")']\n          - name: post-function\n", 1)
	h := envoytest.Start(t, cfg, envoytest.Options{Upstream: up.URL})
	resp, body := h.Get(t, "/api/orders/1")
	wantStatus(t, resp, body, 401)
	if flow.Count() != 0 || up.Count() != 0 {
		t.Errorf("flow %d, upstream %d requests, want none", flow.Count(), up.Count())
	}
}

// An access-phase flow-callout costs what it did: the request body, no
// response messages; a response-phase one asks for the response only.
func TestSharedFlowE2ENeeds(t *testing.T) {
	flow := sfRecorder(t)
	cfg := `_format_version: "3.0"
services:
  - name: f
    url: ` + flow.URL + `/f
  - name: api
    url: http://127.0.0.1:1
    routes:
      - name: pre
        paths: [/pre]
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: f
              parameters: [{name: a, value: b}]
              parameters_as_headers: X-P
      - name: post
        paths: [/post]
        plugins:
          - name: flow-callout
            config: {shared_flow_service_name: f, phase: response}
`
	h := envoytest.Start(t, cfg, envoytest.Options{})
	snap := h.Holder.Current()
	for route, want := range map[string]string{"pre": "{true false false false}", "post": "{false true true false}"} {
		r := snap.RouteByName(route)
		if r == nil {
			t.Fatalf("no route %s", route)
		}
		if got := fmt.Sprint(r.Pipeline.Needs()); got != want {
			t.Errorf("%s: needs %s, want %s", route, got, want)
		}
	}
	_, _, tr := h.DoTraced(t, h.Request(t, "POST", "/pre", "hello"))
	if got, want := tr.SentKinds(), []string{"request_headers", "request_body"}; !slices.Equal(got, want) {
		t.Errorf("access-phase flow: ext_proc messages %v, want %v", got, want)
	}
	if r := flow.Only(t); r.Header.Get("X-P-A") != "b" || r.Body != "hello" {
		t.Errorf("flow got %v %q", r.Header, r.Body)
	}
}
