package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	if el := time.Since(start); el < 300*time.Millisecond || el > 400*time.Millisecond {
		t.Errorf("timeout after %v, want 300ms (+100ms)", el)
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
	for _, want := range []string{`"correlation_id":"abc-123"`, `"method":"PUT"`, `"path":"/a"`, `"query":"q=1"`, `"body_text":"{\"k\":\"v\"}"`, `"reply_topic":"replies"`, `"reply_partition":2`, `"deadline":"`} {
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
	late := testutil.ToFloat64(repliesTotal.WithLabelValues("replies", "late"))
	unknown := testutil.ToFloat64(repliesTotal.WithLabelValues("replies", "unknown"))
	malformed := testutil.ToFloat64(repliesTotal.WithLabelValues("replies", "malformed"))

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
		return testutil.ToFloat64(repliesTotal.WithLabelValues("replies", "late")) == late+1 &&
			testutil.ToFloat64(repliesTotal.WithLabelValues("replies", "unknown")) == unknown+1 &&
			testutil.ToFloat64(repliesTotal.WithLabelValues("replies", "malformed")) == malformed+2
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
	unknown := testutil.ToFloat64(repliesTotal.WithLabelValues("replies", "unknown"))
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
	// Each instance saw the other's 20 replies as unknown.
	waitFor(t, func() bool {
		return testutil.ToFloat64(repliesTotal.WithLabelValues("replies", "unknown")) >= unknown+40
	})
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
