package kafka

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/sidecall/sidecall/flows"
)

// Broker checks: a connected producer or a positioned reply consumer asks a
// broker for its topic's metadata every healthEvery, and is ready while one
// of those checks succeeded within healthStale. A lost broker makes the
// client unready within healthStale (plus one check's time); a broker back
// makes it ready again at the next successful check.
const (
	healthEvery = 2 * time.Second
	healthStale = 6 * time.Second
)

// health is a Kafka client's broker reachability, for /readyz.
type health struct {
	lastOK atomic.Int64 // unix nanoseconds of the last successful check; 0: none

	mu    sync.Mutex
	up    bool
	since time.Time
}

func newHealth() *health { return &health{since: time.Now()} }

// ok records a successful check.
func (h *health) ok(now time.Time) { h.lastOK.Store(now.UnixNano()) }

// fresh tells whether a check succeeded within healthStale of now.
func (h *health) fresh(now time.Time) bool {
	t := h.lastOK.Load()
	return t != 0 && now.Sub(time.Unix(0, t)) <= healthStale
}

// observe records the state seen at now and returns the time it last
// changed.
func (h *health) observe(up bool, now time.Time) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if up != h.up {
		h.up, h.since = up, now
	}
	return h.since
}

// watch checks the broker with probe every healthEvery until stop is
// closed; state is the client's readiness, recorded after each check so
// "since" follows changes even when nobody asks.
func (h *health) watch(stop <-chan struct{}, probe func() error, state func() bool) {
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if reachable(probe()) {
			h.ok(time.Now())
		}
		h.observe(state(), time.Now())
	}
}

// reachable tells whether a metadata refresh shows a broker answering:
// partitions without a leader (an election in progress) are sarama's
// retries' business, not a lost cluster.
func reachable(err error) bool {
	return err == nil || errors.Is(err, sarama.ErrLeaderNotAvailable) || errors.Is(err, sarama.ErrReplicaNotAvailable)
}

// Dependency kinds in /readyz and sidecall_dependency_up.
const (
	kindProducer = "kafka-producer"
	kindReplies  = "kafka-reply-consumer"
)

// brokersName is a client's name in /readyz: its bootstrap servers
// (host:port, never credentials).
func brokersName(addrs []string) string { return strings.Join(addrs, ",") }

// Health reports the producer for /readyz: it gates readiness while a
// kafka-request-reply instance holds it; kafka-upstream alone never does.
func (p *producer) Health() (kind, name string, gates, ready bool, since time.Time) {
	ready = p.Ready()
	return kindProducer, brokersName(p.addrs), p.gating.Load() > 0, ready, p.h.observe(ready, time.Now())
}

// Health reports the reply consumer for /readyz; it always gates (only
// kafka-request-reply uses one).
func (r *replyConsumer) Health() (kind, name string, gates, ready bool, since time.Time) {
	ready = r.Ready()
	return kindReplies, r.name(), true, ready, r.h.observe(ready, time.Now())
}

// gate makes p gate readiness while the snapshot b builds holds it.
func (p *producer) gate(b *flows.Builder) {
	p.gating.Add(1)
	b.OnClose(func() { p.gating.Add(-1) })
}

// probeTopic remembers a topic the producer's broker check asks about; the
// first one given stays.
func (p *producer) probeTopic(topic string) {
	if topic != "" {
		p.topic.CompareAndSwap(nil, &topic)
	}
}

// check is the producer's broker check: metadata of its topic (of every
// topic when none is known, which costs more).
func (p *producer) check(client sarama.Client) error {
	if t := p.topic.Load(); t != nil {
		return client.RefreshMetadata(*t)
	}
	return client.RefreshMetadata()
}
