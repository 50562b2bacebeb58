package callout

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecall/sidecall/flows"
	"gopkg.in/yaml.v3"
)

// seedConfig takes a seed's plugin object ({"name":..., "config": {...}})
// and returns its config as YAML text, with the seed URL replaced.
func seedConfig(t *testing.T, plugin string, urls map[string]string) string {
	t.Helper()
	for from, to := range urls {
		plugin = strings.ReplaceAll(plugin, from, to)
	}
	var m struct {
		Name   string    `yaml:"name"`
		Config yaml.Node `yaml:"config"`
	}
	if err := yaml.Unmarshal([]byte(plugin), &m); err != nil {
		t.Fatal(err)
	}
	if m.Name != "request-callout" {
		t.Fatalf("seed plugin name %q", m.Name)
	}
	out, err := yaml.Marshal(&m.Config)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

const mocky = "https://run.mocky.io/v3/3d380788-e25f-4101-970b-70e95eacf892"

const seedToken = `{
	"name": "request-callout",
	"config": {
		"callouts": [
			{
				"name": "auth1",
				"request": {
					"url": "https://run.mocky.io/v3/3d380788-e25f-4101-970b-70e95eacf892",
					"method": "GET",
					"query": {
						"forward": true
					}
				},
				"response": {
					"body": {
						"store": true,
						"decode": true
					}
				}
			}
		],
		"upstream": {
			"headers": {
				"custom": {
					"Authorization": "Bearer $(callouts.auth1.response.body.token)"
				}
			}
		}
	}
}`

// Rows 1, 7, 11, 33, 36, 44.
func TestSeedTokenInjection_Rows1_11_36(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"token": "tok-123"})
	p := build(t, seedConfig(t, seedToken, map[string]string{mocky: srv.URL + "/token"}))
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

const seedRetry = `{
	"name": "request-callout",
	"config": {
		"callouts": [
			{
				"name": "auth1",
				"request": {
					"url": "https://run.mocky.io/v3/3d380788-e25f-4101-970b-70e95eacf892",
					"method": "GET",
					"query": {
						"forward": true
					},
					"error": {
						"http_statuses": [500, 502, 503],
						"retries": 3
					}
				},
				"response": {
					"body": {
						"store": true,
						"decode": true
					}
				}
			}
		],
		"upstream": {
			"headers": {
				"custom": {
					"Authorization": "Bearer $(callouts.auth1.response.body.token)"
				}
			}
		}
	}
}`

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

// Rows 27, 30: fails twice, succeeds on the third call.
func TestSeedRetry_Rows27_30(t *testing.T) {
	srv, calls := flaky(t, 2, 503)
	p := build(t, seedConfig(t, seedRetry, map[string]string{mocky: srv.URL}))
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

// Row 27: exhausted retries answer with the fail response.
func TestSeedRetryExhausted_Row27(t *testing.T) {
	srv, calls := flaky(t, 100, 500)
	p := build(t, seedConfig(t, seedRetry, map[string]string{mocky: srv.URL}))
	he := httpErr(t, p.Access(context.Background(), newX("GET", "/", "", nil, "")))
	if he.Status != 400 || he.Message != "service callout error" {
		t.Fatalf("got %d %q", he.Status, he.Message)
	}
	if calls.Load() != 4 {
		t.Fatalf("calls = %d, want 1 + 3 retries", calls.Load())
	}
}

const seedCache = `{
	"name": "request-callout",
	"config": {
		"callouts": [
			{
				"name": "auth1",
				"request": {
					"url": "https://run.mocky.io/v3/3d380788-e25f-4101-970b-70e95eacf892",
					"method": "GET",
					"query": {
						"forward": true
					},
					"error": {
						"http_statuses": [500, 502, 503],
						"retries": 3
					}
				},
				"response": {
					"body": {
						"store": true,
						"decode": true
					}
				}
			}
		],
		"upstream": {
			"headers": {
				"custom": {
					"Authorization": "Bearer $(callouts.auth1.response.body.token)"
				}
			}
		},
		"cache": {
			"strategy": "memory",
			"cache_ttl": 360
		}
	}
}`

// Rows 49-51, 54: the second request makes no call; another query is a miss.
func TestSeedCacheMemory_Rows50_51(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"token": "cached"})
	p := build(t, seedConfig(t, seedCache, map[string]string{mocky: srv.URL}))
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

const seedAggregate = `{
	"name": "request-callout",
	"config": {
		"callouts": [
			{
				"name": "c1",
				"request": {
					"url": "http://httpbin.org/uuid",
					"method": "GET"
				},
				"response": {
					"body": {
						"decode": true
					}
				}
			},
			{
				"name": "c2",
				"request": {
					"url": "http://httpbin.org/anything",
					"method": "GET"
				},
				"response": {
					"body": {
						"decode": true
					}
				}
			}
		],
		"upstream": {
			"by_lua": "kong.response.exit(200, { uuid = kong.ctx.shared.callouts.c1.response.body.uuid, origin = kong.ctx.shared.callouts.c2.response.body.url})"
		}
	}
}`

// Row 48: request collapsing answers from the callouts; the seed's
// upstream.by_lua runs in the flows Lua sandbox.
func TestSeedAggregation_Row48(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/uuid":
			_, _ = w.Write([]byte(`{"uuid":"u-1"}`))
		case "/anything":
			_, _ = w.Write([]byte(`{"url":"http://x/anything"}`))
		}
	}))
	defer srv.Close()
	p := build(t, seedConfig(t, seedAggregate, map[string]string{"http://httpbin.org": srv.URL}))
	if p.waveCount() != 1 {
		t.Fatalf("c1 and c2 are independent: waves = %d", p.waveCount())
	}
	x := newX("GET", "/callout-aggregate", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if x.Reply == nil || x.Reply.Status != 200 || string(x.Reply.Body) != `{"origin":"http://x/anything","uuid":"u-1"}` {
		t.Fatalf("reply = %+v", x.Reply)
	}
}

const seedOrchestrate = `
callouts:
- name: c1
  request:
    method: GET
    url: https://jsonplaceholder.typicode.com/users/1
  response:
    body:
      decode: true
- name: c2
  request:
    method: GET
    url: https://jsonplaceholder.typicode.com/posts
    query:
      custom:
        userId: $(callouts.c1.response.body.id)
  response:
    body:
      decode: true
`

// Row 3 + implicit dependency: c2 reads c1, so c2 runs after c1.
func TestSeedOrchestration_Row3(t *testing.T) {
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
	cfg := strings.ReplaceAll(seedOrchestrate, "https://jsonplaceholder.typicode.com", srv.URL)
	p := build(t, cfg)
	if p.waveCount() != 2 {
		t.Fatalf("waves = %d, want 2", p.waveCount())
	}
	x := newX("GET", "/", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if len(order) != 2 || order[0] != "/users/1?" || order[1] != "/posts?userId=1" {
		t.Fatalf("order = %v", order)
	}
}

const seedAuth = `
callouts:
- name: auth
  request:
    url: "{vault://kcsvault/TOKEN_URL}"
    method: POST
    body:
      custom:
        grant_type: client_credentials
        client_id: "{vault://kcsvault/CLIENT_ID}"
        client_secret: "{vault://kcsvault/CLIENT_SECRET}"
        audience: https://api.apiprimer.com
  response:
    body:
      store: true
      decode: true
upstream:
  headers:
    custom:
      Authorization: Bearer $(callouts.auth.response.body.access_token)
`

// Rows 15, 16, 55: auth header injection with vault credentials (env vault;
// the seed's kcsvault prefix is a Kong vault entity, sidecall has env/file).
func TestSeedAuthHeaderInjection_Rows15_16_55(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"access_token": "jwt"})
	cfg := strings.ReplaceAll(seedAuth, "vault://kcsvault/", "vault://env/")
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
