package kafka

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"go.uber.org/zap"
)

// errUnavailable means no broker could be reached (503).
var errUnavailable = errors.New("kafka brokers unavailable")

// producer is one long-lived sarama async producer per broker connection
// and producer settings, shared by every plugin instance and config reload
// that has them (flows.Builder.Acquire in Provision) and closed with the
// last snapshot holding it. It connects in the background so config loads
// never wait on the network.
type producer struct {
	addrs []string
	cfg   *sarama.Config
	m     *metrics // nil: not counted
	log   *zap.Logger

	mu     sync.RWMutex // guards ap against Close while sending to Input
	ap     sarama.AsyncProducer
	client sarama.Client
	closed bool

	connected atomic.Bool
	h         *health
	gating    atomic.Int32           // kafka-request-reply snapshots holding it
	topic     atomic.Pointer[string] // what the broker check asks about
	stop      chan struct{}
	wg        sync.WaitGroup
}

// produceResult is a record's Metadata when the caller waits for the ack.
type produceResult chan error

func newProducer(addrs []string, cfg *sarama.Config, m *metrics, log *zap.Logger) *producer {
	p := &producer{addrs: addrs, cfg: cfg, m: m, log: log, h: newHealth(), stop: make(chan struct{})}
	p.wg.Add(1)
	go p.connect()
	return p
}

// connect retries until a client is made or the producer is closed; sarama
// handles reconnects after that.
func (p *producer) connect() {
	defer p.wg.Done()
	backoff := 50 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		client, err := sarama.NewClient(p.addrs, p.cfg)
		if err == nil {
			// NewClient does not talk to a broker when Metadata.Full is
			// off; this does, so "ready" means connected and authenticated.
			if err = client.RefreshMetadata(); err != nil {
				_ = client.Close()
			}
		}
		if err == nil {
			var ap sarama.AsyncProducer
			ap, err = sarama.NewAsyncProducerFromClient(client)
			if err == nil {
				p.mu.Lock()
				if p.closed {
					p.mu.Unlock()
					ap.AsyncClose()
					drain(ap)
					_ = client.Close()
					return
				}
				p.ap, p.client = ap, client
				p.mu.Unlock()
				p.h.ok(time.Now())
				p.connected.Store(true)
				p.h.observe(true, time.Now())
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					p.h.watch(p.stop, func() error { return p.check(client) }, p.Ready)
				}()
				p.dispatch(ap)
				return
			}
			_ = client.Close()
		}
		p.log.Debug("kafka producer: connecting", zap.Strings("brokers", p.addrs), zap.Error(err))
		t.Reset(backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
}

// dispatch routes acks and errors to the waiting callers until the
// producer is closed.
func (p *producer) dispatch(ap sarama.AsyncProducer) {
	succ, errs := ap.Successes(), ap.Errors()
	for succ != nil || errs != nil {
		select {
		case m, ok := <-succ:
			if !ok {
				succ = nil
				continue
			}
			p.m.countProduced(m.Topic, "ok")
			if r := resultOf(m.Metadata); r != nil {
				r <- nil
			}
		case e, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if e.Msg != nil {
				p.m.countProduced(e.Msg.Topic, "error")
				if r := resultOf(e.Msg.Metadata); r != nil {
					r <- e.Err
					continue
				}
			}
			p.log.Warn("kafka producer: record not delivered", zap.Error(e.Err))
		}
	}
}

func drain(ap sarama.AsyncProducer) {
	succ, errs := ap.Successes(), ap.Errors()
	for succ != nil || errs != nil {
		select {
		case _, ok := <-succ:
			if !ok {
				succ = nil
			}
		case _, ok := <-errs:
			if !ok {
				errs = nil
			}
		}
	}
}

// Ready tells whether the producer has connected and a broker answered
// its check within healthStale.
func (p *producer) Ready() bool { return p.connected.Load() && p.h.fresh(time.Now()) }

// Produce enqueues msg; with wait it returns once the broker acknowledged
// (per acks) or refused it. ctx bounds both.
// With pin, msg.Partition is used as is. A nil producer (a plugin that was
// never provisioned) is unavailable.
func (p *producer) Produce(ctx context.Context, msg *sarama.ProducerMessage, wait, pin bool) error {
	if p == nil {
		return errUnavailable
	}
	var res produceResult
	if wait {
		res = make(produceResult, 1)
	}
	switch {
	case pin:
		msg.Metadata = pinned{res}
	case wait:
		msg.Metadata = res
	}
	p.mu.RLock()
	if p.closed || p.ap == nil {
		p.mu.RUnlock()
		return errUnavailable
	}
	select {
	case p.ap.Input() <- msg:
		p.mu.RUnlock()
	case <-ctx.Done():
		p.mu.RUnlock()
		return ctx.Err()
	}
	if !wait {
		return nil
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the producer, flushing what is buffered.
func (p *producer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ap, client := p.ap, p.client
	close(p.stop)
	p.mu.Unlock()
	if ap != nil {
		ap.AsyncClose()
	}
	p.wg.Wait()
	if client != nil {
		return client.Close()
	}
	return nil
}

var _ io.Closer = (*producer)(nil)

// unavailable tells whether a produce error means the brokers cannot be
// reached (503) rather than that they refused the record (502).
func unavailable(err error) bool {
	if errors.Is(err, errUnavailable) {
		return true
	}
	for _, e := range []error{
		sarama.ErrOutOfBrokers, sarama.ErrNotConnected, sarama.ErrClosedClient, sarama.ErrBrokerNotAvailable,
		sarama.ErrLeaderNotAvailable, sarama.ErrNotLeaderForPartition, sarama.ErrRequestTimedOut,
		sarama.ErrNetworkException, sarama.ErrNotEnoughReplicas, sarama.ErrNotEnoughReplicasAfterAppend,
		sarama.ErrShuttingDown, io.EOF, io.ErrUnexpectedEOF, syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// partitioner honours an explicit partition (ProducerMessage.Partition >= 0
// with Metadata of type pinned), else hashes the key, else picks at random.
type partitioner struct{ hash sarama.Partitioner }

// pinned marks a record whose Partition field is to be used as is.
type pinned struct{ result produceResult }

func newPartitioner(topic string) sarama.Partitioner {
	return &partitioner{hash: sarama.NewCustomHashPartitioner(fnv.New32a)(topic)}
}

func (p *partitioner) Partition(m *sarama.ProducerMessage, n int32) (int32, error) {
	if _, ok := m.Metadata.(pinned); ok {
		if m.Partition < 0 || m.Partition >= n {
			return 0, fmt.Errorf("partition %d out of range (topic has %d)", m.Partition, n)
		}
		return m.Partition, nil
	}
	if m.Key == nil {
		return rand.Int32N(n), nil
	}
	return p.hash.Partition(m, n)
}

func (p *partitioner) RequiresConsistency() bool { return true }

func resultOf(md any) produceResult {
	switch r := md.(type) {
	case produceResult:
		return r
	case pinned:
		return r.result
	}
	return nil
}
