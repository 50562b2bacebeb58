package callout

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecall/sidecall/flows"
	"gopkg.in/yaml.v3"
)

// exampleConfig returns the config of the request-callout in
// testdata/examples/<file> (a plugin object, or a list of plugins whose
// first is request-callout) as YAML, with each old, new pair of pairs
// replaced first.
func exampleConfig(t *testing.T, file string, pairs ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "examples", file))
	if err != nil {
		t.Fatal(err)
	}
	src := strings.NewReplacer(pairs...).Replace(string(b))
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	n := doc.Content[0]
	if n.Kind == yaml.SequenceNode {
		n = n.Content[0]
	}
	var m struct {
		Name   string    `yaml:"name"`
		Config yaml.Node `yaml:"config"`
	}
	if err := n.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if m.Name != Name {
		t.Fatalf("%s: plugin %q, want %s", file, m.Name, Name)
	}
	out, err := yaml.Marshal(&m.Config)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// The examples' token service URL.
const mocky = "https://run.mocky.io/v3/3d380788-e25f-4101-970b-70e95eacf892"

// Every request-callout example we ship loads: the schema, the $(...)
// templates and the Lua all compile.
func TestShippedExamplesLoad(t *testing.T) {
	for _, f := range []string{"../examples/request-callout-aggregation.yaml"} {
		t.Run(f, func(t *testing.T) {
			reg := flows.NewRegistry()
			Register(reg, Options{})
			snap, err := flows.LoadFile(f, flows.LoadOptions{Registry: reg})
			if err != nil {
				t.Fatal(err)
			}
			defer snap.Close()
			n := 0
			for _, r := range snap.Routes {
				for _, in := range r.Pipeline.Instances {
					if in.Name == Name {
						n++
					}
				}
			}
			if n != 2 {
				t.Fatalf("request-callout instances = %d, want 2", n)
			}
		})
	}
}

// A token from a callout goes upstream in Authorization; the client's
// query is forwarded to the callout, its headers are not.
func TestExampleTokenInjection(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"token": "tok-123"})
	p := build(t, exampleConfig(t, "token-injection.json", mocky, srv.URL+"/token"))
	x := newX("GET", "/api", "user=7&x=1", map[string]string{"authorization": "old"}, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if got := x.Request.Headers.Get("authorization"); got != "Bearer tok-123" {
		t.Fatalf("upstream authorization = %q", got)
	}
	r := rec.last(t)
	if r.Path != "/token" || r.Query != "user=7&x=1" {
		t.Fatalf("callout got %s?%s, want forwarded query", r.Path, r.Query)
	}
	if r.Header.Get("Authorization") != "" {
		t.Fatal("headers.forward defaults to false, but the client header reached the callout")
	}
	if rec.calls.Load() != 1 {
		t.Fatalf("calls = %d", rec.calls.Load())
	}
	body := ctxEntry(t, x, "auth1")["response"].(map[string]any)["body"].(map[string]any)
	if body["token"] != "tok-123" {
		t.Fatalf("decoded body %v", body)
	}
}

// flaky fails n times with status, then answers the token.
func flaky(t *testing.T, n int32, status int) (*httptest.Server, *atomic.Int32) {
	var calls atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= n {
			w.WriteHeader(status)
			return
		}
		_, _ = w.Write([]byte(`{"token":"ok"}`))
	}))
	t.Cleanup(s.Close)
	return s, &calls
}

// Retries on a listed status: fails twice, succeeds on the third call.
func TestExampleRetrySucceedsOnThirdCall(t *testing.T) {
	srv, calls := flaky(t, 2, 503)
	p := build(t, exampleConfig(t, "retry.json", mocky, srv.URL))
	x := newX("GET", "/", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 {
		t.Fatalf("calls = %d, want 3", calls.Load())
	}
	if got := x.Request.Headers.Get("authorization"); got != "Bearer ok" {
		t.Fatalf("authorization = %q", got)
	}
	req := ctxEntry(t, x, "auth1")["request"].(map[string]any)
	if req["n_retries"] != 2 {
		t.Fatalf("n_retries = %v", req["n_retries"])
	}
	rs := req["retries"].([]any)
	if len(rs) != 2 || rs[0].(map[string]any)["reason"] != "code" || rs[0].(map[string]any)["http_code"] != 503 {
		t.Fatalf("retries = %v", rs)
	}
}

// Exhausted retries answer with the fail response.
func TestExampleRetryExhaustedFails(t *testing.T) {
	srv, calls := flaky(t, 100, 500)
	p := build(t, exampleConfig(t, "retry.json", mocky, srv.URL))
	he := httpErr(t, p.Access(context.Background(), newX("GET", "/", "", nil, "")))
	if he.Status != 400 || he.Message != "service callout error" {
		t.Fatalf("got %d %q", he.Status, he.Message)
	}
	if calls.Load() != 4 {
		t.Fatalf("calls = %d, want 1 + 3 retries", calls.Load())
	}
}

// Memory cache: the second request makes no call; another query is a miss.
func TestExampleMemoryCache(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"token": "cached"})
	p := build(t, exampleConfig(t, "caching.json", mocky, srv.URL))
	for i := 0; i < 3; i++ {
		x := newX("GET", "/", "u=1", nil, "")
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if got := x.Request.Headers.Get("authorization"); got != "Bearer cached" {
			t.Fatalf("request %d: authorization = %q", i, got)
		}
	}
	if rec.calls.Load() != 1 {
		t.Fatalf("calls = %d, want 1", rec.calls.Load())
	}
	if err := p.Access(context.Background(), newX("GET", "/", "u=2", nil, "")); err != nil {
		t.Fatal(err)
	}
	if rec.calls.Load() != 2 {
		t.Fatalf("a different query must miss: calls = %d", rec.calls.Load())
	}
}

// Request collapsing: upstream.by_lua answers the client from two
// independent callouts.
func TestExampleRequestCollapsing(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/uuid":
			_, _ = w.Write([]byte(`{"uuid":"u-1"}`))
		case "/anything":
			_, _ = w.Write([]byte(`{"url":"http://x/anything"}`))
		}
	}))
	defer srv.Close()
	p := build(t, exampleConfig(t, "request-collapsing.json", "http://httpbin.org", srv.URL))
	if len(p.callouts[0].deps)+len(p.callouts[1].deps) != 0 {
		t.Fatalf("c1 and c2 are independent: deps = %v, %v", p.callouts[0].deps, p.callouts[1].deps)
	}
	x := newX("GET", "/callout-aggregate", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if x.Reply == nil || x.Reply.Status != 200 || string(x.Reply.Body) != `{"origin":"http://x/anything","uuid":"u-1"}` {
		t.Fatalf("reply = %+v", x.Reply)
	}
}

// An implicit dependency: c2 reads c1, so c2 runs after c1.
func TestExampleOrchestrationRunsInOrder(t *testing.T) {
	var order []string
	var inflight atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if inflight.Add(1) > 1 {
			t.Error("c1 and c2 in flight together")
		}
		defer inflight.Add(-1)
		time.Sleep(20 * time.Millisecond)
		order = append(order, r.URL.Path+"?"+r.URL.RawQuery)
		if r.URL.Path == "/users/1" {
			_, _ = w.Write([]byte(`{"id":1,"name":"Leanne"}`))
			return
		}
		_, _ = w.Write([]byte(`[{"userId":1,"id":1}]`))
	}))
	defer srv.Close()
	p := build(t, exampleConfig(t, "orchestration.yaml", "https://jsonplaceholder.typicode.com", srv.URL))
	if fmt.Sprint(p.callouts[0].deps, p.callouts[1].deps) != "[] [0]" {
		t.Fatalf("deps = %v, %v; want c2 after c1", p.callouts[0].deps, p.callouts[1].deps)
	}
	x := newX("GET", "/", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if len(order) != 2 || order[0] != "/users/1?" || order[1] != "/posts?userId=1" {
		t.Fatalf("order = %v", order)
	}
}

// Auth header injection with vault credentials (the env vault; the
// example's kcsvault is a Kong vault entity).
func TestExampleAuthHeaderFromVault(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"access_token": "jwt"})
	cfg := exampleConfig(t, "auth-header-injection.yaml", "vault://kcsvault/", "vault://env/")
	res := flows.NewResources()
	defer res.Close()
	p, probs := buildWith(t, res, env{"TOKEN_URL": srv.URL + "/oauth/token", "CLIENT_ID": "id-1", "CLIENT_SECRET": "s3cr3t"}, cfg)
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	x := newX("GET", "/callout-auth", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if got := x.Request.Headers.Get("authorization"); got != "Bearer jwt" {
		t.Fatalf("authorization = %q", got)
	}
	r := rec.last(t)
	if r.Method != "POST" || r.Path != "/oauth/token" || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("callout request %s %s ct=%q", r.Method, r.Path, r.Header.Get("Content-Type"))
	}
	var body map[string]string
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatal(err)
	}
	if body["client_id"] != "id-1" || body["client_secret"] != "s3cr3t" || body["grant_type"] != "client_credentials" || body["audience"] != "https://api.apiprimer.com" {
		t.Fatalf("body = %v", body)
	}
}
