package callout_test

// End-to-end tests of the documented request-callout examples
// (testdata/examples), each as written with its URLs pointed at local
// httptest servers, through a real HTTP client → the envoy stand-in → a real
// sidecall processor with every plugin (envoytest) → the upstream. What a
// callout server received is recorded by the server; what the upstream
// received is read from the Echo answer.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/internal/testredis"
)

// startCallout is a callout target on 127.0.0.1: it records every request
// and answers with what answer returns (status, JSON body).
func startCallout(t *testing.T, answer func(n int, r *http.Request) (int, any)) *envoytest.Recorder {
	t.Helper()
	return envoytest.Record(t, func(n int, w http.ResponseWriter, r *http.Request) {
		status, v := answer(n, r)
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(status)
		if v != nil {
			_ = json.NewEncoder(w).Encode(v)
		}
	})
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

// deckJSON wraps an example's plugin object (JSON, verbatim) in a decK file
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

// deckYAML puts an example's top-level plugin list (YAML, verbatim, scoped with
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

// example reads testdata/examples/<file>.
func example(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "examples", file))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const mocky = "https://run.mocky.io/v3/3d380788-e25f-4101-970b-70e95eacf892"

// tokenServer plays the examples' token service: {"token": tok}.
func tokenServer(t *testing.T, tok string) *envoytest.Recorder {
	return startCallout(t, func(int, *http.Request) (int, any) { return 200, map[string]string{"token": tok} })
}

// A callout that requests a token and inserts it in the upstream request.
func TestE2EExampleTokenInjection(t *testing.T) {
	tok := tokenServer(t, "tok-123")
	up, ups := upstream(t)
	h := envoytest.Start(t, deckJSON(up, "api", "/api", replace(example(t, "token-injection.json"), mocky, tok.URL+"/v3/token")), envoytest.Options{Upstream: up})

	resp, body := h.Get(t, "/api/orders?user=7&x=1", "Authorization", "Bearer client")
	e := decodeEcho(t, resp, body)
	if got := e.Header("Authorization"); got != "Bearer tok-123" {
		t.Fatalf("upstream Authorization = %q, want the callout's token", got)
	}
	if e.Path != "/orders" || e.Query != "user=7&x=1" { // Kong's strip_path default removes /api
		t.Fatalf("upstream got %s?%s", e.Path, e.Query)
	}
	hs := tok.All()
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

// A callout that retries a failed request, then gives up with the fail
// response.
func TestE2EExampleRetryThenExhausted(t *testing.T) {
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
	// Besides the example, a post-function passes the callout context's
	// retry bookkeeping (request.retries, request.n_retries) upstream.
	const showRetries = `,
	{"name": "post-function", "config": {"access": ["local r = kong.ctx.shared.callouts.auth1.request; kong.service.request.set_header('X-Retries', r.n_retries .. ' ' .. r.retries[1].reason .. ' ' .. r.retries[1].http_code .. ' ' .. r.retries[2].http_code)"]}}`
	h := envoytest.Start(t, deckJSON(up, "api", "/api", replace(example(t, "retry.json"), mocky, srv.URL)+showRetries), envoytest.Options{Upstream: up})

	resp, body := h.Get(t, "/api?q=1")
	e := decodeEcho(t, resp, body)
	if got := e.Header("Authorization"); got != "Bearer third-time" {
		t.Fatalf("upstream Authorization = %q", got)
	}
	if got := e.Header("X-Retries"); got != "2 code 500 503" {
		t.Fatalf("callout context retries = %q, want 2 retries caused by codes 500 and 503", got)
	}
	if srv.Count() != 3 || ups.Load() != 1 {
		t.Fatalf("callout calls = %d, upstream calls = %d, want 3 and 1", srv.Count(), ups.Load())
	}
	for i, hh := range srv.All() {
		if hh.Query != "q=1" {
			t.Fatalf("attempt %d got query %q", i+1, hh.Query)
		}
	}

	// Retries exhausted (1 + 3 attempts): the client gets the callout
	// error, the upstream is not called.
	bad := startCallout(t, func(int, *http.Request) (int, any) { return 502, nil })
	if err := h.Reload(deckJSON(up, "api", "/api", replace(example(t, "retry.json"), mocky, bad.URL))); err != nil {
		t.Fatal(err)
	}
	resp, body = h.Get(t, "/api")
	if resp.StatusCode != 400 || !strings.Contains(string(body), "service callout error") {
		t.Fatalf("exhausted retries: %d %s, want Kong's 400 service callout error", resp.StatusCode, body)
	}
	if bad.Count() != 4 || ups.Load() != 1 {
		t.Fatalf("exhausted retries: callout calls = %d (want 4), upstream calls = %d (want still 1)", bad.Count(), ups.Load())
	}
}

// A callout whose result is cached in memory.
func TestE2EExampleMemoryCache(t *testing.T) {
	var n atomic.Int32
	srv := startCallout(t, func(int, *http.Request) (int, any) {
		return 200, map[string]string{"token": "tok-" + strconv.Itoa(int(n.Add(1)))}
	})
	up, ups := upstream(t)
	h := envoytest.Start(t, deckJSON(up, "api", "/api", replace(example(t, "caching.json"), mocky, srv.URL)), envoytest.Options{Upstream: up})

	for i := 1; i <= 2; i++ {
		resp, body := h.Get(t, "/api?user=1")
		e := decodeEcho(t, resp, body)
		if got := e.Header("Authorization"); got != "Bearer tok-1" {
			t.Fatalf("request %d: upstream Authorization = %q, want the first (cached) token", i, got)
		}
		if srv.Count() != 1 {
			t.Fatalf("after request %d: callout calls = %d, want 1 (the second request makes no call)", i, srv.Count())
		}
	}
	if ups.Load() != 2 {
		t.Fatalf("upstream calls = %d", ups.Load())
	}
	// The forwarded query is part of the key: another one is a miss.
	resp, body := h.Get(t, "/api?user=2")
	if e := decodeEcho(t, resp, body); e.Header("Authorization") != "Bearer tok-2" || srv.Count() != 2 {
		t.Fatalf("another query: Authorization %q, calls %d; want a new call", e.Header("Authorization"), srv.Count())
	}
}

// httpbin plays httpbin.org: /uuid answers {"uuid": ...}, /anything echoes
// the request with "url" the full URL it was asked for.
func httpbin(t *testing.T, uuid string) *envoytest.Recorder {
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

// checkAggregate checks the client got the example's aggregated JSON from
// kong.response.exit, both callouts were called once and the upstream
// never.
func checkAggregate(t *testing.T, resp *http.Response, body []byte, bin *envoytest.Recorder, ups *atomic.Int32, uuid string) {
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
	for _, hh := range bin.All() {
		paths[hh.Method+" "+hh.Path]++
	}
	if !reflect.DeepEqual(paths, map[string]int{"GET /uuid": 1, "GET /anything": 1}) {
		t.Fatalf("callouts made: %v", paths)
	}
}

// Request collapsing: upstream.by_lua answers from two callouts.
func TestE2EExampleRequestCollapsing(t *testing.T) {
	const uuid = "3d545847-6500-4c78-bc32-75996d23e3f6"
	bin := httpbin(t, uuid)
	up, ups := upstream(t)
	h := envoytest.Start(t, deckJSON(up, "collapse", "/collapse", replace(example(t, "request-collapsing.json"), "http://httpbin.org", bin.URL)), envoytest.Options{Upstream: up})
	resp, body := h.Get(t, "/collapse")
	checkAggregate(t, resp, body, bin, ups, uuid)
}

// Aggregation, as a top-level plugin scoped to a route and service (YAML).
func TestE2EExampleAggregation(t *testing.T) {
	const uuid = "0b5a3c55-4d1e-4a8e-9a51-6f0b7e3c2d11"
	bin := httpbin(t, uuid)
	up, ups := upstream(t)
	cfg := deckYAML(up, "callout-aggregate", "callout-aggregate-route", "/callout-aggregate",
		replace(example(t, "aggregation.yaml"), "http://httpbin.org", bin.URL))
	h := envoytest.Start(t, cfg, envoytest.Options{Upstream: up})
	// curl http://localhost:8000/callout-aggregate
	resp, body := h.Get(t, "/callout-aggregate")
	checkAggregate(t, resp, body, bin, ups, uuid)
}

// Orchestration: c2 uses c1's answer; upstream.by_lua combines both.
func TestE2EExampleOrchestration(t *testing.T) {
	var user map[string]any
	var posts []map[string]any
	if err := json.Unmarshal([]byte(example(t, "jsonplaceholder-user.json")), &user); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(example(t, "jsonplaceholder-posts.json")), &posts); err != nil {
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
		replace(example(t, "orchestration.yaml"), "https://jsonplaceholder.typicode.com", jp.URL))
	h := envoytest.Start(t, cfg, envoytest.Options{Upstream: up})

	check := func(id int, wantPosts []map[string]any) {
		t.Helper()
		before := len(jp.All())
		resp, body := h.Get(t, "/callout-orchestrate")
		// Kong's exit with a table body sets its own JSON content type
		// over the one set_header gave (headers passed to exit would win).
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
			t.Fatalf("user %d: status %d, content-type %q, body %s", id, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		hs := jp.All()[before:]
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
	// The documented output: user 1 and user 1's posts.
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

// Auth header injection with client credentials from a vault.
func TestE2EExampleAuthHeaderFromVault(t *testing.T) {
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
	// The example's plugin as written; kcsvault is an env vault entity.
	cfg := "vaults:\n  - name: env\n    prefix: kcsvault\n" +
		deckYAML(up+"/get", "callout-auth", "callout-auth-route", "/callout-auth", example(t, "auth-header-injection.yaml"))
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
	hs := idp.All()
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

// redisServer runs a throwaway redis-server on a free 127.0.0.1 port.
func redisServer(t *testing.T) int {
	port, _ := testredis.Start(t)
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

// response.by_lua setting the cache key of a Redis-cached callout.
func TestE2EExampleResponseByLuaCacheKey(t *testing.T) {
	port := redisServer(t)
	var n atomic.Int32
	srv := startCallout(t, func(int, *http.Request) (int, any) {
		return 200, map[string]string{"token": "tok-" + strconv.Itoa(int(n.Add(1)))}
	})
	up, ups := upstream(t)
	plugin := replace(example(t, "response-by-lua-cache-key.json"), mocky, srv.URL,
		`"host": "localhost"`, `"host": "127.0.0.1"`, `"port": 6379`, `"port": `+strconv.Itoa(port))
	h := envoytest.Start(t, deckJSON(up, "api", "/api", plugin), envoytest.Options{Upstream: up})

	resp, body := h.Get(t, "/api?user=1")
	if e := decodeEcho(t, resp, body); e.Header("Authorization") != "Bearer tok-1" {
		t.Fatalf("upstream Authorization = %q", e.Header("Authorization"))
	}
	if srv.Count() != 1 {
		t.Fatalf("callout calls = %d", srv.Count())
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
	if srv.Count() != 1 || ups.Load() != 2 {
		t.Fatalf("second request: callout calls = %d (want 1), upstream calls = %d (want 2)", srv.Count(), ups.Load())
	}
}
