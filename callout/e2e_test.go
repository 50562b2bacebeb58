package callout_test

// End-to-end seed tests (issue #7): each example of the seeds
// (/work/shared/seeds/kong-request-callout-overview.md and
// kong-orchestration-article.md) as written, with its URLs pointed at local
// httptest servers, through a real HTTP client → the envoy stand-in → a real
// sidecall processor with every plugin (envoytest) → the upstream. What a
// callout server received is recorded by the server; what the upstream
// received is read from the Echo answer.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecall/sidecall/callout"
	"github.com/sidecall/sidecall/envoy/envoytest"
)

// hit is one request a callout server received.
type hit struct {
	Method, Path, Query string
	Header              http.Header
	Body                string
}

// calloutSrv is a callout target on 127.0.0.1: it records every request and
// answers with what answer returns (status, JSON body).
type calloutSrv struct {
	*httptest.Server
	mu   sync.Mutex
	hits []hit
}

func startCallout(t *testing.T, answer func(n int, r *http.Request) (int, any)) *calloutSrv {
	t.Helper()
	s := &calloutSrv{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.hits = append(s.hits, hit{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: string(b)})
		n := len(s.hits)
		s.mu.Unlock()
		status, v := answer(n, r)
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(status)
		if v != nil {
			_ = json.NewEncoder(w).Encode(v)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *calloutSrv) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hits)
}

func (s *calloutSrv) all() []hit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hit(nil), s.hits...)
}

// upstream is the Echo upstream, counting the requests it got.
func upstream(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	echo := envoytest.Echo()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		echo.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

// deckJSON wraps a seed's plugin object (JSON, verbatim) in a decK file
// (JSON, as decK accepts) with one service and a route on path.
func deckJSON(up, route, path, plugin string) string {
	return `{
	"_format_version": "3.0",
	"services": [{
		"name": "` + route + `-service",
		"url": "` + up + `",
		"routes": [{
			"name": "` + route + `",
			"paths": ["` + path + `"],
			"plugins": [
` + plugin + `
			]
		}]
	}]
}`
}

// deckYAML puts a seed's top-level plugin list (YAML, verbatim, scoped with
// route:/service:) under a decK file declaring that service and route.
func deckYAML(up, service, route, path, plugins string) string {
	return `_format_version: "3.0"
services:
  - name: ` + service + `
    url: ` + up + `
    routes:
      - name: ` + route + `
        paths: [` + path + `]
plugins:
` + plugins
}

func decodeEcho(t *testing.T, resp *http.Response, body []byte) envoytest.Echoed {
	t.Helper()
	if resp.StatusCode != 200 || resp.Header.Get("x-upstream") != "echo" {
		t.Fatalf("status %d, x-upstream %q, body %s: want the upstream's answer", resp.StatusCode, resp.Header.Get("x-upstream"), body)
	}
	var e envoytest.Echoed
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("upstream answer %s: %v", body, err)
	}
	return e
}

func replace(s string, pairs ...string) string {
	return strings.NewReplacer(pairs...).Replace(s)
}

const mocky = "https://run.mocky.io/v3/3d380788-e25f-4101-970b-70e95eacf892"

// tokenServer plays the seed's mocky.io token service: {"token": tok}.
func tokenServer(t *testing.T, tok string) *calloutSrv {
	return startCallout(t, func(int, *http.Request) (int, any) { return 200, map[string]string{"token": tok} })
}

// Overview, example 1: "A callout that requests a token upstream and
// inserts it in the upstream request."
const seedTokenInjection = `{
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

func TestE2ESeedTokenInjection(t *testing.T) {
	tok := tokenServer(t, "tok-123")
	up, ups := upstream(t)
	h := envoytest.Start(t, deckJSON(up, "api", "/api", replace(seedTokenInjection, mocky, tok.URL+"/v3/token")), envoytest.Options{Upstream: up})

	resp, body := h.Get(t, "/api/orders?user=7&x=1", "Authorization", "Bearer client")
	e := decodeEcho(t, resp, body)
	if got := e.Header("Authorization"); got != "Bearer tok-123" {
		t.Fatalf("upstream Authorization = %q, want the callout's token", got)
	}
	if e.Path != "/api/orders" || e.Query != "user=7&x=1" {
		t.Fatalf("upstream got %s?%s", e.Path, e.Query)
	}
	hs := tok.all()
	if len(hs) != 1 || ups.Load() != 1 {
		t.Fatalf("callout calls = %d, upstream calls = %d, want 1 and 1", len(hs), ups.Load())
	}
	if hs[0].Method != "GET" || hs[0].Path != "/v3/token" || hs[0].Query != "user=7&x=1" {
		t.Fatalf("callout got %s %s?%s, want GET with the client's query forwarded", hs[0].Method, hs[0].Path, hs[0].Query)
	}
	if hs[0].Header.Get("Authorization") != "" {
		t.Fatal("headers.forward defaults to false, yet the client's Authorization reached the callout")
	}
}

// Overview, example 2: "A callout that retries a failed request".
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

func TestE2ESeedRetryThreeCalls(t *testing.T) {
	// A server failing twice, then succeeding.
	srv := startCallout(t, func(n int, _ *http.Request) (int, any) {
		switch n {
		case 1:
			return 500, map[string]string{"error": "boom"}
		case 2:
			return 503, nil
		}
		return 200, map[string]string{"token": "third-time"}
	})
	up, ups := upstream(t)
	// Besides the seed, a post-function passes the callout context's retry
	// bookkeeping (reference §1: request.retries, request.n_retries) upstream.
	const showRetries = `,
	{"name": "post-function", "config": {"access": ["local r = kong.ctx.shared.callouts.auth1.request; kong.service.request.set_header('X-Retries', r.n_retries .. ' ' .. r.retries[1].reason .. ' ' .. r.retries[1].http_code .. ' ' .. r.retries[2].http_code)"]}}`
	h := envoytest.Start(t, deckJSON(up, "api", "/api", replace(seedRetry, mocky, srv.URL)+showRetries), envoytest.Options{Upstream: up})

	resp, body := h.Get(t, "/api?q=1")
	e := decodeEcho(t, resp, body)
	if got := e.Header("Authorization"); got != "Bearer third-time" {
		t.Fatalf("upstream Authorization = %q", got)
	}
	if got := e.Header("X-Retries"); got != "2 code 500 503" {
		t.Fatalf("callout context retries = %q, want 2 retries caused by codes 500 and 503", got)
	}
	if srv.count() != 3 || ups.Load() != 1 {
		t.Fatalf("callout calls = %d, upstream calls = %d, want 3 and 1", srv.count(), ups.Load())
	}
	for i, hh := range srv.all() {
		if hh.Query != "q=1" {
			t.Fatalf("attempt %d got query %q", i+1, hh.Query)
		}
	}

	// Retries exhausted (1 + 3 attempts): the client gets the callout
	// error, the upstream is not called.
	bad := startCallout(t, func(int, *http.Request) (int, any) { return 502, nil })
	if err := h.Reload(deckJSON(up, "api", "/api", replace(seedRetry, mocky, bad.URL))); err != nil {
		t.Fatal(err)
	}
	resp, body = h.Get(t, "/api")
	if resp.StatusCode != 400 || !strings.Contains(string(body), "service callout error") {
		t.Fatalf("exhausted retries: %d %s, want Kong's 400 service callout error", resp.StatusCode, body)
	}
	if bad.count() != 4 || ups.Load() != 1 {
		t.Fatalf("exhausted retries: callout calls = %d (want 4), upstream calls = %d (want still 1)", bad.count(), ups.Load())
	}
}

// Overview, example 3: "A callout that caches the result".
const seedCaching = `{
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

func TestE2ESeedCaching(t *testing.T) {
	var n atomic.Int32
	srv := startCallout(t, func(int, *http.Request) (int, any) {
		return 200, map[string]string{"token": "tok-" + strconv.Itoa(int(n.Add(1)))}
	})
	up, ups := upstream(t)
	h := envoytest.Start(t, deckJSON(up, "api", "/api", replace(seedCaching, mocky, srv.URL)), envoytest.Options{Upstream: up})

	for i := 1; i <= 2; i++ {
		resp, body := h.Get(t, "/api?user=1")
		e := decodeEcho(t, resp, body)
		if got := e.Header("Authorization"); got != "Bearer tok-1" {
			t.Fatalf("request %d: upstream Authorization = %q, want the first (cached) token", i, got)
		}
		if srv.count() != 1 {
			t.Fatalf("after request %d: callout calls = %d, want 1 (the second request makes no call)", i, srv.count())
		}
	}
	if ups.Load() != 2 {
		t.Fatalf("upstream calls = %d", ups.Load())
	}
	// The forwarded query is part of the key: another one is a miss.
	resp, body := h.Get(t, "/api?user=2")
	if e := decodeEcho(t, resp, body); e.Header("Authorization") != "Bearer tok-2" || srv.count() != 2 {
		t.Fatalf("another query: Authorization %q, calls %d; want a new call", e.Header("Authorization"), srv.count())
	}
}

// httpbin plays httpbin.org: /uuid answers {"uuid": ...}, /anything echoes
// the request with "url" the full URL it was asked for.
func httpbin(t *testing.T, uuid string) *calloutSrv {
	return startCallout(t, func(_ int, r *http.Request) (int, any) {
		switch r.URL.Path {
		case "/uuid":
			return 200, map[string]string{"uuid": uuid}
		case "/anything":
			return 200, map[string]any{"args": map[string]any{}, "method": r.Method, "origin": "127.0.0.1",
				"url": "http://" + r.Host + r.URL.RequestURI()}
		}
		return 404, map[string]string{"error": "not found"}
	})
}

// checkAggregate checks the client got the seed's aggregated JSON from
// kong.response.exit, both callouts were called once and the upstream
// never.
func checkAggregate(t *testing.T, resp *http.Response, body []byte, bin *calloutSrv, ups *atomic.Int32, uuid string) {
	t.Helper()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, body %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("content-type %q", ct)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	want := map[string]any{"uuid": uuid, "origin": bin.URL + "/anything"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("aggregated body %s, want %v", body, want)
	}
	if ups.Load() != 0 {
		t.Fatalf("upstream called %d times; kong.response.exit must short-circuit it", ups.Load())
	}
	paths := map[string]int{}
	for _, hh := range bin.all() {
		paths[hh.Method+" "+hh.Path]++
	}
	if !reflect.DeepEqual(paths, map[string]int{"GET /uuid": 1, "GET /anything": 1}) {
		t.Fatalf("callouts made: %v", paths)
	}
}

// Overview, example 4: "A 'Request Collapsing' callout".
const seedRequestCollapsing = `{
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

func TestE2ESeedRequestCollapsing(t *testing.T) {
	const uuid = "3d545847-6500-4c78-bc32-75996d23e3f6"
	bin := httpbin(t, uuid)
	up, ups := upstream(t)
	h := envoytest.Start(t, deckJSON(up, "collapse", "/collapse", replace(seedRequestCollapsing, "http://httpbin.org", bin.URL)), envoytest.Options{Upstream: up})
	resp, body := h.Get(t, "/collapse")
	checkAggregate(t, resp, body, bin, ups, uuid)
}

// Orchestration article, "Aggregation" (top-level plugin scoped to a route
// and service, YAML).
const seedAggregation = `- name: request-callout
  enabled: true
  config:
    callouts:
    - name: c1
      request:
        method: GET
        url: http://httpbin.org/uuid
      response:
        body:
          decode: true
    - name: c2
      request:
        method: GET
        url: http://httpbin.org/anything
      response:
        body:
          decode: true
    upstream:
      by_lua: kong.response.exit(200, { uuid = kong.ctx.shared.callouts.c1.response.body.uuid,
          origin = kong.ctx.shared.callouts.c2.response.body.url})
  protocols:
  - grpc
  - grpcs
  - http
  - https
  route: callout-aggregate-route
  service: callout-aggregate
`

func TestE2ESeedAggregation(t *testing.T) {
	const uuid = "0b5a3c55-4d1e-4a8e-9a51-6f0b7e3c2d11"
	bin := httpbin(t, uuid)
	up, ups := upstream(t)
	cfg := deckYAML(up, "callout-aggregate", "callout-aggregate-route", "/callout-aggregate",
		replace(seedAggregation, "http://httpbin.org", bin.URL))
	h := envoytest.Start(t, cfg, envoytest.Options{Upstream: up})
	// curl http://localhost:8000/callout-aggregate
	resp, body := h.Get(t, "/callout-aggregate")
	checkAggregate(t, resp, body, bin, ups, uuid)
}

// Orchestration article, "Orchestration".
const seedOrchestration = `- name: request-callout
  enabled: true
  config:
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
    upstream:
      by_lua: |
        local user = kong.ctx.shared.callouts.c1.response.body
        local posts = kong.ctx.shared.callouts.c2.response.body
        -- Filter posts (e.g., only those with user matching)
        local filtered_posts = {}
        for _, post in ipairs(posts) do
          if post.userId == user.id then
            table.insert(filtered_posts, post)
          end
        end
        local combined = {
          user = user,
          posts = filtered_posts
        }
        kong.response.set_header("Content-Type", "application/json")
        kong.response.exit(200, combined)
  protocols:
  - http
  - https
  route: callout-orchestrate-route
  service: callout-orchestrate
`

// The article's jsonplaceholder data (user 1 and user 1's first posts),
// plus one post of user 2.
const seedUser = `{"address":{"suite":"Apt. 556","city":"Gwenborough","zipcode":"92998-3874","street":"Kulas Light","geo":{"lng":"81.1496","lat":"-37.3159"}},"company":{"catchPhrase":"Multi-layered client-server neural-net","bs":"harness real-time e-markets","name":"Romaguera-Crona"},"website":"hildegard.org","id":1,"phone":"1-770-736-8031 x56442","email":"Sincere@april.biz","username":"Bret","name":"Leanne Graham"}`

const seedPosts = `[{"title":"sunt aut facere repellat provident occaecati excepturi optio reprehenderit","userId":1,"body":"quia et suscipit\nsuscipit recusandae consequuntur expedita et cum\nreprehenderit molestiae ut ut quas totam\nnostrum rerum est autem sunt rem eveniet architecto","id":1},{"title":"qui est esse","userId":1,"body":"est rerum tempore vitae\nsequi sint nihil reprehenderit dolor beatae ea dolores neque\nfugiat blanditiis voluptate porro vel nihil molestiae ut reiciendis\nqui aperiam non debitis possimus qui neque nisi nulla","id":2},{"title":"et ea vero quia laudantium autem","userId":2,"body":"delectus reiciendis molestiae occaecati non minima eveniet qui voluptatibus","id":11}]`

func TestE2ESeedOrchestration(t *testing.T) {
	var user map[string]any
	var posts []map[string]any
	if err := json.Unmarshal([]byte(seedUser), &user); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(seedPosts), &posts); err != nil {
		t.Fatal(err)
	}
	// The user service's answer for /users/1; its id is what c2 must use.
	var userID atomic.Int32
	userID.Store(1)
	// jsonplaceholder: /users/1, and /posts filtered by ?userId=.
	jp := startCallout(t, func(_ int, r *http.Request) (int, any) {
		switch r.URL.Path {
		case "/users/1":
			u := map[string]any{}
			for k, v := range user {
				u[k] = v
			}
			u["id"] = userID.Load()
			return 200, u
		case "/posts":
			var out []map[string]any
			for _, p := range posts {
				if q := r.URL.Query().Get("userId"); q == "" || q == fmt.Sprint(p["userId"]) {
					out = append(out, p)
				}
			}
			if out == nil {
				out = []map[string]any{}
			}
			return 200, out
		}
		return 404, map[string]any{}
	})
	up, ups := upstream(t)
	cfg := deckYAML(up, "callout-orchestrate", "callout-orchestrate-route", "/callout-orchestrate",
		replace(seedOrchestration, "https://jsonplaceholder.typicode.com", jp.URL))
	h := envoytest.Start(t, cfg, envoytest.Options{Upstream: up})

	check := func(id int, wantPosts []map[string]any) {
		t.Helper()
		before := len(jp.all())
		resp, body := h.Get(t, "/callout-orchestrate")
		// Kong's exit with a table body sets its own JSON content type
		// over the one set_header gave (headers passed to exit would win).
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
			t.Fatalf("user %d: status %d, content-type %q, body %s", id, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		hs := jp.all()[before:]
		if len(hs) != 2 || hs[0].Path != "/users/1" || hs[0].Query != "" || hs[1].Path != "/posts" || hs[1].Query != "userId="+strconv.Itoa(id) {
			t.Fatalf("user %d: callouts made %+v, want /users/1 then /posts?userId=%d (c1's id)", id, hs, id)
		}
		var got struct {
			User  map[string]any   `json:"user"`
			Posts []map[string]any `json:"posts"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("body %s: %v", body, err)
		}
		wantUser := map[string]any{}
		for k, v := range user {
			wantUser[k] = v
		}
		wantUser["id"] = float64(id)
		if !reflect.DeepEqual(got.User, wantUser) {
			t.Fatalf("user %d: user = %v, want %v", id, got.User, wantUser)
		}
		if !reflect.DeepEqual(got.Posts, wantPosts) {
			t.Fatalf("user %d: posts = %v, want %v", id, got.Posts, wantPosts)
		}
		if ups.Load() != 0 {
			t.Fatalf("upstream called %d times", ups.Load())
		}
	}
	// The article's output: user 1 and user 1's posts.
	check(1, roundTrip(t, posts[:2]))
	// Another id from c1 reaches c2's query.
	userID.Store(2)
	check(2, roundTrip(t, posts[2:]))
}

func roundTrip(t *testing.T, v []map[string]any) []map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Orchestration article, "Auth Header Injection". The seed's kcsvault is a
// Kong vault entity; sidecall's vaults are env and file (spec §2), so the
// references use the env vault.
const seedAuthHeader = `- name: request-callout
  enabled: true
  config:
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
  route: callout-auth-route
  service: callout-auth
`

func TestE2ESeedVaultAuthHeader(t *testing.T) {
	const jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzaWRlY2FsbCJ9.c2lnbmF0dXJl"
	idp := startCallout(t, func(_ int, r *http.Request) (int, any) {
		if r.Method != "POST" || r.URL.Path != "/oauth/token" {
			return 404, map[string]string{"error": "not found"}
		}
		return 200, map[string]any{"access_token": jwt, "token_type": "Bearer", "expires_in": 86400}
	})
	t.Setenv("TOKEN_URL", idp.URL+"/oauth/token")
	t.Setenv("CLIENT_ID", "zYt3a4YRvAXthxYWMqWTlbDyKozZc5Zj")
	t.Setenv("CLIENT_SECRET", "s3cr3t-from-the-vault")
	up, ups := upstream(t)
	// (Envoy, not the service url, picks the upstream and its path.)
	// The seed's plugin as written; kcsvault is Kong's env vault entity.
	cfg := "vaults:\n  - name: env\n    prefix: kcsvault\n" +
		deckYAML(up+"/get", "callout-auth", "callout-auth-route", "/callout-auth", seedAuthHeader)
	h := envoytest.Start(t, cfg, envoytest.Options{Upstream: up})

	// curl http://localhost:8000/callout-auth
	resp, body := h.Get(t, "/callout-auth")
	e := decodeEcho(t, resp, body)
	if got := e.Header("Authorization"); got != "Bearer "+jwt {
		t.Fatalf("upstream Authorization = %q, want Bearer <access_token>", got)
	}
	if ups.Load() != 1 {
		t.Fatalf("upstream calls = %d", ups.Load())
	}
	hs := idp.all()
	if len(hs) != 1 {
		t.Fatalf("token endpoint calls = %d, want 1", len(hs))
	}
	if ct := hs[0].Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("token request content-type %q", ct)
	}
	var form map[string]any
	if err := json.Unmarshal([]byte(hs[0].Body), &form); err != nil {
		t.Fatalf("token request body %q: %v", hs[0].Body, err)
	}
	want := map[string]any{"grant_type": "client_credentials", "client_id": "zYt3a4YRvAXthxYWMqWTlbDyKozZc5Zj",
		"client_secret": "s3cr3t-from-the-vault", "audience": "https://api.apiprimer.com"}
	if !reflect.DeepEqual(form, want) {
		t.Fatalf("token request body %v, want %v", form, want)
	}
}

// Overview, "Lua code": response.by_lua setting the cache key (Redis cache).
const seedResponseByLua = `{
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
						"http_statuses": [500],
						"retries": 3
					}
				},
				"response": {
					"body": {
						"store": true,
						"decode": true
					},
					"by_lua": "kong.ctx.shared.callouts.auth1.caching.cache_key = 'some_key'"
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
			"strategy": "redis",
			"redis": {
				"host": "localhost",
				"port": 6379
			},
			"cache_ttl": 360
		}
	}
}`

// redisServer runs a throwaway redis-server on a free 127.0.0.1 port.
func redisServer(t *testing.T) int {
	port, _ := callout.StartRedis(t)
	return port
}

// redisKeys lists the keys matching pattern (RESP over a plain connection).
func redisKeys(t *testing.T, port int, pattern string) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "*2\r\n$4\r\nKEYS\r\n$%d\r\n%s\r\n", len(pattern), pattern)
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "*") {
		t.Fatalf("KEYS answer %q: %v", line, err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	var keys []string
	for i := 0; i < n; i++ {
		if _, err := r.ReadString('\n'); err != nil { // $len
			t.Fatal(err)
		}
		k, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, strings.TrimRight(k, "\r\n"))
	}
	return keys
}

func TestE2ESeedResponseByLuaCacheKey(t *testing.T) {
	port := redisServer(t)
	var n atomic.Int32
	srv := startCallout(t, func(int, *http.Request) (int, any) {
		return 200, map[string]string{"token": "tok-" + strconv.Itoa(int(n.Add(1)))}
	})
	up, ups := upstream(t)
	plugin := replace(seedResponseByLua, mocky, srv.URL,
		`"host": "localhost"`, `"host": "127.0.0.1"`, `"port": 6379`, `"port": `+strconv.Itoa(port))
	h := envoytest.Start(t, deckJSON(up, "api", "/api", plugin), envoytest.Options{Upstream: up})

	resp, body := h.Get(t, "/api?user=1")
	if e := decodeEcho(t, resp, body); e.Header("Authorization") != "Bearer tok-1" {
		t.Fatalf("upstream Authorization = %q", e.Header("Authorization"))
	}
	if srv.count() != 1 {
		t.Fatalf("callout calls = %d", srv.count())
	}
	// response.by_lua's cache key: the entry is stored under some_key.
	if keys := redisKeys(t, port, "*some_key"); len(keys) != 1 {
		t.Fatalf("redis keys matching *some_key: %v (all: %v)", keys, redisKeys(t, port, "*"))
	}
	// The second identical request is served from the cache: no call.
	resp, body = h.Get(t, "/api?user=1")
	if e := decodeEcho(t, resp, body); e.Header("Authorization") != "Bearer tok-1" {
		t.Fatalf("second request: upstream Authorization = %q, want the cached token", e.Header("Authorization"))
	}
	if srv.count() != 1 || ups.Load() != 2 {
		t.Fatalf("second request: callout calls = %d (want 1), upstream calls = %d (want 2)", srv.count(), ups.Load())
	}
}
