package callout

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecall/sidecall/flows"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// on_error, http_statuses and the fail response, for transport errors and
// statuses.
func TestErrorPolicy(t *testing.T) {
	ok := jsonServer(t, nil, 200, map[string]string{"v": "fine"})
	four01 := jsonServer(t, nil, 401, map[string]string{"v": "denied"})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String() + "/"
	l.Close()
	cases := []struct {
		name, url, errBlock string
		wantStatus          int // 0: success
		wantMsg             string
		wantResponse        bool
	}{
		{"transport error fail", dead, `{}`, 400, "service callout error", false},
		{"transport error continue", dead, `{on_error: continue}`, 0, "", false},
		{"transport error retry exhausted", dead, `{on_error: retry, retries: 1}`, 400, "service callout error", false},
		{"listed status fail", four01.URL, `{http_statuses: [401]}`, 400, "service callout error", false},
		{"unlisted status success", four01.URL, `{}`, 0, "", true},
		{"listed status continue stores response", four01.URL, `{http_statuses: [401], on_error: continue}`, 0, "", true},
		{"custom code", four01.URL, `{http_statuses: [401], error_response_code: 503, error_response_msg: "nope"}`, 503, "nope", false},
		{"templated message", four01.URL, `{http_statuses: [401], error_response_msg: "auth said $(callouts.a.response.status)"}`, 400, "auth said 401", false},
		{"success", ok.URL, `{http_statuses: [500]}`, 0, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, error: %s}}]`, c.url, c.errBlock))
			x := newX("GET", "/", "", nil, "")
			err := p.Access(context.Background(), x)
			if c.wantStatus == 0 {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				he := httpErr(t, err)
				if he.Status != c.wantStatus || he.Message != c.wantMsg {
					t.Fatalf("got %d %q", he.Status, he.Message)
				}
			}
			_, has := ctxEntry(t, x, "a")["response"]
			if has != c.wantResponse && c.wantStatus == 0 {
				t.Fatalf("response stored = %v, want %v", has, c.wantResponse)
			}
		})
	}
}

// Transport-error retries are recorded with reason "error" and err.
func TestRetriesRecordTransportErrors(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String() + "/"
	l.Close()
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, error: {on_error: retry, retries: 2}}}]`, dead))
	x := newX("GET", "/", "", nil, "")
	_ = p.Access(context.Background(), x)
	req := ctxEntry(t, x, "a")["request"].(map[string]any)
	rs := req["retries"].([]any)
	if req["n_retries"] != 2 || len(rs) != 2 || rs[1].(map[string]any)["reason"] != "error" || rs[1].(map[string]any)["err"] == "" {
		t.Fatalf("retries = %v n=%v", rs, req["n_retries"])
	}
}

// Forwarded headers, custom override and null removal,
// headers["x-in"] and Kong's headers.x_in (underscore for dash) in $(...),
// hop-by-hop never forwarded, default User-Agent, traceparent propagated.
func TestCalloutHeaders(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, nil)
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, headers: {forward: true, custom: {X-Drop: null, X-Over: new, X-From: '$(headers["x-in"])', X-Under: "$(headers.x_in)"}}}}]`, srv.URL))
	x := newX("GET", "/", "", map[string]string{"x-in": "v1", "x-drop": "d", "x-over": "old", "connection": "x-in", "te": "trailers",
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "host": "client.example"}, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	h := rec.last(t).Header
	if h.Get("X-In") != "v1" || h.Get("X-Drop") != "" || h.Get("X-Over") != "new" || h.Get("X-From") != "v1" || h.Get("X-Under") != "v1" {
		t.Fatalf("headers = %v", h)
	}
	if h.Get("Te") != "" || h.Get("Connection") == "x-in" {
		t.Fatalf("hop-by-hop forwarded: %v", h)
	}
	if h.Get("User-Agent") != "sidecall/test/request-callout" {
		t.Fatalf("user-agent = %q", h.Get("User-Agent"))
	}
	if h.Get("Traceparent") != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Fatalf("traceparent = %q", h.Get("Traceparent"))
	}
}

// query.custom replaces args in the url, null removes; dynamic url.
func TestCalloutQuery(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, nil)
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: '%s/$(headers["x-p"])?a=1&b=2&c=3', query: {custom: {a: "9", b: null}}}}]`, srv.URL))
	if err := p.Access(context.Background(), newX("GET", "/", "", map[string]string{"x-p": "dyn"}, "")); err != nil {
		t.Fatal(err)
	}
	r := rec.last(t)
	if r.Path != "/dyn" || r.Query != "a=9&c=3" {
		t.Fatalf("got %s?%s", r.Path, r.Query)
	}
	// An invalid rendered url is refused: the callout fails under on_error
	// (fail: error_response_code, 400 by default); nothing is sent.
	p = build(t, `callouts: [{name: a, request: {url: '$(headers["x-u"])', allowed_hosts: [h.local]}}]`)
	if he := httpErr(t, p.Access(context.Background(), newX("GET", "/", "", map[string]string{"x-u": "::bad"}, ""))); he.Status != 400 || asRefused(he) == nil {
		t.Fatalf("status %d (%v)", he.Status, he.Err)
	}
}

// Body forward, decode + custom, one Content-Type.
func TestCalloutBody(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, nil)
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, method: POST, headers: {custom: {content-type: application/json; charset=utf-8}}, body: {forward: true, decode: true, custom: {add: x, drop: null}}}}]`, srv.URL))
	x := newX("POST", "/", "", nil, `{"keep":1,"drop":2}`)
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	r := rec.last(t)
	var m map[string]any
	if err := json.Unmarshal([]byte(r.Body), &m); err != nil || m["keep"] != 1.0 || m["add"] != "x" || m["drop"] != nil {
		t.Fatalf("body = %s (%v)", r.Body, err)
	}
	if ct := r.Header.Values("Content-Type"); len(ct) != 1 || ct[0] != "application/json; charset=utf-8" {
		t.Fatalf("content-type = %v", ct)
	}
	if !p.Needs().RequestBody {
		t.Fatal("body.forward must ask for the request body")
	}
}

// Upstream forwarding and customisation; the empty-body rule.
func TestUpstreamCustomisation(t *testing.T) {
	srv := jsonServer(t, nil, 200, map[string]string{"id": "42"})
	base := fmt.Sprintf(`callouts: [{name: a, request: {url: %q}, response: {body: {decode: true}}}]`, srv.URL)
	t.Run("custom headers and null", func(t *testing.T) {
		p := build(t, base+`
upstream: {headers: {custom: {X-Id: "$(callouts.a.response.body.id)", X-Gone: null}}}`)
		x := newX("GET", "/", "", map[string]string{"x-gone": "1", "x-keep": "2"}, "")
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if x.Request.Headers.Get("x-id") != "42" || x.Request.Headers.Has("x-gone") || x.Request.Headers.Get("x-keep") != "2" {
			t.Fatalf("headers = %v", x.Request.Headers)
		}
	})
	t.Run("forward false after expressions", func(t *testing.T) {
		p := build(t, base+`
upstream: {headers: {forward: false, custom: {X-Copy: '$(headers["x-keep"])'}}}`)
		x := newX("GET", "/", "", map[string]string{"x-keep": "2", "content-type": "text/plain"}, "")
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if len(x.Request.Headers) != 1 || x.Request.Headers.Get("x-copy") != "2" {
			t.Fatalf("headers = %v", x.Request.Headers)
		}
	})
	t.Run("query", func(t *testing.T) {
		p := build(t, base+`
upstream: {query: {forward: false, custom: {id: "$(callouts.a.response.body.id)"}}}`)
		x := newX("GET", "/", "secret=1", nil, "")
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if x.Request.RawQuery != "id=42" {
			t.Fatalf("query = %q", x.Request.RawQuery)
		}
	})
	t.Run("body forward false", func(t *testing.T) {
		p := build(t, base+`
upstream: {body: {forward: false}}`)
		x := newX("POST", "/", "", nil, `{"a":1}`)
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if len(x.Request.Body) != 0 || !x.Changes().Body {
			t.Fatalf("body = %q", x.Request.Body)
		}
	})
	t.Run("body custom merge", func(t *testing.T) {
		p := build(t, base+`
upstream: {body: {custom: {id: "$(callouts.a.response.body.id)", pw: null}}}`)
		x := newX("POST", "/", "", nil, `{"a":1,"pw":"x"}`)
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if string(x.Request.Body) != `{"a":1,"id":"42"}` {
			t.Fatalf("body = %s", x.Request.Body)
		}
	})
	t.Run("empty body starts from {}", func(t *testing.T) {
		p := build(t, base+`
upstream: {body: {custom: {id: "$(callouts.a.response.body.id)"}}}`)
		x := newX("POST", "/", "", nil, "")
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if string(x.Request.Body) != `{"id":"42"}` || x.Request.Headers.Get("content-type") != "application/json" {
			t.Fatalf("body = %s ct=%q", x.Request.Body, x.Request.Headers.Get("content-type"))
		}
	})
	t.Run("no customisation leaves body", func(t *testing.T) {
		p := build(t, base)
		x := newX("POST", "/", "", nil, `not json`)
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if string(x.Request.Body) != "not json" || x.Changes().Body {
			t.Fatal("body changed")
		}
	})
}

// CRLF/NUL in a rendered header value is the client's fault: 400, never
// sent.
func TestHeaderInjectionIs400(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, nil)
	for i, cfg := range []string{`{callouts: [{name: a, request: {url: %q, headers: {custom: {X-V: '$(headers["x-evil"])'}}}}]}`,
		`{callouts: [{name: a, request: {url: %q}}], upstream: {headers: {custom: {X-V: '$(headers["x-evil"])'}}}}`} {
		p := build(t, fmt.Sprintf(cfg, srv.URL))
		ok := newX("GET", "/", "", map[string]string{"x-evil": "fine"}, "")
		if err := p.Access(context.Background(), ok); err != nil {
			t.Fatalf("a clean value must pass: %v", err)
		}
		if i == 0 && rec.last(t).Header.Get("X-V") != "fine" || i == 1 && ok.Request.Headers.Get("x-v") != "fine" {
			t.Fatalf("clean value not set: callout %q upstream %q", rec.last(t).Header.Get("X-V"), ok.Request.Headers.Get("x-v"))
		}
		before := rec.calls.Load()
		for _, bad := range []string{"a\r\nX-Injected: 1", "a\x00b", "a\nb"} {
			x := newX("GET", "/", "", map[string]string{"x-evil": bad}, "")
			if he := httpErr(t, p.Access(context.Background(), x)); he.Status != 400 || flows.IsLuaError(he) {
				t.Fatalf("status %d (%v)", he.Status, he.Err)
			}
			if x.Request.Headers.Has("x-v") {
				t.Fatal("bad value set upstream")
			}
		}
		if i == 0 && rec.calls.Load() != before { // the upstream case calls the callout legitimately
			t.Fatalf("a bad header reached the callout server (%d calls)", rec.calls.Load()-before)
		}
	}
}

// ssl_verify defaults to true; false accepts a self-signed server;
// ssl_server_name is the SNI sent.
func TestTLSVerifyAndSNI(t *testing.T) {
	var sni atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { sni.Store(h.ServerName); return nil, nil }}
	srv.StartTLS()
	defer srv.Close()
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q}}]`, srv.URL))
	if he := httpErr(t, p.Access(context.Background(), newX("GET", "/", "", nil, ""))); he.Status != 400 {
		t.Fatalf("unverifiable certificate: status %d", he.Status)
	}
	p = build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, http_opts: {ssl_verify: false, ssl_server_name: api.example}}}]`, srv.URL))
	x := newX("GET", "/", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if sni.Load() != "api.example" {
		t.Fatalf("sni = %v", sni.Load())
	}
}

// A read timeout makes a transport error.
func TestSocketTimeoutIsTransportError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, http_opts: {timeouts: {connect: 100, read: 100, write: 100}}}}]`, srv.URL))
	start := time.Now()
	he := httpErr(t, p.Access(context.Background(), newX("GET", "/", "", nil, "")))
	if he.Status != 400 || time.Since(start) > 1500*time.Millisecond {
		t.Fatalf("status %d after %v", he.Status, time.Since(start))
	}
}

// Whole-plugin deadline: 504.
func TestPluginTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	p := build(t, fmt.Sprintf(`{timeout: 100, callouts: [{name: a, request: {url: %q}}]}`, srv.URL))
	if he := httpErr(t, p.Access(context.Background(), newX("GET", "/", "", nil, ""))); he.Status != 504 {
		t.Fatalf("status %d", he.Status)
	}
}

// http_proxy with basic auth.
func TestForwardProxyWithBasicAuth(t *testing.T) {
	rec := &recorder{}
	backend := jsonServer(t, rec, 200, map[string]string{"ok": "yes"})
	var auth atomic.Value
	bu, _ := url.Parse(backend.URL)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Proxy-Authorization"))
		if !r.URL.IsAbs() {
			w.WriteHeader(400)
			return
		}
		httputil.NewSingleHostReverseProxy(bu).ServeHTTP(w, r)
	}))
	defer proxy.Close()
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: "http://backend.invalid/x", http_opts: {proxy: {http_proxy: %q, auth_username: u, auth_password: p}}}}]`, proxy.URL))
	if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
		t.Fatal(err)
	}
	if auth.Load() != "Basic dTpw" || rec.calls.Load() != 1 {
		t.Fatalf("proxy auth %v, backend calls %d", auth.Load(), rec.calls.Load())
	}
}

// request.by_lua rewrites params; response.by_lua sees the
// response and may answer the client; a Lua error is a 500.
func TestLuaHooks(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"verdict": "block"})
	// request.by_lua edits its own request.params.
	reqLua := `local params = kong.ctx.shared.callouts.a.request.params
params.url = params.url .. "/rewritten"
params.body = "a=1&b=2"
params.method = "POST"`
	// response.by_lua reads the decoded body and answers the client.
	respLua := `if kong.ctx.shared.callouts.a.response.body.verdict == "block" then
  return kong.response.exit(403, { message = "blocked" })
end`
	// A runtime error: indexing a field that is not there.
	badLua := `local v = kong.ctx.shared.callouts.a.nope.status`
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, by_lua: %q}, response: {body: {decode: true}, by_lua: %q}}]`, srv.URL, reqLua, respLua))
	x := newX("GET", "/", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	r := rec.last(t)
	if r.Method != "POST" || r.Path != "/rewritten" || r.Body != "a=1&b=2" {
		t.Fatalf("callout got %s %s %q", r.Method, r.Path, r.Body)
	}
	if x.Reply == nil || x.Reply.Status != 403 || string(x.Reply.Body) != `{"message":"blocked"}` {
		t.Fatalf("reply = %+v", x.Reply)
	}
	p = build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, by_lua: %q}}]`, srv.URL, badLua))
	if he := httpErr(t, p.Access(context.Background(), newX("GET", "/", "", nil, ""))); he.Status != 500 || !flows.IsLuaError(he) ||
		!strings.Contains(he.Err.Error(), "index") {
		t.Fatalf("status %d (%v)", he.Status, he.Err)
	}
}

// response.headers.store and response.body.store.
func TestResponseStoreFlags(t *testing.T) {
	srv := jsonServer(t, nil, 201, map[string]string{"a": "b"})
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %[1]q}, response: {headers: {store: false}}}, {name: b, request: {url: %[1]q}, response: {body: {store: false}}}]`, srv.URL))
	x := newX("GET", "/", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	ra := ctxEntry(t, x, "a")["response"].(map[string]any)
	rb := ctxEntry(t, x, "b")["response"].(map[string]any)
	if ra["status"] != 201 || ra["headers"] != nil || ra["body"] != "{\"a\":\"b\"}\n" {
		t.Fatalf("a = %v", ra)
	}
	if rb["body"] != nil || rb["headers"].(map[string]any)["content-type"] != "application/json" {
		t.Fatalf("b = %v", rb)
	}
}

// Each callout attempt logs URL, status and latency.
func TestEachAttemptIsLogged(t *testing.T) {
	srv := jsonServer(t, nil, 202, nil)
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: "%s/p?secret=1"}}]`, srv.URL))
	core, logs := observer.New(zap.DebugLevel)
	x := newX("GET", "/", "", nil, "")
	x.Log = zap.New(core)
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	es := logs.FilterMessage("callout").All()
	if len(es) != 1 {
		t.Fatalf("log entries = %d", len(es))
	}
	f := es[0].ContextMap()
	if f["callout"] != "a" || f["status"] != int64(202) || f["url"] != srv.URL+"/p" {
		t.Fatalf("fields = %v", f)
	}
	if _, ok := f["latency_ms"]; !ok {
		t.Fatal("no latency")
	}
}
