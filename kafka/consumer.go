package kafka

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

var (
	errPendingFull = errors.New("too many requests waiting for a reply")
	errDuplicateID = errors.New("correlation id already waiting for a reply")
	errNotReady    = errors.New("reply consumer not positioned yet")
)

// ReplyWaiter is one request waiting for its reply record.
type ReplyWaiter struct {
	ID    string
	C     <-chan *sarama.ConsumerMessage // receives the reply once
	c     chan *sarama.ConsumerMessage
	Start time.Time
	left  int // replies still expected (RegisterN; 0: one); under the consumer's mu
}

// replyConsumer reads every partition of the reply topic (or only the
// pinned one) from the newest offset, without a consumer group, and hands
// each reply to the waiter with its correlation ID. One per broker
// connection, reply topic, partition and correlation header name, shared by
// every plugin instance and reload with those settings (flows.Builder.Acquire
// in Provision) and closed with the last snapshot holding it.
type replyConsumer struct {
	addrs     []string
	cfg       *sarama.Config
	topic     string
	partition int32 // -1: all
	header    string
	log       *zap.Logger

	// The reply topic's series of the Register call that built this consumer.
	pending                           prometheus.Gauge
	matched, late, unknown, malformed prometheus.Counter
	latency                           prometheus.Observer

	mu      sync.Mutex
	waiters map[string]*ReplyWaiter
	expired map[string]time.Time // timed-out IDs, to count late replies

	ready atomic.Bool // positioned
	h     *health
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// lateMemory is how long a timed-out ID is remembered to tell late replies
// from unknown ones; lateCap bounds that memory.
const (
	lateMemory = 5 * time.Minute
	lateCap    = 100000
)

func newReplyConsumer(addrs []string, cfg *sarama.Config, topic string, partition int32, header string, m *metrics, log *zap.Logger) *replyConsumer {
	r := &replyConsumer{
		addrs: addrs, cfg: cfg, topic: topic, partition: partition, header: header, log: log,
		pending:   m.pending.WithLabelValues(topic),
		matched:   m.replies.WithLabelValues(topic, "matched"),
		late:      m.replies.WithLabelValues(topic, "late"),
		unknown:   m.replies.WithLabelValues(topic, "unknown"),
		malformed: m.replies.WithLabelValues(topic, "malformed"),
		latency:   m.replyLatency.WithLabelValues(topic),
		waiters:   map[string]*ReplyWaiter{}, expired: map[string]time.Time{}, stop: make(chan struct{}),
		h: newHealth(),
	}
	r.wg.Add(1)
	go r.run()
	return r
}

// Ready tells whether every partition consumer has its starting offset and
// a broker answered the consumer's check within healthStale.
func (r *replyConsumer) Ready() bool { return r.ready.Load() && r.h.fresh(time.Now()) }

// name is the consumer's name in /readyz: brokers/topic, and /partition
// when pinned.
func (r *replyConsumer) name() string {
	n := brokersName(r.addrs) + "/" + r.topic
	if r.partition >= 0 {
		n += "/" + strconv.Itoa(int(r.partition))
	}
	return n
}

// Register adds a waiter for id; call it before producing the request.
func (r *replyConsumer) Register(id string, maxPending int) (*ReplyWaiter, error) {
	if !r.ready.Load() {
		return nil, errNotReady
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.waiters) >= maxPending {
		return nil, errPendingFull
	}
	if _, dup := r.waiters[id]; dup {
		return nil, errDuplicateID
	}
	c := make(chan *sarama.ConsumerMessage, 1)
	w := &ReplyWaiter{ID: id, C: c, c: c, Start: time.Now()}
	r.waiters[id] = w
	r.pending.Inc()
	return w, nil
}

// Cancel removes w if it is still waiting; timedOut remembers the ID so a
// reply arriving later is counted as late.
func (r *replyConsumer) Cancel(w *ReplyWaiter, timedOut bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiters[w.ID] != w {
		return
	}
	delete(r.waiters, w.ID)
	r.pending.Dec()
	if timedOut {
		if len(r.expired) >= lateCap {
			r.sweepLocked()
		}
		r.expired[w.ID] = time.Now()
	}
}

// sweepLocked forgets old timed-out IDs, and arbitrary ones if still full.
func (r *replyConsumer) sweepLocked() {
	now := time.Now()
	for id, t := range r.expired {
		if now.Sub(t) > lateMemory {
			delete(r.expired, id)
		}
	}
	for id := range r.expired {
		if len(r.expired) < lateCap/2 {
			break
		}
		delete(r.expired, id)
	}
}

// deliver hands a reply record to its waiter, or counts it.
func (r *replyConsumer) deliver(m *sarama.ConsumerMessage) {
	id := replyCorrelation(r.header, m.Value, m.Headers)
	if id == "" {
		r.malformed.Inc()
		r.log.Debug("kafka reply without correlation id dropped", zap.Int32("partition", m.Partition), zap.Int64("offset", m.Offset))
		return
	}
	r.mu.Lock()
	w := r.waiters[id]
	if w != nil && w.last() {
		delete(r.waiters, id)
		r.pending.Dec()
	}
	_, late := r.expired[id]
	if late {
		delete(r.expired, id)
	}
	r.mu.Unlock()
	switch {
	case w != nil:
		r.matched.Inc()
		r.latency.Observe(time.Since(w.Start).Seconds())
		w.c <- m // buffered 1, and the waiter left the map: never blocks
	case late:
		r.late.Inc()
		r.log.Debug("late kafka reply dropped", zap.String("correlation_id", id))
	default:
		r.unknown.Inc()
	}
}

// run keeps a consuming session going until Close.
func (r *replyConsumer) run() {
	defer r.wg.Done()
	backoff := 50 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		start := time.Now()
		err := r.session()
		select {
		case <-r.stop:
			return
		default:
		}
		if time.Since(start) > 10*time.Second {
			backoff = 50 * time.Millisecond
		}
		r.log.Debug("kafka reply consumer: restarting", zap.String("topic", r.topic), zap.Error(err))
		t.Reset(backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
}

// session connects, positions one partition consumer per partition at the
// newest offset, then delivers until Close or a partition consumer ends
// (for example after its offset went out of range when the broker lost
// its log).
func (r *replyConsumer) session() error {
	client, err := sarama.NewClient(r.addrs, r.cfg)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer client.Close()
	if err := client.RefreshMetadata(r.topic); err != nil {
		return fmt.Errorf("reading metadata of %q: %w", r.topic, err)
	}
	parts, err := client.Partitions(r.topic)
	if err != nil {
		return fmt.Errorf("listing partitions of %q: %w", r.topic, err)
	}
	if len(parts) == 0 {
		return fmt.Errorf("topic %q has no partitions", r.topic)
	}
	if r.partition >= 0 {
		if !slices.Contains(parts, r.partition) {
			return fmt.Errorf("topic %q has no partition %d", r.topic, r.partition)
		}
		parts = []int32{r.partition}
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return fmt.Errorf("making consumer: %w", err)
	}
	defer consumer.Close()
	var pcs []sarama.PartitionConsumer
	defer func() {
		for _, pc := range pcs {
			pc.AsyncClose()
		}
	}()
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(r.topic, p, sarama.OffsetNewest)
		if err != nil {
			return fmt.Errorf("consuming %s/%d: %w", r.topic, p, err)
		}
		pcs = append(pcs, pc)
	}
	r.h.ok(time.Now())
	r.ready.Store(true)
	r.h.observe(true, time.Now())
	defer func() {
		r.ready.Store(false)
		r.h.observe(false, time.Now())
	}()
	// The broker check runs while the session does, on its client.
	checkStop := make(chan struct{})
	var checks sync.WaitGroup
	checks.Add(1)
	go func() {
		defer checks.Done()
		r.h.watch(checkStop, func() error { return client.RefreshMetadata(r.topic) }, r.Ready)
	}()
	defer func() {
		close(checkStop)
		checks.Wait()
	}()
	ended := make(chan struct{}, len(pcs))
	var wg sync.WaitGroup
	for _, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range pc.Messages() {
				r.deliver(m)
			}
			ended <- struct{}{}
		}()
	}
	select {
	case <-r.stop:
		err = nil
	case <-ended:
		err = fmt.Errorf("a partition consumer of %q stopped", r.topic)
	}
	for _, pc := range pcs {
		pc.AsyncClose()
	}
	pcs = nil
	wg.Wait()
	return err
}

// Close stops the consumer; waiters left get nothing and time out.
func (r *replyConsumer) Close() error {
	r.once.Do(func() { close(r.stop) })
	r.wg.Wait()
	return nil
}

var _ io.Closer = (*replyConsumer)(nil)
