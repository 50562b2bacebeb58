package callout_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sidecall/sidecall/cmd/sidecall/wire"
	"github.com/sidecall/sidecall/envoy"
	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/flows"
)

// End-to-end tests for reference §7 rows 7, 35, 37-41 and 57: real HTTP
// requests to the envoy stand-in, a real sidecall processor with every
// plugin, real callout servers and a real upstream on 127.0.0.1. What a
// callout server received is recorded by the server; what the upstream
// received is read from the Echo answer; what the client received from the
// HTTP response. Row 42 (untrusted Lua off) is a load-time check: sidecall
// refuses the config rather than failing each request.

// rowsHit is one request a callout server received.
type rowsHit struct {
	Method string
	URI    string // RequestURI as sent on the wire
	Path   string
	Query  string
	Header http.Header
	Body   string
}

// rowsServer is a callout server recording each request.
type rowsServer struct {
	*httptest.Server
	mu   sync.Mutex
	hits []rowsHit
}

// rowsStartServer starts a callout server; answer gets the request and its
// 1-based number. A nil answer replies 200 {"ok":true}.
func rowsStartServer(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int)) *rowsServer {
	t.Helper()
	s := &rowsServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.hits = append(s.hits, rowsHit{Method: r.Method, URI: r.RequestURI, Path: r.URL.Path, Query: r.URL.RawQuery,
			Header: r.Header.Clone(), Body: string(b)})
		n := len(s.hits)
		s.mu.Unlock()
		if answer == nil {
			w.Header().Set("content-type", "application/json")
			_, _ = io.WriteString(w, `{"ok":true}`)
			return
		}
		answer(w, r, n)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *rowsServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hits)
}

func (s *rowsServer) all() []rowsHit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rowsHit(nil), s.hits...)
}

// last returns the last request, failing when there is none.
func (s *rowsServer) last(t *testing.T) rowsHit {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.hits) == 0 {
		t.Fatal("callout server saw no request")
	}
	return s.hits[len(s.hits)-1]
}

// rowsJSON answers with status and a JSON body (and x-from: cs).
func rowsJSON(status int, body string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("content-type", "application/json")
		w.Header().Set("x-from", "cs")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// rowsUpstream is the Echo upstream with a hit counter.
type rowsUpstream struct {
	*httptest.Server
	hits atomic.Int32
}

func rowsStartUpstream(t *testing.T) *rowsUpstream {
	t.Helper()
	u := &rowsUpstream{}
	echo := envoytest.Echo()
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		echo.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// rowsConfig replaces each {{KEY}} in cfg; kv is KEY, value pairs.
func rowsConfig(cfg string, kv ...string) string {
	for i := 0; i+1 < len(kv); i += 2 {
		cfg = strings.ReplaceAll(cfg, "{{"+kv[i]+"}}", kv[i+1])
	}
	return cfg
}

// rowsStart starts the harness in front of up.
func rowsStart(t *testing.T, cfg string, up *rowsUpstream) *envoytest.Harness {
	t.Helper()
	return envoytest.Start(t, cfg, envoytest.Options{Upstream: up.URL})
}

func rowsWantStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, want, body)
	}
}

// rowsWantHeaders checks headers a callout server received.
func rowsWantHeaders(t *testing.T, what string, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s header %s = %q, want %q", what, k, got, v)
		}
	}
}

// rowsWantEchoHeaders checks headers the upstream received.
func rowsWantEchoHeaders(t *testing.T, e envoytest.Echoed, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := e.Header(k); got != v {
			t.Errorf("upstream header %s = %q, want %q", k, got, v)
		}
	}
}

// rowsConfigError returns the problems of a config the loader refused.
func rowsConfigError(t *testing.T, err error) []flows.FieldError {
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

// rowsWantProblem fails unless one problem is at path with a reason
// containing every fragment.
func rowsWantProblem(t *testing.T, probs []flows.FieldError, path string, fragments ...string) {
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
// Row 7: static URL. url is required; the path and query as written reach
// the callout server.

const rowsStaticConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r7
        paths: ["/r7"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/static/a%2Fb/c%20d?a=1&b=two&b=three"
`

func TestRow7_StaticURLSentAsConfigured(t *testing.T) {
	cs := rowsStartServer(t, nil)
	up := rowsStartUpstream(t)
	h := rowsStart(t, rowsConfig(rowsStaticConfig, "CS", cs.URL), up)

	// The client's own path and query must not leak into the static URL
	// (query.forward and headers.forward default to false).
	resp, body := h.Get(t, "/r7/sub?client=1&a=9")
	rowsWantStatus(t, resp, body, 200)
	if cs.count() != 1 {
		t.Fatalf("callout server saw %d requests, want 1", cs.count())
	}
	hit := cs.last(t)
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
	if e.Path != "/r7/sub" || e.Query != "client=1&a=9" {
		t.Errorf("upstream got %s?%s, want the client's /r7/sub?client=1&a=9", e.Path, e.Query)
	}
	if up.hits.Load() != 1 {
		t.Errorf("upstream hits %d, want 1", up.hits.Load())
	}

	// url is required, and a static url must be an absolute http(s) URL; a
	// refused reload keeps the old config serving.
	noURL := strings.Replace(rowsConfig(rowsStaticConfig, "CS", cs.URL),
		`url: "`+cs.URL+`/static/a%2Fb/c%20d?a=1&b=two&b=three"`, `method: GET`, 1)
	probs := rowsConfigError(t, h.Reload(noURL))
	rowsWantProblem(t, probs, "services[0].routes[0].plugins[0].config.callouts[0].request.url", "required")
	relative := strings.Replace(rowsConfig(rowsStaticConfig, "CS", cs.URL), cs.URL+"/static", "/static", 1)
	probs = rowsConfigError(t, h.Reload(relative))
	rowsWantProblem(t, probs, "services[0].routes[0].plugins[0].config.callouts[0].request.url", "http or https URL")

	resp, body = h.Get(t, "/r7")
	rowsWantStatus(t, resp, body, 200)
	if cs.count() != 2 || cs.last(t).URI != "/static/a%2Fb/c%20d?a=1&b=two&b=three" {
		t.Errorf("after refused reloads: callout hits %d, last %q; want the old config still calling", cs.count(), cs.last(t).URI)
	}
}

// ---------------------------------------------------------------------------
// Row 35: all callout state is under kong.ctx.shared.callouts.<name>:
// request.params, request.retries, request.n_retries, caching, response.

const rowsContextConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r35
        paths: ["/r35"]
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

func TestRow35_CalloutContextInKongCtxShared(t *testing.T) {
	// First attempt 500 (listed in http_statuses: one retry), then 200.
	cs := rowsStartServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			rowsJSON(500, `{"err":"busy"}`)(w, r, n)
			return
		}
		rowsJSON(200, `{"ok":true,"n":7}`)(w, r, n)
	})
	up := rowsStartUpstream(t)
	h := rowsStart(t, rowsConfig(rowsContextConfig, "CS", cs.URL), up)

	resp, body := h.Get(t, "/r35")
	rowsWantStatus(t, resp, body, 200)
	hits := cs.all()
	if len(hits) != 2 {
		t.Fatalf("callout server saw %d requests, want 2 (first + 1 retry)", len(hits))
	}
	for i, hit := range hits {
		if hit.Method != "POST" || hit.Path != "/ctx" || hit.Query != "extra=e1&k=v" || hit.Header.Get("X-Custom") != "cv" {
			t.Errorf("callout attempt %d: %s %s?%s X-Custom=%q", i+1, hit.Method, hit.Path, hit.Query, hit.Header.Get("X-Custom"))
		}
	}
	e := envoytest.DecodeEcho(t, body)
	rowsWantEchoHeaders(t, e, map[string]string{
		"X-Params":  "POST|" + cs.URL + "/ctx?k=v|cv|e1",
		"X-Retries": "1|1|code|500",
		"X-Caching": "true",
		"X-Resp":    "200|cs|true|7",
	})
}

// ---------------------------------------------------------------------------
// Row 37: headers, query_params, uri_captures (named and positional) and
// shared are readable in expressions, on the fast path and in Lua.

const rowsVarsConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r37
        paths: ['~/users/(?<id>\d+)/(\w+)$']
        plugins:
          - name: pre-function
            config:
              access:
                - kong.ctx.shared.tenant = "t-9"
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/vars/$(uri_captures.id)"
                    headers:
                      custom:
                        X-Hdr: '$(headers["x-in"])'
                        X-Hdr-Case: '$(headers["X-In"])'
                        X-Hdr-Lua: '$(headers["x-in"]:upper())'
                        X-Multi-Type: '$(type(headers["x-multi"]))'
                        X-Multi-2: '$(headers["x-multi"][2])'
                        X-Query: '$(query_params.user)'
                        X-Query-Lua: '$(query_params["user"] .. "!")'
                        X-Cap-Id: '$(uri_captures.id)'
                        X-Cap-1: '$(uri_captures[1])'
                        X-Cap-2: '$(uri_captures[2])'
                        X-Shared: '$(shared.tenant)'
              upstream:
                headers:
                  custom:
                    X-Up-Vars: '$(uri_captures.id)|$(uri_captures[2])|$(query_params.user)|$(headers["x-in"])|$(shared.tenant)'
`

func TestRow37_ExpressionRequestVariables(t *testing.T) {
	cs := rowsStartServer(t, nil)
	up := rowsStartUpstream(t)
	h := rowsStart(t, rowsConfig(rowsVarsConfig, "CS", cs.URL), up)

	resp, body := h.Get(t, "/users/42/profile?user=alice", "X-In", "hello", "X-Multi", "m1", "X-Multi", "m2")
	rowsWantStatus(t, resp, body, 200)
	if cs.count() != 1 {
		t.Fatalf("callout server saw %d requests, want 1", cs.count())
	}
	hit := cs.last(t)
	if hit.Path != "/vars/42" {
		t.Errorf("callout path %q, want /vars/42 (uri_captures in url)", hit.Path)
	}
	rowsWantHeaders(t, "callout", hit.Header, map[string]string{
		"X-Hdr":        "hello",
		"X-Hdr-Case":   "hello",
		"X-Hdr-Lua":    "HELLO",
		"X-Multi-Type": "table",
		"X-Multi-2":    "m2",
		"X-Query":      "alice",
		"X-Query-Lua":  "alice!",
		"X-Cap-Id":     "42",
		"X-Cap-1":      "42",
		"X-Cap-2":      "profile",
		"X-Shared":     "t-9",
	})
	e := envoytest.DecodeEcho(t, body)
	rowsWantEchoHeaders(t, e, map[string]string{"X-Up-Vars": "42|profile|alice|hello|t-9"})
}

// ---------------------------------------------------------------------------
// Row 38: $(expr) renders the value as a string; nil and false render "",
// literal text is kept as is, several placeholders are concatenated.

const rowsRenderConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r38
        paths: ["/r38"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/render"
                    method: POST
                    body:
                      custom:
                        nil_alone: '$(headers["x-absent"])'
                        nil_wrapped: '[$(headers["x-absent"])]'
                        nil_query: '[$(query_params.absent)]'
                        false_lit: '<$(false)>'
                        false_expr: '<$(headers["x-a"] == "nope")>'
                        true_lit: '<$(true)>'
                        number: '$(40 + 2)'
                        fraction: '$(1 / 2)'
                        concat: 'Bearer $(headers["x-a"])-$(query_params.b)!'
                        adjacent: '$(headers["x-a"])$(query_params.b)$(headers["x-absent"])$(query_params.b)'
                        spaced: ' lead $(query_params.b) trail '
                        plain: 'plain text, no placeholders'
                    headers:
                      custom:
                        X-Concat: 'id=$(headers["x-a"]);q=$(query_params.b)'
`

func TestRow38_ExpressionRendering(t *testing.T) {
	cs := rowsStartServer(t, nil)
	up := rowsStartUpstream(t)
	h := rowsStart(t, rowsConfig(rowsRenderConfig, "CS", cs.URL), up)

	resp, body := h.Get(t, "/r38?b=B", "X-A", "A")
	rowsWantStatus(t, resp, body, 200)
	hit := cs.last(t)
	var got map[string]any
	if err := json.Unmarshal([]byte(hit.Body), &got); err != nil {
		t.Fatalf("callout body is not JSON: %v: %q", err, hit.Body)
	}
	want := map[string]string{
		"nil_alone":   "",
		"nil_wrapped": "[]",
		"nil_query":   "[]",
		"false_lit":   "<>",
		"false_expr":  "<>",
		"true_lit":    "<true>",
		"number":      "42",
		"fraction":    "0.5",
		"concat":      "Bearer A-B!",
		"adjacent":    "ABB",
		"spaced":      " lead B trail ",
		"plain":       "plain text, no placeholders",
	}
	for k, v := range want {
		s, ok := got[k].(string)
		if !ok || s != v {
			t.Errorf("callout body %s = %#v, want the string %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("callout body has %d fields, want %d: %s", len(got), len(want), hit.Body)
	}
	if ct := hit.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("callout content-type %q", ct)
	}
	rowsWantHeaders(t, "callout", hit.Header, map[string]string{"X-Concat": "id=A;q=B"})
}

// ---------------------------------------------------------------------------
// Row 39: a value starting with '#' is a Lua statement in Kong's templates;
// $("#...") is how to write the literal. sidecall renders the wrapped form
// and refuses the raw one at load (callout/script.go, flows/expr doc).

const rowsHashConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r39
        paths: ["/r39"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/hash"
                    method: POST
                    headers:
                      custom:
                        X-Hash: '{{HDR}}'
                    body:
                      custom:
                        hash: '$("#literal")'
                        hash_concat: '$("#")$(query_params.n)'
                        dollar: '$("$(not a placeholder)")'
                        dollar_plain: '$plain'
                        mid_hash: 'a#b'
              upstream:
                headers:
                  custom:
                    X-Up-Hash: '{{UP}}'
`

func TestRow39_HashAndDollarLiterals(t *testing.T) {
	cs := rowsStartServer(t, nil)
	up := rowsStartUpstream(t)
	good := rowsConfig(rowsHashConfig, "CS", cs.URL, "HDR", `$("#tag")`, "UP", `$("#up")`)
	h := rowsStart(t, good, up)

	resp, body := h.Get(t, "/r39?n=7")
	rowsWantStatus(t, resp, body, 200)
	hit := cs.last(t)
	var got map[string]any
	if err := json.Unmarshal([]byte(hit.Body), &got); err != nil {
		t.Fatalf("callout body is not JSON: %v: %q", err, hit.Body)
	}
	for k, v := range map[string]string{"hash": "#literal", "hash_concat": "#7", "dollar": "$(not a placeholder)",
		"dollar_plain": "$plain", "mid_hash": "a#b"} {
		if got[k] != v {
			t.Errorf("callout body %s = %#v, want %q", k, got[k], v)
		}
	}
	rowsWantHeaders(t, "callout", hit.Header, map[string]string{"X-Hash": "#tag"})
	rowsWantEchoHeaders(t, envoytest.DecodeEcho(t, body), map[string]string{"X-Up-Hash": "#up"})

	// A raw value starting with '#' is refused at load, pointing at $("#...").
	cfgPath := "services[0].routes[0].plugins[0].config."
	probs := rowsConfigError(t, h.Reload(rowsConfig(rowsHashConfig, "CS", cs.URL, "HDR", `#tag`, "UP", `#up`)))
	rowsWantProblem(t, probs, cfgPath+"callouts[0].request.headers.custom.X-Hash", `$("#tag")`)
	rowsWantProblem(t, probs, cfgPath+"upstream.headers.custom.X-Up-Hash", `$("#up")`)
	// Also with a placeholder after the '#' (Penlight would run the line).
	probs = rowsConfigError(t, h.Reload(rowsConfig(rowsHashConfig, "CS", cs.URL, "HDR", `#$(query_params.n)`, "UP", `$("#up")`)))
	rowsWantProblem(t, probs, cfgPath+"callouts[0].request.headers.custom.X-Hash", `$("#`)

	// The refused reloads left the good config serving.
	resp, body = h.Get(t, "/r39?n=8")
	rowsWantStatus(t, resp, body, 200)
	if cs.count() != 2 || cs.last(t).Header.Get("X-Hash") != "#tag" {
		t.Errorf("after refused reloads: %d callout hits, X-Hash %q", cs.count(), cs.last(t).Header.Get("X-Hash"))
	}
}

// ---------------------------------------------------------------------------
// Row 40: $(a or b or "default") picks the first value that is not nil
// (nor false).

const rowsFallbackConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r40
        paths: ["/r40"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/fallback"
                    headers:
                      custom:
                        X-Pick: '$(headers["x-a"] or query_params.b or "default")'
                        X-False: '$(headers["x-a"] == "never" or "after-false")'
                  response:
                    body:
                      decode: true
              upstream:
                headers:
                  custom:
                    X-Up-Pick: '$(callouts.c.response.body.missing or callouts.c.response.body.present or "none")'
                    X-Up-Default: '$(callouts.c.response.body.missing or shared.missing or "dflt")'
`

func TestRow40_ExpressionFallback(t *testing.T) {
	cs := rowsStartServer(t, rowsJSON(200, `{"present":"p"}`))
	up := rowsStartUpstream(t)
	h := rowsStart(t, rowsConfig(rowsFallbackConfig, "CS", cs.URL), up)

	for _, tc := range []struct {
		name    string
		path    string
		headers []string
		want    string
	}{
		{"first", "/r40?b=fromquery", []string{"X-A", "fromheader"}, "fromheader"},
		{"second", "/r40?b=fromquery", nil, "fromquery"},
		{"default", "/r40", nil, "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := cs.count()
			resp, body := h.Get(t, tc.path, tc.headers...)
			rowsWantStatus(t, resp, body, 200)
			if cs.count() != before+1 {
				t.Fatalf("callout hits %d, want %d", cs.count(), before+1)
			}
			rowsWantHeaders(t, "callout", cs.last(t).Header, map[string]string{"X-Pick": tc.want, "X-False": "after-false"})
			rowsWantEchoHeaders(t, envoytest.DecodeEcho(t, body), map[string]string{"X-Up-Pick": "p", "X-Up-Default": "dflt"})
		})
	}
}

// ---------------------------------------------------------------------------
// Row 41: a runtime error while rendering an expression is a 500 (JSON
// error) for that request; nothing further is sent.

const rowsErrorConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r41-url
        paths: ["/r41/url"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: '{{CS}}/id/$(headers["x-id"]:lower())'
      - name: r41-body
        paths: ["/r41/body"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/body"
                    method: POST
                    body:
                      custom:
                        next: '$(query_params.n + 1)'
      - name: r41-upstream
        paths: ["/r41/upstream"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "{{CS}}/up"
                  response:
                    body:
                      decode: true
              upstream:
                headers:
                  custom:
                    X-Deep: '$(callouts.c.response.body[query_params.k].deeper)'
`

func TestRow41_ExpressionRuntimeErrorIs500(t *testing.T) {
	cs := rowsStartServer(t, rowsJSON(200, `{"obj":{"deeper":"d"}}`))
	up := rowsStartUpstream(t)
	h := rowsStart(t, rowsConfig(rowsErrorConfig, "CS", cs.URL), up)

	for _, tc := range []struct {
		name      string
		good, bad *http.Request
		goodHit   string // callout path+query of the good request
		want      map[string]string
		badCalls  int // callout requests the bad request makes
	}{
		{name: "callout url",
			good: h.Request(t, "GET", "/r41/url", "", "X-Id", "ABC"), bad: h.Request(t, "GET", "/r41/url", ""),
			goodHit: "/id/abc"},
		{name: "callout body",
			good: h.Request(t, "GET", "/r41/body?n=41", ""), bad: h.Request(t, "GET", "/r41/body?n=x", ""),
			goodHit: "/body"},
		{name: "upstream header after the callout",
			good: h.Request(t, "GET", "/r41/upstream?k=obj", ""), bad: h.Request(t, "GET", "/r41/upstream?k=nothing", ""),
			goodHit: "/up", want: map[string]string{"X-Deep": "d"}, badCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The same route works when the expression can be evaluated.
			calls, ups := cs.count(), up.hits.Load()
			resp, body := h.Do(t, tc.good)
			rowsWantStatus(t, resp, body, 200)
			if cs.count() != calls+1 || up.hits.Load() != ups+1 {
				t.Fatalf("good request: callout hits +%d, upstream hits +%d; want +1, +1", cs.count()-calls, up.hits.Load()-ups)
			}
			if hit := cs.last(t); !strings.HasPrefix(hit.URI, tc.goodHit) {
				t.Errorf("good request: callout URI %q, want %q", hit.URI, tc.goodHit)
			}
			if tc.goodHit == "/body" {
				if hit := cs.last(t); hit.Body != `{"next":"42"}` {
					t.Errorf("good request: callout body %s", hit.Body)
				}
			}
			rowsWantEchoHeaders(t, envoytest.DecodeEcho(t, body), tc.want)

			calls, ups = cs.count(), up.hits.Load()
			resp, body = h.Do(t, tc.bad)
			rowsWantStatus(t, resp, body, 500)
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("500 content-type %q, want application/json", ct)
			}
			var msg struct {
				Message   string `json:"message"`
				RequestID string `json:"request_id"`
			}
			if err := json.Unmarshal(body, &msg); err != nil || msg.Message == "" || msg.RequestID == "" {
				t.Errorf("500 body %s, want JSON {message, request_id} (%v)", body, err)
			}
			if resp.Header.Get("x-upstream") != "" {
				t.Error("the 500 came from the upstream")
			}
			if n := up.hits.Load() - ups; n != 0 {
				t.Errorf("upstream called %d times on an expression error, want 0", n)
			}
			if n := cs.count() - calls; n != tc.badCalls {
				t.Errorf("callout server called %d times, want %d", n, tc.badCalls)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Row 57: plugin scoping (most specific instance wins: route+service,
// route, service, global; consumer scope refused) and priority 812 (after
// pre-function, before post-function, whatever the file order).

const rowsScopeConfig = `_format_version: "3.0"
services:
  - name: s1
    url: http://127.0.0.1:1
    plugins:
      - name: request-callout
        config: {{SERVICE}}
    routes:
      - name: r-route
        paths: ["/scoped/route"]
        plugins:
          - name: request-callout
            config: {{ROUTE}}
      - name: r-service
        paths: ["/scoped/service"]
      - name: r-top
        paths: ["/scoped/top"]
      - name: r-routesvc
        paths: ["/scoped/routesvc"]
  - name: s2
    url: http://127.0.0.1:1
    routes:
      - name: r-global
        paths: ["/scoped/global"]
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

func rowsScopedCallout(cs, scope string) string {
	return `{callouts: [{name: c, request: {url: "` + cs + `/` + scope + `"}}], upstream: {headers: {custom: {X-Scope: ` + scope + `}}}}`
}

func TestRow57_PluginScoping(t *testing.T) {
	cs := rowsStartServer(t, nil)
	up := rowsStartUpstream(t)
	cfg := rowsConfig(rowsScopeConfig,
		"SERVICE", rowsScopedCallout(cs.URL, "service"),
		"ROUTE", rowsScopedCallout(cs.URL, "route"),
		"GLOBAL", rowsScopedCallout(cs.URL, "global"),
		"TOP", rowsScopedCallout(cs.URL, "top"),
		"ROUTESVC", rowsScopedCallout(cs.URL, "routesvc"))
	h := rowsStart(t, cfg, up)

	for _, tc := range []struct{ path, want string }{
		{"/scoped/route", "route"},       // route plugin beats service and global
		{"/scoped/service", "service"},   // service plugin beats global
		{"/scoped/top", "top"},           // top-level route: beats service and global
		{"/scoped/routesvc", "routesvc"}, // route+service beats route
		{"/scoped/global", "global"},     // service without plugins: global
		{"/no/route/here", "global"},     // no route: global plugins only
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			before := cs.count()
			resp, body := h.Get(t, tc.path)
			rowsWantStatus(t, resp, body, 200)
			if n := cs.count() - before; n != 1 {
				t.Fatalf("%d callouts, want exactly 1 (one instance per plugin name)", n)
			}
			if got := cs.last(t).Path; got != "/"+tc.want {
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
    config: ` + rowsScopedCallout(cs.URL, "consumer") + "\n"
	probs := rowsConfigError(t, h.Reload(consumer))
	rowsWantProblem(t, probs, "plugins[4].consumer", "not supported")
}

const rowsOrderConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r57
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

func TestRow57_PriorityAfterPreFunctionBeforePostFunction(t *testing.T) {
	cs := rowsStartServer(t, rowsJSON(200, `{"v":"cv"}`))
	up := rowsStartUpstream(t)
	h := rowsStart(t, rowsConfig(rowsOrderConfig, "CS", cs.URL), up)

	resp, body := h.Get(t, "/order", "X-Client", "c1")
	rowsWantStatus(t, resp, body, 200)
	if cs.count() != 1 {
		t.Fatalf("callout server saw %d requests, want 1", cs.count())
	}
	// pre-function (1000000) ran before request-callout (812): its header
	// and kong.ctx.shared value reached the callout.
	hit := cs.last(t)
	rowsWantHeaders(t, "callout", hit.Header, map[string]string{
		"X-Client":     "c1",
		"X-Pre":        "from-pre",
		"X-Shared-Pre": "shared-pre",
	})
	// post-function (-1000) ran after it: the callout did not see its header.
	if v := hit.Header.Get("X-Post-Early"); v != "" {
		t.Errorf("callout saw post-function's header X-Post-Early=%q: post-function ran first", v)
	}
	e := envoytest.DecodeEcho(t, body)
	rowsWantEchoHeaders(t, e, map[string]string{
		"X-Pre-Saw":         "no-callouts", // no callout had run before pre-function
		"X-Callout-Saw-Pre": "from-pre",
		"X-Post-Saw":        "200:cv", // post-function read the callout's result
		"X-Post-Early":      "late",
	})
}

// Row 37: uri_captures must be filled when Envoy names the
// route (xds.route_name, what the shipped Envoy config sends; contract §3
// rule 1), not only when sidecall matches paths itself (rule 4).
func TestRow37_URICapturesWhenEnvoyNamesTheRoute(t *testing.T) {
	cs := rowsStartServer(t, nil)
	up := rowsStartUpstream(t)
	h := envoytest.Start(t, rowsConfig(rowsVarsConfig, "CS", cs.URL), envoytest.Options{Upstream: up.URL,
		Envoy: func(c *envoy.Config) {
			c.Route = func(*http.Request) envoy.RouteSettings { return envoy.RouteSettings{Name: "r37"} }
		}})
	resp, body := h.Get(t, "/users/42/profile?user=alice", "X-In", "hello", "X-Multi", "m1", "X-Multi", "m2")
	rowsWantStatus(t, resp, body, 200)
	hit := cs.last(t)
	if hit.Path != "/vars/42" {
		t.Errorf("callout path %q, want /vars/42 (uri_captures in url)", hit.Path)
	}
	rowsWantHeaders(t, "callout", hit.Header, map[string]string{"X-Cap-Id": "42", "X-Cap-1": "42", "X-Cap-2": "profile", "X-Query": "alice"})
	rowsWantEchoHeaders(t, envoytest.DecodeEcho(t, body), map[string]string{"X-Up-Vars": "42|profile|alice|hello|t-9"})
}

// Row 42: with untrusted_lua off (sidecall --untrusted-lua off), every $(
// value is refused, at load and at its path; literal values still load.
func TestRow42_UntrustedLuaOffRefusesExpressions(t *testing.T) {
	src := `_format_version: "3.0"
plugins:
  - name: request-callout
    config:
      callouts:
        - name: c
          request:
            url: "http://127.0.0.1:1/$(query_params.id)"
            headers: {custom: {x-lit: "plain #1", x-hash: "$(\"#tag\")"}}
      upstream:
        headers: {custom: {x-up: "literal"}}
        by_lua: "kong.service.request.set_header('x', '1')"
`
	reg := wire.Registry()
	_, err := flows.Load("kong.yml", []byte(src), flows.LoadOptions{Registry: reg, UntrustedLua: "off"})
	var ce *flows.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("load with untrusted_lua off: %v, want a config error", err)
	}
	got := map[string]string{}
	for _, p := range ce.Problems {
		got[string(p.Path)] = p.Reason
	}
	for path, want := range map[string]string{
		"plugins[0].config.callouts[0].request.url":                   "$(...) expressions run Lua, which is off",
		"plugins[0].config.callouts[0].request.headers.custom.x-hash": "$(...) expressions run Lua, which is off",
		"plugins[0].config.upstream.by_lua":                           "Lua is off",
	} {
		if !strings.Contains(got[path], want) {
			t.Errorf("%s: %q, want %q (all: %v)", path, got[path], want, got)
		}
	}
	if len(ce.Problems) != 3 {
		t.Errorf("%d problems, want 3 (literals must load): %v", len(ce.Problems), got)
	}
	s, err := flows.Load("kong.yml", []byte(src), flows.LoadOptions{Registry: reg})
	if err != nil {
		t.Fatalf("the same config under sandbox (the default): %v", err)
	}
	s.Close()
}

// Row 7: a static url's query reaches the callout server as written when
// nothing customises it: no pair with ';' dropped, no '=' added to a flag,
// no sorting, no %20 turned into '+'.
func TestRow7_StaticURLQueryKeptAsWritten(t *testing.T) {
	cs := rowsStartServer(t, nil)
	up := rowsStartUpstream(t)
	for _, q := range []string{"list=a;b&k=v", "flag&x=1", "z=1&a=x%20y"} {
		t.Run(q, func(t *testing.T) {
			cfg := strings.Replace(rowsConfig(rowsStaticConfig, "CS", cs.URL), "a=1&b=two&b=three", q, 1)
			h := rowsStart(t, cfg, up)
			resp, body := h.Get(t, "/r7")
			rowsWantStatus(t, resp, body, 200)
			if want := "/static/a%2Fb/c%20d?" + q; cs.last(t).URI != want {
				t.Errorf("callout request URI %q, want %q (as configured)", cs.last(t).URI, want)
			}
		})
	}
}
