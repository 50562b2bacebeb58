package callout

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/testredis"
)

// startRedis runs a throwaway redis-server (internal/testredis).
func startRedis(t *testing.T) (port int, kill func()) { return testredis.Start(t) }

func redisCfg(url string, port, ttl int, byLua string) string {
	resp := ""
	if byLua != "" {
		resp = fmt.Sprintf(", by_lua: %q", byLua)
	}
	return fmt.Sprintf(`{callouts: [{name: auth1, request: {url: %q}, response: {body: {decode: true}%s}}],
  cache: {strategy: redis, cache_ttl: %d, redis: {host: 127.0.0.1, port: %d, connect_timeout: 200, read_timeout: 200, send_timeout: 200}}}`, url, resp, ttl, port)
}

// Redis hit, miss, TTL expiry, shared between two instances built from
// separate builders (two sidecall replicas), and a cache key set by
// response.by_lua.
func TestRedisCacheSharedAcrossReplicas(t *testing.T) {
	port, _ := startRedis(t)
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"token": "t"})
	setKey := "kong.ctx.shared.callouts.auth1.caching.cache_key = 'some_key'"
	resA, resB := flows.NewResources(), flows.NewResources()
	defer resA.Close()
	defer resB.Close()
	a, pa := buildWith(t, resA, nil, redisCfg(srv.URL, port, 1, setKey))
	b, pb := buildWith(t, resB, nil, redisCfg(srv.URL, port, 1, setKey))
	if len(pa)+len(pb) > 0 {
		t.Fatal(pa, pb)
	}
	run := func(p *Plugin) {
		x := newX("GET", "/", "", nil, "")
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if ctxEntry(t, x, "auth1")["response"].(map[string]any)["body"].(map[string]any)["token"] != "t" {
			t.Fatal("no token")
		}
	}
	run(a) // miss
	run(b) // hit, written by the other instance
	if rec.calls.Load() != 1 {
		t.Fatalf("calls = %d, want 1 (shared through Redis)", rec.calls.Load())
	}
	if v, ok, err := a.cache.Get(context.Background(), "some_key"); err != nil || !ok || len(v) == 0 {
		t.Fatalf("response.by_lua cache key not stored: %v %v", ok, err)
	}
	time.Sleep(1100 * time.Millisecond) // cache_ttl: 1
	run(a)
	if rec.calls.Load() != 2 {
		t.Fatalf("after TTL calls = %d, want 2", rec.calls.Load())
	}
}

// Redis killed mid-run: log, count, call through.
func TestRedisDownCallsThrough(t *testing.T) {
	port, kill := startRedis(t)
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"token": "t"})
	p := build(t, redisCfg(srv.URL, port, 60, ""))
	for i := 0; i < 2; i++ {
		if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
			t.Fatal(err)
		}
	}
	if rec.calls.Load() != 1 {
		t.Fatalf("calls = %d", rec.calls.Load())
	}
	kill()
	for i := 0; i < 2; i++ {
		x := newX("GET", "/", "", nil, "")
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatalf("redis down must not fail the request: %v", err)
		}
	}
	if rec.calls.Load() != 3 {
		t.Fatalf("calls = %d, want 3 (call-through)", rec.calls.Load())
	}
}

// Memory TTL expiry, bypass, shared across builders that
// share Resources (one process), errors never cached.
func TestMemoryCacheTTLBypassAndErrors(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"token": "t"})
	res := flows.NewResources()
	defer res.Close()
	cfg := fmt.Sprintf(`{callouts: [{name: a, request: {url: %[1]q}}, {name: b, request: {url: "%[1]s/b"}, cache: {bypass: true}}], cache: {strategy: memory, cache_ttl: 1}}`, srv.URL)
	p1, e1 := buildWith(t, res, nil, cfg)
	p2, e2 := buildWith(t, res, nil, cfg)
	if len(e1)+len(e2) > 0 {
		t.Fatal(e1, e2)
	}
	for _, p := range []*Plugin{p1, p2} {
		if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
			t.Fatal(err)
		}
	}
	if rec.calls.Load() != 3 { // a once (shared), b twice (bypass)
		t.Fatalf("calls = %d, want 3", rec.calls.Load())
	}
	time.Sleep(1100 * time.Millisecond)
	if err := p1.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
		t.Fatal(err)
	}
	if rec.calls.Load() != 5 {
		t.Fatalf("after TTL calls = %d, want 5", rec.calls.Load())
	}

	failing := jsonServer(t, rec, 500, nil)
	p3 := build(t, fmt.Sprintf(`{callouts: [{name: a, request: {url: %q, error: {http_statuses: [500], on_error: continue}}}], cache: {strategy: memory}}`, failing.URL))
	before := rec.calls.Load()
	for i := 0; i < 2; i++ {
		if err := p3.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
			t.Fatal(err)
		}
	}
	if rec.calls.Load()-before != 2 {
		t.Fatal("an error result was cached")
	}
}

// Singleflight: concurrent misses for one key make one call.
func TestCacheSingleflight(t *testing.T) {
	rec := &recorder{}
	release := make(chan struct{})
	slow := jsonServer(t, rec, 200, map[string]string{"v": "1"})
	inner := slow.Config.Handler
	slow.Config.Handler = httpHandlerFunc(func(w responseWriter, r *request) {
		<-release
		inner.ServeHTTP(w, r)
	})
	p := build(t, fmt.Sprintf(`{callouts: [{name: a, request: {url: %q}}], cache: {strategy: memory}}`, slow.URL))
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
				t.Error(err)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	if rec.calls.Load() != 1 {
		t.Fatalf("calls = %d, want 1", rec.calls.Load())
	}
}
