package callout

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"
	"gopkg.in/yaml.v3"
)

// Every schema problem is reported at its path.
func TestConfigValidation(t *testing.T) {
	cases := []struct{ name, cfg, want string }{
		{"callouts required", `upstream: {}`, "plugins[0].config.callouts: at least one callout is required"},
		{"duplicate names", `callouts: [{name: a, request: {url: "http://h/"}}, {name: a, request: {url: "http://h/"}}]`, `callouts[1].name: duplicate callout name "a"`},
		{"unknown depends_on", `callouts: [{name: a, depends_on: [zz], request: {url: "http://h/"}}]`, `callouts[0].depends_on[0]: unknown callout "zz"`},
		{"cycle", `callouts: [{name: a, depends_on: [b], request: {url: "http://h/"}}, {name: b, depends_on: [a], request: {url: "http://h/"}}]`, "dependency cycle: a -> b -> a"},
		{"implicit cycle", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {x: "$(callouts.b.response.status)"}}}}, {name: b, depends_on: [a], request: {url: "http://h/"}}]`, "dependency cycle"},
		{"method pattern", `callouts: [{name: a, request: {url: "http://h/", method: get}}]`, "request.method: must match ^[A-Z]+$"},
		{"url required", `callouts: [{name: a, request: {}}]`, "request.url: required field missing"},
		{"timeouts all or none", `callouts: [{name: a, request: {url: "http://h/", http_opts: {timeouts: {connect: 10}}}}]`, "timeouts: connect, read and write must be set together"},
		{"statuses 100-999", `callouts: [{name: a, request: {url: "http://h/", error: {http_statuses: [99]}}}]`, "http_statuses[0]: must be between 100 and 999"},
		{"on_error enum", `callouts: [{name: a, request: {url: "http://h/", error: {on_error: explode}}}]`, "on_error: must be one of continue, fail, retry"},
		{"unknown field", `callouts: [{name: a, request: {url: "http://h/", nope: 1}}]`, "request.nope: unknown field"},
		{"wrong type", `callouts: [{name: a, request: {url: "http://h/", query: {forward: "yes"}}}]`, "query.forward: must be a boolean"},
		{"vault whole value", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {x: "Bearer {vault://env/T}"}}}}]`, "a vault reference must be the whole value"},
		{"template syntax", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {x: "$(callouts.a"}}}}]`, "request.headers.custom.x: unbalanced parentheses in $(...)"},
		{"template lua syntax", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {x: "$(callouts.a.)"}}}}]`, "request.headers.custom.x: lua syntax error in $(callouts.a.)"},
		{"lua syntax", `callouts: [{name: a, request: {url: "http://h/", by_lua: "local x = ("}}]`, "request.by_lua: lua syntax error"},
		{"hash literal", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {x: "#1234"}}}}]`, "starting with '#'"},
		{"cache strategy", `{callouts: [{name: a, request: {url: "http://h/"}}], cache: {strategy: disk}}`, "cache.strategy: must be one of off, memory, redis"},
		{"concurrency", `{callouts: [{name: a, request: {url: "http://h/"}}], concurrency: wild}`, "concurrency: must be parallel or sequential"},
		{"bad header name", `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {"a b": "1"}}}}]`, `invalid header name "a b"`},
		{"template root", `callouts: [{name: a, request: {url: "http://h/$(query.customer_id)"}}]`, `request.url: $(...) reads "query", which no template provides`},
		{"template unknown callout", `callouts: [{name: a, request: {url: "http://h/"}}, {name: b, request: {url: "http://h/", headers: {custom: {x: "$(callouts.nope.response.body.x)"}}}}]`,
			`callouts[1].request.headers.custom.x: $(...) reads callouts.nope, but this plugin has no callout named "nope" (it has: a, b)`},
		{"upstream unknown callout", `{callouts: [{name: a, request: {url: "http://h/"}}], upstream: {headers: {custom: {x: "$(callouts.b.response.status)"}}}}`,
			`upstream.headers.custom.x: $(...) reads callouts.b, but this plugin has no callout named "b"`},
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

// The names a template may read are accepted, locals and function
// parameters included; a Lua chunk reading a callout the plugin lacks is
// only a warning (Lua often tests for it).
func TestTemplateNamesAccepted(t *testing.T) {
	res := flows.NewResources()
	defer res.Close()
	src := `{callouts: [{name: a, request: {url: "http://h/$(query_params.id)/$(uri_captures[1])",
  by_lua: "if kong.ctx.shared.callouts.other then end",
  headers: {custom: {x: "$(headers.x)$(shared.k)$(string.upper(type(ngx.null)))$(kong.request.get_method())",
    y: "$((function(v) return v end)(tostring(math.floor(1.5))))"}}}}]}`
	b := flows.NewBuilder("test.yaml")
	b.Resources = res
	rt := flows.NewLuaRuntime(lua.Options{})
	defer rt.Sandbox.Close()
	b.Runtime = rt
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	if _, err := compile(b, n.Content[0], "plugins[0].config", testFactory); err != nil {
		t.Fatal(err)
	}
	if p := b.Problems(); len(p) != 0 {
		t.Fatalf("want no problems, got %v", p)
	}
	if w := strings.Join(b.Warnings(), "\n"); !strings.Contains(w, `callouts[0].request.by_lua: reads callouts.other, but this plugin has no callout named "other"`) {
		t.Fatalf("want a warning for callouts.other, got %q", w)
	}
}

// Several problems are all reported in one load.
func TestConfigValidationReportsAll(t *testing.T) {
	res := flows.NewResources()
	defer res.Close()
	_, probs := buildWith(t, res, nil, `callouts: [{name: a, request: {url: "http://h/", method: x}}, {name: a, request: {}}]`)
	if len(probs) < 3 {
		t.Fatalf("want >= 3 problems, got %v", probs)
	}
}

// Kong's defaults: GET, ssl_verify, fail, 2 retries, 400, store all, no cache.
func TestDefaults(t *testing.T) {
	p := build(t, `callouts: [{name: a, request: {url: "http://h/"}}]`)
	c := p.callouts[0]
	if c.cfg.Request.Method != "GET" || !c.cfg.Request.HTTPOpts.SSLVerify || c.onError != "fail" || c.retries != 2 ||
		c.cfg.Request.Error.ErrorResponseCode != 400 || !c.cfg.Response.Headers.Store || !c.cfg.Response.Body.Store {
		t.Fatalf("defaults wrong: %+v onError=%s", c.cfg, c.onError)
	}
	if p.cache != nil {
		t.Fatal("cache must be off by default")
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

// concurrency: sequential runs one callout at a time, in Kong's order.
func TestSequentialRunsOneAtATime(t *testing.T) {
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

// A depends_on chain and an implicit reference never overlap.
func TestDependsOnAndReferencesOrderCallouts(t *testing.T) {
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
	if d := fmt.Sprint(p.callouts[0].deps, p.callouts[1].deps, p.callouts[2].deps); d != "[] [] [0 1]" {
		t.Fatalf("deps = %s", d)
	}
}
