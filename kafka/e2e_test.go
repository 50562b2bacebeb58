package kafka_test

// End-to-end tests: a real HTTP client → the envoy stand-in → the sidecall
// processor (every plugin, envoytest) → kafka-request-reply or
// kafka-upstream → kfake (the Kafka wire protocol on 127.0.0.1) → a
// kafka.Responder (or kcat, or nobody) → back to the client.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sidecall/sidecall/envoy"
	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/kafka"
	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

// e2eCluster starts kfake on 127.0.0.1 (port 0: any) with the request and
// reply topics, 3 partitions each.
func e2eCluster(t *testing.T, port int) (*kfake.Cluster, string) {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, "requests", "replies")}
	if port != 0 {
		opts = append(opts, kfake.Ports(port))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

func e2eFreePort(t *testing.T) int { return kafka.FreePort(t) }

func indent(s string, n int) string {
	if s == "" {
		return ""
	}
	pad := strings.Repeat(" ", n)
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(pad + l + "\n")
	}
	return b.String()
}

// deck is a decK config with route /rr running kafka-request-reply against
// addr (plus extra config lines), after the route plugins in pre.
func deck(addr, extra, pre string) string {
	host, port, _ := net.SplitHostPort(addr)
	return `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: rr
        paths: ["/rr"]
        plugins:
` + indent(pre, 10) + `          - name: kafka-request-reply
            config:
              bootstrap_servers: [{host: ` + host + `, port: ` + port + `}]
              topic: requests
              reply_topic: replies
` + indent(extra, 14)
}

// longEnvoy raises the stand-in's message_timeout for tests whose
// reply_timeout exceeds what sidecall's override_message_timeout may ask
// for (--envoy-max-message-timeout, 10s by default). Up to that, the shipped
// settings (envoytest.Options{}) suffice: TestE2ENoReplyOutlastsEnvoyMessageTimeout.
func longEnvoy(d time.Duration) func(*envoy.Config) {
	return func(c *envoy.Config) { c.MessageTimeout = d }
}

// client is a private HTTP client whose idle connections are closed when
// the test ends (goleak).
func client(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func send(c *http.Client, h *envoytest.Harness, method, path, body string, hs ...string) answer {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.URL+path, r)
	if err != nil {
		return answer{err: err}
	}
	for i := 0; i+1 < len(hs); i += 2 {
		req.Header.Add(hs[i], hs[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

// respond runs a kafka.Responder on the requests topic until the test ends.
func respond(t *testing.T, addr string, h kafka.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	r := &kafka.Responder{Brokers: []string{addr}, Topic: "requests", Format: kafka.FormatJSON, Handler: h, Concurrency: 512}
	go func() { done <- r.Run(ctx, func() { close(ready) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("responder: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("responder: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("responder not ready")
	}
}

// waitKafkaReady waits until every Kafka client is ready, kafka-upstream
// producers too (they never gate Plugins.Ready).
func waitKafkaReady(t *testing.T, h *envoytest.Harness) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !allReady(h) {
		if time.Now().After(deadline) {
			t.Fatal("kafka resources not ready after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func allReady(h *envoytest.Harness) bool {
	for _, d := range h.Plugins.Dependencies(h.Resources) {
		if !d.Ready {
			return false
		}
	}
	return true
}

func saramaCfg() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	c.Net.DialTimeout = 5 * time.Second
	c.Metadata.Retry.Backoff = 50 * time.Millisecond
	c.Producer.Return.Successes = true
	c.Producer.Partitioner = sarama.NewManualPartitioner
	return c
}

// watch returns every record produced to topic after it returns (all
// partitions, from the newest offset, no group).
func watch(t *testing.T, addr, topic string) <-chan *sarama.ConsumerMessage {
	t.Helper()
	c, err := sarama.NewConsumer([]string{addr}, saramaCfg())
	if err != nil {
		t.Fatal(err)
	}
	parts, err := c.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *sarama.ConsumerMessage, 1024)
	var wg sync.WaitGroup
	var pcs []sarama.PartitionConsumer
	for _, p := range parts {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		pcs = append(pcs, pc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range pc.Messages() {
				select {
				case out <- m:
				default:
				}
			}
		}()
	}
	t.Cleanup(func() {
		for _, pc := range pcs {
			pc.AsyncClose()
		}
		wg.Wait()
		c.Close()
	})
	return out
}

func next(t *testing.T, ch <-chan *sarama.ConsumerMessage) *sarama.ConsumerMessage {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no record within 10s")
		return nil
	}
}

func recordHeader(m *sarama.ConsumerMessage, name string) string {
	for _, h := range m.Headers {
		if string(h.Key) == name {
			return string(h.Value)
		}
	}
	return ""
}

// metric reads one sample (a counter or gauge) from the harness's registry.
func metric(t *testing.T, h *envoytest.Harness, name string, labels ...string) float64 {
	t.Helper()
	fams, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type errorBody struct {
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

func decodeError(t *testing.T, a answer) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(a.body, &e); err != nil || e.Message == "" {
		t.Fatalf("status %d: not the JSON error: %v: %s", a.status, err, a.body)
	}
	if ct := a.header.Get("content-type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error content-type %q", ct)
	}
	return e
}

// TestE2ERequestReply: the client gets the responder's status, headers and
// body; the request record carries the correlation ID (record header,
// envelope, key) and the reply topic.
func TestE2ERequestReply(t *testing.T) {
	_, addr := e2eCluster(t, 0)
	h := envoytest.Start(t, deck(addr, "reply_timeout: 10000", ""), envoytest.Options{})
	respond(t, addr, func(_ context.Context, req *kafkav1.Request) *kafkav1.Reply {
		return &kafkav1.Reply{Status: 201,
			Headers: []*kafkav1.Header{{Name: "content-type", Value: "text/plain"}, {Name: "x-responder", Value: "r1"},
				{Name: "x-seen-cid", Value: req.GetCorrelationId()}, {Name: "x-seen", Value: req.GetMethod() + " " + req.GetPath() + "?" + req.GetQuery()}},
			BodyText: "reply to " + string(kafka.RequestBodyOf(req))}
	})
	waitKafkaReady(t, h)
	requests := watch(t, addr, "requests")
	a := send(client(t), h, "POST", "/rr/orders?n=1", "hello kafka", "content-type", "text/plain", "x-client", "c1")
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.status != 201 || string(a.body) != "reply to hello kafka" || a.header.Get("x-responder") != "r1" ||
		a.header.Get("content-type") != "text/plain" || a.header.Get("x-seen") != "POST /rr/orders?n=1" {
		t.Fatalf("client got %d %v %q", a.status, a.header, a.body)
	}
	m := next(t, requests)
	cid := recordHeader(m, "kafka_correlationId")
	if cid == "" || a.header.Get("x-seen-cid") != cid {
		t.Fatalf("record correlation header %q, responder saw %q", cid, a.header.Get("x-seen-cid"))
	}
	if string(m.Key) != cid {
		t.Errorf("record key %q, want the correlation id %q", m.Key, cid)
	}
	if rt := recordHeader(m, "kafka_replyTopic"); rt != "replies" {
		t.Errorf("reply topic header %q", rt)
	}
	var env map[string]any
	if err := json.Unmarshal(m.Value, &env); err != nil {
		t.Fatalf("envelope is not JSON: %v: %s", err, m.Value)
	}
	for k, want := range map[string]any{"correlation_id": cid, "reply_topic": "replies", "method": "POST",
		"path": "/rr/orders", "query": "n=1", "body": "hello kafka"} {
		if env[k] != want {
			t.Errorf("envelope %s = %v, want %v (%s)", k, env[k], want, m.Value)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(env["deadline"])); err != nil {
		t.Errorf("envelope deadline %v: %v", env["deadline"], err)
	}
	hs := map[string]string{}
	list, _ := env["headers"].([]any)
	for _, x := range list {
		if kv, ok := x.(map[string]any); ok {
			hs[fmt.Sprint(kv["name"])] = fmt.Sprint(kv["value"])
		}
	}
	if hs["x-client"] != "c1" {
		t.Errorf("envelope headers %v lack x-client: c1", hs)
	}
}

// TestE2ECorrelationIDPlugin: with correlation-id in front, the same ID
// reaches the record (headers, envelope, key), the responder and the
// client: by default, and with correlation_id_header naming its header.
func TestE2ECorrelationIDPlugin(t *testing.T) {
	for _, extra := range []string{"reply_timeout: 10000", "reply_timeout: 10000\ncorrelation_id_header: X-Correlation-ID"} {
		t.Run(strings.ReplaceAll(extra, "\n", ","), func(t *testing.T) { testCorrelationIDPlugin(t, extra) })
	}
}

func testCorrelationIDPlugin(t *testing.T, extra string) {
	_, addr := e2eCluster(t, 0)
	pre := "- name: correlation-id\n  config: {header_name: X-Correlation-ID, generator: uuid, echo_downstream: true}\n"
	h := envoytest.Start(t, deck(addr, extra, pre), envoytest.Options{})
	respond(t, addr, kafka.EchoHandler)
	waitKafkaReady(t, h)
	requests := watch(t, addr, "requests")
	c := client(t)
	for _, given := range []string{"", "client-given-42"} {
		var hs []string
		if given != "" {
			hs = []string{"X-Correlation-ID", given}
		}
		a := send(c, h, "GET", "/rr/x", "", hs...)
		if a.err != nil || a.status != 200 {
			t.Fatalf("got %v %d %s", a.err, a.status, a.body)
		}
		m := next(t, requests)
		cid := recordHeader(m, "kafka_correlationId")
		var env, echoed map[string]any
		_ = json.Unmarshal(m.Value, &env)
		if err := json.Unmarshal(a.body, &echoed); err != nil {
			t.Fatal(err)
		}
		hdrs, _ := echoed["headers"].(map[string]any)
		fromPlugin := ""
		if v, ok := hdrs["x-correlation-id"].([]any); ok && len(v) == 1 {
			fromPlugin = fmt.Sprint(v[0])
		}
		if cid == "" || fromPlugin != cid || string(m.Key) != cid || env["correlation_id"] != cid ||
			echoed["correlation_id"] != cid || a.header.Get("x-correlation-id") != cid {
			t.Fatalf("ids differ: record header %q, key %q, envelope %v, header set by correlation-id %q, responder %v, client %q",
				cid, m.Key, env["correlation_id"], fromPlugin, echoed["correlation_id"], a.header.Get("x-correlation-id"))
		}
		if given != "" && cid != given {
			t.Errorf("client's correlation id %q not kept: %q", given, cid)
		}
		if given == "" && len(cid) != 36 {
			t.Errorf("generated id %q is not a uuid", cid)
		}
	}
}

// TestE2EKcat: kcat (librdkafka, an independent client) reads the request
// record and produces the reply by hand; the HTTP client gets it.
func TestE2EKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat not installed; CI must run this test (apt-get install kcat)")
		}
		t.Skip("kcat not installed (apt-get install kcat); .ci/run installs it")
	}
	_, addr := e2eCluster(t, 0)
	h := envoytest.Start(t, deck(addr, "reply_timeout: 20000", ""), envoytest.Options{Envoy: longEnvoy(25 * time.Second)})
	waitKafkaReady(t, h)
	got := make(chan answer, 1)
	c := client(t)
	go func() { got <- send(c, h, "PUT", "/rr/kcat?z=1", "ping", "content-type", "text/plain") }()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-C", "-b", addr, "-t", "requests", "-o", "beginning", "-c", "1",
		"-f", "key=%k\nheaders=%h\nvalue=%s\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat -C: %v\n%s", err, out)
	}
	var key, headers, value string
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "key="):
			key = l[4:]
		case strings.HasPrefix(l, "headers="):
			headers = l[8:]
		case strings.HasPrefix(l, "value="):
			value = l[6:]
		}
	}
	var env map[string]any
	if err := json.Unmarshal([]byte(value), &env); err != nil {
		t.Fatalf("kcat read a value that is not the JSON envelope: %v\n%s", err, out)
	}
	cid, _ := env["correlation_id"].(string)
	if cid == "" || key != cid || env["method"] != "PUT" || env["path"] != "/rr/kcat" || env["query"] != "z=1" ||
		env["body"] != "ping" || env["body_base64"] != nil || env["reply_topic"] != "replies" {
		t.Fatalf("kcat read:\n%s", out)
	}
	for _, want := range []string{"kafka_correlationId=" + cid, "kafka_replyTopic=replies"} {
		if !strings.Contains(headers, want) {
			t.Errorf("record headers %q lack %q", headers, want)
		}
	}
	prod := exec.CommandContext(ctx, kcat, "-P", "-b", addr, "-t", "replies", "-H", "kafka_correlationId="+cid)
	prod.Stdin = bytes.NewBufferString(`{"status":202,"headers":{"x-from":"kcat"},"body":"pong world","correlation_id":"` + cid + `"}` + "\n")
	if out, err := prod.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}
	select {
	case a := <-got:
		if a.err != nil || a.status != 202 || string(a.body) != "pong world" || a.header.Get("x-from") != "kcat" {
			t.Fatalf("client got %v %d %v %q", a.err, a.status, a.header, a.body)
		}
	case <-ctx.Done():
		t.Fatal("the client never got kcat's reply")
	}
}

// TestE2EConcurrentNoCrossTalk: 500 concurrent HTTP requests, replies in
// random order; every client gets its own reply, none is lost.
func TestE2EConcurrentNoCrossTalk(t *testing.T) {
	_, addr := e2eCluster(t, 0)
	h := envoytest.Start(t, deck(addr, "reply_timeout: 30000", ""), envoytest.Options{Envoy: longEnvoy(35 * time.Second)})
	respond(t, addr, func(_ context.Context, req *kafkav1.Request) *kafkav1.Reply {
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond) // random order
		n := ""
		for _, hd := range req.GetHeaders() {
			if hd.GetName() == "x-n" {
				n = hd.GetValue()
			}
		}
		return &kafkav1.Reply{Status: 200, Headers: []*kafkav1.Header{{Name: "x-n", Value: n}},
			BodyText: "for " + string(kafka.RequestBodyOf(req))}
	})
	waitKafkaReady(t, h)
	const n = 500
	c := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	results := make(chan error, n)
	for i := range n {
		go func() {
			a := send(c, h, "POST", fmt.Sprintf("/rr/%d", i), fmt.Sprintf("req-%d", i), "x-n", fmt.Sprint(i))
			switch {
			case a.err != nil:
				results <- fmt.Errorf("request %d: %v", i, a.err)
			case a.status != 200 || string(a.body) != fmt.Sprintf("for req-%d", i) || a.header.Get("x-n") != fmt.Sprint(i):
				results <- fmt.Errorf("request %d got someone else's or no reply: %d %v %q", i, a.status, a.header.Get("x-n"), a.body)
			default:
				results <- nil
			}
		}()
	}
	bad := 0
	for range n {
		select {
		case err := <-results:
			if err != nil {
				bad++
				if bad <= 10 {
					t.Error(err)
				}
			}
		case <-ctx.Done():
			t.Fatal("requests still outstanding after 90s")
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d requests without their own reply", bad, n)
	}
}

// TestE2ETwoInstancesShareReplyTopic: two sidecalls on one reply topic each
// get only their own replies (the other's are dropped as unknown).
func TestE2ETwoInstancesShareReplyTopic(t *testing.T) {
	_, addr := e2eCluster(t, 0)
	cfg := deck(addr, "reply_timeout: 20000", "")
	h1 := envoytest.Start(t, cfg, envoytest.Options{Envoy: longEnvoy(25 * time.Second)})
	h2 := envoytest.Start(t, cfg, envoytest.Options{Envoy: longEnvoy(25 * time.Second)})
	respond(t, addr, func(_ context.Context, req *kafkav1.Request) *kafkav1.Reply {
		time.Sleep(time.Duration(rand.IntN(10)) * time.Millisecond)
		return &kafkav1.Reply{Status: 200, BodyText: string(kafka.RequestBodyOf(req))}
	})
	waitKafkaReady(t, h1)
	waitKafkaReady(t, h2)
	unknown := func(h *envoytest.Harness) float64 {
		return metric(t, h, "sidecall_kafka_replies_total", "reply_topic", "replies", "result", "unknown")
	}
	unknown1, unknown2 := unknown(h1), unknown(h2)
	const n = 100
	c := client(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := []*envoytest.Harness{h1, h2}[i%2]
			body := fmt.Sprintf("instance %d request %d", i%2+1, i)
			if a := send(c, h, "POST", "/rr", body); a.err != nil || a.status != 200 || string(a.body) != body {
				errs <- fmt.Errorf("request %d: %v %d %q", i, a.err, a.status, a.body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Each instance read the other's 50 replies and dropped them, counting
	// them in its own metrics.
	eventually(t, "foreign replies counted as unknown", 5*time.Second, func() bool {
		return unknown(h1) >= unknown1+n/2 && unknown(h2) >= unknown2+n/2
	})
}

// TestE2ENoReplyAndLateReply: no reply → 504 within reply_timeout + 100 ms,
// the JSON error with the correlation ID; the reply arriving after that is
// dropped and counted as late.
func TestE2ENoReplyAndLateReply(t *testing.T) {
	_, addr := e2eCluster(t, 0)
	h := envoytest.Start(t, deck(addr, "reply_timeout: 400\ncorrelation_id_header: x-cid", ""), envoytest.Options{})
	waitKafkaReady(t, h)
	late := metric(t, h, "sidecall_kafka_replies_total", "reply_topic", "replies", "result", "late")
	c := client(t)
	send(c, h, "GET", "/rr/warm", "", "x-cid", "warm-up") // first connection, first produce
	start := time.Now()
	a := send(c, h, "GET", "/rr/slow", "", "x-cid", "late-e2e-1")
	el := time.Since(start)
	if a.err != nil || a.status != 504 {
		t.Fatalf("got %v %d %s, want 504", a.err, a.status, a.body)
	}
	if el < 400*time.Millisecond || el > 1400*time.Millisecond { // the upper bound only catches a hang
		t.Errorf("504 after %v, want 400ms (reply_timeout) and not much later", el)
	}
	e := decodeError(t, a)
	if !strings.Contains(e.Message, "late-e2e-1") || a.header.Get("kafka_correlationId") != "late-e2e-1" {
		t.Errorf("504 without the correlation id: %v %+v", a.header, e)
	}
	prod, err := sarama.NewSyncProducer([]string{addr}, saramaCfg())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "replies", Value: sarama.StringEncoder(`{"status":200,"body":"too late"}`),
		Headers: []sarama.RecordHeader{{Key: []byte("kafka_correlationId"), Value: []byte("late-e2e-1")}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, `sidecall_kafka_replies_total{result="late"} +1`, 5*time.Second, func() bool {
		return metric(t, h, "sidecall_kafka_replies_total", "reply_topic", "replies", "result", "late") == late+1
	})
}

// TestE2EBrokerDownAndBack: broker stopped → 503 quickly (not after the
// reply timeout); the same sidecall serves again once it is back.
func TestE2EBrokerDownAndBack(t *testing.T) {
	port := e2eFreePort(t)
	c1, addr := e2eCluster(t, port)
	h := envoytest.Start(t, deck(addr, "reply_timeout: 5000", ""), envoytest.Options{})
	waitKafkaReady(t, h)
	c1.Close()
	hc := client(t)
	start := time.Now()
	a := send(hc, h, "GET", "/rr/down", "")
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("took %v to fail with the broker down, want well under the 5s reply timeout", el)
	}
	if a.err != nil || a.status != 503 {
		t.Fatalf("broker down: got %v %d %s, want 503", a.err, a.status, a.body)
	}
	if e := decodeError(t, a); !strings.Contains(e.Message, "correlation id") {
		t.Errorf("503 message %q lacks the correlation id", e.Message)
	}
	e2eCluster(t, port) // back on the same address, empty
	respond(t, addr, kafka.EchoHandler)
	var last answer
	for i := 0; i < 60; i++ {
		last = send(hc, h, "GET", "/rr/again", "")
		if last.err == nil && last.status == 200 {
			waitKafkaReady(t, h)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("never served again after the broker came back: %v %d %s", last.err, last.status, last.body)
}

// TestE2EPendingCap: with max_pending waiting requests, the next one is a
// 503 at once.
func TestE2EPendingCap(t *testing.T) {
	_, addr := e2eCluster(t, 0)
	h := envoytest.Start(t, deck(addr, "reply_timeout: 3000\nmax_pending: 2", ""), envoytest.Options{})
	waitKafkaReady(t, h)
	base := metric(t, h, "sidecall_kafka_pending", "reply_topic", "replies")
	c := client(t)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if a := send(c, h, "GET", "/rr/wait", ""); a.status != 504 {
				t.Errorf("waiting request: %v %d %s, want 504", a.err, a.status, a.body)
			}
		}()
	}
	eventually(t, "two requests pending", 5*time.Second, func() bool {
		return metric(t, h, "sidecall_kafka_pending", "reply_topic", "replies") == base+2
	})
	start := time.Now()
	a := send(c, h, "GET", "/rr/one-too-many", "")
	if a.err != nil || a.status != 503 {
		t.Fatalf("got %v %d %s, want 503", a.err, a.status, a.body)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("pending-full 503 took %v", el)
	}
	if e := decodeError(t, a); !strings.Contains(e.Message, "correlation id") {
		t.Errorf("message %q", e.Message)
	}
	wg.Wait()
}

// TestE2EReadiness: Plugins.Ready (what /readyz reports) is false until the
// reply consumer is positioned, and requests meanwhile are 503; once the
// broker is up it turns true and requests are served.
func TestE2EReadiness(t *testing.T) {
	port := e2eFreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	h := envoytest.Start(t, deck(addr, "reply_timeout: 5000", ""), envoytest.Options{})
	c := client(t)
	for i := 0; i < 5; i++ {
		if h.Plugins.Ready(h.Resources) {
			t.Fatal("ready with no broker")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a := send(c, h, "GET", "/rr/early", ""); a.err != nil || a.status != 503 {
		t.Fatalf("before ready: got %v %d %s, want 503", a.err, a.status, a.body)
	}
	e2eCluster(t, port)
	waitKafkaReady(t, h)
	respond(t, addr, kafka.EchoHandler)
	if a := send(c, h, "GET", "/rr/ready", ""); a.err != nil || a.status != 200 {
		t.Fatalf("after ready: got %v %d %s", a.err, a.status, a.body)
	}
}

func upstreamDeck(addr string, async bool) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: up
        paths: ["/up"]
        plugins:
          - name: kafka-upstream
            config:
              bootstrap_servers: [{host: %s, port: %s}]
              topic: requests
              forward_method: true
              forward_uri: true
              forward_headers: true
              producer_async: %t
`, host, port, async)
}

// newestSum is the total high watermark of topic.
func newestSum(t *testing.T, cl sarama.Client, topic string) int64 {
	t.Helper()
	parts, err := cl.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, p := range parts {
		o, err := cl.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		sum += o
	}
	return sum
}

// TestE2EKafkaUpstream: Kong's kafka-upstream through the stand-in, async
// (answer after enqueue) and sync (answer after the ack); the record is
// Kong's envelope.
func TestE2EKafkaUpstream(t *testing.T) {
	for _, async := range []bool{true, false} {
		t.Run(map[bool]string{true: "async", false: "sync"}[async], func(t *testing.T) {
			_, addr := e2eCluster(t, 0)
			h := envoytest.Start(t, upstreamDeck(addr, async), envoytest.Options{})
			waitKafkaReady(t, h)
			records := watch(t, addr, "requests")
			cl, err := sarama.NewClient([]string{addr}, saramaCfg())
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			before := newestSum(t, cl, "requests")
			c := client(t)
			a := send(c, h, "POST", "/up/orders?a=1&a=2&flag", `{"n":1,"s":"x"}`,
				"content-type", "application/json", "x-multi", "1", "x-multi", "2")
			if a.err != nil || a.status != 200 || string(a.body) != `{"message":"message sent"}` {
				t.Fatalf("got %v %d %s", a.err, a.status, a.body)
			}
			if !async {
				if got := newestSum(t, cl, "requests"); got != before+1 {
					t.Errorf("sync mode answered before the record was written: offsets %d → %d", before, got)
				}
			}
			m := next(t, records)
			var env map[string]any
			if err := json.Unmarshal(m.Value, &env); err != nil {
				t.Fatalf("%v: %s", err, m.Value)
			}
			var keys []string
			for k := range env {
				keys = append(keys, k)
			}
			if len(env) != 6 {
				t.Errorf("envelope keys %v, want method, uri, uri_args, headers, body, body_args", keys)
			}
			want := map[string]any{
				"method":    "POST",
				"uri":       "/up/orders?a=1&a=2&flag",
				"uri_args":  map[string]any{"a": []any{"1", "2"}, "flag": true},
				"body":      `{"n":1,"s":"x"}`,
				"body_args": map[string]any{"n": 1.0, "s": "x"},
			}
			for k, v := range want {
				if !reflect.DeepEqual(env[k], v) {
					t.Errorf("envelope %s = %#v, want %#v", k, env[k], v)
				}
			}
			hs, _ := env["headers"].(map[string]any)
			if hs["content-type"] != "application/json" || !reflect.DeepEqual(hs["x-multi"], []any{"1", "2"}) {
				t.Errorf("envelope headers %v", hs)
			}
			for k := range hs {
				if k != strings.ToLower(k) {
					t.Errorf("header name %q is not lower-case", k)
				}
			}
			// A body of no parsed or raw type is base64 with body_base64.
			a = send(c, h, "POST", "/up", "\x00\x01bin", "content-type", "application/octet-stream")
			if a.err != nil || a.status != 200 {
				t.Fatalf("got %v %d %s", a.err, a.status, a.body)
			}
			m = next(t, records)
			env = nil
			_ = json.Unmarshal(m.Value, &env)
			if env["body"] != "AAFiaW4=" || env["body_base64"] != true || !reflect.DeepEqual(env["body_args"], map[string]any{}) {
				t.Errorf("binary body envelope %s", m.Value)
			}
		})
	}
}

// TestE2EExampleConfig runs examples/kafka-request-reply.yaml as shipped
// (only the broker port changed) with the example responder's handler.
func TestE2EExampleConfig(t *testing.T) {
	src, err := os.ReadFile("../examples/kafka-request-reply.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "quotes.requests", "quotes.replies", "events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	_, port, _ := net.SplitHostPort(addr)
	cfg := strings.ReplaceAll(string(src), "port: 9092", "port: "+port)
	if cfg == string(src) {
		t.Fatal("the example no longer names port 9092")
	}
	h := envoytest.Start(t, cfg, envoytest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	r := &kafka.Responder{Brokers: []string{addr}, Topic: "quotes.requests", Handler: kafka.EchoHandler}
	go func() { done <- r.Run(ctx, func() { close(ready) }) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("responder not ready")
	}
	waitKafkaReady(t, h)
	cl := client(t)
	a := send(cl, h, "POST", "/api/quotes?sym=ACME", `{"qty":3}`, "X-Correlation-ID", "ex-77")
	var got map[string]any
	if a.err != nil || a.status != 200 || json.Unmarshal(a.body, &got) != nil || got["correlation_id"] != "ex-77" ||
		got["path"] != "/api/quotes" || got["body"] != `{"qty":3}` || a.header.Get("x-correlation-id") != "ex-77" {
		t.Fatalf("quotes: %v %d %v %s", a.err, a.status, a.header, a.body)
	}
	if a := send(cl, h, "POST", "/api/events", `{"e":1}`, "content-type", "application/json"); a.err != nil || a.status != 200 ||
		string(a.body) != `{"message":"message sent"}` {
		t.Fatalf("events: %v %d %s", a.err, a.status, a.body)
	}
}
