package flowcallout_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecall/sidecall/correlation"
	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/flowcallout"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/netport"
	"github.com/sidecall/sidecall/internal/testca"
	"github.com/sidecall/sidecall/serverless"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"gopkg.in/yaml.v3"
)

// flowTestPlugin is a tiny plugin for shared flows in these tests: it can
// answer (exit_status), replace the body, write kong.ctx.shared and add a
// response header in header_filter.
type flowTestPlugin struct {
	cfg flowTestConfig
}

type flowTestConfig struct {
	ExitStatus int    `yaml:"exit_status"`
	ExitBody   string `yaml:"exit_body"`
	SetBody    string `yaml:"set_body"`
	SetHeader  string `yaml:"set_header"`
	SharedKey  string `yaml:"shared_key"`
	RespHeader string `yaml:"resp_header"`
	Fail       bool   `yaml:"fail"`
}

func (p *flowTestPlugin) Name() string  { return "flowtest" }
func (p *flowTestPlugin) Priority() int { return 2000 }
func (p *flowTestPlugin) Access(_ context.Context, x *flows.Exchange) error {
	if p.cfg.Fail {
		return flows.Errorf(418, "flow plugin broke")
	}
	if p.cfg.SharedKey != "" {
		x.Shared[p.cfg.SharedKey] = "written by flow"
	}
	if p.cfg.SetHeader != "" {
		x.SetHeader(p.cfg.SetHeader, "from-flow")
	}
	if p.cfg.SetBody != "" {
		x.SetBody([]byte(p.cfg.SetBody))
	}
	if p.cfg.ExitStatus != 0 {
		x.Respond(p.cfg.ExitStatus, flows.Headers{"content-type": {"application/json"}}, []byte(p.cfg.ExitBody))
	}
	return nil
}
func (p *flowTestPlugin) HeaderFilter(_ context.Context, x *flows.Exchange) error {
	if p.cfg.RespHeader != "" {
		x.SetResponseHeader(p.cfg.RespHeader, "filtered")
	}
	return nil
}

var update = flag.Bool("update", false, "rewrite golden files")

func flowRegistry() *flows.Registry { return flowRegistryObserved(nil) }

// flowRegistryObserved has flow-callout with obs, the plugins a shared
// flow commonly runs, and the flowtest plugin.
func flowRegistryObserved(obs flowcallout.Observer) *flows.Registry {
	r := flows.NewRegistry()
	correlation.Register(r)
	flowcallout.Register(r, obs)
	serverless.Register(r)
	r.Register("flowtest", 2000, func(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
		p := &flowTestPlugin{}
		b.Decode(raw, at, &p.cfg)
		return p, nil
	})
	return r
}

// newFlowServer answers with status, a JSON body and x-flow headers.
func newFlowServer(t *testing.T, status int, body string) *envoytest.Recorder {
	t.Helper()
	return envoytest.Record(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("X-Flow", "a")
		w.Header().Add("X-Flow", "b")
		w.WriteHeader(status)
		io.WriteString(w, body)
	})
}

// deadURL is an address nobody listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func loadFlows(t *testing.T, src string) *flows.Snapshot {
	t.Helper()
	return loadFlowsWith(t, src, flowRegistry())
}

func loadFlowsWith(t *testing.T, src string, reg *flows.Registry) *flows.Snapshot {
	t.Helper()
	res := flows.NewResources()
	t.Cleanup(func() { res.Close() })
	s, err := flows.Load("kong.yml", []byte(src), flows.LoadOptions{Registry: reg, Resources: res})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

const origBody = `{"order":42}`

func mainExchange(s *flows.Snapshot, route string) *flows.Exchange {
	x := flows.NewExchange("req-1", flows.Request{
		Method: "POST", Scheme: "http", Authority: "api.example.com", Path: "/api/orders", RawQuery: "expand=items&x=1",
		Headers: flows.Headers{"content-type": {"application/json"}, "x-client": {"c1"}, "authorization": {"Bearer t"},
			"host": {"api.example.com"}, "connection": {"keep-alive"}},
		Body: []byte(origBody), HasBody: true,
	}, nil)
	x.Route = s.RouteByName(route)
	return x
}

func runMain(t *testing.T, s *flows.Snapshot, route string) *flows.Exchange {
	t.Helper()
	x := mainExchange(s, route)
	if x.Route == nil {
		t.Fatalf("no route %q", route)
	}
	if err := x.Route.Pipeline.Run(context.Background(), flows.PhaseAccess, x, nil); err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	return x
}

// securityFlowConfig is testdata/security_flow.yaml with the flow service
// at flowURL, then extra: a security flow and an API whose route calls it,
// denying with 403.
func securityFlowConfig(flowURL, extra string) string {
	return testdataFile("security_flow.yaml", "{{FLOW_URL}}", flowURL) + extra
}

func storedResult(t *testing.T, x *flows.Exchange, key string) map[string]any {
	t.Helper()
	m, ok := x.Shared[key].(map[string]any)
	if !ok {
		t.Fatalf("shared[%q] = %#v, want a result map", key, x.Shared[key])
	}
	return m
}

func wantDenied(t *testing.T, x *flows.Exchange, status int, body string) {
	t.Helper()
	if x.Reply == nil {
		t.Fatal("want the client denied, the request went on")
	}
	if x.Reply.Status != status || x.Reply.Headers.Get("content-type") != "application/json" || string(x.Reply.Body) != body {
		t.Fatalf("reply = %d %v %s, want %d application/json %s", x.Reply.Status, x.Reply.Headers, x.Reply.Body, status, body)
	}
}

// deniedBody is securityFlowConfig's on_flow_error_body as sidecall's error
// body, with mainExchange's request id.
const deniedBody = `{"message":"Access denied by security flow.","request_id":"req-1"}`

func TestFlowCalloutAllowedStoresResult(t *testing.T) {
	fs := newFlowServer(t, 200, `{"allowed":true,"user":"ann"}`)
	s := loadFlows(t, securityFlowConfig(fs.URL, ""))
	x := runMain(t, s, "orders")
	if x.Reply != nil {
		t.Fatalf("allowed request was answered: %d %s", x.Reply.Status, x.Reply.Body)
	}
	if string(x.Request.Body) != origBody || x.Changes().Body {
		t.Errorf("main body = %q (changed %v), want the original", x.Request.Body, x.Changes().Body)
	}
	if x.Changes().Path || x.Changes().Method || len(x.Changes().RequestHeaders) != 0 {
		t.Errorf("main request changed: %+v", x.Changes())
	}
	got := storedResult(t, x, "security_check_result")
	if got["status"] != 200 || got["body"] != `{"allowed":true,"user":"ann"}` || got["failed"] != false {
		t.Errorf("stored = %#v", got)
	}
	if _, has := got["error"]; has {
		t.Errorf("stored error on success: %v", got["error"])
	}
	js, _ := got["json"].(map[string]any)
	if js["allowed"] != true || js["user"] != "ann" {
		t.Errorf("stored json = %#v", got["json"])
	}
	hs, _ := got["headers"].(map[string]any)
	if hs["content-type"] != "application/json" {
		t.Errorf("stored content-type = %#v", hs["content-type"])
	}
	if l, _ := hs["x-flow"].([]any); len(l) != 2 || l[0] != "a" || l[1] != "b" {
		t.Errorf("stored x-flow = %#v, want [a b]", hs["x-flow"])
	}
}

func TestFlowCalloutForwardsRequest(t *testing.T) {
	fs := newFlowServer(t, 200, `{}`)
	s := loadFlows(t, securityFlowConfig(fs.URL, ""))
	runMain(t, s, "orders")
	r := fs.Last(t)
	if r.Method != "POST" {
		t.Errorf("method = %q", r.Method)
	}
	if r.Path != "/check/api/orders" {
		t.Errorf("path = %q, want /check/api/orders", r.Path)
	}
	if r.Query != "expand=items&x=1" {
		t.Errorf("query = %q", r.Query)
	}
	if r.Body != origBody {
		t.Errorf("body = %q", r.Body)
	}
	if r.Header.Get("X-Client") != "c1" || r.Header.Get("Authorization") != "Bearer t" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers = %v", r.Header)
	}
	if r.Host != strings.TrimPrefix(fs.URL, "http://") {
		t.Errorf("host = %q, want the service's", r.Host)
	}
	if r.Header.Get("Connection") != "" {
		t.Errorf("hop-by-hop connection forwarded: %q", r.Header.Get("Connection"))
	}
	if r.Header.Get("Accept-Encoding") != "" {
		t.Errorf("accept-encoding added: %q", r.Header.Get("Accept-Encoding"))
	}
}

func TestFlowCalloutFlowReturns500(t *testing.T) {
	fs := newFlowServer(t, 500, `{"error":"boom"}`)
	s := loadFlows(t, securityFlowConfig(fs.URL, ""))
	x := runMain(t, s, "orders")
	wantDenied(t, x, 403, deniedBody)
	got := storedResult(t, x, "security_check_result")
	if got["status"] != 500 || got["failed"] != true {
		t.Errorf("stored = %#v", got)
	}
	if fs.Count() != 1 {
		t.Errorf("a 500 was retried: %d hits", fs.Count())
	}
}

func TestFlowCalloutFlowDown(t *testing.T) {
	s := loadFlows(t, securityFlowConfig(deadURL(t), ""))
	start := time.Now()
	x := runMain(t, s, "orders")
	wantDenied(t, x, 403, deniedBody)
	got := storedResult(t, x, "security_check_result")
	if got["status"] != 502 || !strings.Contains(got["error"].(string), "connection refused") {
		t.Errorf("stored = %#v", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestFlowCalloutContinueOnError(t *testing.T) {
	cfg := strings.Replace(securityFlowConfig(deadURL(t), ""), "on_flow_error_continue: false", "on_flow_error_continue: true", 1)
	s := loadFlows(t, cfg)
	x := runMain(t, s, "orders")
	if x.Reply != nil {
		t.Fatalf("continue: request answered %d %s", x.Reply.Status, x.Reply.Body)
	}
	if string(x.Request.Body) != origBody {
		t.Errorf("main body = %q", x.Request.Body)
	}
	got := storedResult(t, x, "security_check_result")
	if got["failed"] != true || got["status"] != 502 {
		t.Errorf("stored = %#v", got)
	}
	if e, _ := got["error"].(string); !strings.Contains(e, "calling") {
		t.Errorf("stored error = %q", e)
	}

	// A flow answering 401 with continue: the result shows the status.
	fs := newFlowServer(t, 401, `{"reason":"no token"}`)
	cfg = strings.Replace(securityFlowConfig(fs.URL, ""), "on_flow_error_continue: false", "on_flow_error_continue: true", 1)
	x = runMain(t, loadFlows(t, cfg), "orders")
	got = storedResult(t, x, "security_check_result")
	if x.Reply != nil || got["status"] != 401 || got["failed"] != true {
		t.Errorf("reply %v, stored %#v", x.Reply, got)
	}
	if js, _ := got["json"].(map[string]any); js["reason"] != "no token" {
		t.Errorf("stored json = %#v", got["json"])
	}
	if _, has := got["error"]; has {
		t.Errorf("error set for an HTTP status: %v", got["error"])
	}
}

func TestFlowCalloutFlowPluginAnswers(t *testing.T) {
	fs := newFlowServer(t, 200, `{}`)
	deny := `    plugins:
      - name: flowtest
        config: {exit_status: 401, exit_body: '{"message":"no"}'}
`
	cfg := strings.Replace(securityFlowConfig(fs.URL, ""), "    retries: 2\n", "    retries: 2\n"+deny, 1)
	x := runMain(t, loadFlows(t, cfg), "orders")
	wantDenied(t, x, 403, deniedBody)
	if n := fs.Count(); n != 0 {
		t.Errorf("service URL called %d times though the flow answered", n)
	}
	got := storedResult(t, x, "security_check_result")
	if got["status"] != 401 || got["body"] != `{"message":"no"}` {
		t.Errorf("stored = %#v", got)
	}

	// A flow answering 200 itself: success, its reply is the result.
	allow := strings.Replace(deny, "exit_status: 401", "exit_status: 200", 1)
	cfg = strings.Replace(securityFlowConfig(fs.URL, ""), "    retries: 2\n", "    retries: 2\n"+allow, 1)
	x = runMain(t, loadFlows(t, cfg), "orders")
	if x.Reply != nil || fs.Count() != 0 {
		t.Fatalf("reply %v, hits %d", x.Reply, fs.Count())
	}
	if got := storedResult(t, x, "security_check_result"); got["status"] != 200 || got["failed"] != false {
		t.Errorf("stored = %#v", got)
	}
}

func TestFlowCalloutFlowPluginError(t *testing.T) {
	fs := newFlowServer(t, 200, `{}`)
	broke := "    plugins:\n      - name: flowtest\n        config: {fail: true}\n"
	cfg := strings.Replace(securityFlowConfig(fs.URL, ""), "    retries: 2\n", "    retries: 2\n"+broke, 1)
	x := runMain(t, loadFlows(t, cfg), "orders")
	wantDenied(t, x, 403, deniedBody)
	got := storedResult(t, x, "security_check_result")
	if got["status"] != 418 || !strings.Contains(got["error"].(string), "flow plugin broke") || fs.Count() != 0 {
		t.Errorf("stored = %#v, hits %d", got, fs.Count())
	}
}

func TestFlowCalloutSharedContextAndBody(t *testing.T) {
	for _, preserve := range []bool{true, false} {
		fs := newFlowServer(t, 200, `{}`)
		mut := "    plugins:\n      - name: flowtest\n        config: {set_body: changed, set_header: x-from-flow, shared_key: flow_note, resp_header: x-filtered}\n"
		cfg := strings.Replace(securityFlowConfig(fs.URL, ""), "    retries: 2\n", "    retries: 2\n"+mut, 1)
		if !preserve {
			cfg = strings.Replace(cfg, "on_flow_error_continue: false", "on_flow_error_continue: false\n              preserve_original_request_body: false", 1)
		}
		x := runMain(t, loadFlows(t, cfg), "orders")
		if x.Reply != nil {
			t.Fatalf("answered: %d", x.Reply.Status)
		}
		r := fs.Last(t)
		if r.Body != "changed" || r.Header.Get("X-From-Flow") != "from-flow" {
			t.Errorf("flow service got body %q header %q: the flow's changes must reach it", r.Body, r.Header.Get("X-From-Flow"))
		}
		if x.Shared["flow_note"] != "written by flow" {
			t.Errorf("shared written by the flow not visible: %#v", x.Shared["flow_note"])
		}
		if x.Request.Headers.Has("x-from-flow") {
			t.Errorf("flow header leaked into the main request")
		}
		wantBody := origBody
		if !preserve {
			wantBody = "changed"
		}
		if string(x.Request.Body) != wantBody || x.Changes().Body == preserve {
			t.Errorf("preserve=%v: main body %q changed=%v, want %q", preserve, x.Request.Body, x.Changes().Body, wantBody)
		}
		hs := storedResult(t, x, "security_check_result")["headers"].(map[string]any)
		if hs["x-filtered"] != "filtered" {
			t.Errorf("flow's header_filter did not run on its response: %#v", hs)
		}
	}
}

func TestFlowCalloutNested(t *testing.T) {
	a := newFlowServer(t, 200, `{"a":1}`)
	b := newFlowServer(t, 200, `{"b":2}`)
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
  - name: api
    url: http://127.0.0.1:1
    routes:
      - name: orders
        paths: [/api]
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: flow-a
              store_flow_response_in_shared_context_key: a_result
`
	x := runMain(t, loadFlows(t, cfg), "orders")
	if x.Reply != nil {
		t.Fatalf("answered %d %s", x.Reply.Status, x.Reply.Body)
	}
	if a.Last(t).Path != "/a/api/orders" || b.Last(t).Path != "/b/api/orders" || b.Last(t).Body != origBody {
		t.Errorf("paths a=%q b=%q body b=%q", a.Last(t).Path, b.Last(t).Path, b.Last(t).Body)
	}
	if storedResult(t, x, "a_result")["body"] != `{"a":1}` || storedResult(t, x, "b_result")["body"] != `{"b":2}` {
		t.Errorf("results: %#v %#v", x.Shared["a_result"], x.Shared["b_result"])
	}

	// Inner failure denies the outer flow, which denies the client (500 default).
	b.Close()
	x = runMain(t, loadFlows(t, cfg), "orders")
	wantDenied(t, x, 500, `{"message":"Shared Flow execution failed.","request_id":"req-1"}`)
	if got := storedResult(t, x, "a_result"); got["status"] != 500 || got["body"] != `{"message":"Shared Flow execution failed.","request_id":"req-1"}` {
		t.Errorf("a_result = %#v", got)
	}
}

func TestFlowCalloutTimeout(t *testing.T) {
	release := make(chan struct{})
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	defer close(release)
	s := loadFlows(t, securityFlowConfig(srv.URL, "")) // read_timeout: 200, retries: 2
	start := time.Now()
	x := runMain(t, s, "orders")
	d := time.Since(start)
	wantDenied(t, x, 403, deniedBody)
	if d < 150*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("took %v, want about the 200ms read_timeout", d)
	}
	got := storedResult(t, x, "security_check_result")
	if e, _ := got["error"].(string); got["status"] != 504 || !strings.Contains(e, "read timeout after 200ms") {
		t.Errorf("stored = %#v", got)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("a request the flow received was retried: %d hits", n)
	}
}

// A connect timeout is retried (the request never left); each attempt
// gets its own connect_timeout.
func TestFlowCalloutConnectTimeoutRetries(t *testing.T) {
	url := netport.FullBacklog(t)
	for _, c := range []struct {
		retries  int
		min, max time.Duration
	}{{0, 90 * time.Millisecond, 250 * time.Millisecond}, {2, 290 * time.Millisecond, 900 * time.Millisecond}} {
		cfg := strings.Replace(securityFlowConfig(url, ""), "    retries: 2\n", "    connect_timeout: 100\n    retries: "+string(rune('0'+c.retries))+"\n", 1)
		s := loadFlows(t, cfg)
		start := time.Now()
		x := runMain(t, s, "orders")
		d := time.Since(start)
		wantDenied(t, x, 403, deniedBody)
		if d < c.min || d > c.max {
			t.Errorf("retries %d: took %v, want %v..%v", c.retries, d, c.min, c.max)
		}
		got := storedResult(t, x, "security_check_result")
		if e, _ := got["error"].(string); got["status"] != 504 || !strings.Contains(e, "connect timeout after 100ms") {
			t.Errorf("stored = %#v", got)
		}
	}
}

func TestFlowCalloutSlowBodyTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	defer close(release)
	x := runMain(t, loadFlows(t, securityFlowConfig(srv.URL, "")), "orders")
	wantDenied(t, x, 403, deniedBody)
	if e, _ := storedResult(t, x, "security_check_result")["error"].(string); !strings.Contains(e, "read timeout") {
		t.Errorf("error = %q", e)
	}
}

func TestFlowCalloutUserJSONErrorBodyAsWritten(t *testing.T) {
	fs := newFlowServer(t, 503, `{}`)
	cfg := strings.Replace(securityFlowConfig(fs.URL, ""), "on_flow_error_body: Access denied by security flow.", `on_flow_error_body: '{"code":"DENIED"}'`, 1)
	wantDenied(t, runMain(t, loadFlows(t, cfg), "orders"), 403, `{"code":"DENIED"}`)
}

func TestFlowCalloutObserver(t *testing.T) {
	type rec struct{ flow, result string }
	var mu sync.Mutex
	var got []rec
	reg := flowRegistryObserved(func(route, flow, result string, d time.Duration) {
		mu.Lock()
		got = append(got, rec{flow, result})
		mu.Unlock()
	})
	ok := newFlowServer(t, 200, `{}`)
	runMain(t, loadFlowsWith(t, securityFlowConfig(ok.URL, ""), reg), "orders")
	bad := newFlowServer(t, 404, `{}`)
	runMain(t, loadFlowsWith(t, securityFlowConfig(bad.URL, ""), reg), "orders")
	runMain(t, loadFlowsWith(t, securityFlowConfig(deadURL(t), ""), reg), "orders")
	mu.Lock()
	defer mu.Unlock()
	want := []rec{{"my-shared-security-flow", "ok"}, {"my-shared-security-flow", "error_status"}, {"my-shared-security-flow", "transport_error"}}
	if len(got) != len(want) {
		t.Fatalf("observed %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("observed[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestFlowCalloutNeedsBody(t *testing.T) {
	s := loadFlows(t, securityFlowConfig("http://127.0.0.1:1", ""))
	if !s.RouteByName("orders").Pipeline.Needs().RequestBody {
		t.Error("a route with flow-callout must ask Envoy for the request body")
	}
}

// Bad configs: each testdata/bad/*.yaml against its .golden.
func TestFlowCalloutBadConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) < 6 {
		t.Fatalf("want at least 6 bad configs, have %d", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := flows.LoadFile(f, flows.LoadOptions{Registry: flowRegistry()})
			var ce *flows.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("want a ConfigError, got %v", err)
			}
			got := ce.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("no golden file (run with -update): %v", err)
			}
			if got != string(want) {
				t.Errorf("problems differ\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

func TestFlowCalloutExampleLoads(t *testing.T) {
	s, err := flows.LoadFile("../examples/flow-callout.yaml", flows.LoadOptions{Registry: flowRegistry()})
	if err != nil {
		t.Fatalf("example: %v", err)
	}
	defer s.Close()
	var found bool
	for _, r := range s.Routes {
		for _, in := range r.Pipeline.Instances {
			if in.Name == "flow-callout" {
				found = true
			}
		}
	}
	if !found || s.Services["my-shared-security-flow"] == nil {
		t.Error("example has no flow-callout on a route or no my-shared-security-flow service")
	}
	// The example's flow service answers; point it at a local server.
	fs := newFlowServer(t, 200, `{"allowed":true,"user":"ann"}`)
	svc := s.Services["my-shared-security-flow"]
	u := *svc.URL
	u.Host = strings.TrimPrefix(fs.URL, "http://")
	svc.URL = &u
	for _, r := range s.Routes {
		x := mainExchange(s, r.Name)
		if err := r.Pipeline.Run(context.Background(), flows.PhaseAccess, x, nil); err != nil {
			t.Fatal(err)
		}
		if x.Reply != nil {
			t.Errorf("route %s answered %d", r.Name, x.Reply.Status)
		}
		if u := x.Request.Headers.Get("x-authenticated-user"); u != "ann" {
			t.Errorf("route %s: x-authenticated-user = %q, want the flow's user", r.Name, u)
		}
	}
	if fs.Count() == 0 {
		t.Error("example flow never called")
	}
	if p := fs.Last(t).Path; !strings.HasPrefix(p, "/check/") {
		t.Errorf("flow path = %q", p)
	}
}

// BenchmarkFlowCallout is a flow-callout to a local server; ...Direct is
// the same call with a plain client, for the <= 1.2x target (bench/).
func BenchmarkFlowCallout(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"allowed":true}`)
	}))
	defer srv.Close()
	res := flows.NewResources()
	defer res.Close()
	s, err := flows.Load("kong.yml", []byte(securityFlowConfig(srv.URL, "")), flows.LoadOptions{Registry: flowRegistry(), Resources: res})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.Run("flow", func(b *testing.B) {
		for b.Loop() {
			x := mainExchange(s, "orders")
			if err := x.Route.Pipeline.Run(context.Background(), flows.PhaseAccess, x, nil); err != nil || x.Reply != nil {
				b.Fatalf("err %v reply %v", err, x.Reply)
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		defer c.CloseIdleConnections()
		for b.Loop() {
			resp, err := c.Post(srv.URL+"/check/api/orders?expand=items&x=1", "application/json", strings.NewReader(origBody))
			if err != nil {
				b.Fatal(err)
			}
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}
	})
}

// Odd requests never panic: they either reach the flow or fail it.
func TestFlowCalloutOddRequests(t *testing.T) {
	fs := newFlowServer(t, 200, `{}`)
	s := loadFlows(t, securityFlowConfig(fs.URL, ""))
	for name, mut := range map[string]func(*flows.Request){
		"empty method":     func(r *flows.Request) { r.Method = "" },
		"bad method":       func(r *flows.Request) { r.Method = "GE T" },
		"header newline":   func(r *flows.Request) { r.Headers["x-bad"] = []string{"a\nb"} },
		"bad header name":  func(r *flows.Request) { r.Headers["x bad"] = []string{"v"} },
		"pseudo header":    func(r *flows.Request) { r.Headers[":path"] = []string{"/x"} },
		"no leading slash": func(r *flows.Request) { r.Path = "api" },
		"junk query":       func(r *flows.Request) { r.RawQuery = "%zz&a=%&#" },
		"nil headers":      func(r *flows.Request) { r.Headers = nil },
		"empty path":       func(r *flows.Request) { r.Path = "" },
		"huge header":      func(r *flows.Request) { r.Headers["x-big"] = []string{strings.Repeat("a", 1<<20)} },
	} {
		t.Run(name, func(t *testing.T) {
			x := mainExchange(s, "orders")
			mut(&x.Request)
			if x.Request.Headers == nil {
				x.Request.Headers = flows.Headers{}
			}
			if err := x.Route.Pipeline.Run(context.Background(), flows.PhaseAccess, x, nil); err != nil {
				t.Fatal(err)
			}
			if x.Reply != nil && x.Reply.Status != 403 {
				t.Errorf("reply %d", x.Reply.Status)
			}
			if x.Reply == nil && storedResult(t, x, "security_check_result")["status"] != 200 {
				t.Errorf("continued without a 200: %#v", x.Shared["security_check_result"])
			}
		})
	}
}

// Flow-callout with serverless Lua: a flow whose pre-function exits never calls the
// service URL; a main-route post-function reads the stored result.
func TestFlowCalloutWithServerless(t *testing.T) {
	fs := newFlowServer(t, 200, `{"allowed":true,"user":"ann"}`)
	exit := `    plugins:
      - name: pre-function
        config:
          access:
            - |
              kong.ctx.shared.flow_saw = kong.request.get_header("x-client")
              if kong.request.get_header("authorization") ~= "Bearer ok" then
                return kong.response.exit(401, {message = "no token"})
              end
`
	reader := `          - name: post-function
            config:
              access:
                - |
                  local r = kong.ctx.shared.security_check_result
                  kong.service.request.set_header("x-user", r.json.user)
                  kong.service.request.set_header("x-flow-status", tostring(r.status))
                  kong.service.request.set_header("x-flow-saw", kong.ctx.shared.flow_saw)
`
	cfg := strings.Replace(securityFlowConfig(fs.URL, reader), "    retries: 2\n", "    retries: 2\n"+exit, 1)
	s := loadFlows(t, cfg)

	x := runMain(t, s, "orders") // authorization: Bearer t
	wantDenied(t, x, 403, deniedBody)
	if n := fs.Count(); n != 0 {
		t.Errorf("service URL called %d times though pre-function exited", n)
	}
	got := storedResult(t, x, "security_check_result")
	if js, _ := got["json"].(map[string]any); got["status"] != 401 || js["message"] != "no token" {
		t.Errorf("stored = %#v", got)
	}

	x = mainExchange(s, "orders")
	x.Request.Headers.Set("authorization", "Bearer ok")
	if err := x.Route.Pipeline.Run(context.Background(), flows.PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	if x.Reply != nil {
		t.Fatalf("allowed request answered %d %s", x.Reply.Status, x.Reply.Body)
	}
	if fs.Count() != 1 {
		t.Errorf("hits = %d", fs.Count())
	}
	h := x.Request.Headers
	if h.Get("x-user") != "ann" || h.Get("x-flow-status") != "200" || h.Get("x-flow-saw") != "c1" {
		t.Errorf("post-function saw x-user=%q x-flow-status=%q x-flow-saw=%q", h.Get("x-user"), h.Get("x-flow-status"), h.Get("x-flow-saw"))
	}
}

// A flow service behind a private CA: verified against the service's
// ca_certificates only (not the system roots), with tls_verify_depth as
// OpenSSL's depth (the most intermediates between the server certificate
// and a listed CA). A certificate that does not verify fails the flow
// before the service sees a request (on_flow_error: 403); the stored
// result says why.
func TestFlowCalloutPrivateCA(t *testing.T) {
	root := testca.New(t, "private root", nil)
	other := testca.New(t, "other root", nil)
	inter1 := testca.New(t, "intermediate 1", root)
	inter2 := testca.New(t, "intermediate 2", inter1)
	var hits atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"allowed":true,"user":"ann"}`)
	})
	direct := testca.StartTLSServer(t, root.ServerCert(t), h)     // leaf signed by root
	oneInter := testca.StartTLSServer(t, inter1.ServerCert(t), h) // leaf, inter1 | root
	twoInter := testca.StartTLSServer(t, inter2.ServerCert(t), h) // leaf, inter2, inter1 | root
	const rootID, otherID = caIDA, caIDB
	entities := "ca_certificates:\n" + root.Entity(rootID) + other.Entity(otherID)

	for _, c := range []struct {
		name   string
		srv    *httptest.Server
		svc    string
		ok     bool
		reason string // in the stored error when !ok
	}{
		{"system roots only", direct, "", false, "certificate"},
		{"tls_verify true, no ca_certificates", direct, "    tls_verify: true\n", false, "certificate"},
		{"its CA", direct, "    ca_certificates: [" + rootID + "]\n", true, ""},
		{"another CA", direct, "    ca_certificates: [" + otherID + "]\n", false, "certificate"},
		{"another CA and its CA", direct, "    ca_certificates: [" + otherID + ", " + rootID + "]\n", true, ""},
		{"tls_verify false, another CA", direct, "    tls_verify: false\n    ca_certificates: [" + otherID + "]\n", true, ""},
		{"direct, depth 0", direct, "    ca_certificates: [" + rootID + "]\n    tls_verify_depth: 0\n", true, ""},
		{"one intermediate, no depth", oneInter, "    ca_certificates: [" + rootID + "]\n", true, ""},
		{"one intermediate, depth 0", oneInter, "    ca_certificates: [" + rootID + "]\n    tls_verify_depth: 0\n", false, "1 intermediate CA certificates, more than tls_verify_depth 0"},
		{"one intermediate, depth 1", oneInter, "    ca_certificates: [" + rootID + "]\n    tls_verify_depth: 1\n", true, ""},
		{"one intermediate, depth 2", oneInter, "    ca_certificates: [" + rootID + "]\n    tls_verify_depth: 2\n", true, ""},
		{"one intermediate, another CA", oneInter, "    ca_certificates: [" + otherID + "]\n", false, "certificate"},
		{"two intermediates, depth 1", twoInter, "    ca_certificates: [" + rootID + "]\n    tls_verify_depth: 1\n", false, "2 intermediate CA certificates, more than tls_verify_depth 1"},
		{"two intermediates, depth 2", twoInter, "    ca_certificates: [" + rootID + "]\n    tls_verify_depth: 2\n", true, ""},
		{"two intermediates, tls_verify false, depth 0", twoInter, "    tls_verify: false\n    tls_verify_depth: 0\n", true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			hits.Store(0)
			cfg := strings.Replace(securityFlowConfig(c.srv.URL, entities), "    retries: 2\n", "    retries: 0\n"+c.svc, 1)
			s := loadFlows(t, cfg)
			x := runMain(t, s, "orders")
			got := storedResult(t, x, "security_check_result")
			if c.ok {
				if x.Reply != nil || got["status"] != 200 || got["failed"] != false {
					t.Fatalf("want the flow called: reply %v, stored %v", x.Reply, got)
				}
				if hits.Load() != 1 {
					t.Errorf("flow service hits %d, want 1", hits.Load())
				}
				return
			}
			wantDenied(t, x, 403, deniedBody)
			msg, _ := got["error"].(string)
			if got["status"] != 502 || got["failed"] != true || !strings.Contains(msg, c.reason) {
				t.Errorf("stored %v, want a 502 whose error has %q", got, c.reason)
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("flow service got %d requests over an unverified connection", n)
			}
		})
	}
}

// One transport per distinct TLS setting: services (and reloads) with the
// same CAs, depth and tls_verify share it; a different CA or depth gets its
// own, and the old warning about unapplied options is gone.
func TestFlowCalloutTransportPerTLSSetting(t *testing.T) {
	root, other := testca.New(t, "root", nil), testca.New(t, "other", nil)
	entities := "ca_certificates:\n" + root.Entity(caIDA) + other.Entity(caIDB)
	res := flows.NewResources()
	defer res.Close()
	core, logs := observer.New(zap.WarnLevel)
	var open []*flows.Snapshot
	load := func(svc string) {
		t.Helper()
		cfg := strings.Replace(securityFlowConfig("https://127.0.0.1:1", entities), "    retries: 2\n", "    retries: 2\n"+svc, 1)
		s, err := flows.Load("kong.yml", []byte(cfg), flows.LoadOptions{Registry: flowRegistry(), Resources: res, Log: zap.New(core)})
		if err != nil {
			t.Fatalf("load: %v", err)
		}
		open = append(open, s) // every snapshot still serves: transports add up
	}
	count := func() int {
		n := 0
		res.Each(func(k string, _ io.Closer) {
			if strings.HasPrefix(k, "flow-callout-transport|") {
				n++
			}
		})
		return n
	}
	for i, c := range []struct {
		svc  string
		want int
	}{
		{"    ca_certificates: [" + caIDA + "]\n", 1},
		{"    ca_certificates: [" + caIDA + "]\n", 1}, // reload: same
		{"    ca_certificates: [" + caIDA + ", " + caIDA + "]\n", 1},
		{"    ca_certificates: [" + caIDB + "]\n", 2},
		{"    ca_certificates: [" + caIDB + "]\n    tls_verify_depth: 1\n", 3},
		{"    tls_verify: false\n    ca_certificates: [" + caIDB + "]\n", 4},
		{"    tls_verify: false\n    tls_verify_depth: 3\n", 4}, // unverified: one transport
		{"", 5}, // system roots
	} {
		load(c.svc)
		if n := count(); n != c.want {
			t.Errorf("after load %d: %d transports, want %d", i, n, c.want)
		}
	}
	if n := logs.FilterMessageSnippet("not applied").Len(); n != 0 {
		t.Errorf("%d 'not applied' warnings", n)
	}
	for _, s := range open {
		s.Close()
	}
	if n := count(); n != 0 {
		t.Errorf("%d transports open after every snapshot closed", n)
	}
}

// Ids of ca_certificates entities in the TLS tests.
const (
	caIDA = "7b1f0c3e-5a6d-4e2f-9a1b-0c2d3e4f5a6b"
	caIDB = "8c2a1d4f-6b7e-4f30-8b2c-1d3e4f5a6b7c"
)
