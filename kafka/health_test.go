package kafka

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/netport"
)

// gatesReady is what /readyz asks of the Kafka clients.
func gatesReady(res *flows.Resources) bool { return (&Plugins{}).Ready(res) }

type dep struct {
	kind, name   string
	gates, ready bool
}

func healthOf(res *flows.Resources) []dep {
	var deps []dep
	res.Each(func(_ string, c io.Closer) {
		if h, ok := c.(interface {
			Health() (kind, name string, gates, ready bool, since time.Time)
		}); ok {
			var d dep
			d.kind, d.name, d.gates, d.ready, _ = h.Health()
			deps = append(deps, d)
		}
	})
	return deps
}

// within polls cond every 50 ms for at most d and returns how long it took.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// TestRequestReplyReadinessFollowsTheBroker: a kafka-request-reply's
// producer and reply consumer gate readiness; closing the broker makes them
// unready within 10 s, and a broker back on the same port makes them ready
// again within 10 s, without a reload. Requests are answered again then.
func TestRequestReplyReadinessFollowsTheBroker(t *testing.T) {
	port := netport.Stable(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	seed := kfake.SeedTopics(3, "requests", "replies")
	c1, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), seed)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			c1.Close()
		}
	})
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_timeout: 3000"))
	within(t, 10*time.Second, "ready with the broker up", func() bool { return gatesReady(res) })
	deps := healthOf(res)
	kinds := map[string]dep{}
	for _, d := range deps {
		kinds[d.kind] = d
	}
	if len(deps) != 2 || !kinds[kindProducer].gates || !kinds[kindReplies].gates || kinds[kindProducer].name != addr || kinds[kindReplies].name != addr+"/replies" {
		t.Fatalf("dependencies: %+v; want a gating producer %s and reply consumer %s/replies", deps, addr, addr)
	}

	c1.Close()
	closed = true
	took := within(t, 10*time.Second, "unready after the broker closed", func() bool { return !gatesReady(res) })
	t.Logf("unready %s after the broker closed", took.Round(time.Millisecond))
	// Each dependency is checked on its own clock: the other may follow a
	// check later, within the same bound.
	within(t, 10*time.Second, "every dependency unready", func() bool {
		for _, d := range healthOf(res) {
			if d.ready {
				return false
			}
		}
		return true
	})

	c2, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), seed)
	if err != nil {
		t.Fatalf("broker again on port %d: %v", port, err)
	}
	t.Cleanup(c2.Close)
	took = within(t, 10*time.Second, "ready again once the broker is back", func() bool { return gatesReady(res) })
	t.Logf("ready %s after the broker came back", took.Round(time.Millisecond))

	startResponder(t, addr, FormatJSON, echo)
	// The responder's group joins the new cluster: the first requests may
	// time out while it does; one answered within the bound is the proof.
	within(t, 20*time.Second, "a request answered after the broker came back", func() bool {
		x := exchange("POST", "/orders", "", []byte("again"))
		return access(t, p, x) == nil && x.Reply != nil && x.Reply.Status == 201
	})
}

// TestUpstreamProducerNeverGatesReadiness: a kafka-upstream producer whose
// broker cannot be reached is reported (not gating, not ready) and leaves
// readiness true.
func TestUpstreamProducerNeverGatesReadiness(t *testing.T) {
	port := netport.Stable(t) // nothing listens there
	res := newResources(t)
	build(t, res, "kafka-upstream", fmt.Sprintf("bootstrap_servers: [{host: 127.0.0.1, port: %d}]\ntopic: events\n", port))
	deps := healthOf(res)
	if len(deps) != 1 || deps[0].kind != kindProducer || deps[0].gates || deps[0].ready {
		t.Fatalf("dependencies: %+v; want one kafka-producer, not gating, not ready", deps)
	}
	for i := 0; i < 5; i++ {
		if !gatesReady(res) {
			t.Fatal("an unreachable kafka-upstream producer made the Kafka clients unready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ready(res) {
		t.Error("ready(res), which counts every client, is true with no broker")
	}
}

// TestHealthGoesStale: a client is ready only while a check succeeded
// within healthStale; "since" moves only when the state changes.
func TestHealthGoesStale(t *testing.T) {
	h := newHealth()
	now := time.Now()
	if h.fresh(now) {
		t.Error("fresh before any check")
	}
	h.ok(now)
	if !h.fresh(now.Add(healthStale)) || h.fresh(now.Add(healthStale+time.Millisecond)) {
		t.Error("fresh must hold for healthStale after a check, and no longer")
	}
	s1 := h.observe(true, now)
	s2 := h.observe(true, now.Add(time.Second))
	s3 := h.observe(false, now.Add(2*time.Second))
	if !s1.Equal(now) || !s2.Equal(now) || !s3.Equal(now.Add(2*time.Second)) {
		t.Errorf("since: %v %v %v", s1, s2, s3)
	}
	if healthStale+healthEvery > 10*time.Second {
		t.Errorf("a lost broker must show within 10 s: stale %s + check %s", healthStale, healthEvery)
	}
}
