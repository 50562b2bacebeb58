package flows_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/flows"
)

// End-to-end tests of flow-callout: real HTTP requests to the envoy
// stand-in, a real sidecall processor (every plugin), real flow services on
// 127.0.0.1. What the flow service received is recorded by the server;
// what the upstream received is read from the Echo answer.

// flowHit is one request a flow server received.
type flowHit struct {
	Method, Path, Query string
	Header              http.Header
	Body                string
}

// e2eFlowServer is a shared flow service: records each request and answers
// with status and body (JSON).
type e2eFlowServer struct {
	*httptest.Server
	mu   sync.Mutex
	hits []flowHit
}

func startFlowServer(t *testing.T, status int, body string) *e2eFlowServer {
	t.Helper()
	s := &e2eFlowServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.hits = append(s.hits, flowHit{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: string(b)})
		s.mu.Unlock()
		w.Header().Set("content-type", "application/json")
		w.Header().Set("x-flow-verdict", fmt.Sprint(status))
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *e2eFlowServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hits)
}

func (s *e2eFlowServer) only(t *testing.T) flowHit {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.hits) != 1 {
		t.Fatalf("flow server got %d requests, want 1", len(s.hits))
	}
	return s.hits[0]
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

// e2eSeedConfig is the seed's configuration (service my-shared-security-flow
// and a route calling it with on_flow_error_status 403), with a
// post-function that passes the stored result on (upstream headers in
// access, a response header in header_filter) and, if calloutURL is set, a
// request-callout whose custom header is rendered from the stored result.
func e2eSeedConfig(flowURL, calloutURL string, cont bool, flowExtra string) string {
	callout := ""
	if calloutURL != "" {
		callout = `
          - name: request-callout
            config:
              callouts:
                - name: whoami
                  request:
                    url: ` + calloutURL + `/whoami
                    headers:
                      custom: {X-User: "$(shared.security_check_result.json.user)"}
                  response:
                    body: {decode: true}`
	}
	return `_format_version: "3.0"
services:
  - name: my-shared-security-flow
    url: ` + flowURL + `/check
    connect_timeout: 1000
    write_timeout: 1000
    read_timeout: 300
    retries: 1
` + flowExtra + `
  - name: orders-api
    url: http://127.0.0.1:1
    routes:
      - name: orders
        paths: [/api/orders]
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: my-shared-security-flow
              store_flow_response_in_shared_context_key: security_check_result
              on_flow_error_continue: ` + fmt.Sprint(cont) + `
              on_flow_error_status: 403
              on_flow_error_body: Access denied by security flow.` + callout + `
          - name: post-function
            config:
              access:
                - |
                  local r = kong.ctx.shared.security_check_result
                  if not r then
                    kong.service.request.set_header("X-Security-Missing", "yes")
                    return
                  end
                  kong.service.request.set_header("X-Security-Status", r.status)
                  kong.service.request.set_header("X-Security-Failed", tostring(r.failed))
                  kong.service.request.set_header("X-Security-Error", r.error or "-")
                  kong.service.request.set_header("X-Security-Body", r.body)
                  if r.json and r.json.user then
                    kong.service.request.set_header("X-Security-User", r.json.user)
                  end
                  local c = kong.ctx.shared.callouts and kong.ctx.shared.callouts.whoami
                  if c then
                    kong.service.request.set_header("X-Callout-Seen", c.response.body.seen)
                  end
              header_filter:
                - |
                  local r = kong.ctx.shared.security_check_result
                  if r then kong.response.set_header("X-Security-Verdict", r.headers["x-flow-verdict"] or "-") end
`
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
// {"message":"Access denied by security flow."} as JSON.
func wantE2EDenied(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	wantStatus(t, resp, body, 403)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content-type %q", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil || m["message"] != "Access denied by security flow." {
		t.Errorf("body %s (err %v), want message \"Access denied by security flow.\"", body, err)
	}
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
func TestFlowCalloutE2ESeedAllowed(t *testing.T) {
	flow := startFlowServer(t, 200, `{"allowed":true,"user":"ann"}`)
	co, seen := calloutServer(t)
	up, upHits := countingUpstream(t)
	h := envoytest.Start(t, e2eSeedConfig(flow.URL, co.URL, false, ""), envoytest.Options{Upstream: up})

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
	if flow.count() != 1 {
		t.Errorf("flow calls %d, want 1", flow.count())
	}
	if n := flowRuns(t, h, "my-shared-security-flow", flows.FlowResultOK); n != 1 {
		t.Errorf("sidecall_flow_runs_total{result=ok} = %v, want 1", n)
	}
}

// The flow service receives the client's original method, path (appended
// to the service path), query, headers and body.
func TestFlowCalloutE2EFlowReceivesOriginalRequest(t *testing.T) {
	flow := startFlowServer(t, 200, `{"user":"ann"}`)
	h := envoytest.Start(t, e2eSeedConfig(flow.URL, "", false, ""), envoytest.Options{})

	t.Run("POST with body", func(t *testing.T) {
		resp, body := e2eOrder(t, h)
		wantStatus(t, resp, body, 200)
		r := flow.only(t)
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
		flow.mu.Lock()
		flow.hits = nil
		flow.mu.Unlock()
		resp, body := h.Do(t, h.Request(t, "DELETE", "/api/orders/9?force=1", "", "X-Client", "c2"))
		wantStatus(t, resp, body, 200)
		r := flow.only(t)
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
		}, flows.FlowResultStatus},
		{"flow returns 401", func(t *testing.T) string {
			return startFlowServer(t, 401, `{"error":"who"}`).URL
		}, flows.FlowResultStatus},
		{"flow is down", func(*testing.T) string { return downURL }, flows.FlowResultTransportError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up, upHits := countingUpstream(t)
			h := envoytest.Start(t, e2eSeedConfig(c.url(t), "", false, ""), envoytest.Options{Upstream: up})
			resp, body := e2eOrder(t, h)
			wantE2EDenied(t, resp, body)
			if n := upHits.Load(); n != 0 {
				t.Errorf("upstream reached %d times on a denied request", n)
			}
			if n := flowRuns(t, h, "my-shared-security-flow", c.result); n != 1 {
				t.Errorf("sidecall_flow_runs_total{result=%s} = %v, want 1", c.result, n)
			}
		})
	}
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
		h := envoytest.Start(t, e2eSeedConfig(flow.URL, "", true, ""), envoytest.Options{Upstream: up})
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
		h := envoytest.Start(t, e2eSeedConfig(downURL, "", true, ""), envoytest.Options{Upstream: up})
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
	h := envoytest.Start(t, e2eSeedConfig(flow.URL, "", false, gate), envoytest.Options{Upstream: up})

	resp, body := e2eOrder(t, h)
	wantE2EDenied(t, resp, body)
	if n := flow.count(); n != 0 {
		t.Errorf("flow service called %d times although the flow's plugin answered", n)
	}
	if upHits.Load() != 0 {
		t.Errorf("upstream reached on a denied request")
	}

	// With the key the plugin lets the flow go on to its service.
	resp, body = h.Do(t, h.Request(t, "POST", "/api/orders/1", "x", "X-Api-Key", "k1"))
	wantStatus(t, resp, body, 200)
	if n := flow.count(); n != 1 {
		t.Errorf("flow service called %d times, want 1", n)
	}
	if r := flow.only(t); r.Header.Get("X-Api-Key") != "k1" || r.Body != "x" {
		t.Errorf("flow got %+v", r)
	}
	if e := envoytest.DecodeEcho(t, body); e.Header("X-Security-User") != "ann" {
		t.Errorf("upstream headers %v", e.Headers)
	}

	// Continue on error: the flow plugin's own answer is the stored result.
	if err := h.Reload(e2eSeedConfig(flow.URL, "", true, gate)); err != nil {
		t.Fatal(err)
	}
	resp, body = e2eOrder(t, h)
	wantStatus(t, resp, body, 200)
	e := envoytest.DecodeEcho(t, body)
	if e.Header("X-Security-Status") != "401" || e.Header("X-Security-Failed") != "true" || e.Header("X-Security-Body") != `{"message":"no key"}` {
		t.Errorf("stored result: status %q failed %q body %q", e.Header("X-Security-Status"), e.Header("X-Security-Failed"), e.Header("X-Security-Body"))
	}
	if n := flow.count(); n != 1 {
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
	ra, rb := a.only(t), b.only(t)
	if ra.Path != "/a/api/orders/42" || rb.Path != "/b/api/orders/42" || ra.Body != e2eOrderBody || rb.Body != e2eOrderBody ||
		ra.Query != "item=7&note=a%20b" || rb.Query != ra.Query {
		t.Errorf("flow-a got %+v\nflow-b got %+v", ra, rb)
	}

	// The inner flow failing fails the outer flow, which denies the client.
	b.Close()
	resp, body = e2eOrder(t, h)
	wantE2EDenied(t, resp, body)
	if a.count() != 1 {
		t.Errorf("flow-a service called after flow-b failed: %d calls", a.count())
	}
	if upHits.Load() != 1 {
		t.Errorf("upstream hits %d, want 1 (only the allowed request)", upHits.Load())
	}
}

// A cycle of shared flows is a config error naming the cycle; the last good
// config keeps serving.
func TestFlowCalloutE2ECycleIsAConfigError(t *testing.T) {
	flow := startFlowServer(t, 200, `{"user":"ann"}`)
	h := envoytest.Start(t, e2eSeedConfig(flow.URL, "", false, ""), envoytest.Options{})
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
	if flow.count() != 0 {
		t.Errorf("loading touched the flow service: %d calls", flow.count())
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
	h := envoytest.Start(t, e2eSeedConfig(slow.URL, "", false, ""), envoytest.Options{Upstream: up})

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
	if n := flowRuns(t, h, "my-shared-security-flow", flows.FlowResultTimeout); n != 1 {
		t.Errorf("sidecall_flow_runs_total{result=timeout} = %v, want 1", n)
	}

	// Continuing, the stored result says it was a timeout.
	if err := h.Reload(e2eSeedConfig(slow.URL, "", true, "")); err != nil {
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
	if r := flow.only(t); r.Path != "/check/api/orders" || r.Query != "id=1" || r.Body != `{"x":1}` {
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
			cfg := strings.Replace(e2eSeedConfig(flow.URL, "", false, rewrite), "on_flow_error_status: 403",
				fmt.Sprintf("on_flow_error_status: 403\n              preserve_original_request_body: %v", c.preserve), 1)
			h := envoytest.Start(t, cfg, envoytest.Options{})
			flow.mu.Lock()
			flow.hits = nil
			flow.mu.Unlock()
			resp, body := e2eOrder(t, h)
			wantStatus(t, resp, body, 200)
			if r := flow.only(t); r.Body != "rewritten-by-flow" {
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
