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

// Rows 2, 5, 6, 21 and the schema limits: every problem, with its path.
func TestConfigValidation_Rows2_5_6_21(t *testing.T) {
	cases := []struct{ name, cfg, want string }{
		{"row1 callouts required", `upstream: {}`, "plugins[0].config.callouts: at least one callout is required"},
		{"row2 duplicate names", `callouts: [{name: a, request: {url: "http://h/"}}, {name: a, request: {url: "http://h/"}}]`, `callouts[1].name: duplicate callout name "a"`},
		{"row5 unknown depends_on", `callouts: [{name: a, depends_on: [zz], request: {url: "http://h/"}}]`, `callouts[0].depends_on[0]: unknown callout "zz"`},
		{"row5 cycle", `callouts: [{name: a, depends_on: [b], request: {url: "http://h/"}}, {name: b, depends_on: [a], request: {url: "http://h/"}}]`, "dependency cycle: a -> b -> a"},
		{"row5 implicit cycle", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {x: "$(callouts.b.response.status)"}}}}, {name: b, depends_on: [a], request: {url: "http://h/"}}]`, "dependency cycle"},
		{"row6 method pattern", `callouts: [{name: a, request: {url: "http://h/", method: get}}]`, "request.method: must match ^[A-Z]+$"},
		{"row7 url required", `callouts: [{name: a, request: {}}]`, "request.url: required field missing"},
		{"row21 timeouts all or none", `callouts: [{name: a, request: {url: "http://h/", http_opts: {timeouts: {connect: 10}}}}]`, "timeouts: connect, read and write must be set together"},
		{"statuses 100-999", `callouts: [{name: a, request: {url: "http://h/", error: {http_statuses: [99]}}}]`, "http_statuses[0]: must be between 100 and 999"},
		{"on_error enum", `callouts: [{name: a, request: {url: "http://h/", error: {on_error: explode}}}]`, "on_error: must be one of continue, fail, retry"},
		{"unknown field", `callouts: [{name: a, request: {url: "http://h/", nope: 1}}]`, "request.nope: unknown field"},
		{"wrong type", `callouts: [{name: a, request: {url: "http://h/", query: {forward: "yes"}}}]`, "query.forward: must be a boolean"},
		{"vault whole value", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {x: "Bearer {vault://env/T}"}}}}]`, "a vault reference must be the whole value"},
		{"template syntax", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {x: "$(callouts.a"}}}}]`, "request.headers.custom.x: unbalanced parentheses in $(...)"},
		{"template lua syntax", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {x: "$(callouts.a.)"}}}}]`, "request.headers.custom.x: lua syntax error in $(callouts.a.)"},
		{"lua syntax", `callouts: [{name: a, request: {url: "http://h/", by_lua: "local x = ("}}]`, "request.by_lua: lua syntax error"},
		{"row39 hash literal", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {x: "#1234"}}}}]`, "starting with '#'"},
		{"cache strategy", `{callouts: [{name: a, request: {url: "http://h/"}}], cache: {strategy: disk}}`, "cache.strategy: must be one of off, memory, redis"},
		{"concurrency", `{callouts: [{name: a, request: {url: "http://h/"}}], concurrency: wild}`, "concurrency: must be parallel or sequential"},
		{"bad header name", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {"a b": "1"}}}}]`, `invalid header name "a b"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := flows.NewResources()
			defer res.Close()
			_, probs := buildWith(t, res, nil, c.cfg)
			var all []string
			for _, p := range probs {
				all = append(all, p.String())
			}
			if !strings.Contains(strings.Join(all, "\n"), c.want) {
				t.Fatalf("want a problem containing %q, got %q", c.want, all)
			}
		})
	}
}

// Row 2 & friends: several problems are all reported in one load.
func TestConfigValidationReportsAll(t *testing.T) {
	res := flows.NewResources()
	defer res.Close()
	_, probs := buildWith(t, res, nil, `callouts: [{name: a, request: {url: "http://h/", method: x}}, {name: a, request: {}}]`)
	if len(probs) < 3 {
		t.Fatalf("want >= 3 problems, got %v", probs)
	}
}

func TestDefaults_Rows6_19_26_49(t *testing.T) {
	p := build(t, `callouts: [{name: a, request: {url: "http://h/"}}]`)
	c := p.callouts[0]
	if c.cfg.Request.Method != "GET" || !c.cfg.Request.HTTPOpts.SSLVerify || c.onError != "fail" || c.retries != 2 ||
		c.cfg.Request.Error.ErrorResponseCode != 400 || !c.cfg.Response.Headers.Store || !c.cfg.Response.Body.Store {
		t.Fatalf("defaults wrong: %+v onError=%s", c.cfg, c.onError)
	}
	if p.cache != nil {
		t.Fatal("row 49: cache must be off by default")
	}
	if !p.up.cfg.Headers.Forward || !p.up.cfg.Query.Forward || !p.up.cfg.Body.Forward || !p.up.cfg.Body.Decode {
		t.Fatalf("upstream defaults wrong: %+v", p.up.cfg)
	}
	if p.Needs().RequestBody {
		t.Fatal("no body use configured, but the plugin asks for the request body")
	}
	if build(t, `callouts: [{name: a, request: {url: "http://h/", body: {forward: true}}}]`).Needs().RequestBody != true {
		t.Fatal("body.forward needs the request body")
	}
}

// §1.6 error policy table, rows 24-29.
func TestErrorPolicyTable_Rows24_25_26_27_28_29(t *testing.T) {
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
		{"row24 transport error fail", dead, `{}`, 400, "service callout error", false},
		{"row24 transport error continue", dead, `{on_error: continue}`, 0, "", false},
		{"row24 transport error retry exhausted", dead, `{on_error: retry, retries: 1}`, 400, "service callout error", false},
		{"row25 listed status fail", four01.URL, `{http_statuses: [401]}`, 400, "service callout error", false},
		{"row25 unlisted status success", four01.URL, `{}`, 0, "", true},
		{"row28 listed status continue stores response", four01.URL, `{http_statuses: [401], on_error: continue}`, 0, "", true},
		{"row26 custom code", four01.URL, `{http_statuses: [401], error_response_code: 503, error_response_msg: "nope"}`, 503, "nope", false},
		{"row29 templated message", four01.URL, `{http_statuses: [401], error_response_msg: "auth said $(callouts.a.response.status)"}`, 400, "auth said 401", false},
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

// Row 30: transport-error retries are recorded with reason "error" and err.
func TestRetryBookkeepingTransport_Row30(t *testing.T) {
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

// Parallelism: 4 independent callouts are all in flight at once.
func TestParallelFourIndependent(t *testing.T) {
	var arrived atomic.Int32
	all := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == 4 {
			close(all)
		}
		select {
		case <-all:
			_, _ = w.Write([]byte(`ok`))
		case <-time.After(2 * time.Second):
			w.WriteHeader(504)
		}
	}))
	defer srv.Close()
	var cs []string
	for i := 0; i < 4; i++ {
		cs = append(cs, fmt.Sprintf(`{name: c%d, request: {url: "%s/%d", error: {http_statuses: [504]}}}`, i, srv.URL, i))
	}
	p := build(t, "callouts: ["+strings.Join(cs, ",")+"]")
	if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
		t.Fatalf("the server never saw 4 requests in flight together: %v", err)
	}
}

// Row 4: concurrency: sequential gives Kong's one-at-a-time order.
func TestSequentialMode_Row4(t *testing.T) {
	var inflight, max atomic.Int32
	var order []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		if n > max.Load() {
			max.Store(n)
		}
		time.Sleep(10 * time.Millisecond)
		order = append(order, r.URL.Path)
		inflight.Add(-1)
	}))
	defer srv.Close()
	p := build(t, fmt.Sprintf(`{concurrency: sequential, callouts: [
	  {name: a, depends_on: [c], request: {url: "%[1]s/a"}}, {name: b, request: {url: "%[1]s/b"}}, {name: c, request: {url: "%[1]s/c"}}]}`, srv.URL))
	if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
		t.Fatal(err)
	}
	if max.Load() != 1 || strings.Join(order, ",") != "/b,/c,/a" {
		t.Fatalf("max in flight %d, order %v", max.Load(), order)
	}
}

// Row 3: a depends_on chain and an implicit reference never overlap.
func TestDependsOnChainAndImplicit_Row3(t *testing.T) {
	var inflight atomic.Int32
	var order []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if inflight.Add(1) > 1 {
			t.Errorf("%s in flight with another callout", r.URL.Path)
		}
		time.Sleep(15 * time.Millisecond)
		order = append(order, r.URL.Path)
		inflight.Add(-1)
		_, _ = w.Write([]byte(`{"id":"` + strings.TrimPrefix(r.URL.Path, "/") + `"}`))
	}))
	defer srv.Close()
	p := build(t, fmt.Sprintf(`callouts: [
	  {name: c, depends_on: [b], request: {url: "%[1]s/c"}},
	  {name: b, request: {url: "%[1]s/b", headers: {custom: {x-a: "$(callouts.a.response.body.id)"}}}},
	  {name: a, request: {url: "%[1]s/a"}, response: {body: {decode: true}}}]`, srv.URL))
	if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, ",") != "/a,/b,/c" {
		t.Fatalf("order = %v", order)
	}
}

// A by_lua reading callouts dynamically depends on every earlier callout.
func TestDynamicLuaDependsOnEarlier(t *testing.T) {
	src := `local n = "a"; local s = kong.ctx.shared.callouts[n].response.status`
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: "http://h/a"}}, {name: z, request: {url: "http://h/z"}},
	  {name: b, request: {url: "http://h/b", by_lua: %q}}]`, src))
	if len(p.waves) != 2 || len(p.waves[0]) != 2 || p.waves[1][0] != 2 {
		t.Fatalf("waves = %v", p.waves)
	}
}

// Rows 9, 10, 18: forwarded headers, custom override and null removal,
// headers["x-in"] and Kong's headers.x_in (underscore for dash) in $(...),
// hop-by-hop never forwarded, default User-Agent, traceparent propagated.
func TestCalloutHeaders_Rows9_10_18(t *testing.T) {
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
	if h.Get("User-Agent") != "sidecall/"+Version+"/request-callout" {
		t.Fatalf("user-agent = %q", h.Get("User-Agent"))
	}
	if h.Get("Traceparent") != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Fatalf("traceparent = %q", h.Get("Traceparent"))
	}
}

// Rows 12, 8: query.custom replaces args in the url, null removes; dynamic url.
func TestCalloutQuery_Rows8_12(t *testing.T) {
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
	// Row 8: an invalid rendered url is a 500.
	p = build(t, `callouts: [{name: a, request: {url: '$(headers["x-u"])'}}]`)
	if he := httpErr(t, p.Access(context.Background(), newX("GET", "/", "", map[string]string{"x-u": "::bad"}, ""))); he.Status != 500 || flows.IsLuaError(he) {
		t.Fatalf("status %d (%v)", he.Status, he.Err)
	}
}

// Rows 13, 14, 15, 17: body forward, decode + custom, one Content-Type.
func TestCalloutBody_Rows13_14_15_17(t *testing.T) {
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

// Rows 43-47: upstream forwarding and customisation; the empty-body rule.
func TestUpstream_Rows43_44_45_46_47(t *testing.T) {
	srv := jsonServer(t, nil, 200, map[string]string{"id": "42"})
	base := fmt.Sprintf(`callouts: [{name: a, request: {url: %q}, response: {body: {decode: true}}}]`, srv.URL)
	t.Run("row44 custom headers and null", func(t *testing.T) {
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
	t.Run("row43 forward false after expressions", func(t *testing.T) {
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
	t.Run("row45 query", func(t *testing.T) {
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
	t.Run("row46 body forward false", func(t *testing.T) {
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
	t.Run("row47 body custom merge", func(t *testing.T) {
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
	t.Run("row16 empty body starts from {}", func(t *testing.T) {
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
	t.Run("row46 empty custom leaves body", func(t *testing.T) {
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

// CRLF/NUL in a rendered header value is a 500, never sent.
func TestHeaderInjectionIs500(t *testing.T) {
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
			if he := httpErr(t, p.Access(context.Background(), x)); he.Status != 500 || flows.IsLuaError(he) {
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

// Row 19: ssl_verify defaults to true; false accepts a self-signed server.
// Row 20: ssl_server_name is the SNI sent.
func TestTLSVerifyAndSNI_Rows19_20(t *testing.T) {
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

// Row 21: read timeout makes a transport error.
func TestTimeouts_Row21(t *testing.T) {
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

// Row 22: http_proxy with basic auth.
func TestForwardProxy_Row22(t *testing.T) {
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

// Rows 23, 34, 52: request.by_lua rewrites params; response.by_lua sees the
// response and may answer the client; a Lua error is a 500.
func TestLuaHooks_Rows23_34(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"verdict": "block"})
	// request.by_lua edits its own request.params (Kong §1.3).
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

// Rows 32, 33: store flags.
func TestResponseStoreFlags_Rows31_32_33(t *testing.T) {
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

// Row 56: each callout attempt logs URL, status and latency.
func TestCalloutLogging_Row56(t *testing.T) {
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
