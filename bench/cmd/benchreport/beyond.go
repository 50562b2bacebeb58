package main

// The "beyond the peers" section: what the resilience and scale features
// cost on one in-process sidecall processor, against the pass-through route
// (and a plain request-reply) measured in the same run: an open circuit
// breaker's fast failure, an idempotent replay from the memory store, and
// an async 202.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sidecall/sidecall/bench/load"
)

func init() {
	sections = append(sections, section{name: "beyond the peers", run: runBeyond})
}

// Sizes: streams per measurement at each concurrency; the breaker-off row
// waits 50 ms a stream, so it gets few.
var beyondRuns = []struct{ c, n int }{{1, 2000}, {16, 5000}}

const (
	beyondRounds   = 3
	beyondSlowN    = 30
	beyondSlowWait = 50 * time.Millisecond
	beyondIdemKey  = "bench-replay-1"
)

func beyondConfig(svc, broker string) string {
	host, port, _ := net.SplitHostPort(broker)
	callout := func(path, onError string, breaker bool) string {
		s := `
          - name: request-callout
            config:
              callouts:
                - name: dep
                  request:
                    url: ` + svc + path + `
                    http_opts: {timeouts: {connect: 1000, write: 1000, read: 2000}}
                    error: {on_error: ` + onError + `, http_statuses: [503], error_response_code: 503}`
		if breaker {
			s += `
                    circuit_breaker: {failures: 1, open_ms: 600000}`
		}
		return s
	}
	kafka := func(extra string) string {
		return `
          - name: kafka-request-reply
            config:
              bootstrap_servers: [{host: ` + host + `, port: ` + port + `}]
              topic: be.req
              reply_topic: be.rep
              reply_timeout: 10000` + extra
	}
	return `_format_version: "3.0"
services:
  - name: bench
    url: http://127.0.0.1:1
    routes:
      - name: pass
        paths: ["/pass"]
      - name: brfail
        paths: ["/brfail"]
        plugins:` + callout("/down", "fail", true) + `
      - name: brcont
        paths: ["/brcont"]
        plugins:` + callout("/down", "continue", true) + `
      - name: nobreaker
        paths: ["/nobreaker"]
        plugins:` + callout("/slowdown", "fail", false) + `
      - name: rr
        paths: ["/rr"]
        plugins:` + kafka("") + `
      - name: idem
        paths: ["/idem"]
        plugins:` + kafka(`
              idempotency: {header: Idempotency-Key, ttl: 600000, strategy: memory}`) + `
      - name: async
        paths: ["/async"]
        plugins:` + kafka(`
              async: {enabled: true, result_path: /async/results, ttl: 60000, strategy: memory}`) + `
`
}

// gauge sums the samples of a gauge in reg.
func gauge(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// beyondCheck is a count that must grow by per for every stream.
type beyondCheck struct {
	what  string
	count func() float64
	per   float64
}

type beyondScen struct {
	label  string
	sc     load.Scenario
	checks []beyondCheck
}

func runBeyond() (string, error) {
	// The failing service: /down answers 503 at once, /slowdown after 50 ms.
	var downHits, slowHits atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) {
		downHits.Add(1)
		w.WriteHeader(503)
	})
	mux.HandleFunc("/slowdown", func(w http.ResponseWriter, r *http.Request) {
		slowHits.Add(1)
		time.Sleep(beyondSlowWait)
		w.WriteHeader(503)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = srv.Serve(hl) }()
	defer srv.Close()

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "be.req", "be.rep"))
	if err != nil {
		return "", err
	}
	defer cluster.Close()
	broker := cluster.ListenAddrs()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rctx, stopResponders := context.WithCancel(ctx)
	waitResponders, err := startResponders(rctx, broker, "be.req")
	defer func() { stopResponders(); waitResponders() }()
	if err != nil {
		return "", err
	}

	reg := prometheus.NewRegistry()
	conn, stop, err := inProcessWith(beyondConfig("http://"+hl.Addr().String(), broker), reg)
	if err != nil {
		return "", err
	}
	defer stop()
	kafkaOut := func(route, outcome string) func() float64 {
		return func() float64 {
			return counter(reg, "sidecall_kafka_requests_total", map[string]string{"route": route, "outcome": outcome})
		}
	}
	produced := func() float64 {
		return counter(reg, "sidecall_kafka_produced_total", map[string]string{"result": "ok"})
	}
	hits := func(n *atomic.Int64) func() float64 { return func() float64 { return float64(n.Load()) } }
	calloutErrors := func(route string) func() float64 {
		return func() float64 {
			return counter(reg, "sidecall_callout_refused_total", map[string]string{"route": route, "reason": "breaker_open"})
		}
	}
	// The kafka clients start in the background: ready once a request is replied.
	rr := load.Scenario{Name: "be-rr", Route: "rr", Path: "/rr"}
	for kafkaOut("rr", "replied")() == 0 {
		if ctx.Err() != nil {
			return "", errors.New("kafka-request-reply not ready")
		}
		load.Run(ctx, conn, rr, 1, 1)
		time.Sleep(10 * time.Millisecond)
	}

	pass := beyondScen{label: "pass-through route", sc: load.Scenario{Name: "be-pass", Route: "pass", Path: "/pass"}}
	breaker := []beyondScen{
		pass,
		{label: "breaker open, `on_error: fail` (503 from sidecall)", sc: load.Scenario{Name: "be-brfail", Route: "brfail", Path: "/brfail"},
			checks: []beyondCheck{{"service calls", hits(&downHits), 0}, {"fast failures", calloutErrors("brfail"), 1}}},
		{label: "breaker open, `on_error: continue` (X-Sidecall-Completed: false)", sc: load.Scenario{Name: "be-brcont", Route: "brcont", Path: "/brcont"},
			checks: []beyondCheck{{"service calls", hits(&downHits), 0}, {"fast failures", calloutErrors("brcont"), 1}}},
	}
	noBreaker := beyondScen{label: "no breaker: each request waits for the failing service (50 ms, then 503)",
		sc:     load.Scenario{Name: "be-nobreaker", Route: "nobreaker", Path: "/nobreaker"},
		checks: []beyondCheck{{"service calls", hits(&slowHits), 1}}}
	kafkaRows := []beyondScen{
		pass,
		{label: "plain request-reply", sc: rr,
			checks: []beyondCheck{{"replied", kafkaOut("rr", "replied"), 1}, {"records produced", produced, 1}}},
		{label: "idempotent replay (same Idempotency-Key, memory store)",
			sc:     load.Scenario{Name: "be-idem", Route: "idem", Path: "/idem", Headers: []string{"idempotency-key", beyondIdemKey}},
			checks: []beyondCheck{{"replayed", kafkaOut("idem", "replayed"), 1}, {"records produced", produced, 0}}},
		{label: "async 202 (memory store; CPU includes storing the reply)", sc: load.Scenario{Name: "be-async", Route: "async", Path: "/async"},
			checks: []beyondCheck{{"accepted", kafkaOut("async", "accepted"), 1}, {"records produced", produced, 1}}},
	}
	// The breaker opens on its first failure, the idempotency key is
	// claimed by its first request: warm-ups do both, unchecked.
	for _, s := range []beyondScen{breaker[1], breaker[2], kafkaRows[2]} {
		load.Run(ctx, conn, s.sc, 1, 1)
	}

	measure := func(s beyondScen, c, n int) (coMeasure, error) {
		before := make([]float64, len(s.checks))
		for i, k := range s.checks {
			before[i] = k.count()
		}
		c0 := coProcessCPU()
		r := load.Run(ctx, conn, s.sc, c, n)
		// An async request is done when its reply is stored.
		for gauge(reg, "sidecall_kafka_pending") > 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		used := coProcessCPU() - c0
		if r.Errors > 0 || ctx.Err() != nil {
			return coMeasure{}, fmt.Errorf("%s c=%d: %d errors %v", s.label, c, r.Errors, ctx.Err())
		}
		for i, k := range s.checks {
			if got, want := k.count()-before[i], k.per*float64(n); got != want {
				return coMeasure{}, fmt.Errorf("%s c=%d: %s %.0f for %d streams, want %.0f", s.label, c, k.what, got, n, want)
			}
		}
		return coMeasure{res: r, cpuPer: used / time.Duration(n)}, nil
	}
	rounds := func(ss []beyondScen, c, n int) ([]coMeasure, error) {
		for _, s := range ss {
			if _, err := measure(s, c, max(n/5, 1)); err != nil {
				return nil, fmt.Errorf("warm-up: %w", err)
			}
		}
		got := make([][]coMeasure, len(ss))
		for round := 0; round < beyondRounds; round++ {
			for i, s := range ss {
				m, err := measure(s, c, n)
				if err != nil {
					return nil, err
				}
				got[i] = append(got[i], m)
				log.Printf("%-70s c=%-3d %8.0f streams/s p50 %v p99 %v cpu/stream %v", s.label, c, m.res.PerSecond(), m.res.P50, m.res.P99, m.cpuPer)
			}
		}
		out := make([]coMeasure, len(ss))
		for i := range got {
			out[i] = coMed(got[i])
		}
		return out, nil
	}

	var runs []beyondRun
	for _, r := range beyondRuns {
		br, err := rounds(breaker, r.c, r.n)
		if err != nil {
			return "", err
		}
		kfk, err := rounds(kafkaRows, r.c, r.n)
		if err != nil {
			return "", err
		}
		runs = append(runs, beyondRun{r.c, r.n, br, kfk})
	}
	slow, err := rounds([]beyondScen{noBreaker}, 1, beyondSlowN)
	if err != nil {
		return "", err
	}
	return beyondReport(runs, breaker, kafkaRows, noBreaker, slow[0]), nil
}

// beyondRun is one concurrency's medians, in the order of the scenarios.
type beyondRun struct {
	c, n    int
	br, kfk []coMeasure
}

func beyondReport(runs []beyondRun, breaker, kafkaRows []beyondScen, noBreaker beyondScen, slow coMeasure) string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }
	us := func(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }
	x := func(a, b time.Duration) string { return fmt.Sprintf("%.2fx", float64(a)/float64(b)) }
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Beyond the peers: circuit breaker, idempotent replay, async 202\n\n")

	fmt.Fprintf(&b, "### An open circuit breaker's fast failure vs the pass-through route\n\n")
	fmt.Fprintf(&b, "| scenario | c | streams | streams/s | p50 | p99 | process CPU/stream | CPU vs pass-through | p50 vs pass-through |\n|---|---|---|---|---|---|---|---|---|\n")
	var sum []string
	for _, r := range runs {
		c, n, br := r.c, r.n, r.br
		for i, s := range breaker {
			m := br[i]
			fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %s | %s | %s | %s | %s |\n", s.label, c, n, m.res.PerSecond(), ms(m.res.P50), ms(m.res.P99),
				us(m.cpuPer), x(m.cpuPer, br[0].cpuPer), x(m.res.P50, br[0].res.P50))
		}
		sum = append(sum, fmt.Sprintf("c=%d: `fail` %s, `continue` %s", c, x(br[1].cpuPer, br[0].cpuPer), x(br[2].cpuPer, br[0].cpuPer)))
	}
	pass1 := runs[0].br[0] // c=1
	// Its CPU is not shown: over 50 ms a stream, the idle process's
	// background work (the Kafka clients' polling) dominates it.
	fmt.Fprintf(&b, "| %s | 1 | %d | %.0f | %s | %s | – | – | %s |\n", noBreaker.label, beyondSlowN, slow.res.PerSecond(), ms(slow.res.P50), ms(slow.res.P99),
		x(slow.res.P50, pass1.res.P50))
	fmt.Fprintf(&b, "\nThis run: fast-fail CPU vs pass-through %s; p50 %s open (`on_error: fail`, c=1) against %s without a breaker. "+
		"The open breaker answers without touching the network: the service got no request during the measured streams (checked).\n\n",
		strings.Join(sum, "; "), ms(runs[0].br[1].res.P50), ms(slow.res.P50))

	fmt.Fprintf(&b, "### Kafka request-reply: idempotent replay and async 202 vs a plain request-reply and the pass-through route\n\n")
	fmt.Fprintf(&b, "| scenario | c | streams | streams/s | p50 | p99 | process CPU/stream | CPU vs pass-through | CPU vs request-reply | p50 vs pass-through | p50 vs request-reply |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	sum = nil
	for _, r := range runs {
		c, n, kfk := r.c, r.n, r.kfk
		p, rr := kfk[0], kfk[1]
		for i, s := range kafkaRows {
			m := kfk[i]
			fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", s.label, c, n, m.res.PerSecond(), ms(m.res.P50), ms(m.res.P99),
				us(m.cpuPer), x(m.cpuPer, p.cpuPer), x(m.cpuPer, rr.cpuPer), x(m.res.P50, p.res.P50), x(m.res.P50, rr.res.P50))
		}
		sum = append(sum, fmt.Sprintf("c=%d: replay %s the request-reply's CPU and %s its p50; async 202 p50 %s the pass-through's, %s the request-reply's",
			c, x(kfk[2].cpuPer, rr.cpuPer), x(kfk[2].res.P50, rr.res.P50), x(kfk[3].res.P50, p.res.P50), x(kfk[3].res.P50, rr.res.P50)))
	}
	fmt.Fprintf(&b, "\nThis run: %s.\n\n", strings.Join(sum, "; "))

	fmt.Fprintf(&b, "Method: one in-process sidecall processor (`flows.Load` with every plugin, gRPC on 127.0.0.1) driven by the ext_proc load client "+
		"(request headers only, one stream per request, route by xds.route_name; response headers too when the processor asks for them, as the `continue` route does for its marker), "+
		"a local HTTP service answering 503 at once (the breakers' target, `circuit_breaker: {failures: 1, open_ms: 600000}`, opened by one request before the warm-up) "+
		"or after 50 ms (the route without a breaker), and one in-process kfake broker (3 partitions) with one kafka.Responder answering a fixed 200 JSON. "+
		"The idempotent route gets the same Idempotency-Key on every stream (claimed by one request before the warm-up), so each measured stream is a replay from the memory store (checked: no record produced); "+
		"the async route answers 202 after producing, and its measurement ends when every reply is stored (the CPU includes that; the latency is the 202's). "+
		"Every measured stream is checked through the plugins' metrics (fast failures, replays, accepted, replied). "+
		"%d alternating rounds per table after a warm-up, medians shown; CPU is getrusage of the whole process (processor, load client, service, broker and responder), so the Kafka rows' CPU includes the broker's and responder's work.\n",
		beyondRounds)
	return b.String()
}
