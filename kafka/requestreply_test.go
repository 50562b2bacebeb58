package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sidecall/sidecall/flows"
	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

func httpStatus(t *testing.T, err error) int {
	t.Helper()
	var he *flows.HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("want an HTTPError, got %v", err)
	}
	return he.Status
}

func TestRequestReplyFormats(t *testing.T) {
	_, addr := newCluster(t)
	for _, f := range []Format{FormatJSON, FormatProtobuf, FormatRaw} {
		t.Run(f.String(), func(t *testing.T) {
			res := newResources(t)
			p := build(t, res, "kafka-request-reply", rrConfig(addr, "message_format: "+f.String()+"\ncorrelation_id_header: x-cid"))
			startResponder(t, addr, f, echo)
			waitReady(t, res)
			body := []byte("hello \x00\xff binary")
			x := exchange("POST", "/orders/1", "a=1&b=2", body, "x-cid", "cid-"+f.String(), "content-type", "application/octet-stream")
			if err := access(t, p, x); err != nil {
				t.Fatal(err)
			}
			if x.Reply == nil {
				t.Fatal("no reply")
			}
			if x.Reply.Status != 201 || !bytes.Equal(x.Reply.Body, body) {
				t.Fatalf("reply = %d %q", x.Reply.Status, x.Reply.Body)
			}
			if got := x.Reply.Headers.Get("x-echo-path"); got != "/orders/1?a=1&b=2" {
				t.Errorf("x-echo-path = %q", got)
			}
			if got := x.Reply.Headers.Get("x-method"); got != "POST" {
				t.Errorf("x-method = %q", got)
			}
		})
	}
}

// TestRequestRecord checks what is produced: key, headers, envelope.
func TestRequestRecord(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_timeout: 300\nreply_partition: 2\ncorrelation_id_header: x-cid"))
	waitReady(t, res)
	got := make(chan *sarama.ConsumerMessage, 1)
	consumeOne(t, addr, "requests", got)
	x := exchange("PUT", "/a", "q=1", []byte(`{"k":"v"}`), "x-cid", "abc-123", "content-type", "application/json")
	start := time.Now()
	err := access(t, p, x)
	if httpStatus(t, err) != 504 || !strings.Contains(err.Error(), "abc-123") {
		t.Fatalf("want 504 with the correlation id, got %v", err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 1300*time.Millisecond { // the upper bound only catches a hang
		t.Errorf("timeout after %v, want 300ms", el)
	}
	var m *sarama.ConsumerMessage
	select {
	case m = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no request record")
	}
	if string(m.Key) != "abc-123" {
		t.Errorf("key = %q", m.Key)
	}
	if v := headerValue(m.Headers, "kafka_correlationId"); string(v) != "abc-123" {
		t.Errorf("correlation header = %q", v)
	}
	if v := headerValue(m.Headers, "kafka_replyTopic"); string(v) != "replies" {
		t.Errorf("reply topic header = %q", v)
	}
	if v := headerValue(m.Headers, "kafka_replyPartition"); !bytes.Equal(v, []byte{0, 0, 0, 2}) {
		t.Errorf("reply partition header = %v", v)
	}
	s := string(m.Value)
	for _, want := range []string{`"correlation_id":"abc-123"`, `"method":"PUT"`, `"path":"/a"`, `"query":"q=1"`, `"body":"{\"k\":\"v\"}"`, `"reply_topic":"replies"`, `"reply_partition":2`, `"deadline":"`} {
		if !strings.Contains(strings.ReplaceAll(s, " ", ""), want) {
			t.Errorf("envelope %s lacks %s", s, want)
		}
	}
	req, err := DecodeRequest(FormatJSON, DefaultHeaderNames, m.Value, m.Headers)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(req.GetDeadline().AsTime()); d > 0 || d < -5*time.Second {
		t.Errorf("deadline %v not about now+300ms", req.GetDeadline().AsTime())
	}
}

// consumeOne reads the first record produced to topic after it returns.
func consumeOne(t *testing.T, addr, topic string, out chan<- *sarama.ConsumerMessage) {
	t.Helper()
	c, err := sarama.NewConsumer([]string{addr}, saramaConfig(&conn{Timeout: 5000}))
	if err != nil {
		t.Fatal(err)
	}
	parts, err := c.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
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
}

func TestConcurrentNoCrossTalk(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_timeout: 15000"))
	// Random delays make replies come back in random order.
	startResponder(t, addr, FormatJSON, func(ctx context.Context, req *kafkav1.Request) *kafkav1.Reply {
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		return &kafkav1.Reply{Status: 200, BodyText: "for " + string(RequestBodyOf(req))}
	})
	waitReady(t, res)
	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf("req-%d", i)
			x := exchange("POST", "/c", "", []byte(body))
			if err := access(t, p, x); err != nil {
				errs <- err
				return
			}
			if x.Reply == nil || string(x.Reply.Body) != "for "+body {
				errs <- fmt.Errorf("request %d got %+v", i, x.Reply)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestLateAndUnknownReplies(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_timeout: 200\ncorrelation_id_header: x-cid"))
	waitReady(t, res)
	replies := p.(*requestReply).m.replies
	late := testutil.ToFloat64(replies.WithLabelValues("replies", "late"))
	unknown := testutil.ToFloat64(replies.WithLabelValues("replies", "unknown"))
	malformed := testutil.ToFloat64(replies.WithLabelValues("replies", "malformed"))

	x := exchange("GET", "/slow", "", nil, "x-cid", "late-1")
	if st := httpStatus(t, access(t, p, x)); st != 504 {
		t.Fatalf("status %d, want 504", st)
	}
	prod := testProducer(t, addr)
	send := func(value string, hs ...string) {
		m := &sarama.ProducerMessage{Topic: "replies", Value: sarama.StringEncoder(value)}
		for i := 0; i+1 < len(hs); i += 2 {
			m.Headers = append(m.Headers, rh(hs[i], hs[i+1]))
		}
		if _, _, err := prod.SendMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"status":200}`, "kafka_correlationId", "late-1")
	send(`{"status":200,"correlation_id":"nobody"}`)
	send("\xff\xfe not an envelope")
	send(`{"status": "oops"`)
	waitFor(t, func() bool {
		return testutil.ToFloat64(replies.WithLabelValues("replies", "late")) == late+1 &&
			testutil.ToFloat64(replies.WithLabelValues("replies", "unknown")) == unknown+1 &&
			testutil.ToFloat64(replies.WithLabelValues("replies", "malformed")) == malformed+2
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met in 5s")
}

func testProducer(t *testing.T, addr string) sarama.SyncProducer {
	t.Helper()
	cfg := saramaConfig(&conn{Timeout: 5000})
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer([]string{addr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestMalformedMatchedReplyIs502(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", rrConfig(addr, "correlation_id_header: x-cid"))
	waitReady(t, res)
	prod := testProducer(t, addr)
	done := make(chan error, 1)
	go func() { done <- access(t, p, exchange("GET", "/", "", nil, "x-cid", "bad-1")) }()
	rc := p.(*requestReply).replies
	waitFor(t, func() bool { rc.mu.Lock(); defer rc.mu.Unlock(); return rc.waiters["bad-1"] != nil })
	m := &sarama.ProducerMessage{Topic: "replies", Value: sarama.StringEncoder(`{"status": 1000}`),
		Headers: []sarama.RecordHeader{rh("kafka_correlationId", "bad-1")}}
	if _, _, err := prod.SendMessage(m); err != nil {
		t.Fatal(err)
	}
	if err := <-done; httpStatus(t, err) != 502 || !strings.Contains(err.Error(), "bad-1") {
		t.Fatalf("want 502 with the correlation id, got %v", err)
	}
	for _, st := range []string{"abc", "99", "600", "-1"} {
		if rep, err := DecodeReply(FormatRaw, DefaultHeaderNames, nil, []*sarama.RecordHeader{{Key: []byte(HeaderStatus), Value: []byte(st)}}); err == nil {
			t.Errorf("status %s accepted: %+v", st, rep)
		}
	}
}

func TestPendingCap(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_timeout: 1000\nmax_pending: 2"))
	waitReady(t, res)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = access(t, p, exchange("GET", "/", "", nil))
		}()
	}
	rc := p.(*requestReply).replies
	waitFor(t, func() bool { rc.mu.Lock(); defer rc.mu.Unlock(); return len(rc.waiters) == 2 })
	err := access(t, p, exchange("GET", "/", "", nil))
	if httpStatus(t, err) != 503 || !strings.Contains(err.Error(), "correlation id") {
		t.Fatalf("want 503 with correlation id, got %v", err)
	}
	wg.Wait()
}

func TestBrokerDownAndBack(t *testing.T) {
	port := freePort(t)
	c, addr := newCluster(t, kfakePorts(port)...)
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_timeout: 5000"))
	waitReady(t, res)
	c.Close()
	start := time.Now()
	err := access(t, p, exchange("GET", "/", "", nil))
	st := httpStatus(t, err)
	if st != 503 && st != 502 {
		t.Fatalf("status %d (%v), want 503", st, err)
	}
	if st != 503 {
		t.Errorf("status %d (%v), want 503", st, err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("took %v to fail, want well under the 5s timeout", el)
	}
	// Back on the same port: requests work again without a restart.
	c2, _ := newCluster(t, kfakePorts(port)...)
	_ = c2
	startResponder(t, addr, FormatJSON, echo)
	var last error
	for i := 0; i < 100; i++ {
		x := exchange("GET", "/again", "", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		last = p.(flows.AccessPlugin).Access(ctx, x)
		cancel()
		if last == nil && x.Reply.Status == 201 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("never recovered: %v", last)
}

func TestSharedResources(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	p1 := build(t, res, "kafka-request-reply", rrConfig(addr, ""))
	p2 := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_timeout: 2000"))
	a, b := p1.(*requestReply), p2.(*requestReply)
	if a.prod != b.prod || a.replies != b.replies {
		t.Fatal("two plugins with the same brokers and reply topic must share the producer and reply consumer")
	}
	p3 := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_partition: 1"))
	if p3.(*requestReply).replies == a.replies {
		t.Fatal("a pinned partition needs its own reply consumer")
	}
	startResponder(t, addr, FormatJSON, echo)
	waitReady(t, res)
	for _, p := range []flows.Plugin{p1, p2, p3} {
		x := exchange("GET", "/s", "", nil)
		if err := access(t, p, x); err != nil || x.Reply.Status != 201 {
			t.Fatalf("got %v %+v", err, x.Reply)
		}
	}
}

// TestTwoInstancesShareReplyTopic: two resource sets are two sidecall
// processes; each gets only its own replies.
func TestTwoInstancesShareReplyTopic(t *testing.T) {
	_, addr := newCluster(t)
	r1, r2 := newResources(t), newResources(t)
	p1 := build(t, r1, "kafka-request-reply", rrConfig(addr, ""))
	p2 := build(t, r2, "kafka-request-reply", rrConfig(addr, ""))
	startResponder(t, addr, FormatJSON, echo)
	waitReady(t, r1)
	waitReady(t, r2)
	unknown := func(p flows.Plugin) float64 {
		return testutil.ToFloat64(p.(*requestReply).m.replies.WithLabelValues("replies", "unknown"))
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := []flows.Plugin{p1, p2}[i%2]
			body := fmt.Sprint(i)
			x := exchange("POST", "/", "", []byte(body))
			if err := access(t, p, x); err != nil || string(x.Reply.Body) != body {
				t.Errorf("request %d: %v %+v", i, err, x.Reply)
			}
		}()
	}
	wg.Wait()
	// Each instance saw the other's 20 replies as unknown, in its own
	// metrics.
	waitFor(t, func() bool { return unknown(p1) >= 20 && unknown(p2) >= 20 })
}

func TestReplyPartitionPinning(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_partition: 2\nreply_timeout: 700\ncorrelation_id_header: x-cid"))
	got := make(chan *sarama.ConsumerMessage, 1)
	consumeOne(t, addr, "replies", got)
	startResponder(t, addr, FormatJSON, func(ctx context.Context, req *kafkav1.Request) *kafkav1.Reply {
		if req.GetPath() == "/silent" {
			return nil
		}
		return echo(ctx, req)
	})
	waitReady(t, res)
	x := exchange("GET", "/pin", "", nil)
	if err := access(t, p, x); err != nil || x.Reply.Status != 201 {
		t.Fatalf("got %v %+v", err, x.Reply)
	}
	m := <-got
	if m.Partition != 2 {
		t.Fatalf("reply on partition %d, want 2", m.Partition)
	}
	// A reply on another partition is never seen by the pinned consumer.
	prod := testProducer(t, addr)
	done := make(chan error, 1)
	go func() {
		x := exchange("GET", "/silent", "", nil, "x-cid", "pinned-1")
		done <- access(t, p, x)
	}()
	rc := p.(*requestReply).replies
	waitFor(t, func() bool {
		select {
		case err := <-done:
			t.Fatalf("request ended early: %v", err)
		default:
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.waiters["pinned-1"] != nil
	})
	for _, part := range []int32{0, 1} {
		m := &sarama.ProducerMessage{Topic: "replies", Partition: part, Value: sarama.StringEncoder(`{"status":200}`),
			Headers: []sarama.RecordHeader{rh("kafka_correlationId", "pinned-1")}}
		if _, _, err := prod.SendMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	if st := httpStatus(t, <-done); st != 504 {
		t.Fatalf("status %d, want 504", st)
	}
}

// TestRequestRecordOptions checks the record options of kafka-request-reply
// against what reaches the broker, and the replies they lead to.
func TestRequestRecordOptions(t *testing.T) {
	_, addr := newCluster(t)
	prod := testProducer(t, addr)
	// reply sends a reply record to partition 1 of replies; "{id}" in the
	// value and header values is the request's correlation ID.
	reply := func(value string, hs ...string) func(t *testing.T, id string) {
		return func(t *testing.T, id string) {
			m := &sarama.ProducerMessage{Topic: "replies", Partition: 1, Value: sarama.StringEncoder(strings.ReplaceAll(value, "{id}", id))}
			for i := 0; i+1 < len(hs); i += 2 {
				m.Headers = append(m.Headers, rh(hs[i], strings.ReplaceAll(hs[i+1], "{id}", id)))
			}
			if _, _, err := prod.SendMessage(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	envelope := func(t *testing.T, m *sarama.ConsumerMessage) map[string]any {
		t.Helper()
		var env map[string]any
		if err := json.Unmarshal(m.Value, &env); err != nil {
			t.Fatalf("envelope is not JSON: %v: %s", err, m.Value)
		}
		return env
	}
	fields := func(absent []string, present ...string) func(t *testing.T, m *sarama.ConsumerMessage, id string) {
		return func(t *testing.T, m *sarama.ConsumerMessage, id string) {
			env := envelope(t, m)
			for _, k := range absent {
				if _, ok := env[k]; ok {
					t.Errorf("envelope has %s: %s", k, m.Value)
				}
			}
			for _, k := range present {
				if _, ok := env[k]; !ok {
					t.Errorf("envelope lacks %s: %s", k, m.Value)
				}
			}
		}
	}
	all := []string{"method", "path", "query", "headers", "body"}
	without := func(drop ...string) []string {
		return slices.DeleteFunc(slices.Clone(all), func(s string) bool { return slices.Contains(drop, s) })
	}
	for _, tc := range []struct {
		name    string
		cfg     string
		topic   string   // default requests
		headers []string // extra request headers
		body    []byte
		reply   func(t *testing.T, id string) // sent once the request record is out; nil: none
		status  int
		body2   string                                                   // the client's body when status is 200
		record  func(t *testing.T, m *sarama.ConsumerMessage, id string) // nil: no record may be produced
	}{
		{name: "all forwarded", status: 504, record: fields(nil, all...)},
		{name: "forward_method false", cfg: "forward_method: false", status: 504, record: fields([]string{"method"}, without("method")...)},
		{name: "forward_uri false", cfg: "forward_uri: false", status: 504, record: fields([]string{"path", "query"}, without("path", "query")...)},
		{name: "forward_headers false", cfg: "forward_headers: false", status: 504, record: fields([]string{"headers"}, without("headers")...)},
		{name: "forward_body false", cfg: "forward_body: false", status: 504, record: fields([]string{"body", "body_base64", "body_text"}, without("body")...)},
		{name: "binary body", body: []byte{0, 0xff, 1}, status: 504, record: func(t *testing.T, m *sarama.ConsumerMessage, _ string) {
			if env := envelope(t, m); env["body"] != "AP8B" || env["body_base64"] != true {
				t.Errorf("binary body: %s", m.Value)
			}
		}},
		{name: "key from a header", cfg: "key: x-user", headers: []string{"x-user", "user-7"}, status: 504, record: func(t *testing.T, m *sarama.ConsumerMessage, _ string) {
			if string(m.Key) != "user-7" {
				t.Errorf("key %q, want user-7", m.Key)
			}
		}},
		{name: "key header absent", cfg: "key: x-user", status: 504, record: func(t *testing.T, m *sarama.ConsumerMessage, _ string) {
			if m.Key != nil {
				t.Errorf("key %q, want none", m.Key)
			}
		}},
		{name: "renamed record headers", cfg: "correlation_header: x-corr\nreply_topic_header: x-rt\nreply_partition_header: x-rp\nreply_partition: 1",
			reply: reply(`{"status":200,"body":"pong"}`, "x-corr", "{id}"), status: 200, body2: "pong",
			record: func(t *testing.T, m *sarama.ConsumerMessage, id string) {
				if v := headerValue(m.Headers, "x-corr"); string(v) != id {
					t.Errorf("x-corr = %q, want %q", v, id)
				}
				if v := headerValue(m.Headers, "x-rt"); string(v) != "replies" {
					t.Errorf("x-rt = %q", v)
				}
				if v := headerValue(m.Headers, "x-rp"); !bytes.Equal(v, []byte{0, 0, 0, 1}) {
					t.Errorf("x-rp = %v", v)
				}
				for _, h := range []string{DefaultHeaderNames.Correlation, DefaultHeaderNames.ReplyTopic, DefaultHeaderNames.ReplyPartition} {
					if headerValue(m.Headers, h) != nil {
						t.Errorf("record still has %s", h)
					}
				}
			}},
		{name: "default header name ignored once renamed", cfg: "correlation_header: x-corr\nreply_timeout: 500",
			reply: reply(`{"status":200,"body":"wrong"}`, "kafka_correlationId", "{id}"), status: 504, record: fields(nil, all...)},
		{name: "reply matched by envelope correlation_id", reply: reply(`{"status":200,"headers":{"x-r":"1"},"body":"pong world","correlation_id":"{id}"}`),
			status: 200, body2: "pong world", record: fields(nil, all...)},
		{name: "record over max_message_bytes", cfg: "max_message_bytes: 200", body: bytes.Repeat([]byte("x"), 500), status: 502},
		{name: "missing topic", topic: "no-such-topic", status: 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "opt-" + strings.ReplaceAll(tc.name, " ", "-")
			cfg := "correlation_id_header: x-cid\n" + tc.cfg
			switch {
			case strings.Contains(tc.cfg, "reply_timeout"):
			case tc.reply == nil && tc.status == 504:
				cfg += "\nreply_timeout: 300"
			default:
				cfg += "\nreply_timeout: 5000"
			}
			cfg = rrConfig(addr, cfg)
			if tc.topic != "" {
				cfg = strings.Replace(cfg, "topic: requests\n", "topic: "+tc.topic+"\n", 1)
			}
			res := newResources(t)
			p := build(t, res, "kafka-request-reply", cfg)
			waitReady(t, res)
			got := make(chan *sarama.ConsumerMessage, 1)
			consumeOne(t, addr, "requests", got)
			body := tc.body
			if body == nil {
				body = []byte("payload")
			}
			x := exchange("PATCH", "/opt", "q=1", body, append([]string{"x-cid", id, "content-type", "text/plain"}, tc.headers...)...)
			done := make(chan error, 1)
			go func() { done <- access(t, p, x) }()
			if tc.reply != nil {
				rc := p.(*requestReply).replies
				waitFor(t, func() bool { rc.mu.Lock(); defer rc.mu.Unlock(); return rc.waiters[id] != nil })
				// Wait for the request record, so the reply follows the produce.
				select {
				case m := <-got:
					got <- m
				case <-time.After(5 * time.Second):
					t.Fatal("no request record")
				}
				tc.reply(t, id)
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("no answer in 10s")
			}
			if tc.status == 200 {
				if err != nil || x.Reply == nil || x.Reply.Status != 200 || string(x.Reply.Body) != tc.body2 {
					t.Fatalf("got %v %+v, want 200 %q", err, x.Reply, tc.body2)
				}
			} else if st := httpStatus(t, err); st != tc.status || !strings.Contains(err.Error(), id) {
				t.Fatalf("got %v, want %d with the correlation id", err, tc.status)
			}
			if tc.record == nil {
				select {
				case m := <-got:
					t.Fatalf("a record was produced: %s", m.Value)
				case <-time.After(200 * time.Millisecond):
				}
				return
			}
			select {
			case m := <-got:
				if v := headerValue(m.Headers, "x-corr"); string(headerValue(m.Headers, "kafka_correlationId"))+string(v) != id {
					t.Errorf("correlation record header %q, want %q", v, id)
				}
				if tc.reply == nil && string(m.Key) != id && !strings.Contains(tc.cfg, "key:") {
					t.Errorf("key %q, want the correlation id %q", m.Key, id)
				}
				tc.record(t, m, id)
			case <-time.After(5 * time.Second):
				t.Fatal("no request record")
			}
		})
	}
}

// The correlation-id plugin's value (kong.ctx.shared.correlation_id) is
// the Kafka correlation id by default; correlation_id_header still wins.
func TestCorrelationIDFromThePlugin(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	byDefault := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_timeout: 100"))
	withHeader := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_timeout: 100\ncorrelation_id_header: x-cid"))
	waitReady(t, res)
	for _, tc := range []struct {
		p    flows.Plugin
		want string
	}{{byDefault, "from-plugin"}, {withHeader, "from-header"}} {
		x := exchange("GET", "/", "", nil, "x-cid", "from-header")
		x.SetID("from-plugin") // as the correlation-id plugin does
		if err := access(t, tc.p, x); httpStatus(t, err) != 504 || !strings.Contains(err.Error(), "(correlation id "+tc.want+")") {
			t.Errorf("want a 504 naming correlation id %s, got %v", tc.want, err)
		}
	}
}
