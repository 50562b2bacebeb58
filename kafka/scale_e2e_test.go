package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/internal/testredis"
	"github.com/sidecall/sidecall/kafka"
	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

// TestE2EAsync: through the Envoy stand-in, a POST is answered 202 with a
// Location under result_path at once; a GET of it is 202 with Retry-After
// until the reply came, then the reply; an unknown id is 404 JSON.
func TestE2EAsync(t *testing.T) {
	_, addr := e2eCluster(t, 0)
	gate := make(chan struct{})
	respond(t, addr, func(ctx context.Context, req *kafkav1.Request) *kafkav1.Reply {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return &kafkav1.Reply{Status: 201, Headers: []*kafkav1.Header{{Name: "content-type", Value: "text/plain"}},
			Body: []byte("done " + string(kafka.RequestBodyOf(req)))}
	})
	h := envoytest.Start(t, deck(addr, "reply_timeout: 5000\nasync: {enabled: true, result_path: /rr/results, ttl: 60000, strategy: memory}", ""), envoytest.Options{})
	waitKafkaReady(t, h)
	cl := client(t)
	start := time.Now()
	a := send(cl, h, "POST", "/rr/orders", "order 1", "content-type", "text/plain")
	loc := a.header.Get("location")
	if a.err != nil || a.status != 202 || !strings.HasPrefix(loc, "/rr/results/") {
		t.Fatalf("accept: %v %d %v %s", a.err, a.status, a.header, a.body)
	}
	if d := time.Since(start); d > 4*time.Second { // the reply, gated, would take reply_timeout (5 s)
		t.Fatalf("202 took %v", d)
	}
	p := send(cl, h, "GET", loc, "")
	if p.err != nil || p.status != 202 || p.header.Get("retry-after") == "" {
		t.Fatalf("pending: %v %d %v %s", p.err, p.status, p.header, p.body)
	}
	close(gate)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := send(cl, h, "GET", loc, "")
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.status != 202 {
			if r.status != 201 || string(r.body) != "done order 1" || r.header.Get("content-type") != "text/plain" {
				t.Fatalf("result: %d %v %q", r.status, r.header, r.body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still pending after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	n := send(cl, h, "GET", "/rr/results/unknown-id", "")
	var e map[string]any
	if n.err != nil || n.status != 404 || json.Unmarshal(n.body, &e) != nil || e["message"] == nil {
		t.Fatalf("unknown: %v %d %s", n.err, n.status, n.body)
	}
}

// TestE2EGatherByLua: through the Envoy stand-in, gather.by_lua answers
// with the cheapest of the gathered quotes.
func TestE2EGatherByLua(t *testing.T) {
	_, addr := e2eCluster(t, 0)
	for _, price := range []string{"12", "9"} {
		respond(t, addr, func(_ context.Context, _ *kafkav1.Request) *kafkav1.Reply {
			return &kafkav1.Reply{Status: 200, Headers: []*kafkav1.Header{{Name: "content-type", Value: "application/json"}},
				Body: []byte(`{"price":` + price + `}`)}
		})
	}
	h := envoytest.Start(t, deck(addr, `reply_timeout: 5000
gather:
  replies: 2
  window_ms: 3000
  by_lua: |
    local best
    for _, r in ipairs(kong.ctx.shared.kafka_replies) do
      local q = cjson.decode(r.body)
      if not best or q.price < best then best = q.price end
    end
    kong.response.exit(200, { best = best, complete = kong.ctx.shared.kafka_replies_complete })`, ""), envoytest.Options{})
	waitKafkaReady(t, h)
	r := send(client(t), h, "POST", "/rr/quote", "ACME")
	var got struct {
		Best     float64 `json:"best"`
		Complete bool    `json:"complete"`
	}
	if r.err != nil || r.status != 200 || json.Unmarshal(r.body, &got) != nil || got.Best != 9 || !got.Complete {
		t.Fatalf("%v %d %s", r.err, r.status, r.body)
	}
}

// respondOn runs a kafka.Responder on topic until the test ends.
func respondOn(t *testing.T, addr, topic string, h kafka.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	r := &kafka.Responder{Brokers: []string{addr}, Topic: topic, Handler: h}
	go func() { done <- r.Run(ctx, func() { close(ready) }) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("responder not ready")
	}
}

// TestE2EScaleExample runs examples/kafka-idempotent-async.yaml as shipped
// (only the Kafka and Redis ports changed): idempotent replay, an async
// result and a gather of two responders.
func TestE2EScaleExample(t *testing.T) {
	src, err := os.ReadFile("../examples/kafka-idempotent-async.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "payments.requests", "reports.requests", "quotes.requests", "sidecall.replies"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	_, kport, _ := net.SplitHostPort(addr)
	rport, _ := testredis.Start(t)
	cfg := strings.ReplaceAll(string(src), "port: 9092", "port: "+kport)
	cfg = strings.ReplaceAll(cfg, "port: 6379", fmt.Sprintf("port: %d", rport))
	h := envoytest.Start(t, cfg, envoytest.Options{})
	var paid atomic.Int32
	respondOn(t, addr, "payments.requests", func(_ context.Context, req *kafkav1.Request) *kafkav1.Reply {
		n := paid.Add(1)
		return &kafkav1.Reply{Status: 201, Body: []byte(fmt.Sprintf("payment %d: %s", n, kafka.RequestBodyOf(req)))}
	})
	respondOn(t, addr, "reports.requests", kafka.EchoHandler)
	for _, name := range []string{"east", "west"} {
		respondOn(t, addr, "quotes.requests", func(_ context.Context, _ *kafkav1.Request) *kafkav1.Reply {
			return &kafkav1.Reply{Status: 200, Body: []byte(name)}
		})
	}
	waitKafkaReady(t, h)
	cl := client(t)

	a := send(cl, h, "POST", "/api/payments", "10 EUR", "Idempotency-Key", "pay-1")
	b := send(cl, h, "POST", "/api/payments", "10 EUR", "Idempotency-Key", "pay-1")
	d := send(cl, h, "POST", "/api/payments", "20 EUR", "Idempotency-Key", "pay-1")
	if a.err != nil || b.err != nil || d.err != nil || a.status != 201 || b.status != 201 || string(a.body) != "payment 1: 10 EUR" ||
		string(b.body) != string(a.body) || b.header.Get("idempotent-replayed") != "true" || d.status != 422 {
		t.Fatalf("payments: %d %q / %d %q %v / %d %s", a.status, a.body, b.status, b.body, b.header, d.status, d.body)
	}

	r := send(cl, h, "POST", "/api/reports", `{"month":"2026-11"}`, "content-type", "application/json")
	loc := r.header.Get("location")
	if r.err != nil || r.status != 202 || !strings.HasPrefix(loc, "/api/reports/results/") {
		t.Fatalf("reports: %v %d %v %s", r.err, r.status, r.header, r.body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := send(cl, h, "GET", loc, "")
		if g.err == nil && g.status == 200 {
			var got map[string]any
			if json.Unmarshal(g.body, &got) != nil || got["body"] != `{"month":"2026-11"}` {
				t.Fatalf("report result %s", g.body)
			}
			break
		}
		if g.err != nil || g.status != 202 || time.Now().After(deadline) {
			t.Fatalf("report result: %v %d %s", g.err, g.status, g.body)
		}
		time.Sleep(20 * time.Millisecond)
	}

	q := send(cl, h, "POST", "/api/quotes", "ACME")
	var got struct {
		Replies []struct {
			Status int    `json:"status"`
			Body   string `json:"body"`
		} `json:"replies"`
		Complete bool `json:"complete"`
	}
	if q.err != nil || q.status != 200 || json.Unmarshal(q.body, &got) != nil || !got.Complete || len(got.Replies) != 2 ||
		got.Replies[0].Body == got.Replies[1].Body {
		t.Fatalf("quotes: %v %d %s", q.err, q.status, q.body)
	}
}
