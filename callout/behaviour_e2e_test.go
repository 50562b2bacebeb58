package callout_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/flows"
)

// End-to-end behaviour tests: real HTTP requests to the envoy stand-in, a
// real sidecall processor with every plugin, real callout servers and a
// real upstream on 127.0.0.1. What a callout server received is recorded by
// the server; what the upstream received is read from the Echo answer; what
// the client received from the HTTP response.

// startRecServer starts a callout server; answer gets the request and its
// 1-based number. A nil answer replies 200 {"ok":true}.
func startRecServer(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int)) *envoytest.Recorder {
	t.Helper()
	return envoytest.Record(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if answer == nil {
			w.Header().Set("content-type", "application/json")
			_, _ = io.WriteString(w, `{"ok":true}`)
			return
		}
		answer(w, r, n)
	})
}

// answerJSON answers with status and a JSON body (and x-from: cs).
func answerJSON(status int, body string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("content-type", "application/json")
		w.Header().Set("x-from", "cs")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// echoUpstream is the Echo upstream with a hit counter.
type echoUpstream struct {
	*httptest.Server
	hits atomic.Int32
}

func startEchoUpstream(t *testing.T) *echoUpstream {
	t.Helper()
	u := &echoUpstream{}
	echo := envoytest.Echo()
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		echo.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// fill replaces each {{KEY}} in cfg; kv is KEY, value pairs.
func fill(cfg string, kv ...string) string {
	for i := 0; i+1 < len(kv); i += 2 {
		cfg = strings.ReplaceAll(cfg, "{{"+kv[i]+"}}", kv[i+1])
	}
	return cfg
}

// startBehind starts the harness in front of up.
func startBehind(t *testing.T, cfg string, up *echoUpstream) *envoytest.Harness {
	t.Helper()
	return envoytest.Start(t, cfg, envoytest.Options{Upstream: up.URL})
}

func wantStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, want, body)
	}
}

// wantHeaders checks headers a callout server received.
func wantHeaders(t *testing.T, what string, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s header %s = %q, want %q", what, k, got, v)
		}
	}
}

// wantEchoHeaders checks headers the upstream received.
func wantEchoHeaders(t *testing.T, e envoytest.Echoed, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := e.Header(k); got != v {
			t.Errorf("upstream header %s = %q, want %q", k, got, v)
		}
	}
}

// configProblems returns the problems of a config the loader refused.
func configProblems(t *testing.T, err error) []flows.FieldError {
	t.Helper()
	if err == nil {
		t.Fatal("config loaded, want a config error")
	}
	var ce *flows.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("want *flows.ConfigError, got %T: %v", err, err)
	}
	return ce.Problems
}

// wantProblem fails unless one problem is at path with a reason
// containing every fragment.
func wantProblem(t *testing.T, probs []flows.FieldError, path string, fragments ...string) {
	t.Helper()
	for _, p := range probs {
		if string(p.Path) != path {
			continue
		}
		ok := true
		for _, f := range fragments {
			ok = ok && strings.Contains(p.Reason, f)
		}
		if ok {
			return
		}
	}
	t.Errorf("no problem at %s containing %q; got %v", path, fragments, probs)
}

// ---------------------------------------------------------------------------
// Static URL. url is required; the path and query as written reach
// the callout server.

const staticURLConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: static-url
        paths: ["/static-url"]
        strip_path: false
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/static/a%2Fb/c%20d?a=1&b=two&b=three"
`

func TestStaticURLSentAsConfigured(t *testing.T) {
	cs := startRecServer(t, nil)
	up := startEchoUpstream(t)
	h := startBehind(t, fill(staticURLConfig, "CS", cs.URL), up)

	// The client's own path and query must not leak into the static URL
	// (query.forward and headers.forward default to false).
	resp, body := h.Get(t, "/static-url/sub?client=1&a=9")
	wantStatus(t, resp, body, 200)
	if cs.Count() != 1 {
		t.Fatalf("callout server saw %d requests, want 1", cs.Count())
	}
	hit := cs.Last(t)
	if hit.Method != "GET" {
		t.Errorf("callout method %s, want GET (default)", hit.Method)
	}
	if want := "/static/a%2Fb/c%20d?a=1&b=two&b=three"; hit.URI != want {
		t.Errorf("callout request URI %q, want %q (as configured)", hit.URI, want)
	}
	if hit.Path != "/static/a/b/c d" {
		t.Errorf("callout decoded path %q", hit.Path)
	}
	e := envoytest.DecodeEcho(t, body)
	if e.Path != "/static-url/sub" || e.Query != "client=1&a=9" {
		t.Errorf("upstream got %s?%s, want the client's /static-url/sub?client=1&a=9", e.Path, e.Query)
	}
	if up.hits.Load() != 1 {
		t.Errorf("upstream hits %d, want 1", up.hits.Load())
	}

	// url is required, and a static url must be an absolute http(s) URL; a
	// refused reload keeps the old config serving.
	noURL := strings.Replace(fill(staticURLConfig, "CS", cs.URL),
		`url: "`+cs.URL+`/static/a%2Fb/c%20d?a=1&b=two&b=three"`, `method: GET`, 1)
	probs := configProblems(t, h.Reload(noURL))
	wantProblem(t, probs, "services[0].routes[0].plugins[0].config.callouts[0].request.url", "required")
	relative := strings.Replace(fill(staticURLConfig, "CS", cs.URL), cs.URL+"/static", "/static", 1)
	probs = configProblems(t, h.Reload(relative))
	wantProblem(t, probs, "services[0].routes[0].plugins[0].config.callouts[0].request.url", "http or https URL")

	resp, body = h.Get(t, "/static-url")
	wantStatus(t, resp, body, 200)
	if cs.Count() != 2 || cs.Last(t).URI != "/static/a%2Fb/c%20d?a=1&b=two&b=three" {
		t.Errorf("after refused reloads: callout hits %d, last %q; want the old config still calling", cs.Count(), cs.Last(t).URI)
	}
}

// ---------------------------------------------------------------------------
// All callout state is under kong.ctx.shared.callouts.<name>:
// request.params, request.retries, request.n_retries, caching, response.

const contextConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: ctx
        paths: ["/ctx"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/ctx?k=v"
                    method: POST
                    headers:
                      custom:
                        X-Custom: cv
                    query:
                      custom:
                        extra: e1
                    error:
                      on_error: retry
                      retries: 2
                      http_statuses: [500]
                  response:
                    body:
                      decode: true
                  cache:
                    bypass: true
              upstream:
                by_lua: |
                  local c = kong.ctx.shared.callouts.c
                  local p = c.request.params
                  kong.service.request.set_header("X-Params", table.concat({ p.method, p.url,
                    tostring(p.headers["X-Custom"]), tostring(p.query.extra) }, "|"))
                  local r1 = c.request.retries[1] or {}
                  kong.service.request.set_header("X-Retries", table.concat({ tostring(c.request.n_retries),
                    tostring(#c.request.retries), tostring(r1.reason), tostring(r1.http_code) }, "|"))
                  kong.service.request.set_header("X-Caching", tostring(c.caching.bypass))
                  kong.service.request.set_header("X-Resp", table.concat({ tostring(c.response.status),
                    tostring(c.response.headers["x-from"]), tostring(c.response.body.ok), tostring(c.response.body.n) }, "|"))
`

func TestCalloutContextInKongCtxShared(t *testing.T) {
	// First attempt 500 (listed in http_statuses: one retry), then 200.
	cs := startRecServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			answerJSON(500, `{"err":"busy"}`)(w, r, n)
			return
		}
		answerJSON(200, `{"ok":true,"n":7}`)(w, r, n)
	})
	up := startEchoUpstream(t)
	h := startBehind(t, fill(contextConfig, "CS", cs.URL), up)

	resp, body := h.Get(t, "/ctx")
	wantStatus(t, resp, body, 200)
	hits := cs.All()
	if len(hits) != 2 {
		t.Fatalf("callout server saw %d requests, want 2 (first + 1 retry)", len(hits))
	}
	for i, hit := range hits {
		if hit.Method != "POST" || hit.Path != "/ctx" || hit.Query != "extra=e1&k=v" || hit.Header.Get("X-Custom") != "cv" {
			t.Errorf("callout attempt %d: %s %s?%s X-Custom=%q", i+1, hit.Method, hit.Path, hit.Query, hit.Header.Get("X-Custom"))
		}
	}
	e := envoytest.DecodeEcho(t, body)
	wantEchoHeaders(t, e, map[string]string{
		"X-Params":  "POST|" + cs.URL + "/ctx?k=v|cv|e1",
		"X-Retries": "1|1|code|500",
		"X-Caching": "true",
		"X-Resp":    "200|cs|true|7",
	})
}

// ---------------------------------------------------------------------------
// Plugin scoping (most specific instance wins: route+service,
// route, service, global; consumer scope refused) and priority 812 (after
// pre-function, before post-function, whatever the file order).

const scopeConfig = `_format_version: "3.0"
services:
  - name: s1
    url: http://127.0.0.1:1
    plugins:
      - name: request-callout
        config: {{SERVICE}}
    routes:
      - name: r-route
        paths: ["/scoped/route"]
        strip_path: false
        plugins:
          - name: request-callout
            config: {{ROUTE}}
      - name: r-service
        paths: ["/scoped/service"]
        strip_path: false
      - name: r-top
        paths: ["/scoped/top"]
        strip_path: false
      - name: r-routesvc
        paths: ["/scoped/routesvc"]
        strip_path: false
  - name: s2
    url: http://127.0.0.1:1
    routes:
      - name: r-global
        paths: ["/scoped/global"]
        strip_path: false
plugins:
  - name: request-callout
    config: {{GLOBAL}}
  - name: request-callout
    route: r-top
    config: {{TOP}}
  - name: request-callout
    route: r-routesvc
    config: {{TOP}}
  - name: request-callout
    route: r-routesvc
    service: s1
    config: {{ROUTESVC}}
`

func scopedCallout(cs, scope string) string {
	return `{callouts: [{name: c, request: {url: "` + cs + `/` + scope + `"}}], upstream: {headers: {custom: {X-Scope: ` + scope + `}}}}`
}

func TestMostSpecificPluginScopeWins(t *testing.T) {
	cs := startRecServer(t, nil)
	up := startEchoUpstream(t)
	cfg := fill(scopeConfig,
		"SERVICE", scopedCallout(cs.URL, "service"),
		"ROUTE", scopedCallout(cs.URL, "route"),
		"GLOBAL", scopedCallout(cs.URL, "global"),
		"TOP", scopedCallout(cs.URL, "top"),
		"ROUTESVC", scopedCallout(cs.URL, "routesvc"))
	h := startBehind(t, cfg, up)

	for _, tc := range []struct{ path, want string }{
		{"/scoped/route", "route"},       // route plugin beats service and global
		{"/scoped/service", "service"},   // service plugin beats global
		{"/scoped/top", "top"},           // top-level route: beats service and global
		{"/scoped/routesvc", "routesvc"}, // route+service beats route
		{"/scoped/global", "global"},     // service without plugins: global
		{"/no/route/here", "global"},     // no route: global plugins only
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			before := cs.Count()
			resp, body := h.Get(t, tc.path)
			wantStatus(t, resp, body, 200)
			if n := cs.Count() - before; n != 1 {
				t.Fatalf("%d callouts, want exactly 1 (one instance per plugin name)", n)
			}
			if got := cs.Last(t).Path; got != "/"+tc.want {
				t.Errorf("callout went to %s, want /%s", got, tc.want)
			}
			e := envoytest.DecodeEcho(t, body)
			if e.Path != tc.path || e.Header("X-Scope") != tc.want {
				t.Errorf("upstream got %s with X-Scope %q, want %s and %q", e.Path, e.Header("X-Scope"), tc.path, tc.want)
			}
		})
	}

	// Consumer and consumer-group scopes: sidecall has no consumers, so a
	// consumer-scoped request-callout is a config error, not a silent skip.
	consumer := cfg + `  - name: request-callout
    consumer: alice
    config: ` + scopedCallout(cs.URL, "consumer") + "\n"
	probs := configProblems(t, h.Reload(consumer))
	wantProblem(t, probs, "plugins[4].consumer", "not supported")
}

const orderConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: order
        paths: ["/order"]
        plugins:
          - name: post-function
            config:
              access:
                - |
                  local all = kong.ctx.shared.callouts
                  local c = all and all.c
                  kong.service.request.set_header("X-Post-Saw",
                    c and (tostring(c.response.status) .. ":" .. tostring(c.response.body.v)) or "nothing")
                  kong.service.request.set_header("X-Post-Early", "late")
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/order"
                    headers:
                      forward: true
                      custom:
                        X-Shared-Pre: '$(shared.pre)'
                  response:
                    body:
                      decode: true
              upstream:
                headers:
                  custom:
                    X-Callout-Saw-Pre: '$(headers["x-pre"])'
          - name: pre-function
            config:
              access:
                - |
                  kong.service.request.set_header("X-Pre", "from-pre")
                  kong.ctx.shared.pre = "shared-pre"
                  kong.service.request.set_header("X-Pre-Saw", kong.ctx.shared.callouts == nil and "no-callouts" or "callouts")
`

func TestRunsAfterPreFunctionBeforePostFunction(t *testing.T) {
	cs := startRecServer(t, answerJSON(200, `{"v":"cv"}`))
	up := startEchoUpstream(t)
	h := startBehind(t, fill(orderConfig, "CS", cs.URL), up)

	resp, body := h.Get(t, "/order", "X-Client", "c1")
	wantStatus(t, resp, body, 200)
	if cs.Count() != 1 {
		t.Fatalf("callout server saw %d requests, want 1", cs.Count())
	}
	// pre-function (1000000) ran before request-callout (812): its header
	// and kong.ctx.shared value reached the callout.
	hit := cs.Last(t)
	wantHeaders(t, "callout", hit.Header, map[string]string{
		"X-Client":     "c1",
		"X-Pre":        "from-pre",
		"X-Shared-Pre": "shared-pre",
	})
	// post-function (-1000) ran after it: the callout did not see its header.
	if v := hit.Header.Get("X-Post-Early"); v != "" {
		t.Errorf("callout saw post-function's header X-Post-Early=%q: post-function ran first", v)
	}
	e := envoytest.DecodeEcho(t, body)
	wantEchoHeaders(t, e, map[string]string{
		"X-Pre-Saw":         "no-callouts", // no callout had run before pre-function
		"X-Callout-Saw-Pre": "from-pre",
		"X-Post-Saw":        "200:cv", // post-function read the callout's result
		"X-Post-Early":      "late",
	})
}

// A static url's query reaches the callout server as written when
// nothing customises it: no pair with ';' dropped, no '=' added to a flag,
// no sorting, no %20 turned into '+'.
func TestStaticURLQueryKeptAsWritten(t *testing.T) {
	cs := startRecServer(t, nil)
	up := startEchoUpstream(t)
	for _, q := range []string{"list=a;b&k=v", "flag&x=1", "z=1&a=x%20y"} {
		t.Run(q, func(t *testing.T) {
			cfg := strings.Replace(fill(staticURLConfig, "CS", cs.URL), "a=1&b=two&b=three", q, 1)
			h := startBehind(t, cfg, up)
			resp, body := h.Get(t, "/static-url")
			wantStatus(t, resp, body, 200)
			if want := "/static/a%2Fb/c%20d?" + q; cs.Last(t).URI != want {
				t.Errorf("callout request URI %q, want %q (as configured)", cs.Last(t).URI, want)
			}
		})
	}
}

// kong.response.set_header in a callout's by_lua reaches the client even
// when request-callout is the route's only plugin: the plugin asks Envoy
// for the response headers.
func TestResponseHeaderSetInByLuaReachesClient(t *testing.T) {
	cs := startRecServer(t, answerJSON(200, `{"v":"cv"}`))
	up := startEchoUpstream(t)
	cfg := fill(`_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: only-callout
        paths: ["/only"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/c"
                    by_lua: kong.response.set_header("X-From-Request-Lua", "req")
                  response:
                    body: {decode: true}
                    by_lua: |
                      kong.response.set_header("X-From-Response-Lua", kong.ctx.shared.callouts.c.response.body.v)
`, "CS", cs.URL)
	h := startBehind(t, cfg, up)
	resp, body := h.Get(t, "/only")
	wantStatus(t, resp, body, 200)
	if resp.Header.Get("x-upstream") != "echo" {
		t.Fatalf("the answer did not come from the upstream: %s", body)
	}
	for k, v := range map[string]string{"X-From-Request-Lua": "req", "X-From-Response-Lua": "cv"} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("client response header %s = %q, want %q", k, got, v)
		}
	}
	if e := envoytest.DecodeEcho(t, body); e.Header("X-From-Request-Lua") != "" {
		t.Error("a response header was sent upstream")
	}
}
