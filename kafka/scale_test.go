package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/testredis"
	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

// counting answers 201 with "<n>:<body>", n counting the requests seen,
// after gate (if any) lets it.
func counting(seen *atomic.Int32, gate <-chan struct{}) Handler {
	return func(ctx context.Context, req *kafkav1.Request) *kafkav1.Reply {
		n := seen.Add(1)
		if gate != nil {
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
		return &kafkav1.Reply{Status: 201, Headers: []*kafkav1.Header{{Name: "x-n", Value: fmt.Sprint(n)}},
			Body: []byte(fmt.Sprintf("%d:%s", n, RequestBodyOf(req)))}
	}
}

func idemCfg(addr, strategy string, redisPort int) string {
	extra := "idempotency: {header: Idempotency-Key, ttl: 60000, strategy: " + strategy
	if redisPort != 0 {
		extra += fmt.Sprintf(", redis: {host: 127.0.0.1, port: %d}", redisPort)
	}
	return rrConfig(addr, extra+"}")
}

func mustAccess(t *testing.T, p flows.Plugin, x *flows.Exchange) *flows.Reply {
	t.Helper()
	if err := access(t, p, x); err != nil {
		t.Fatal(err)
	}
	if x.Reply == nil {
		t.Fatal("no reply")
	}
	return x.Reply
}

func accessErr(t *testing.T, p flows.Plugin, x *flows.Exchange) *flows.HTTPError {
	t.Helper()
	err := access(t, p, x)
	if err == nil {
		t.Fatalf("no error, reply %+v", x.Reply)
	}
	return flows.AsHTTPError(err)
}

// TestIdempotency: a key seen again replays the first reply without a new
// produce, on the same replica (memory) or another one (redis: two plugin
// instances with their own clients sharing one redis-server); the key
// with a different body is 422.
func TestIdempotency(t *testing.T) {
	for _, strategy := range []string{"memory", "redis"} {
		t.Run(strategy, func(t *testing.T) {
			_, addr := newCluster(t)
			var seen atomic.Int32
			startResponder(t, addr, FormatJSON, counting(&seen, nil))
			port := 0
			if strategy == "redis" {
				port, _ = testredis.Start(t)
			}
			res1, res2 := newResources(t), newResources(t)
			p1 := build(t, res1, "kafka-request-reply", idemCfg(addr, strategy, port))
			p2 := p1
			if strategy == "redis" {
				p2 = build(t, res2, "kafka-request-reply", idemCfg(addr, strategy, port))
				waitReady(t, res2)
			}
			waitReady(t, res1)
			r1 := mustAccess(t, p1, exchange("POST", "/pay", "", []byte("10 EUR"), "Idempotency-Key", "k1"))
			r2 := mustAccess(t, p2, exchange("POST", "/pay", "", []byte("10 EUR"), "Idempotency-Key", "k1"))
			if r1.Status != 201 || string(r1.Body) != "1:10 EUR" || r2.Status != 201 || string(r2.Body) != "1:10 EUR" ||
				r2.Headers.Get("x-n") != "1" || r2.Headers.Get("idempotent-replayed") != "true" || r1.Headers.Has("idempotent-replayed") {
				t.Fatalf("first %d %v %q, replay %d %v %q", r1.Status, r1.Headers, r1.Body, r2.Status, r2.Headers, r2.Body)
			}
			if e := accessErr(t, p2, exchange("POST", "/pay", "", []byte("99 EUR"), "Idempotency-Key", "k1")); e.Status != 422 {
				t.Fatalf("reused key with another body: %v", e)
			}
			// Another key, and no key, are produced.
			if r := mustAccess(t, p2, exchange("POST", "/pay", "", []byte("10 EUR"), "Idempotency-Key", "k2")); string(r.Body) != "2:10 EUR" {
				t.Fatalf("k2: %q", r.Body)
			}
			if r := mustAccess(t, p1, exchange("POST", "/pay", "", []byte("10 EUR"))); string(r.Body) != "3:10 EUR" {
				t.Fatalf("no key: %q", r.Body)
			}
			if n := seen.Load(); n != 3 {
				t.Fatalf("responder saw %d requests, want 3", n)
			}
		})
	}
}

// TestIdempotencyPendingWait: a second request with the key of one still
// waiting for its reply waits for that reply instead of producing (memory:
// in-process waiters; redis: polling, from another replica).
func TestIdempotencyPendingWait(t *testing.T) {
	for _, strategy := range []string{"memory", "redis"} {
		t.Run(strategy, func(t *testing.T) {
			_, addr := newCluster(t)
			var seen atomic.Int32
			gate := make(chan struct{})
			startResponder(t, addr, FormatJSON, counting(&seen, gate))
			port := 0
			if strategy == "redis" {
				port, _ = testredis.Start(t)
			}
			res1, res2 := newResources(t), newResources(t)
			p1 := build(t, res1, "kafka-request-reply", idemCfg(addr, strategy, port))
			p2 := p1
			if strategy == "redis" {
				p2 = build(t, res2, "kafka-request-reply", idemCfg(addr, strategy, port))
				waitReady(t, res2)
			}
			waitReady(t, res1)
			first := make(chan *flows.Reply, 1)
			go func() {
				x := exchange("POST", "/pay", "", []byte("5"), "Idempotency-Key", "slow")
				_ = access(t, p1, x)
				first <- x.Reply
			}()
			for seen.Load() == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			second := make(chan *flows.Reply, 1)
			go func() {
				x := exchange("POST", "/pay", "", []byte("5"), "Idempotency-Key", "slow")
				_ = access(t, p2, x)
				second <- x.Reply
			}()
			time.Sleep(150 * time.Millisecond)
			select {
			case r := <-second:
				t.Fatalf("second answered before the first reply: %+v", r)
			default:
			}
			close(gate)
			r1, r2 := <-first, <-second
			if r1 == nil || r2 == nil || string(r1.Body) != "1:5" || string(r2.Body) != "1:5" || r2.Headers.Get("idempotent-replayed") != "true" {
				t.Fatalf("first %+v, second %+v", r1, r2)
			}
			if n := seen.Load(); n != 1 {
				t.Fatalf("responder saw %d requests, want 1", n)
			}
		})
	}
}

// TestIdempotencyFailureFreesKey: no reply in time frees the key, so a
// retry produces again.
func TestIdempotencyFailureFreesKey(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", idemCfg(addr, "memory", 0)+"\nreply_timeout: 300")
	waitReady(t, res)
	if e := accessErr(t, p, exchange("POST", "/pay", "", []byte("1"), "Idempotency-Key", "k")); e.Status != 504 {
		t.Fatalf("no responder: %v", e)
	}
	var seen atomic.Int32
	startResponder(t, addr, FormatJSON, counting(&seen, nil))
	if r := mustAccess(t, p, exchange("POST", "/pay", "", []byte("1"), "Idempotency-Key", "k")); r.Status != 201 || string(r.Body) != "1:1" {
		t.Fatalf("retry: %d %q", r.Status, r.Body)
	}
}

func asyncCfg(addr, strategy string, redisPort int, extra string) string {
	a := "async: {enabled: true, result_path: /replies, ttl: 60000, strategy: " + strategy
	if redisPort != 0 {
		a += fmt.Sprintf(", redis: {host: 127.0.0.1, port: %d}", redisPort)
	}
	return rrConfig(addr, a+"}\n"+extra)
}

// poll GETs loc until it is no longer 202.
func poll(t *testing.T, p flows.Plugin, loc string) *flows.Reply {
	t.Helper()
	for i := 0; i < 500; i++ {
		x := exchange("GET", loc, "", nil)
		r := mustAccess(t, p, x)
		if r.Status != 202 {
			return r
		}
		if r.Headers.Get("retry-after") == "" {
			t.Fatalf("pending without Retry-After: %v", r.Headers)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s still pending", loc)
	return nil
}

// TestAsync: 202 with Location at once, 202 while pending, then the reply
// on any replica (redis) or on the same one (memory); 404 when unknown.
func TestAsync(t *testing.T) {
	for _, strategy := range []string{"memory", "redis"} {
		t.Run(strategy, func(t *testing.T) {
			_, addr := newCluster(t)
			var seen atomic.Int32
			gate := make(chan struct{})
			startResponder(t, addr, FormatJSON, counting(&seen, gate))
			port := 0
			if strategy == "redis" {
				port, _ = testredis.Start(t)
			}
			res1, res2 := newResources(t), newResources(t)
			p1 := build(t, res1, "kafka-request-reply", asyncCfg(addr, strategy, port, "correlation_id_header: x-cid"))
			p2 := p1
			if strategy == "redis" {
				p2 = build(t, res2, "kafka-request-reply", asyncCfg(addr, strategy, port, "correlation_id_header: x-cid"))
				waitReady(t, res2)
			}
			waitReady(t, res1)
			r := mustAccess(t, p1, exchange("POST", "/orders", "", []byte("o1"), "x-cid", "a/1"))
			loc := r.Headers.Get("location")
			if r.Status != 202 || loc != "/replies/a%2F1" {
				t.Fatalf("accept: %d %v %s", r.Status, r.Headers, r.Body)
			}
			pend := mustAccess(t, p2, exchange("GET", loc, "", nil))
			if pend.Status != 202 || pend.Headers.Get("retry-after") != "1" {
				t.Fatalf("pending: %d %v %s", pend.Status, pend.Headers, pend.Body)
			}
			close(gate)
			got := poll(t, p2, loc)
			if got.Status != 201 || string(got.Body) != "1:o1" || got.Headers.Get("x-n") != "1" {
				t.Fatalf("result: %d %v %q", got.Status, got.Headers, got.Body)
			}
			if e := accessErr(t, p2, exchange("GET", "/replies/nope", "", nil)); e.Status != 404 {
				t.Fatalf("unknown: %v", e)
			}
			if e := accessErr(t, p1, exchange("POST", "/orders", "", []byte("o1"), "x-cid", "a/1")); e.Status != 409 {
				t.Fatalf("same id again: %v", e)
			}
		})
	}
}

// TestAsyncTimeoutStored: no reply within reply_timeout stores a 504.
func TestAsyncTimeoutStored(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", asyncCfg(addr, "memory", 0, "reply_timeout: 200"))
	waitReady(t, res)
	r := mustAccess(t, p, exchange("POST", "/orders", "", []byte("x")))
	got := poll(t, p, r.Headers.Get("location"))
	if got.Status != 504 || !strings.Contains(string(got.Body), "no kafka reply") {
		t.Fatalf("result: %d %s", got.Status, got.Body)
	}
}

// TestAsyncIdempotent: with both, a replayed key gets the same Location.
func TestAsyncIdempotent(t *testing.T) {
	_, addr := newCluster(t)
	var seen atomic.Int32
	startResponder(t, addr, FormatJSON, counting(&seen, nil))
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", asyncCfg(addr, "memory", 0, "idempotency: {}"))
	waitReady(t, res)
	a := mustAccess(t, p, exchange("POST", "/o", "", []byte("x"), "Idempotency-Key", "k"))
	b := mustAccess(t, p, exchange("POST", "/o", "", []byte("x"), "Idempotency-Key", "k"))
	if a.Status != 202 || b.Status != 202 || a.Headers.Get("location") != b.Headers.Get("location") {
		t.Fatalf("%d %v / %d %v", a.Status, a.Headers, b.Status, b.Headers)
	}
	if got := poll(t, p, a.Headers.Get("location")); got.Status != 201 || seen.Load() != 1 {
		t.Fatalf("result %d, responder saw %d", got.Status, seen.Load())
	}
}

type gatherBody struct {
	Replies []struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	} `json:"replies"`
	Complete bool `json:"complete"`
}

// TestGather: two responders answer each request; gather waits for both,
// or answers what came within the window with complete false.
func TestGather(t *testing.T) {
	_, addr := newCluster(t)
	for _, name := range []string{"a", "b"} {
		startResponder(t, addr, FormatJSON, func(_ context.Context, req *kafkav1.Request) *kafkav1.Reply {
			return &kafkav1.Reply{Status: 200, Headers: []*kafkav1.Header{{Name: "x-from", Value: name}}, Body: []byte(name + ":" + string(RequestBodyOf(req)))}
		})
	}
	res := newResources(t)
	two := build(t, res, "kafka-request-reply", rrConfig(addr, "gather: {replies: 2, window_ms: 5000}"))
	three := build(t, res, "kafka-request-reply", rrConfig(addr, "gather: {replies: 3, window_ms: 300}"))
	waitReady(t, res)
	check := func(p flows.Plugin, complete bool) {
		t.Helper()
		start := time.Now()
		r := mustAccess(t, p, exchange("POST", "/q", "", []byte("hi")))
		var g gatherBody
		if err := json.Unmarshal(r.Body, &g); err != nil || r.Status != 200 || g.Complete != complete || len(g.Replies) != 2 {
			t.Fatalf("%d %s (%v)", r.Status, r.Body, err)
		}
		from := map[string]bool{}
		for _, x := range g.Replies {
			from[x.Headers["x-from"]] = x.Body == x.Headers["x-from"]+":hi" && x.Status == 200
		}
		if !from["a"] || !from["b"] {
			t.Fatalf("replies %s", r.Body)
		}
		if complete && time.Since(start) > 4*time.Second { // the window is 5 s
			t.Fatalf("complete gather waited out the window: %v", time.Since(start))
		}
	}
	check(two, true)
	check(three, false)
}

// TestGatherByLua: gather.by_lua builds the answer from
// kong.ctx.shared.kafka_replies; a chunk that does not exit leaves the JSON
// answer.
func TestGatherByLua(t *testing.T) {
	_, addr := newCluster(t)
	for _, name := range []string{"a", "b"} {
		startResponder(t, addr, FormatJSON, func(_ context.Context, req *kafkav1.Request) *kafkav1.Reply {
			return &kafkav1.Reply{Status: 200, Headers: []*kafkav1.Header{{Name: "x-from", Value: name}}, Body: []byte(name + ":" + string(RequestBodyOf(req)))}
		})
	}
	res := newResources(t)
	lua := build(t, res, "kafka-request-reply", rrConfig(addr, `gather:
  replies: 2
  window_ms: 3000
  by_lua: |
    local out = {}
    for i, r in ipairs(kong.ctx.shared.kafka_replies) do
      out[i] = r.status .. " " .. r.headers["x-from"] .. "=" .. r.body
    end
    table.sort(out)
    kong.response.exit(207, table.concat(out, ","), { ["X-Complete"] = tostring(kong.ctx.shared.kafka_replies_complete) })`))
	quiet := build(t, res, "kafka-request-reply", rrConfig(addr, `gather: {replies: 2, window_ms: 3000, by_lua: "local n = #kong.ctx.shared.kafka_replies"}`))
	waitReady(t, res)
	r := mustAccess(t, lua, exchange("POST", "/q", "", []byte("hi")))
	if r.Status != 207 || string(r.Body) != "200 a=a:hi,200 b=b:hi" || r.Headers.Get("x-complete") != "true" {
		t.Fatalf("by_lua answer %d %v %q", r.Status, r.Headers, r.Body)
	}
	r = mustAccess(t, quiet, exchange("POST", "/q", "", []byte("hi")))
	var g gatherBody
	if err := json.Unmarshal(r.Body, &g); err != nil || r.Status != 200 || !g.Complete || len(g.Replies) != 2 {
		t.Fatalf("no exit: %d %s (%v)", r.Status, r.Body, err)
	}
}

// TestTwoReplicasUnderLoad: two plugin instances with their own clients (as
// two sidecall processes) share one reply topic, or pin a partition each;
// under concurrent load every reply reaches its own waiter.
func TestTwoReplicasUnderLoad(t *testing.T) {
	for _, pinned := range []bool{false, true} {
		t.Run(fmt.Sprintf("pinned=%v", pinned), func(t *testing.T) {
			_, addr := newCluster(t)
			startResponder(t, addr, FormatJSON, echo)
			var ps [2]flows.Plugin
			for i := range ps {
				res := newResources(t)
				extra := "reply_timeout: 10000"
				if pinned {
					extra += fmt.Sprintf("\nreply_partition: %d", i)
				}
				ps[i] = build(t, res, "kafka-request-reply", rrConfig(addr, extra))
				waitReady(t, res)
			}
			const total, parallel = 200, 16
			sem := make(chan struct{}, parallel)
			var wg sync.WaitGroup
			var bad atomic.Int32
			for i := 0; i < total; i++ {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					body := fmt.Sprintf("req-%d", i)
					x := exchange("POST", "/load", "", []byte(body))
					if err := access(t, ps[i%2], x); err != nil || x.Reply.Status != 201 || string(x.Reply.Body) != body {
						bad.Add(1)
						t.Errorf("request %d: %v %+v", i, err, x.Reply)
					}
				}()
			}
			wg.Wait()
			if n := bad.Load(); n != 0 {
				t.Fatalf("%d of %d requests lost or crossed", n, total)
			}
		})
	}
}

// TestScaleConfigErrors: bad idempotency, async and gather settings are
// config errors at their paths.
func TestScaleConfigErrors(t *testing.T) {
	for extra, want := range map[string]string{
		"idempotency: {strategy: disk}":                                 "idempotency.strategy",
		"idempotency: {header: 'bad header'}":                           "idempotency.header",
		"idempotency: {strategy: redis, redis: {port: 0}}":              "",
		"async: {enabled: true, result_path: replies}":                  "async.result_path",
		"async: {enabled: true, ttl: 10}":                               "async.ttl",
		"gather: {replies: 0}":                                          "gather.replies",
		"gather: {replies: 2, window_ms: 99999}":                        "gather.window_ms",
		"gather: {replies: 2, by_lua: 'if then'}":                       "gather.by_lua",
		"gather: {replies: 2, by_lua: 'x = 1'}\nasync: {enabled: true}": "gather.by_lua: not supported with async",
		"idempotency: {nope: 1}":                                        "idempotency.nope",
	} {
		_, b := tryBuild(t, newResources(t), "kafka-request-reply", rrConfig("127.0.0.1:9092", extra))
		if want == "" {
			if b.Failed() {
				t.Errorf("%s: %v", extra, b.Problems())
			}
			continue
		}
		if !b.Failed() || !strings.Contains(fmt.Sprint(b.Problems()), want) {
			t.Errorf("%s: want a problem at %s, got %v", extra, want, b.Problems())
		}
	}
}
