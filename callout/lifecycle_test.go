package callout

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sidecall/sidecall/flows"
	"gopkg.in/yaml.v3"
)

// loadFile loads a decK file with reg's plugins and clients in res.
func loadFile(t *testing.T, reg *flows.Registry, res *flows.Resources, src string, noProvision bool) *flows.Snapshot {
	t.Helper()
	snap, err := flows.Load("kong.yml", []byte(src), flows.LoadOptions{Registry: reg, Resources: res, NoProvision: noProvision})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// globalConfig is a file whose only plugin is a global request-callout.
func globalConfig(config string) string {
	return "_format_version: \"3.0\"\nplugins:\n  - name: request-callout\n    config: " + config + "\n"
}

func globalPlugin(t *testing.T, snap *flows.Snapshot) *Plugin {
	t.Helper()
	for _, in := range snap.Global.Instances {
		if p, ok := in.Plugin.(*Plugin); ok {
			return p
		}
	}
	t.Fatal("no request-callout in the global pipeline")
	return nil
}

func resourceKeys(res *flows.Resources) []string {
	var ks []string
	res.Each(func(k string, _ io.Closer) { ks = append(ks, k) })
	sort.Strings(ks)
	return ks
}

// counter reads a counter's value from g.
func counter(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// Two registries in one process, each with its own Prometheus registry:
// both register, and each counts only its own requests.
func TestRegistriesKeepTheirOwnMetrics(t *testing.T) {
	srv := jsonServer(t, nil, 200, map[string]string{"v": "1"})
	src := globalConfig(fmt.Sprintf(`{callouts: [{name: a, request: {url: %q}}]}`, srv.URL))
	var proms []*prometheus.Registry
	for n := 1; n <= 2; n++ {
		prom := prometheus.NewRegistry()
		reg := flows.NewRegistry()
		Register(reg, Options{Metrics: prom, Version: "v"})
		res := flows.NewResources()
		snap := loadFile(t, reg, res, src, false)
		p := globalPlugin(t, snap)
		for i := 0; i < n; i++ {
			if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
				t.Fatal(err)
			}
		}
		snap.Close()
		_ = res.Close()
		proms = append(proms, prom)
	}
	for i, prom := range proms {
		got := counter(t, prom, "sidecall_callout_requests_total", map[string]string{"callout": "a", "status_class": "2xx"})
		if got != float64(i+1) {
			t.Errorf("registry %d counted %v requests, want %d", i+1, got, i+1)
		}
	}
	// Registering again with a registry that has the collectors reuses them.
	Register(flows.NewRegistry(), Options{Metrics: proms[0]})
}

// The factory builds no client; Provision takes them from Resources, and
// releasing the snapshot closes them.
func TestClientsAreBuiltByProvision(t *testing.T) {
	reg := flows.NewRegistry()
	Register(reg, Options{})
	res := flows.NewResources()
	defer res.Close()
	src := globalConfig(`{callouts: [{name: a, request: {url: "http://127.0.0.1:1/"}}, {name: b, request: {url: "http://127.0.0.1:1/b"}}], cache: {strategy: memory}}`)
	snap := loadFile(t, reg, res, src, true)
	if n := res.Len(); n != 0 {
		t.Fatalf("validation built %d clients: %v", n, resourceKeys(res))
	}
	snap.Close()
	snap = loadFile(t, reg, res, src, false)
	// One transport (a and b have the same http_opts) and one memory cache.
	if ks := resourceKeys(res); len(ks) != 2 || !strings.HasPrefix(ks[0], "callout-memory|") || !strings.HasPrefix(ks[1], "callout-transport|") {
		t.Fatalf("clients %v", ks)
	}
	p := globalPlugin(t, snap)
	if p.callouts[0].tr == nil || p.callouts[0].tr != p.callouts[1].tr || p.cache == nil {
		t.Fatal("transports or cache not resolved at load")
	}
	snap.Close()
	if n := res.Len(); n != 0 {
		t.Fatalf("%d clients left after the snapshot was released: %v", n, resourceKeys(res))
	}
}

// A memory cache with another cache_ttl is another cache; the old one is
// closed when the old snapshot is released, the shared transport is kept.
func TestCacheTTLChangeReplacesMemoryCache(t *testing.T) {
	reg := flows.NewRegistry()
	Register(reg, Options{})
	res := flows.NewResources()
	defer res.Close()
	cfg := func(ttl int) string {
		return globalConfig(fmt.Sprintf(`{callouts: [{name: a, request: {url: "http://127.0.0.1:1/"}}], cache: {strategy: memory, cache_ttl: %d}}`, ttl))
	}
	old := loadFile(t, reg, res, cfg(60), false)
	cur := loadFile(t, reg, res, cfg(120), false)
	if n := res.Len(); n != 3 {
		t.Fatalf("clients %v, want a transport and two caches", resourceKeys(res))
	}
	old.Close()
	ks := resourceKeys(res)
	if len(ks) != 2 || ks[0] != "callout-memory|64|120" {
		t.Fatalf("after releasing the old snapshot: %v", ks)
	}
	cur.Close()
}

// Options changed by request.by_lua get a transport of the plugin's own.
func TestLuaChangedOptionsUseAnotherTransport(t *testing.T) {
	srv := jsonServer(t, nil, 200, map[string]string{"v": "1"})
	lua := `kong.ctx.shared.callouts.a.request.params.timeouts = {connect = 500, read = 500, write = 500}`
	p := build(t, fmt.Sprintf(`{callouts: [{name: a, request: {url: %q, by_lua: %q}}]}`, srv.URL, lua))
	for i := 0; i < 2; i++ {
		if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
			t.Fatal(err)
		}
	}
	if len(p.extra) != 1 {
		t.Fatalf("%d extra transports, want 1", len(p.extra))
	}
	p.closeExtra()
	if len(p.extra) != 0 {
		t.Fatal("closeExtra kept transports")
	}
}

// request.params is built only when something may read it.
func TestParamsBuiltOnlyWhenRead(t *testing.T) {
	srv := jsonServer(t, nil, 200, map[string]string{"x": "1"})
	base := fmt.Sprintf(`callouts: [{name: a, request: {url: %q}, response: {body: {decode: true}}}]`, srv.URL)
	for _, c := range []struct {
		name, cfg string
		want      bool
	}{
		{"response reads only", base + "\nupstream: {headers: {custom: {X: '$(callouts.a.response.body.x)'}}}", false},
		{"template reads the request", base + "\nupstream: {headers: {custom: {X: '$(callouts.a.request.params.url)'}}}", true},
		{"template reads the callout table", base + "\nupstream: {headers: {custom: {X: '$(callouts.a and 1)'}}}", true},
		{"by_lua", base + "\nupstream: {by_lua: 'local x = 1'}", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := build(t, c.cfg)
			if p.params != c.want {
				t.Fatalf("params = %v, want %v", p.params, c.want)
			}
			x := newX("GET", "/", "", nil, "")
			if err := p.Access(context.Background(), x); err != nil {
				t.Fatal(err)
			}
			req := ctxEntry(t, x, "a")["request"].(map[string]any)
			if _, has := req["params"]; has != c.want || req["n_retries"] != 0 {
				t.Fatalf("request = %v", req)
			}
			if c.want && strings.Contains(c.cfg, "params.url") && x.Request.Headers.Get("x") != srv.URL {
				t.Fatalf("upstream header %q", x.Request.Headers.Get("x"))
			}
		})
	}

	// Another plugin of the file mentioning the callouts.
	reg := flows.NewRegistry()
	Register(reg, Options{})
	reg.Register("post-function", -1000, func(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
		return otherPlugin{}, nil
	})
	for post, want := range map[string]bool{
		`kong.service.request.set_header("x", kong.ctx.shared.callouts.a.request.params.url)`: true,
		`local s = kong.ctx.shared; kong.log.info(s)`:                                         true,
		`kong.service.request.set_header("x", kong.ctx.shared.tenant)`:                        false,
	} {
		src := globalConfig("{"+base+"}") + fmt.Sprintf("  - name: post-function\n    config: {access: [%q]}\n", post)
		snap := loadFile(t, reg, nil, src, true)
		if got := globalPlugin(t, snap).params; got != want {
			t.Errorf("with a post-function running %s: params = %v, want %v", post, got, want)
		}
		snap.Close()
	}
}

type otherPlugin struct{}

func (otherPlugin) Name() string  { return "post-function" }
func (otherPlugin) Priority() int { return -1000 }

// The request built from the compiled config is the one built from
// request.params made of it.
func TestTypedRequestMatchesParams(t *testing.T) {
	configs := []string{
		`{name: a, request: {url: "http://svc.local:8080/p?z=1&y=2&q=old", method: POST,
		  headers: {forward: true, custom: {X-Over: new, X-Del: null, Host: custom.host, Content-Length: "9", x-case: lower, X-Dup: one, x-dup: two, X-Tmpl: '$(headers["x-in"])'}},
		  query: {forward: true, custom: {q: '$(query_params.u)', z: null}},
		  body: {forward: true, decode: true, custom: {add: x, drop: null}},
		  http_opts: {ssl_verify: false, ssl_server_name: sni.local, timeouts: {connect: 10, read: 20, write: 30},
		    proxy: {http_proxy: "http://proxy.local:3128", auth_username: u, auth_password: p}}}}`,
		`{name: a, request: {url: "http://svc.local/static?list=a;b&flag&k=v%20w"}}`,
		`{name: a, request: {url: "http://svc.local/raw", method: PUT, body: {forward: true}, headers: {forward: true}}}`,
		`{name: a, request: {url: "http://svc.local/new", method: POST, body: {custom: {k: v}}, headers: {custom: {Content-Type: text/plain}}}}`,
		`{name: a, request: {url: '$(headers["x-url"])?a=1', allowed_hosts: [dyn.local], query: {forward: true}}}`,
	}
	reqs := []map[string]string{
		{"x-in": "v1", "x-over": "old", "x-del": "d", "X-CASE": "upper", "connection": "close", "te": "trailers",
			"host": "client", "content-length": "12", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			"tracestate": "a=b", "x-url": "https://dyn.local/d"},
		{"user-agent": "client-ua", "x-url": "http://dyn.local/"},
	}
	for i, co := range configs {
		p := build(t, "callouts: ["+co+"]")
		c := p.callouts[0]
		for j, h := range reqs {
			t.Run(fmt.Sprintf("config %d request %d", i, j), func(t *testing.T) {
				x := newX("POST", "/", "u=1&u=2&other=3", h, `{"keep":1,"drop":2}`)
				x.Request.Headers.Add("x-multi", "m1")
				x.Request.Headers.Add("x-multi", "m2")
				r, err := render(context.Background(), x, c)
				if err != nil {
					t.Fatal(err)
				}
				typed, err := p.sendFrom(x, c, r)
				if err != nil {
					t.Fatal(err)
				}
				entry := map[string]any{"request": map[string]any{"params": paramsTable(x, c, r)}}
				viaParams, err := p.sendFromParams(x, c, entry, r.removed)
				if err != nil {
					t.Fatal(err)
				}
				got := []any{typed.method, typed.u.String(), typed.canonQuery, typed.headers, typed.host, string(typed.body), typed.opts}
				want := []any{viaParams.method, viaParams.u.String(), viaParams.canonQuery, viaParams.headers, viaParams.host, string(viaParams.body), viaParams.opts}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("typed request\n%#v\nfrom params\n%#v", got, want)
				}
				if p.cacheKey(x, c.name, typed, entry) != p.cacheKey(x, c.name, viaParams, entry) {
					t.Fatal("cache keys differ")
				}
			})
		}
	}
}
