package kafka

import (
	"encoding/json"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestUpstreamEnvelope(t *testing.T) {
	_, addr := newCluster(t)
	for _, async := range []bool{true, false} {
		name := map[bool]string{true: "async", false: "sync"}[async]
		t.Run(name, func(t *testing.T) {
			res := newResources(t)
			cfg := rrConfig(addr, "") // topic: requests (reply_topic is not a kafka-upstream field)
			cfg = cfg[:len(cfg)-len("reply_topic: replies\n")]
			p := build(t, res, "kafka-upstream", cfg+"forward_method: true\nforward_uri: true\nforward_headers: true\nproducer_async: "+map[bool]string{true: "true", false: "false"}[async]+"\nkey_query_arg: k")
			waitReady(t, res)
			got := make(chan *sarama.ConsumerMessage, 1)
			consumeOne(t, addr, "requests", got)
			x := exchange("POST", "/kafka", "a=1&a=2&flag&k=key1", []byte(`{"n":1}`), "content-type", "application/json", "x-multi", "1", "x-multi", "2")
			if err := access(t, p, x); err != nil {
				t.Fatal(err)
			}
			if x.Reply == nil || x.Reply.Status != 200 || string(x.Reply.Body) != `{"message":"message sent"}` {
				t.Fatalf("reply %+v", x.Reply)
			}
			var m *sarama.ConsumerMessage
			select {
			case m = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("nothing produced")
			}
			if string(m.Key) != "key1" {
				t.Errorf("key = %q", m.Key)
			}
			var env map[string]any
			if err := json.Unmarshal(m.Value, &env); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"method":    "POST",
				"uri":       "/kafka?a=1&a=2&flag&k=key1",
				"uri_args":  map[string]any{"a": []any{"1", "2"}, "flag": true, "k": "key1"},
				"headers":   map[string]any{"content-type": "application/json", "x-multi": []any{"1", "2"}},
				"body":      `{"n":1}`,
				"body_args": map[string]any{"n": 1.0},
			}
			if !reflect.DeepEqual(env, want) {
				t.Errorf("envelope\n got %v\nwant %v", env, want)
			}
		})
	}
}

func TestUpstreamBodyRules(t *testing.T) {
	p := &upstream{fwdBody: true}
	for _, tc := range []struct {
		ct, body string
		want     map[string]any
	}{
		{"", "", map[string]any{"body": "", "body_args": map[string]any{}, "body_base64": true}},
		{"application/octet-stream", "\x00\x01", map[string]any{"body": "AAE=", "body_args": map[string]any{}, "body_base64": true}},
		{"text/plain", "hi", map[string]any{"body": "hi", "body_args": map[string]any{}}},
		{"text/plain; charset=utf-8", "hi", map[string]any{"body": "aGk=", "body_args": map[string]any{}, "body_base64": true}},
		{"application/x-www-form-urlencoded", "a=1&b=x+y", map[string]any{"body": "a=1&b=x+y", "body_args": map[string]any{"a": "1", "b": "x y"}}},
		{"application/json", "{bad", map[string]any{"body": "{bad"}},
		{"multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--XX--\r\n",
			map[string]any{"body": "--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--XX--\r\n", "body_args": map[string]any{"f": "v"}}},
	} {
		hs := []string{}
		if tc.ct != "" {
			hs = append(hs, "content-type", tc.ct)
		}
		got := p.envelope(exchange("POST", "/", "", []byte(tc.body), hs...))
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %v, want %v", tc.ct, got, tc.want)
		}
	}
}

func TestUpstreamErrors(t *testing.T) {
	c, addr := newCluster(t)
	res := newResources(t)
	cfg := rrConfig(addr, "")
	cfg = cfg[:len(cfg)-len("reply_topic: replies\n")]
	p := build(t, res, "kafka-upstream", cfg+"producer_async: false\ntopics_query_arg: topics\nallowed_topics: [replies]\ntimeout: 2000")
	waitReady(t, res)
	x := exchange("POST", "/", "topics=requests,secret", nil)
	if err := access(t, p, x); err != nil || x.Reply.Status != 502 ||
		string(x.Reply.Body) != `{"error":"one or more target topics are not in the allowed topics list","message":"Bad Gateway"}` {
		t.Fatalf("got %v %+v %s", err, x.Reply, x.Reply.Body)
	}
	x = exchange("POST", "/", "topics=requests,replies", nil)
	if err := access(t, p, x); err != nil || x.Reply.Status != 200 {
		t.Fatalf("got %v %+v", err, x.Reply)
	}
	c.Close()
	x = exchange("POST", "/", "", []byte("x"))
	if err := access(t, p, x); err != nil || x.Reply.Status != 502 ||
		string(x.Reply.Body) != `{"error":"could not send message to topic","message":"Bad Gateway"}` {
		t.Fatalf("got %v %+v", err, x.Reply)
	}
}

// blockProduce holds every produce request in the broker until release is
// closed (at the end of the test at the latest).
func blockProduce(t *testing.T, c *kfake.Cluster) (release func(), held *atomic.Int32) {
	t.Helper()
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release) // before the cluster closes: no sleeping control left
	held = new(atomic.Int32)
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-ch:
		default:
			held.Add(1)
			c.SleepControl(func() { <-ch })
		}
		return nil, nil, false // then handled as usual
	})
	return release, held
}

// TestUpstreamAsyncVsSync: with the broker holding produce requests,
// producer_async true answers 200 at once and the record arrives once the
// broker answers; producer_async false waits and answers Kong's 502 after
// the timeout.
func TestUpstreamAsyncVsSync(t *testing.T) {
	upstreamConfig := func(addr, extra string) string {
		cfg := rrConfig(addr, "")
		return cfg[:len(cfg)-len("reply_topic: replies\n")] + "timeout: 1000\n" + extra
	}
	t.Run("async", func(t *testing.T) {
		c, addr := newCluster(t)
		res := newResources(t)
		p := build(t, res, "kafka-upstream", upstreamConfig(addr, "producer_async: true"))
		waitReady(t, res)
		got := make(chan *sarama.ConsumerMessage, 1)
		consumeOne(t, addr, "requests", got)
		release, held := blockProduce(t, c)
		start := time.Now()
		x := exchange("POST", "/async", "", []byte("fire"), "content-type", "text/plain")
		if err := access(t, p, x); err != nil || x.Reply.Status != 200 || string(x.Reply.Body) != `{"message":"message sent"}` {
			t.Fatalf("got %v %+v", err, x.Reply)
		}
		if el := time.Since(start); el > 500*time.Millisecond {
			t.Errorf("async answer took %v with the broker blocked", el)
		}
		waitFor(t, func() bool { return held.Load() > 0 })
		select {
		case m := <-got:
			t.Fatalf("record delivered while the broker held it: %s", m.Value)
		case <-time.After(200 * time.Millisecond):
		}
		release()
		select {
		case m := <-got:
			var env map[string]any
			if err := json.Unmarshal(m.Value, &env); err != nil || env["body"] != "fire" {
				t.Errorf("record %s (%v)", m.Value, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("record never delivered after the broker was released")
		}
	})
	t.Run("sync", func(t *testing.T) {
		c, addr := newCluster(t)
		res := newResources(t)
		p := build(t, res, "kafka-upstream", upstreamConfig(addr, "producer_async: false"))
		waitReady(t, res)
		release, held := blockProduce(t, c)
		start := time.Now()
		x := exchange("POST", "/sync", "", []byte("wait"))
		if err := access(t, p, x); err != nil || x.Reply.Status != 502 ||
			string(x.Reply.Body) != `{"error":"could not send message to topic","message":"Bad Gateway"}` {
			t.Fatalf("got %v %+v", err, x.Reply)
		}
		if el := time.Since(start); el < 900*time.Millisecond || el > 3*time.Second {
			t.Errorf("sync answer after %v, want the 1s timeout", el)
		}
		if held.Load() == 0 {
			t.Error("the broker never saw the produce request")
		}
		release()
		// Released, the same plugin answers 200 once the broker acks.
		waitFor(t, func() bool {
			x := exchange("POST", "/sync", "", []byte("again"))
			return access(t, p, x) == nil && x.Reply.Status == 200
		})
	})
}
