package callout

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"gopkg.in/yaml.v3"
)

// uriServer is a callout target recording the request target of each call
// as sent on the wire.
type uriServer struct {
	*httptest.Server
	mu   sync.Mutex
	uris []string
}

func startURIServer(t *testing.T) *uriServer {
	t.Helper()
	s := &uriServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.uris = append(s.uris, r.RequestURI)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *uriServer) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.uris...)
}

func (s *uriServer) hostPort() string { return strings.TrimPrefix(s.URL, "http://") }

// buildSec compiles src with factory f (its own metrics) and returns the
// plugin and the load's warnings.
func buildSec(t *testing.T, f *factory, src string) (*Plugin, []string) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatalf("bad test yaml: %v", err)
	}
	res := flows.NewResources()
	t.Cleanup(func() { _ = res.Close() })
	rt := flows.NewLuaRuntime(lua.Options{})
	t.Cleanup(rt.Sandbox.Close)
	b := flows.NewBuilder("test.yaml")
	b.Resources, b.Runtime, b.Scope = res, rt, flows.Scope{Route: "r1", PluginID: "p1"}
	p, err := compile(b, n.Content[0], "plugins[0].config", f)
	if err != nil || b.Failed() {
		t.Fatalf("config: %v %v", err, b.Problems())
	}
	if err := p.Provision(b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.closeExtra)
	return p, b.Warnings()
}

func refusedCount(f *factory, callout, reason string) int {
	return int(testutil.ToFloat64(f.m.refused.WithLabelValues("r1", callout, reason)))
}

// access runs p for a GET with query and headers; it returns the error.
func access(p *Plugin, query string, h map[string]string) error {
	return p.Access(context.Background(), newX("GET", "/", query, h, ""))
}

// Today's reproductions: a path value cannot become userinfo, a host
// value cannot bring a port or path; neither reaches sidecall's admin port.
func TestTemplatedURLCannotReachAdmin(t *testing.T) {
	admin := startURIServer(t)
	cs := startURIServer(t)
	f := newFactory(Options{SelfAddrs: []string{admin.hostPort(), "127.0.0.1:1"}})

	p, _ := buildSec(t, f, fmt.Sprintf(`callouts: [{name: a, request: {url: 'http://%s$(headers["x-path"])'}}]`, cs.hostPort()))
	if err := access(p, "", map[string]string{"x-path": "/ok/deep"}); err != nil {
		t.Fatal(err)
	}
	if got := cs.got(); len(got) != 1 || got[0] != "/ok/deep" {
		t.Fatalf("callout server got %v", got)
	}
	he := httpErr(t, access(p, "", map[string]string{"x-path": "@" + admin.hostPort() + "/config"}))
	if he.Status != 400 || he.Message != "service callout error" || strings.Contains(he.Error(), admin.hostPort()) {
		t.Fatalf("refused url: %d %q (%v)", he.Status, he.Message, he)
	}
	if refusedCount(f, "a", "url_component") != 1 {
		t.Fatal("refusal not counted")
	}

	p, warns := buildSec(t, f, `callouts: [{name: a, request: {url: 'http://$(headers["x-tenant"]).svc.local/check'}}]`)
	if len(warns) != 1 || !strings.Contains(warns[0], "allowed_hosts is empty") {
		t.Fatalf("warnings %q", warns)
	}
	for tenant, reason := range map[string]string{admin.hostPort() + "/healthz?": "url_component", "t1": "host_not_allowed"} {
		before := refusedCount(f, "a", reason)
		if he := httpErr(t, access(p, "", map[string]string{"x-tenant": tenant})); he.Status != 400 {
			t.Fatalf("%s: %d", tenant, he.Status)
		}
		if refusedCount(f, "a", reason) != before+1 {
			t.Fatalf("%s: %s not counted", tenant, reason)
		}
	}

	// A host from a template: loopback only when listed exactly, and
	// sidecall's own listeners never.
	_, csPort, _ := strings.Cut(cs.hostPort(), ":")
	_, adminPort, _ := strings.Cut(admin.hostPort(), ":")
	p, _ = buildSec(t, f, `callouts: [{name: a, request: {url: 'http://$(headers["x-host"])/check', allowed_hosts: ["127.0.0.1"]}}]`)
	if err := access(p, "", map[string]string{"x-host": "127.0.0.1:" + csPort}); err != nil {
		t.Fatalf("an exactly listed host: %v", err)
	}
	for _, h := range []string{"127.0.0.1:" + adminPort, "0x7f.1:" + adminPort, "[::ffff:127.0.0.1]:" + adminPort, "localhost:" + adminPort} {
		before := refusedCount(f, "a", "self")
		if he := httpErr(t, access(p, "", map[string]string{"x-host": h})); he.Status != 400 || refusedCount(f, "a", "self") != before+1 {
			t.Fatalf("%s: %d, self refusals %d", h, he.Status, refusedCount(f, "a", "self")-before)
		}
	}
	p, _ = buildSec(t, f, `callouts: [{name: a, request: {url: 'http://$(headers["x-host"])/check', allowed_hosts: ["*.svc.local"]}}]`)
	for _, h := range []string{"127.0.0.1", "0x7f.1", "2130706433", "[::ffff:127.0.0.1]", "127.1", "localhost", "[::1]",
		"169.254.169.254", "metadata.google.internal", "0.0.0.0"} {
		before := refusedCount(f, "a", "forbidden_host")
		if he := httpErr(t, access(p, "", map[string]string{"x-host": h + ":" + csPort})); he.Status != 400 ||
			refusedCount(f, "a", "forbidden_host") != before+1 {
			t.Fatalf("%s: %d", h, he.Status)
		}
	}
	if got := admin.got(); len(got) != 0 {
		t.Fatalf("the admin server was reached: %v", got)
	}
	if got := cs.got(); len(got) != 2 {
		t.Fatalf("callout server got %v", got)
	}
}

// A query value stays one value; a path value stays one segment.
func TestURLValuesAreEncoded(t *testing.T) {
	cs := startURIServer(t)
	f := newFactory(Options{})
	p, _ := buildSec(t, f, fmt.Sprintf(`callouts: [{name: a, request: {url: '%s/items/$(query_params.id)/detail?user=$(query_params.user)&k=v'}}]`, cs.URL))
	if err := access(p, "user=bob%26role%3Dadmin&id=..%3F...%23", nil); err != nil {
		t.Fatal(err)
	}
	got := cs.got()
	if len(got) != 1 || got[0] != "/items/..%3F...%23/detail?user=bob%26role%3Dadmin&k=v" {
		t.Fatalf("sent %v", got)
	}
	u, _ := url.Parse(got[0])
	if q := u.Query(); len(q) != 2 || q.Get("user") != "bob&role=admin" || u.Path != "/items/..?...#/detail" {
		t.Fatalf("query %v path %q", q, u.Path)
	}
	for _, id := range []string{"..", ".", "%2e%2e%2F"} {
		err := access(p, "user=u&id="+url.QueryEscape(id), nil)
		if id == "%2e%2e%2F" {
			if err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			continue
		}
		if he := httpErr(t, err); he.Status != 400 {
			t.Fatalf("%s: %d", id, he.Status)
		}
	}
	if got := cs.got(); len(got) != 2 || got[1] != "/items/%252e%252e%252F/detail?user=u&k=v" {
		t.Fatalf("sent %v", got)
	}
	if refusedCount(f, "a", "url_component") != 2 {
		t.Fatal("dot segments not counted")
	}
}

// request.by_lua may change the url's path and query, never the written
// scheme, host or port.
func TestByLuaURLKeepsFixedParts(t *testing.T) {
	admin := startURIServer(t)
	cs := startURIServer(t)
	f := newFactory(Options{})
	for lua, ok := range map[string]bool{
		`kong.ctx.shared.callouts.a.request.params.url = "` + cs.URL + `/other?x=1"`:         true,
		`kong.ctx.shared.callouts.a.request.params.url = "` + admin.URL + `/config"`:         false,
		`kong.ctx.shared.callouts.a.request.params.url = "https://` + cs.hostPort() + `"`:    false,
		`kong.ctx.shared.callouts.a.request.params.url = "http://u:p@` + cs.hostPort() + `"`: false,
		`kong.ctx.shared.callouts.a.request.params.url = "::"`:                               false,
	} {
		p, _ := buildSec(t, f, fmt.Sprintf(`callouts: [{name: a, request: {url: "%s/a", by_lua: %q}}]`, cs.URL, lua))
		err := access(p, "", nil)
		if ok != (err == nil) {
			t.Fatalf("%s: %v", lua, err)
		}
	}
	if got := cs.got(); len(got) != 1 || got[0] != "/other?x=1" {
		t.Fatalf("callout server got %v", got)
	}
	if len(admin.got()) != 0 || refusedCount(f, "a", "fixed_part") != 3 || refusedCount(f, "a", "invalid_url") != 1 {
		t.Fatalf("admin %v, fixed_part %d, invalid_url %d", admin.got(), refusedCount(f, "a", "fixed_part"), refusedCount(f, "a", "invalid_url"))
	}
}

// A refused url fails the callout under on_error, never retried.
func TestRefusedURLFollowsOnError(t *testing.T) {
	cs := startURIServer(t)
	f := newFactory(Options{})
	base := `callouts: [{name: a, request: {url: '%s/$(headers["x-id"])', error: %s}}]`
	p, _ := buildSec(t, f, fmt.Sprintf(base, cs.URL, `{on_error: continue}`))
	x := newX("GET", "/", "", map[string]string{"x-id": ".."}, "")
	if err := p.Access(context.Background(), x); err != nil || x.Reply != nil {
		t.Fatalf("continue: %v", err)
	}
	if e := ctxEntry(t, x, "a"); e["response"] != nil {
		t.Fatalf("continue: a response was stored: %v", e)
	}
	p, _ = buildSec(t, f, fmt.Sprintf(base, cs.URL, `{on_error: retry, retries: 3, error_response_code: 502, error_response_msg: refused}`))
	x = newX("GET", "/", "", map[string]string{"x-id": ".."}, "")
	he := httpErr(t, p.Access(context.Background(), x))
	if he.Status != 502 || he.Message != "refused" || asRefused(he) == nil || mapGet(ctxEntry(t, x, "a"), "request", "n_retries") != 0 {
		t.Fatalf("retry: %d %q %v %v", he.Status, he.Message, he, ctxEntry(t, x, "a"))
	}
	if len(cs.got()) != 0 || refusedCount(f, "a", "url_component") != 2 {
		t.Fatalf("sent %v", cs.got())
	}
}

// Control characters from the client answer 400, counted and logged at
// info, nothing sent: in a templated header, url or query value and in a
// forwarded header.
func TestControlCharactersAre400(t *testing.T) {
	cs := startURIServer(t)
	f := newFactory(Options{})
	for _, c := range []struct{ cfg, query, hdr string }{
		{`{url: '%s/x', headers: {custom: {X-V: '$(query_params.v)'}}}`, "v=a%0D%0AX-Injected:%201", ""},
		{`{url: '%s/x/$(query_params.v)'}`, "v=a%0Ab", ""},
		{`{url: '%s/x', query: {custom: {q: '$(query_params.v)'}}}`, "v=a%00b", ""},
		{`{url: '%s/x', headers: {forward: true}}`, "", "a\x01b"},
	} {
		p, _ := buildSec(t, f, fmt.Sprintf(`callouts: [{name: a, request: `+c.cfg+`}]`, cs.URL))
		core, logs := observer.New(zap.DebugLevel)
		x := newX("GET", "/", c.query, map[string]string{"x-evil": c.hdr}, "")
		x.Log = zap.New(core)
		he := httpErr(t, p.Access(context.Background(), x))
		if he.Status != 400 || he.Message != "invalid character in the request" {
			t.Fatalf("%s: %d %q", c.cfg, he.Status, he.Message)
		}
		if logs.FilterLevelExact(zapcore.InfoLevel).Len() != 1 || logs.Len() != 1 {
			t.Fatalf("%s: logs %v", c.cfg, logs.All())
		}
	}
	if len(cs.got()) != 0 || refusedCount(f, "a", "bad_client_value") != 4 {
		t.Fatalf("sent %v, counted %d", cs.got(), refusedCount(f, "a", "bad_client_value"))
	}
	// A literal header value with one is a config error.
	_, probs := buildWith(t, flows.NewResources(), nil, `callouts: [{name: a, request: {url: "http://h/", headers: {custom: {X-V: "a\rb"}}}}]`)
	if len(probs) != 1 || !strings.Contains(probs[0].Reason, "control characters") {
		t.Fatalf("problems %v", probs)
	}
}

// The client going away is canceled: 499 (never sent), no error or warn
// log, attempts counted as canceled.
func TestClientCancelIsCanceled(t *testing.T) {
	got := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	f := newFactory(Options{})
	for _, retry := range []string{"{}", "{on_error: retry, retries: 2}"} {
		p, _ := buildSec(t, f, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, error: %s}}]`, srv.URL, retry))
		core, logs := observer.New(zap.DebugLevel)
		x := newX("GET", "/", "", nil, "")
		x.Log = zap.New(core)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-got; cancel() }()
		he := httpErr(t, p.Access(ctx, x))
		if he.Status != 499 || he.Status >= 500 {
			t.Fatalf("status %d (%v)", he.Status, he)
		}
		if n := logs.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zapcore.WarnLevel }).Len(); n != 0 {
			t.Fatalf("logs above info: %v", logs.All())
		}
	}
	if n := testutil.ToFloat64(f.m.requests.WithLabelValues("r1", "a", "canceled")); n != 2 {
		t.Fatalf("canceled attempts %v", n)
	}
	if n := testutil.CollectAndCount(f.m.requests); n != 1 {
		t.Fatalf("%d status classes, want only canceled", n)
	}
}

// allowed_hosts entries are checked at load; a url template must make an
// http(s) URL.
func TestAllowedHostsConfig(t *testing.T) {
	_, probs := buildWith(t, flows.NewResources(), nil, `callouts: [{name: a, request: {url: 'http://$(headers.h)/', allowed_hosts: ["ok.local", "http://x", "*", "x:80"]}},
	  {name: b, request: {url: 'ftp://h/$(headers.h)'}}, {name: c, request: {url: 'h/$(headers.h)'}}]`)
	want := map[string]bool{
		"plugins[0].config.callouts[0].request.allowed_hosts[1]": true, "plugins[0].config.callouts[0].request.allowed_hosts[2]": true,
		"plugins[0].config.callouts[0].request.allowed_hosts[3]": true, "plugins[0].config.callouts[1].request.url": true,
		"plugins[0].config.callouts[2].request.url": true,
	}
	for _, p := range probs {
		if !want[string(p.Path)] {
			t.Errorf("unexpected problem %v", p)
		}
		delete(want, string(p.Path))
	}
	if len(want) != 0 {
		t.Errorf("missing problems at %v (got %v)", want, probs)
	}
	_, warns := buildSec(t, newFactory(Options{}), `callouts: [{name: a, request: {url: 'http://h/$(headers.h)', allowed_hosts: [x.local]}}]`)
	if len(warns) != 1 || !strings.Contains(warns[0], "allowed_hosts has no effect") {
		t.Fatalf("warnings %q", warns)
	}
}
