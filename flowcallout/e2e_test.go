package flowcallout_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/flowcallout"
	"github.com/sidecall/sidecall/internal/testca"
)

// End-to-end tests of flow-callout: real HTTP requests to the envoy
// stand-in, a real sidecall processor (every plugin), real flow services on
// 127.0.0.1. What the flow service received is recorded by the server;
// what the upstream received is read from the Echo answer.

// startFlowServer is a shared-flow service answering status and a JSON
// body, with its verdict in x-flow-verdict.
func startFlowServer(t *testing.T, status int, body string) *envoytest.Recorder {
	t.Helper()
	return envoytest.Record(t, flowAnswer(status, body))
}

// startTLSFlowServer is startFlowServer over https, with httptest's
// self-signed certificate (for 127.0.0.1), which no system root trusts.
func startTLSFlowServer(t *testing.T, status int, body string) *envoytest.Recorder {
	t.Helper()
	return envoytest.RecordTLS(t, nil, flowAnswer(status, body))
}

func flowAnswer(status int, body string) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		w.Header().Set("x-flow-verdict", fmt.Sprint(status))
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// countingUpstream is the Echo upstream that counts the requests it got.
func countingUpstream(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	echo := envoytest.Echo()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		echo.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

// calloutServer is the request-callout's target: it records the X-User
// header it received and answers {"seen": <X-User>}.
func calloutServer(t *testing.T) (*httptest.Server, *atomic.Value) {
	t.Helper()
	var seen atomic.Value
	seen.Store("<none>")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("X-User"))
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"seen": r.Header.Get("X-User")})
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

// e2eSecurityFlowConfig is testdata/security_flow_e2e.yaml: the security
// flow (service my-shared-security-flow and a route calling it with
// on_flow_error_status 403), with a
// post-function that passes the stored result on (upstream headers in
// access, a response header in header_filter) and, if calloutURL is set, a
// request-callout whose custom header is rendered from the stored result.
func e2eSecurityFlowConfig(flowURL, calloutURL string, cont bool, flowExtra string) string {
	callout := ""
	if calloutURL != "" {
		callout = `          - name: request-callout
            config:
              callouts:
                - name: whoami
                  request:
                    url: ` + calloutURL + `/whoami
                    headers:
                      custom: {X-User: "$(shared.security_check_result.json.user)"}
                  response:
                    body: {decode: true}
`
	}
	return testdataFile("security_flow_e2e.yaml",
		"{{FLOW_URL}}", flowURL,
		"{{FLOW_EXTRA}}\n", flowExtra+"\n",
		"{{ON_FLOW_ERROR_CONTINUE}}", fmt.Sprint(cont),
		"{{REQUEST_CALLOUT}}\n", callout)
}

const e2eOrderBody = `{"order":42,"items":["a","b"]}`

// e2eOrder sends the test's main request: POST with a query, headers and a
// JSON body.
func e2eOrder(t *testing.T, h *envoytest.Harness) (*http.Response, []byte) {
	t.Helper()
	return h.Do(t, h.Request(t, "POST", "/api/orders/42?item=7&note=a%20b", e2eOrderBody,
		"Content-Type", "application/json", "X-Client", "c1", "Authorization", "Bearer tok", "X-Multi", "m1", "X-Multi", "m2"))
}

func wantStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, body)
	}
}

// wantE2EDenied checks the client got the configured error: 403 with
// sidecall's JSON error body, {"message":"Access denied by
// security flow.","request_id":<the request's x-request-id>}, and returns
// the request_id. The body has exactly these two fields.
func wantE2EDenied(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	wantStatus(t, resp, body, 403)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content-type %q", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil || m["message"] != "Access denied by security flow." {
		t.Errorf("body %s (err %v), want message \"Access denied by security flow.\"", body, err)
	}
	id, _ := m["request_id"].(string)
	if id == "" || len(m) != 2 {
		t.Errorf("body %s: want exactly message and a non-empty request_id", body)
	}
	return id
}

func flowRuns(t *testing.T, h *envoytest.Harness, flow, result string) float64 {
	t.Helper()
	mfs, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sidecall_flow_runs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["flow"] == flow && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
		return 0
	}
	t.Fatal("metric sidecall_flow_runs_total not registered")
	return 0
}

// Allowed: the upstream gets the original request (method, path, query,
// body), and kong.ctx.shared.security_check_result is read by post-function
// (access and header_filter) and by a request-callout template.
func TestFlowCalloutE2EAllowedSharesResult(t *testing.T) {
	flow := startFlowServer(t, 200, `{"allowed":true,"user":"ann"}`)
	co, seen := calloutServer(t)
	up, upHits := countingUpstream(t)
	h := envoytest.Start(t, e2eSecurityFlowConfig(flow.URL, co.URL, false, ""), envoytest.Options{Upstream: up})

	resp, body := e2eOrder(t, h)
	wantStatus(t, resp, body, 200)
	if upHits.Load() != 1 {
		t.Fatalf("upstream hits %d", upHits.Load())
	}
	e := envoytest.DecodeEcho(t, body)
	if e.Method != "POST" || e.Path != "/api/orders/42" || e.Query != "item=7&note=a%20b" || e.Body != e2eOrderBody {
		t.Errorf("upstream got %s %s ? %s body %q, want the original request", e.Method, e.Path, e.Query, e.Body)
	}
	if e.Header("X-Client") != "c1" || e.Header("Authorization") != "Bearer tok" {
		t.Errorf("upstream headers %v", e.Headers)
	}
	want := map[string]string{
		"X-Security-Status": "200",
		"X-Security-Failed": "false",
		"X-Security-Error":  "-",
		"X-Security-User":   "ann",
		"X-Security-Body":   `{"allowed":true,"user":"ann"}`,
		"X-Callout-Seen":    "ann",
	}
	for k, v := range want {
		if got := e.Header(k); got != v {
			t.Errorf("upstream %s = %q, want %q", k, got, v)
		}
	}
	if e.Header("X-Security-Missing") != "" {
		t.Error("post-function found no stored result")
	}
	if got := seen.Load(); got != "ann" {
		t.Errorf("callout server got X-User %q, want ann (from $(shared.security_check_result.json.user))", got)
	}
	if got := resp.Header.Get("X-Security-Verdict"); got != "200" {
		t.Errorf("header_filter saw stored flow header %q, want 200", got)
	}
	if flow.Count() != 1 {
		t.Errorf("flow calls %d, want 1", flow.Count())
	}
	if n := flowRuns(t, h, "my-shared-security-flow", flowcallout.ResultOK); n != 1 {
		t.Errorf("sidecall_flow_runs_total{result=ok} = %v, want 1", n)
	}
}

// The flow service receives the client's original method, path (appended
// to the service path), query, headers and body.
func TestFlowCalloutE2EFlowReceivesOriginalRequest(t *testing.T) {
	flow := startFlowServer(t, 200, `{"user":"ann"}`)
	h := envoytest.Start(t, e2eSecurityFlowConfig(flow.URL, "", false, ""), envoytest.Options{})

	t.Run("POST with body", func(t *testing.T) {
		resp, body := e2eOrder(t, h)
		wantStatus(t, resp, body, 200)
		r := flow.Only(t)
		if r.Method != "POST" {
			t.Errorf("method %q", r.Method)
		}
		if r.Path != "/check/api/orders/42" {
			t.Errorf("path %q, want /check/api/orders/42", r.Path)
		}
		if r.Query != "item=7&note=a%20b" {
			t.Errorf("query %q", r.Query)
		}
		if r.Body != e2eOrderBody {
			t.Errorf("body %q", r.Body)
		}
		if r.Header.Get("X-Client") != "c1" || r.Header.Get("Authorization") != "Bearer tok" ||
			r.Header.Get("Content-Type") != "application/json" || strings.Join(r.Header.Values("X-Multi"), ",") != "m1,m2" {
			t.Errorf("headers %v", r.Header)
		}
		if cl := r.Header.Get("Content-Length"); cl != "" && cl != fmt.Sprint(len(e2eOrderBody)) {
			t.Errorf("content-length %q for a %d-byte body", cl, len(e2eOrderBody))
		}
	})
	t.Run("DELETE without body", func(t *testing.T) {
		flow.Reset()
		resp, body := h.Do(t, h.Request(t, "DELETE", "/api/orders/9?force=1", "", "X-Client", "c2"))
		wantStatus(t, resp, body, 200)
		r := flow.Only(t)
		if r.Method != "DELETE" || r.Path != "/check/api/orders/9" || r.Query != "force=1" || r.Body != "" || r.Header.Get("X-Client") != "c2" {
			t.Errorf("flow got %+v", r)
		}
		if e := envoytest.DecodeEcho(t, body); e.Method != "DELETE" || e.Header("X-Security-User") != "ann" {
			t.Errorf("upstream got %s, headers %v", e.Method, e.Headers)
		}
	})
}

// A failed flow (500 answer, or nothing listening) denies the client with
// the configured 403 and the upstream is never reached.
func TestFlowCalloutE2EDenied(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	cases := []struct {
		name   string
		url    func(t *testing.T) string
		result string
	}{
		{"flow returns 500", func(t *testing.T) string {
			return startFlowServer(t, 500, `{"error":"boom"}`).URL
		}, flowcallout.ResultStatus},
		{"flow returns 401", func(t *testing.T) string {
			return startFlowServer(t, 401, `{"error":"who"}`).URL
		}, flowcallout.ResultStatus},
		{"flow is down", func(*testing.T) string { return downURL }, flowcallout.ResultTransportError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up, upHits := countingUpstream(t)
			h := envoytest.Start(t, e2eSecurityFlowConfig(c.url(t), "", false, ""), envoytest.Options{Upstream: up})
			resp, body := e2eOrder(t, h)
			if id := wantE2EDenied(t, resp, body); len(id) != 36 {
				t.Errorf("request_id %q, want the UUID Envoy generated", id)
			}
			if n := upHits.Load(); n != 0 {
				t.Errorf("upstream reached %d times on a denied request", n)
			}
			if n := flowRuns(t, h, "my-shared-security-flow", c.result); n != 1 {
				t.Errorf("sidecall_flow_runs_total{result=%s} = %v, want 1", c.result, n)
			}
			// The client's x-request-id is the error's request_id.
			resp, body = h.Do(t, h.Request(t, "POST", "/api/orders/42", e2eOrderBody, "X-Request-ID", "rid-denied-7"))
			if id := wantE2EDenied(t, resp, body); id != "rid-denied-7" {
				t.Errorf("request_id %q, want the request's x-request-id rid-denied-7", id)
			}
		})
	}

	// The flow service saw the same x-request-id the error body names.
	t.Run("request_id is the id the flow saw", func(t *testing.T) {
		flow := startFlowServer(t, 500, `{"error":"boom"}`)
		h := envoytest.Start(t, e2eSecurityFlowConfig(flow.URL, "", false, ""), envoytest.Options{})
		resp, body := e2eOrder(t, h)
		id := wantE2EDenied(t, resp, body)
		if got := flow.Only(t).Header.Get("X-Request-Id"); got == "" || got != id {
			t.Errorf("flow saw x-request-id %q, error body request_id %q", got, id)
		}
	})

	// A JSON on_flow_error_body is the user's own body: sent as written,
	// nothing added; the default body gets the request_id like a message.
	t.Run("user JSON body as written", func(t *testing.T) {
		flow := startFlowServer(t, 500, `{"error":"boom"}`)
		const user = `{"code": "DENIED", "retry": false}`
		cfg := strings.Replace(e2eSecurityFlowConfig(flow.URL, "", false, ""), "on_flow_error_body: Access denied by security flow.",
			"on_flow_error_body: '"+user+"'", 1)
		h := envoytest.Start(t, cfg, envoytest.Options{})
		resp, body := h.Do(t, h.Request(t, "POST", "/api/orders/42", e2eOrderBody, "X-Request-ID", "rid-json"))
		wantStatus(t, resp, body, 403)
		if string(body) != user || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("body %q (content-type %q), want %q as written", body, resp.Header.Get("Content-Type"), user)
		}

		cfg = strings.Replace(e2eSecurityFlowConfig(flow.URL, "", false, ""), "              on_flow_error_status: 403\n              on_flow_error_body: Access denied by security flow.\n", "", 1)
		if err := h.Reload(cfg); err != nil {
			t.Fatal(err)
		}
		resp, body = h.Do(t, h.Request(t, "POST", "/api/orders/42", e2eOrderBody, "X-Request-ID", "rid-default"))
		wantStatus(t, resp, body, 500)
		if string(body) != `{"message":"Shared Flow execution failed.","request_id":"rid-default"}` {
			t.Errorf("default error body %s", body)
		}
	})
}

// on_flow_error_continue: true lets the request go on; the stored result
// shows the failure (status, failed, error for transport errors).
func TestFlowCalloutE2EContinueOnError(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()

	t.Run("flow returns 500", func(t *testing.T) {
		flow := startFlowServer(t, 500, `{"error":"boom"}`)
		up, upHits := countingUpstream(t)
		h := envoytest.Start(t, e2eSecurityFlowConfig(flow.URL, "", true, ""), envoytest.Options{Upstream: up})
		resp, body := e2eOrder(t, h)
		wantStatus(t, resp, body, 200)
		if upHits.Load() != 1 {
			t.Fatalf("upstream hits %d", upHits.Load())
		}
		e := envoytest.DecodeEcho(t, body)
		if e.Body != e2eOrderBody || e.Method != "POST" {
			t.Errorf("upstream got %s %q", e.Method, e.Body)
		}
		if e.Header("X-Security-Status") != "500" || e.Header("X-Security-Failed") != "true" ||
			e.Header("X-Security-Body") != `{"error":"boom"}` || e.Header("X-Security-Error") != "-" {
			t.Errorf("stored result seen upstream: %v", e.Headers)
		}
		if resp.Header.Get("X-Security-Verdict") != "500" {
			t.Errorf("X-Security-Verdict %q", resp.Header.Get("X-Security-Verdict"))
		}
	})
	t.Run("flow is down", func(t *testing.T) {
		up, upHits := countingUpstream(t)
		h := envoytest.Start(t, e2eSecurityFlowConfig(downURL, "", true, ""), envoytest.Options{Upstream: up})
		resp, body := e2eOrder(t, h)
		wantStatus(t, resp, body, 200)
		if upHits.Load() != 1 {
			t.Fatalf("upstream hits %d", upHits.Load())
		}
		e := envoytest.DecodeEcho(t, body)
		if e.Body != e2eOrderBody {
			t.Errorf("upstream body %q", e.Body)
		}
		if e.Header("X-Security-Status") != "502" || e.Header("X-Security-Failed") != "true" ||
			!strings.Contains(e.Header("X-Security-Error"), "connection refused") {
			t.Errorf("stored result seen upstream: status %q failed %q error %q", e.Header("X-Security-Status"),
				e.Header("X-Security-Failed"), e.Header("X-Security-Error"))
		}
	})
}

// A shared flow whose own plugin answers never calls the service URL; the
// plugin's answer is the flow's response.
func TestFlowCalloutE2EFlowPluginAnswers(t *testing.T) {
	flow := startFlowServer(t, 200, `{"user":"ann"}`)
	gate := `    plugins:
      - name: pre-function
        config:
          access:
            - |
              if kong.request.get_header("X-Api-Key") ~= "k1" then
                return kong.response.exit(401, { message = "no key" })
              end
              kong.ctx.shared.gate_passed = "yes"
`
	up, upHits := countingUpstream(t)
	h := envoytest.Start(t, e2eSecurityFlowConfig(flow.URL, "", false, gate), envoytest.Options{Upstream: up})

	resp, body := e2eOrder(t, h)
	wantE2EDenied(t, resp, body)
	if n := flow.Count(); n != 0 {
		t.Errorf("flow service called %d times although the flow's plugin answered", n)
	}
	if upHits.Load() != 0 {
		t.Errorf("upstream reached on a denied request")
	}

	// With the key the plugin lets the flow go on to its service.
	resp, body = h.Do(t, h.Request(t, "POST", "/api/orders/1", "x", "X-Api-Key", "k1"))
	wantStatus(t, resp, body, 200)
	if n := flow.Count(); n != 1 {
		t.Errorf("flow service called %d times, want 1", n)
	}
	if r := flow.Only(t); r.Header.Get("X-Api-Key") != "k1" || r.Body != "x" {
		t.Errorf("flow got %+v", r)
	}
	if e := envoytest.DecodeEcho(t, body); e.Header("X-Security-User") != "ann" {
		t.Errorf("upstream headers %v", e.Headers)
	}

	// Continue on error: the flow plugin's own answer is the stored result.
	if err := h.Reload(e2eSecurityFlowConfig(flow.URL, "", true, gate)); err != nil {
		t.Fatal(err)
	}
	resp, body = e2eOrder(t, h)
	wantStatus(t, resp, body, 200)
	e := envoytest.DecodeEcho(t, body)
	if e.Header("X-Security-Status") != "401" || e.Header("X-Security-Failed") != "true" || e.Header("X-Security-Body") != `{"message":"no key"}` {
		t.Errorf("stored result: status %q failed %q body %q", e.Header("X-Security-Status"), e.Header("X-Security-Failed"), e.Header("X-Security-Body"))
	}
	if n := flow.Count(); n != 1 {
		t.Errorf("flow service called %d times, want still 1", n)
	}
}

// Flows call flows: the main route calls flow-a, whose flow-callout calls
// flow-b; both services get the original request, both results and what
// flow-b's plugin wrote are in kong.ctx.shared.
func TestFlowCalloutE2ENested(t *testing.T) {
	a := startFlowServer(t, 200, `{"from":"a"}`)
	b := startFlowServer(t, 200, `{"from":"b","user":"bob"}`)
	cfg := `_format_version: "3.0"
services:
  - name: flow-a
    url: ` + a.URL + `/a
    plugins:
      - name: flow-callout
        config:
          shared_flow_service_name: flow-b
          store_flow_response_in_shared_context_key: b_result
  - name: flow-b
    url: ` + b.URL + `/b
    plugins:
      - name: pre-function
        config:
          access:
            - kong.ctx.shared.b_saw = kong.request.get_method() .. " " .. kong.request.get_path()
  - name: api
    url: http://127.0.0.1:1
    routes:
      - name: orders
        paths: [/api/orders]
        strip_path: false
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: flow-a
              store_flow_response_in_shared_context_key: a_result
              on_flow_error_status: 403
              on_flow_error_body: Access denied by security flow.
          - name: post-function
            config:
              access:
                - |
                  local s = kong.ctx.shared
                  kong.service.request.set_header("X-A", s.a_result.json.from .. ":" .. s.a_result.status)
                  kong.service.request.set_header("X-B", s.b_result.json.from .. ":" .. s.b_result.json.user)
                  kong.service.request.set_header("X-B-Saw", s.b_saw)
`
	up, upHits := countingUpstream(t)
	h := envoytest.Start(t, cfg, envoytest.Options{Upstream: up})
	resp, body := e2eOrder(t, h)
	wantStatus(t, resp, body, 200)
	e := envoytest.DecodeEcho(t, body)
	if e.Header("X-A") != "a:200" || e.Header("X-B") != "b:bob" || e.Header("X-B-Saw") != "POST /api/orders/42" {
		t.Errorf("upstream headers X-A %q X-B %q X-B-Saw %q", e.Header("X-A"), e.Header("X-B"), e.Header("X-B-Saw"))
	}
	if e.Body != e2eOrderBody {
		t.Errorf("upstream body %q", e.Body)
	}
	ra, rb := a.Only(t), b.Only(t)
	if ra.Path != "/a/api/orders/42" || rb.Path != "/b/api/orders/42" || ra.Body != e2eOrderBody || rb.Body != e2eOrderBody ||
		ra.Query != "item=7&note=a%20b" || rb.Query != ra.Query {
		t.Errorf("flow-a got %+v\nflow-b got %+v", ra, rb)
	}

	// The inner flow failing fails the outer flow, which denies the client.
	b.Close()
	resp, body = e2eOrder(t, h)
	wantE2EDenied(t, resp, body)
	if a.Count() != 1 {
		t.Errorf("flow-a service called after flow-b failed: %d calls", a.Count())
	}
	if upHits.Load() != 1 {
		t.Errorf("upstream hits %d, want 1 (only the allowed request)", upHits.Load())
	}
}

// A cycle of shared flows is a config error naming the cycle; the last good
// config keeps serving.
func TestFlowCalloutE2ECycleIsAConfigError(t *testing.T) {
	flow := startFlowServer(t, 200, `{"user":"ann"}`)
	h := envoytest.Start(t, e2eSecurityFlowConfig(flow.URL, "", false, ""), envoytest.Options{})
	cycle := `_format_version: "3.0"
services:
  - name: flow-a
    url: ` + flow.URL + `
    plugins:
      - name: flow-callout
        config: {shared_flow_service_name: flow-b}
  - name: flow-b
    url: ` + flow.URL + `
    plugins:
      - name: flow-callout
        config: {shared_flow_service_name: flow-a}
  - name: api
    url: http://127.0.0.1:1
    routes:
      - name: orders
        paths: [/api/orders]
        strip_path: false
        plugins:
          - name: flow-callout
            config: {shared_flow_service_name: flow-a}
`
	err := h.Reload(cycle)
	if err == nil {
		t.Fatal("a config with a shared flow cycle loaded")
	}
	if !strings.Contains(err.Error(), "shared flow cycle: flow-a -> flow-b -> flow-a") ||
		!strings.Contains(err.Error(), "services[0].plugins[0].config.shared_flow_service_name") {
		t.Errorf("error does not name the cycle and its path: %v", err)
	}
	if flow.Count() != 0 {
		t.Errorf("loading touched the flow service: %d calls", flow.Count())
	}
	resp, body := e2eOrder(t, h)
	wantStatus(t, resp, body, 200)
	if e := envoytest.DecodeEcho(t, body); e.Header("X-Security-User") != "ann" {
		t.Errorf("old config not serving: %v", e.Headers)
	}
}

// A flow service slower than its read_timeout (300 ms) gives the client the
// configured 403 after about read_timeout, well before Envoy's 5 s
// message_timeout; the flow that saw the request is not retried.
func TestFlowCalloutE2ETimeout(t *testing.T) {
	release := make(chan struct{})
	var hits atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		timer := time.NewTimer(5 * time.Second)
		defer timer.Stop()
		select {
		case <-release:
		case <-r.Context().Done():
		case <-timer.C:
		}
	}))
	t.Cleanup(slow.Close) // after close(release): runs last
	t.Cleanup(func() { close(release) })
	up, upHits := countingUpstream(t)
	h := envoytest.Start(t, e2eSecurityFlowConfig(slow.URL, "", false, ""), envoytest.Options{Upstream: up})

	start := time.Now()
	resp, body := e2eOrder(t, h)
	took := time.Since(start)
	wantE2EDenied(t, resp, body)
	if took < 280*time.Millisecond || took > 1500*time.Millisecond {
		t.Errorf("denied after %v, want about the 300ms read_timeout", took)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("flow service got %d requests, want 1 (no retry once written)", n)
	}
	if upHits.Load() != 0 {
		t.Error("upstream reached after a flow timeout")
	}
	if n := flowRuns(t, h, "my-shared-security-flow", flowcallout.ResultTimeout); n != 1 {
		t.Errorf("sidecall_flow_runs_total{result=timeout} = %v, want 1", n)
	}

	// Continuing, the stored result says it was a timeout.
	if err := h.Reload(e2eSecurityFlowConfig(slow.URL, "", true, "")); err != nil {
		t.Fatal(err)
	}
	resp, body = e2eOrder(t, h)
	wantStatus(t, resp, body, 200)
	e := envoytest.DecodeEcho(t, body)
	if e.Header("X-Security-Status") != "504" || !strings.Contains(e.Header("X-Security-Error"), "read timeout after 300ms") {
		t.Errorf("stored result: status %q error %q", e.Header("X-Security-Status"), e.Header("X-Security-Error"))
	}
}

// examples/flow-callout.yaml, run end to end with its flow service moved to
// a local server.
func TestFlowCalloutE2EExample(t *testing.T) {
	src, err := os.ReadFile("../examples/flow-callout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	flow := startFlowServer(t, 200, `{"allowed":true,"user":"ann"}`)
	cfg := strings.ReplaceAll(string(src), "http://127.0.0.1:9100", flow.URL)
	if cfg == string(src) {
		t.Fatal("example no longer uses http://127.0.0.1:9100 for its flow service")
	}
	h := envoytest.Start(t, cfg, envoytest.Options{})
	resp, body := h.Do(t, h.Request(t, "POST", "/api/orders?id=1", `{"x":1}`, "X-Request-ID", "rid-1"))
	wantStatus(t, resp, body, 200)
	e := envoytest.DecodeEcho(t, body)
	if e.Header("X-Authenticated-User") != "ann" || e.Body != `{"x":1}` || e.Header("X-Request-ID") != "rid-1" {
		t.Errorf("upstream got %+v", e)
	}
	if r := flow.Only(t); r.Path != "/check/api/orders" || r.Query != "id=1" || r.Body != `{"x":1}` {
		t.Errorf("flow got %+v", r)
	}

	flow.Close() // down: denied with 403
	resp, body = h.Do(t, h.Request(t, "POST", "/api/orders", `{"x":1}`))
	wantE2EDenied(t, resp, body)
}

// preserve_original_request_body: the flow's plugins may change the copy
// (the flow service gets the changed body); the upstream gets the original
// unless preserve_original_request_body is false.
func TestFlowCalloutE2EPreserveOriginalBody(t *testing.T) {
	flow := startFlowServer(t, 200, `{"user":"ann"}`)
	rewrite := `    plugins:
      - name: pre-function
        config:
          access:
            - kong.service.request.set_raw_body("rewritten-by-flow")
`
	for _, c := range []struct {
		preserve bool
		want     string
	}{{true, e2eOrderBody}, {false, "rewritten-by-flow"}} {
		t.Run(fmt.Sprintf("preserve=%v", c.preserve), func(t *testing.T) {
			cfg := strings.Replace(e2eSecurityFlowConfig(flow.URL, "", false, rewrite), "on_flow_error_status: 403",
				fmt.Sprintf("on_flow_error_status: 403\n              preserve_original_request_body: %v", c.preserve), 1)
			h := envoytest.Start(t, cfg, envoytest.Options{})
			flow.Reset()
			resp, body := e2eOrder(t, h)
			wantStatus(t, resp, body, 200)
			if r := flow.Only(t); r.Body != "rewritten-by-flow" {
				t.Errorf("flow service got body %q, want the flow plugin's", r.Body)
			}
			e := envoytest.DecodeEcho(t, body)
			if e.Body != c.want {
				t.Errorf("upstream body %q, want %q", e.Body, c.want)
			}
			if e.Method != "POST" || e.Header("X-Security-User") != "ann" {
				t.Errorf("upstream got %s, headers %v", e.Method, e.Headers)
			}
		})
	}
}

// An https shared-flow service. sidecall verifies it unless the service
// says tls_verify: false, so httptest's self-signed certificate fails the
// flow before the service sees a request and the route's on_flow_error
// handling answers (403 here; under continue the stored result is a 502
// naming the certificate). ca_certificates naming another CA and a
// tls_verify_depth never turn verification off. tls_verify: false calls it.
func TestFlowCalloutE2ETLSService(t *testing.T) {
	other := testca.New(t, "another private CA", nil)
	const otherID = "4e3ad2e4-0bc4-4638-8e34-c84a417ba39b"
	otherCA := "ca_certificates:\n" + other.Entity(otherID)
	cases := []struct {
		name, extra string
		top         string // top-level sections
		verified    bool
	}{
		{"tls_verify unset", "", "", true},
		{"tls_verify true", "    tls_verify: true\n", "", true},
		{"another CA and tls_verify_depth", "    ca_certificates: [" + otherID + "]\n    tls_verify_depth: 3\n", otherCA, true},
		{"tls_verify false", "    tls_verify: false\n", "", false},
		{"tls_verify false, depth 0", "    tls_verify: false\n    tls_verify_depth: 0\n", "", false},
		{"tls_verify false, another CA", "    tls_verify: false\n    ca_certificates: [" + otherID + "]\n", otherCA, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			flow := startTLSFlowServer(t, 200, `{"allowed":true,"user":"ann"}`)
			if !strings.HasPrefix(flow.URL, "https://127.0.0.1:") {
				t.Fatalf("flow server URL %q", flow.URL)
			}
			up, upHits := countingUpstream(t)
			h := envoytest.Start(t, e2eSecurityFlowConfig(flow.URL, "", false, c.extra)+c.top, envoytest.Options{Upstream: up})
			resp, body := e2eOrder(t, h)
			if !c.verified {
				wantStatus(t, resp, body, 200)
				if r := flow.Only(t); r.Method != "POST" || r.Path != "/check/api/orders/42" || r.Body != e2eOrderBody {
					t.Errorf("flow got %s %s %q", r.Method, r.Path, r.Body)
				}
				if e := envoytest.DecodeEcho(t, body); e.Header("X-Security-User") != "ann" || e.Header("X-Security-Status") != "200" {
					t.Errorf("upstream headers %v", e.Headers)
				}
				if upHits.Load() != 1 {
					t.Errorf("upstream hits %d", upHits.Load())
				}
				return
			}
			wantE2EDenied(t, resp, body)
			if n := flow.Count(); n != 0 {
				t.Errorf("flow service got %d requests over an unverified connection", n)
			}
			if n := upHits.Load(); n != 0 {
				t.Errorf("upstream reached %d times", n)
			}
			if n := flowRuns(t, h, "my-shared-security-flow", flowcallout.ResultTransportError); n != 1 {
				t.Errorf("sidecall_flow_runs_total{result=transport_error} = %v, want 1", n)
			}

			// Continuing, the stored result names the certificate problem.
			if err := h.Reload(e2eSecurityFlowConfig(flow.URL, "", true, c.extra) + c.top); err != nil {
				t.Fatal(err)
			}
			resp, body = e2eOrder(t, h)
			wantStatus(t, resp, body, 200)
			e := envoytest.DecodeEcho(t, body)
			if e.Header("X-Security-Status") != "502" || e.Header("X-Security-Failed") != "true" ||
				!strings.Contains(e.Header("X-Security-Error"), "certificate") {
				t.Errorf("stored result: status %q failed %q error %q", e.Header("X-Security-Status"),
					e.Header("X-Security-Failed"), e.Header("X-Security-Error"))
			}
			if n := flow.Count(); n != 0 {
				t.Errorf("flow service got %d requests", n)
			}
		})
	}
}

// A flow service whose certificate comes from a private CA (through an
// intermediate): trusted when the service lists that CA in ca_certificates
// (the section is loaded, not ignored), refused when it lists another CA or
// when tls_verify_depth 0 forbids the intermediate. Reloads switch between
// them.
func TestFlowCalloutE2EPrivateCA(t *testing.T) {
	root := testca.New(t, "private root", nil)
	inter := testca.New(t, "private intermediate", root)
	other := testca.New(t, "another root", nil)
	const rootID, otherID = "0f4c9a52-3d1e-4b7a-9c2d-5e6f7a8b9c0d", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
	cert := inter.ServerCert(t)
	flow := envoytest.RecordTLS(t, &cert, flowAnswer(200, `{"allowed":true,"user":"ann"}`))
	if !strings.HasPrefix(flow.URL, "https://127.0.0.1:") {
		t.Fatalf("flow server URL %q", flow.URL)
	}
	cfg := func(svc string) string {
		return e2eSecurityFlowConfig(flow.URL, "", false, svc) + "ca_certificates:\n" + root.Entity(rootID) + other.Entity(otherID)
	}
	h := envoytest.Start(t, cfg("    tls_verify: true\n    ca_certificates: ["+rootID+"]\n"), envoytest.Options{})
	resp, body := e2eOrder(t, h)
	wantStatus(t, resp, body, 200)
	if r := flow.Only(t); r.Method != "POST" || r.Path != "/check/api/orders/42" || r.Body != e2eOrderBody {
		t.Errorf("flow got %s %s %q", r.Method, r.Path, r.Body)
	}
	if e := envoytest.DecodeEcho(t, body); e.Header("X-Security-User") != "ann" || e.Header("X-Security-Status") != "200" {
		t.Errorf("upstream headers %v", e.Headers)
	}

	for i, svc := range []string{
		"    ca_certificates: [" + otherID + "]\n",
		"    ca_certificates: [" + rootID + "]\n    tls_verify_depth: 0\n",
	} {
		if err := h.Reload(cfg(svc)); err != nil {
			t.Fatal(err)
		}
		resp, body = e2eOrder(t, h)
		wantE2EDenied(t, resp, body)
		if n := flowRuns(t, h, "my-shared-security-flow", flowcallout.ResultTransportError); n != float64(i+1) {
			t.Errorf("sidecall_flow_runs_total{result=transport_error} = %v, want %d", n, i+1)
		}
	}
	if n := flow.Count(); n != 1 {
		t.Errorf("flow service got %d requests, want only the verified one", n)
	}

	// depth 1 allows the one intermediate again.
	if err := h.Reload(cfg("    ca_certificates: [" + rootID + "]\n    tls_verify_depth: 1\n")); err != nil {
		t.Fatal(err)
	}
	resp, body = e2eOrder(t, h)
	wantStatus(t, resp, body, 200)
	if n := flow.Count(); n != 2 {
		t.Errorf("flow service got %d requests, want 2", n)
	}
}

// Plugins of the shared flow's service run in the sub-request: its
// correlation-id sets a header and its request-callout calls out (with the
// correlation value) and adds a header from the answer; the flow service
// receives both, the stored flow response carries the echoed correlation
// header, and none of these header changes reach the main upstream request
// or the client's response.
func TestFlowCalloutE2EFlowServicePlugins(t *testing.T) {
	flow := startFlowServer(t, 200, `{"allowed":true,"user":"ann"}`)
	var calloutSaw atomic.Value
	calloutSaw.Store(http.Header{})
	co := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calloutSaw.Store(r.Header.Clone())
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"seen": r.Header.Get("X-User"), "corr": r.Header.Get("X-Corr")})
	}))
	t.Cleanup(co.Close)
	cfg := `_format_version: "3.0"
services:
  - name: my-shared-security-flow
    url: ` + flow.URL + `/check
    plugins:
      - name: correlation-id
        config: {header_name: X-Flow-Corr, generator: uuid, echo_downstream: true}
      - name: request-callout
        config:
          callouts:
            - name: whoami
              request:
                url: ` + co.URL + `/whoami
                headers:
                  custom:
                    X-User: '$(headers["x-client"])'
                    X-Corr: '$(headers["x-flow-corr"])'
              response:
                body: {decode: true}
          upstream:
            headers:
              custom:
                X-Callout-Seen: "$(callouts.whoami.response.body.seen)"
                X-Callout-Corr: "$(callouts.whoami.response.body.corr)"
  - name: orders-api
    url: http://127.0.0.1:1
    routes:
      - name: orders
        paths: [/api/orders]
        strip_path: false
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: my-shared-security-flow
              store_flow_response_in_shared_context_key: security_check_result
              on_flow_error_status: 403
              on_flow_error_body: Access denied by security flow.
          - name: post-function
            config:
              access:
                - |
                  local r = kong.ctx.shared.security_check_result
                  kong.service.request.set_header("X-Stored-Corr", r.headers["x-flow-corr"] or "-")
                  kong.service.request.set_header("X-Stored-Status", r.status)
                  kong.service.request.set_header("X-Main-Saw", (kong.request.get_header("x-flow-corr") or "-") .. "," ..
                    (kong.request.get_header("x-callout-seen") or "-"))
`
	up, upHits := countingUpstream(t)
	h := envoytest.Start(t, cfg, envoytest.Options{Upstream: up})
	resp, body := e2eOrder(t, h)
	wantStatus(t, resp, body, 200)

	// The sub-request: the flow service got the correlation header and the
	// callout's header, on top of the original request.
	r := flow.Only(t)
	corr := r.Header.Get("X-Flow-Corr")
	if len(corr) != 36 {
		t.Errorf("flow service X-Flow-Corr %q, want a generated uuid", corr)
	}
	if got := r.Header.Get("X-Callout-Seen"); got != "c1" {
		t.Errorf("flow service X-Callout-Seen %q, want c1 (the callout's answer to X-User: c1)", got)
	}
	if got := r.Header.Get("X-Callout-Corr"); got == "" || got != corr {
		t.Errorf("flow service X-Callout-Corr %q, want the correlation id %q the callout was sent", got, corr)
	}
	if r.Path != "/check/api/orders/42" || r.Body != e2eOrderBody || r.Header.Get("X-Client") != "c1" {
		t.Errorf("flow got %s %q headers %v", r.Path, r.Body, r.Header)
	}
	if ch := calloutSaw.Load().(http.Header); ch.Get("X-User") != "c1" || ch.Get("X-Corr") != corr {
		t.Errorf("callout server got X-User %q X-Corr %q", ch.Get("X-User"), ch.Get("X-Corr"))
	}

	// The main request: untouched by the flow's plugins.
	if upHits.Load() != 1 {
		t.Fatalf("upstream hits %d", upHits.Load())
	}
	e := envoytest.DecodeEcho(t, body)
	for _, k := range []string{"X-Flow-Corr", "X-Callout-Seen", "X-Callout-Corr", "X-User", "X-Corr"} {
		if v := e.Header(k); v != "" {
			t.Errorf("flow plugin header leaked to the main upstream: %s: %q", k, v)
		}
	}
	if got := e.Header("X-Main-Saw"); got != "-,-" {
		t.Errorf("the main route's post-function saw the flow's headers: %q, want -,-", got)
	}
	if e.Body != e2eOrderBody || e.Path != "/api/orders/42" || e.Header("X-Client") != "c1" {
		t.Errorf("upstream got %s %q headers %v", e.Path, e.Body, e.Headers)
	}
	// The flow's echo_downstream went on the flow's response (stored), not
	// on the client's.
	if got := e.Header("X-Stored-Corr"); got != corr || e.Header("X-Stored-Status") != "200" {
		t.Errorf("stored flow response: x-flow-corr %q status %q, want %q 200", got, e.Header("X-Stored-Status"), corr)
	}
	if v := resp.Header.Get("X-Flow-Corr"); v != "" {
		t.Errorf("client response has the flow's X-Flow-Corr %q", v)
	}

	// A second request runs the flow's plugins again, with a new id.
	_, body = e2eOrder(t, h)
	second := flow.Last(t).Header.Get("X-Flow-Corr")
	if second == "" || second == corr {
		t.Errorf("second flow run X-Flow-Corr %q (first %q)", second, corr)
	}
	if e := envoytest.DecodeEcho(t, body); e.Header("X-Flow-Corr") != "" || e.Header("X-Callout-Seen") != "" {
		t.Errorf("second request leaked flow headers: %v", e.Headers)
	}
}

// securityCheckLua is testdata/security_check.lua: a custom Lua plugin's
// access phase that reads the stored flow result and logs a notice when the
// flow answered 200, a warning otherwise.
func securityCheckLua() string {
	return strings.TrimSuffix(testdataFile("security_check.lua"), "\n")
}

// securityCheckLuaConfig is testdata/security_check_lua.yaml: flow-callout
// (key security_check_result) with securityCheckLua as the route's phase
// plugin (post-function or pre-function) in access.
func securityCheckLuaConfig(flowURL, plugin string, cont bool) string {
	lua := "                - |\n                  " + strings.ReplaceAll(securityCheckLua(), "\n", "\n                  ") + "\n"
	return testdataFile("security_check_lua.yaml",
		"{{FLOW_URL}}", flowURL,
		"{{ON_FLOW_ERROR_CONTINUE}}", fmt.Sprint(cont),
		"{{PHASE_PLUGIN}}", plugin) + lua
}

// luaLogs are the kong.log lines the Lua chunks wrote.
func luaLogs(logs *observer.ObservedLogs) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if f.Key == "source" && f.String == "lua" {
				out = append(out, e)
			}
		}
	}
	return out
}

// securityCheckLua, as written, in a post-function of the main route (it
// runs after flow-callout, as a custom Lua plugin's access phase reading the
// result must): a 200 flow logs the notice with the flow's body; a failed flow
// under on_flow_error_continue logs the warning with its status; a failed
// flow without continue is answered by flow-callout and the chunk does not
// run. In a pre-function the chunk runs before flow-callout, finds no
// result and its else branch indexes nil: a Lua error, a 500.
func TestFlowCalloutE2ELuaReadsStoredResult(t *testing.T) {
	start := func(t *testing.T, flowURL, plugin string, cont bool) (*envoytest.Harness, *observer.ObservedLogs) {
		t.Helper()
		core, logs := observer.New(zap.DebugLevel)
		h := envoytest.Start(t, securityCheckLuaConfig(flowURL, plugin, cont), envoytest.Options{Log: zap.New(core)})
		return h, logs
	}
	wantOneLog := func(t *testing.T, logs *observer.ObservedLogs, level zapcore.Level, msg string) {
		t.Helper()
		got := luaLogs(logs)
		if len(got) != 1 || got[0].Level != level || got[0].Message != msg {
			var ls []string
			for _, e := range got {
				ls = append(ls, e.Level.String()+" "+e.Message)
			}
			t.Errorf("Lua logged %q, want one %s %q", ls, level, msg)
		}
	}

	t.Run("post-function, flow 200", func(t *testing.T) {
		flow := startFlowServer(t, 200, `{"allowed":true,"user":"ann"}`)
		h, logs := start(t, flow.URL, "post-function", false)
		resp, body := e2eOrder(t, h)
		wantStatus(t, resp, body, 200)
		if e := envoytest.DecodeEcho(t, body); e.Body != e2eOrderBody {
			t.Errorf("upstream body %q", e.Body)
		}
		// kong.log.notice is Info in sidecall's log.
		wantOneLog(t, logs, zapcore.InfoLevel, `Shared security flow passed. Response: {"allowed":true,"user":"ann"}`)
	})
	t.Run("post-function, flow 401, continue", func(t *testing.T) {
		flow := startFlowServer(t, 401, `{"error":"who"}`)
		h, logs := start(t, flow.URL, "post-function", true)
		resp, body := e2eOrder(t, h)
		wantStatus(t, resp, body, 200)
		wantOneLog(t, logs, zapcore.WarnLevel, "Shared security flow failed or returned non-200. Status: 401")
	})
	t.Run("post-function, flow down, continue", func(t *testing.T) {
		down := httptest.NewServer(http.NotFoundHandler())
		down.Close()
		h, logs := start(t, down.URL, "post-function", true)
		resp, body := e2eOrder(t, h)
		wantStatus(t, resp, body, 200)
		wantOneLog(t, logs, zapcore.WarnLevel, "Shared security flow failed or returned non-200. Status: 502")
	})
	t.Run("post-function, flow 500, no continue", func(t *testing.T) {
		flow := startFlowServer(t, 500, `{"error":"boom"}`)
		h, logs := start(t, flow.URL, "post-function", false)
		resp, body := e2eOrder(t, h)
		wantE2EDenied(t, resp, body)
		if got := luaLogs(logs); len(got) != 0 {
			t.Errorf("the chunk ran after flow-callout answered: %v", got)
		}
	})
	t.Run("pre-function runs before flow-callout", func(t *testing.T) {
		flow := startFlowServer(t, 200, `{"allowed":true}`)
		h, _ := start(t, flow.URL, "pre-function", false)
		resp, body := h.Do(t, h.Request(t, "POST", "/api/orders/42", e2eOrderBody, "X-Request-ID", "rid-pre"))
		wantStatus(t, resp, body, 500)
		var m map[string]string
		if err := json.Unmarshal(body, &m); err != nil || m["request_id"] != "rid-pre" || m["message"] == "" {
			t.Errorf("body %s (err %v), want sidecall's JSON 500", body, err)
		}
		if n := flow.Count(); n != 0 {
			t.Errorf("flow called %d times after the pre-function failed", n)
		}
	})
}
