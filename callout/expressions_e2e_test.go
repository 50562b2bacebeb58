package callout_test

// End-to-end tests of $(...) expressions in callout and upstream values.

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/envoy"
	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/plugins"
)

// ---------------------------------------------------------------------------
// Headers, query_params, uri_captures (named and positional) and
// shared are readable in expressions, on the fast path and in Lua.

const varsConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: vars
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

func TestExpressionsReadRequestVariables(t *testing.T) {
	cs := startRecServer(t, nil)
	up := startEchoUpstream(t)
	h := startBehind(t, fill(varsConfig, "CS", cs.URL), up)

	resp, body := h.Get(t, "/users/42/profile?user=alice", "X-In", "hello", "X-Multi", "m1", "X-Multi", "m2")
	wantStatus(t, resp, body, 200)
	if cs.Count() != 1 {
		t.Fatalf("callout server saw %d requests, want 1", cs.Count())
	}
	hit := cs.Last(t)
	if hit.Path != "/vars/42" {
		t.Errorf("callout path %q, want /vars/42 (uri_captures in url)", hit.Path)
	}
	wantHeaders(t, "callout", hit.Header, map[string]string{
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
	wantEchoHeaders(t, e, map[string]string{"X-Up-Vars": "42|profile|alice|hello|t-9"})
}

// ---------------------------------------------------------------------------
// $(expr) renders the value as a string; nil and false render "",
// literal text is kept as is, several placeholders are concatenated.

const renderConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: render
        paths: ["/render"]
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

func TestExpressionRendering(t *testing.T) {
	cs := startRecServer(t, nil)
	up := startEchoUpstream(t)
	h := startBehind(t, fill(renderConfig, "CS", cs.URL), up)

	resp, body := h.Get(t, "/render?b=B", "X-A", "A")
	wantStatus(t, resp, body, 200)
	hit := cs.Last(t)
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
	wantHeaders(t, "callout", hit.Header, map[string]string{"X-Concat": "id=A;q=B"})
}

// ---------------------------------------------------------------------------
// A value starting with '#' is a Lua statement in Kong's templates;
// $("#...") is how to write the literal. sidecall renders the wrapped form
// and refuses the raw one at load (callout/script.go, flows/expr doc).

const hashConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: hash
        paths: ["/hash"]
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

func TestHashAndDollarLiterals(t *testing.T) {
	cs := startRecServer(t, nil)
	up := startEchoUpstream(t)
	good := fill(hashConfig, "CS", cs.URL, "HDR", `$("#tag")`, "UP", `$("#up")`)
	h := startBehind(t, good, up)

	resp, body := h.Get(t, "/hash?n=7")
	wantStatus(t, resp, body, 200)
	hit := cs.Last(t)
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
	wantHeaders(t, "callout", hit.Header, map[string]string{"X-Hash": "#tag"})
	wantEchoHeaders(t, envoytest.DecodeEcho(t, body), map[string]string{"X-Up-Hash": "#up"})

	// A raw value starting with '#' is refused at load, pointing at $("#...").
	cfgPath := "services[0].routes[0].plugins[0].config."
	probs := configProblems(t, h.Reload(fill(hashConfig, "CS", cs.URL, "HDR", `#tag`, "UP", `#up`)))
	wantProblem(t, probs, cfgPath+"callouts[0].request.headers.custom.X-Hash", `$("#tag")`)
	wantProblem(t, probs, cfgPath+"upstream.headers.custom.X-Up-Hash", `$("#up")`)
	// Also with a placeholder after the '#' (Penlight would run the line).
	probs = configProblems(t, h.Reload(fill(hashConfig, "CS", cs.URL, "HDR", `#$(query_params.n)`, "UP", `$("#up")`)))
	wantProblem(t, probs, cfgPath+"callouts[0].request.headers.custom.X-Hash", `$("#`)

	// The refused reloads left the good config serving.
	resp, body = h.Get(t, "/hash?n=8")
	wantStatus(t, resp, body, 200)
	if cs.Count() != 2 || cs.Last(t).Header.Get("X-Hash") != "#tag" {
		t.Errorf("after refused reloads: %d callout hits, X-Hash %q", cs.Count(), cs.Last(t).Header.Get("X-Hash"))
	}
}

// ---------------------------------------------------------------------------
// $(a or b or "default") picks the first value that is not nil
// (nor false).

const fallbackConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: fallback
        paths: ["/fallback"]
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

func TestExpressionFallbackWithOr(t *testing.T) {
	cs := startRecServer(t, answerJSON(200, `{"present":"p"}`))
	up := startEchoUpstream(t)
	h := startBehind(t, fill(fallbackConfig, "CS", cs.URL), up)

	for _, tc := range []struct {
		name    string
		path    string
		headers []string
		want    string
	}{
		{"first", "/fallback?b=fromquery", []string{"X-A", "fromheader"}, "fromheader"},
		{"second", "/fallback?b=fromquery", nil, "fromquery"},
		{"default", "/fallback", nil, "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := cs.Count()
			resp, body := h.Get(t, tc.path, tc.headers...)
			wantStatus(t, resp, body, 200)
			if cs.Count() != before+1 {
				t.Fatalf("callout hits %d, want %d", cs.Count(), before+1)
			}
			wantHeaders(t, "callout", cs.Last(t).Header, map[string]string{"X-Pick": tc.want, "X-False": "after-false"})
			wantEchoHeaders(t, envoytest.DecodeEcho(t, body), map[string]string{"X-Up-Pick": "p", "X-Up-Default": "dflt"})
		})
	}
}

// ---------------------------------------------------------------------------
// A runtime error while rendering an expression is a 500 (JSON
// error) for that request; nothing further is sent.

const exprErrorConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: expr-url
        paths: ["/expr/url"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: '{{CS}}/id/$(headers["x-id"]:lower())'
      - name: expr-body
        paths: ["/expr/body"]
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
      - name: expr-upstream
        paths: ["/expr/upstream"]
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

func TestExpressionRuntimeErrorIs500(t *testing.T) {
	cs := startRecServer(t, answerJSON(200, `{"obj":{"deeper":"d"}}`))
	up := startEchoUpstream(t)
	h := startBehind(t, fill(exprErrorConfig, "CS", cs.URL), up)

	for _, tc := range []struct {
		name      string
		good, bad *http.Request
		goodHit   string // callout path+query of the good request
		want      map[string]string
		badCalls  int // callout requests the bad request makes
	}{
		{name: "callout url",
			good: h.Request(t, "GET", "/expr/url", "", "X-Id", "ABC"), bad: h.Request(t, "GET", "/expr/url", ""),
			goodHit: "/id/abc"},
		{name: "callout body",
			good: h.Request(t, "GET", "/expr/body?n=41", ""), bad: h.Request(t, "GET", "/expr/body?n=x", ""),
			goodHit: "/body"},
		{name: "upstream header after the callout",
			good: h.Request(t, "GET", "/expr/upstream?k=obj", ""), bad: h.Request(t, "GET", "/expr/upstream?k=nothing", ""),
			goodHit: "/up", want: map[string]string{"X-Deep": "d"}, badCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The same route works when the expression can be evaluated.
			calls, ups := cs.Count(), up.hits.Load()
			resp, body := h.Do(t, tc.good)
			wantStatus(t, resp, body, 200)
			if cs.Count() != calls+1 || up.hits.Load() != ups+1 {
				t.Fatalf("good request: callout hits +%d, upstream hits +%d; want +1, +1", cs.Count()-calls, up.hits.Load()-ups)
			}
			if hit := cs.Last(t); !strings.HasPrefix(hit.URI, tc.goodHit) {
				t.Errorf("good request: callout URI %q, want %q", hit.URI, tc.goodHit)
			}
			if tc.goodHit == "/body" {
				if hit := cs.Last(t); hit.Body != `{"next":"42"}` {
					t.Errorf("good request: callout body %s", hit.Body)
				}
			}
			wantEchoHeaders(t, envoytest.DecodeEcho(t, body), tc.want)

			calls, ups = cs.Count(), up.hits.Load()
			resp, body = h.Do(t, tc.bad)
			wantStatus(t, resp, body, 500)
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
			if n := cs.Count() - calls; n != tc.badCalls {
				t.Errorf("callout server called %d times, want %d", n, tc.badCalls)
			}
		})
	}
}

// uri_captures are filled when Envoy names the route (xds.route_name, what
// the shipped Envoy config sends), not only when sidecall matches paths
// itself.
func TestURICapturesWhenEnvoyNamesTheRoute(t *testing.T) {
	cs := startRecServer(t, nil)
	up := startEchoUpstream(t)
	h := envoytest.Start(t, fill(varsConfig, "CS", cs.URL), envoytest.Options{Upstream: up.URL,
		Envoy: func(c *envoy.Config) {
			c.Route = func(*http.Request) envoy.RouteSettings { return envoy.RouteSettings{Name: "vars"} }
		}})
	resp, body := h.Get(t, "/users/42/profile?user=alice", "X-In", "hello", "X-Multi", "m1", "X-Multi", "m2")
	wantStatus(t, resp, body, 200)
	hit := cs.Last(t)
	if hit.Path != "/vars/42" {
		t.Errorf("callout path %q, want /vars/42 (uri_captures in url)", hit.Path)
	}
	wantHeaders(t, "callout", hit.Header, map[string]string{"X-Cap-Id": "42", "X-Cap-1": "42", "X-Cap-2": "profile", "X-Query": "alice"})
	wantEchoHeaders(t, envoytest.DecodeEcho(t, body), map[string]string{"X-Up-Vars": "42|profile|alice|hello|t-9"})
}

// With untrusted_lua off (sidecall --untrusted-lua off), every $( value is
// refused at load, at its path; literal values still load.
func TestUntrustedLuaOffRefusesExpressions(t *testing.T) {
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
	reg := plugins.New(plugins.Options{Version: "test"}).Registry
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
