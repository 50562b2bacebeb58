package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"
	"github.com/sidecall/sidecall/internal/tracing"
	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

// Plugin priorities (kafka-upstream is Kong's; request-reply runs just
// before it).
const (
	RequestReplyPriority = 750
	UpstreamPriority     = 751
)

// Plugins is what one Register call shares between the plugin instances it
// builds: their Prometheus collectors. Producers and reply consumers live in
// flows.Resources, not here.
type Plugins struct {
	m *metrics
}

// Register adds kafka-request-reply and kafka-upstream to r and registers
// their collectors with reg (sidecall_kafka_produced_total,
// sidecall_kafka_replies_total, sidecall_kafka_requests_total,
// sidecall_kafka_pending, sidecall_kafka_reply_latency_seconds). Every call
// has its own collectors, so two registries in one process count apart.
// reg nil leaves them unregistered.
func Register(r *flows.Registry, reg prometheus.Registerer) *Plugins {
	p := &Plugins{m: newMetrics()}
	if reg != nil {
		reg.MustRegister(p.m.collectors()...)
	}
	r.Register("kafka-request-reply", RequestReplyPriority, p.newRequestReply)
	r.Register("kafka-upstream", UpstreamPriority, p.newUpstream)
	return p
}

// Ready tells whether every Kafka client held in res that gates readiness
// is ready (for /readyz): the producers and reply consumers of
// kafka-request-reply, connected or positioned, with a broker answering
// their checks. Producers held only by kafka-upstream never gate. With no
// such client in res it is true.
func (p *Plugins) Ready(res *flows.Resources) bool {
	ok := true
	res.Each(func(_ string, c io.Closer) {
		switch r := c.(type) {
		case *replyConsumer:
			ok = ok && r.Ready()
		case *producer:
			ok = ok && (r.gating.Load() == 0 || r.Ready())
		}
	})
	return ok
}

// ready tells whether every Kafka client held in res is ready, gating or
// not (tests wait on it).
func ready(res *flows.Resources) bool {
	ok := true
	res.Each(func(_ string, c io.Closer) {
		switch r := c.(type) {
		case *replyConsumer:
			ok = ok && r.Ready()
		case *producer:
			ok = ok && r.Ready()
		}
	})
	return ok
}

type requestReplyConfig struct {
	conn             `yaml:",inline"`
	producerSettings `yaml:",inline"`
	scaleConfig      `yaml:",inline"`

	Topic                string `yaml:"topic"`
	ReplyTopic           string `yaml:"reply_topic"`
	ReplyPartition       *int   `yaml:"reply_partition"`
	ReplyTimeout         int    `yaml:"reply_timeout"`
	MessageFormat        string `yaml:"message_format"`
	ForwardMethod        bool   `yaml:"forward_method"`
	ForwardURI           bool   `yaml:"forward_uri"`
	ForwardHeaders       bool   `yaml:"forward_headers"`
	ForwardBody          bool   `yaml:"forward_body"`
	Key                  string `yaml:"key"`
	CorrelationHeader    string `yaml:"correlation_header"`
	ReplyTopicHeader     string `yaml:"reply_topic_header"`
	ReplyPartitionHeader string `yaml:"reply_partition_header"`
	CorrelationIDHeader  string `yaml:"correlation_id_header"`
	MaxPending           int    `yaml:"max_pending"`
}

// requestReply is the kafka-request-reply plugin.
type requestReply struct {
	topic      string
	route      string // b.Scope.Route, for sidecall_kafka_requests_total
	replyTopic string
	partition  *int32
	timeout    time.Duration
	format     Format
	names      HeaderNames
	fwdMethod  bool
	fwdURI     bool
	fwdHeaders bool
	fwdBody    bool
	keyHeader  string // "" = the correlation ID
	idHeader   string
	maxPending int
	m          *metrics

	client     clientSettings // what Provision needs
	scale      *scale         // idempotency, async, gather (scale.go); nil: none
	repliesKey string

	prod    *producer      // set by Provision
	replies *replyConsumer // set by Provision
}

// clientSettings is what Provision needs to take a producer: the validated
// connection and producer settings, and the key they share it under.
type clientSettings struct {
	addrs []string
	conn  conn
	ps    producerSettings
	key   string
}

func newClientSettings(addrs []string, c *conn, ps *producerSettings) clientSettings {
	return clientSettings{addrs: addrs, conn: *c, ps: *ps, key: producerKey(connKey(addrs, c), ps)}
}

func (*requestReply) Name() string  { return "kafka-request-reply" }
func (*requestReply) Priority() int { return RequestReplyPriority }
func (p *requestReply) Needs() flows.Needs {
	return flows.Needs{RequestBody: p.fwdBody || p.scale != nil && p.scale.gather != nil && p.scale.gather.readsBody}
}

func (k *Plugins) newRequestReply(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
	c := requestReplyConfig{
		conn:             conn{Timeout: 10000},
		producerSettings: defaultProducerSettings(),
		ReplyTimeout:     5000, MessageFormat: "json",
		ForwardMethod: true, ForwardURI: true, ForwardHeaders: true, ForwardBody: true,
		Key: "correlation_id", CorrelationHeader: DefaultHeaderNames.Correlation,
		ReplyTopicHeader: DefaultHeaderNames.ReplyTopic, ReplyPartitionHeader: DefaultHeaderNames.ReplyPartition,
		MaxPending: 10000,
	}
	// Request-reply fails fast: a broker outage must be a 503 long before
	// the reply timeout (Kong's kafka-upstream default is 10 retries).
	c.ProducerRequestRetriesMaxAttempts = 3
	b.Decode(raw, at, &c)
	addrs := validateConn(b, at, &c.conn)
	validateProducer(b, at, &c.producerSettings)
	if err := validTopic(c.Topic); err != nil {
		b.Errorf(at.Key("topic"), "%v", err)
	}
	if err := validTopic(c.ReplyTopic); err != nil {
		b.Errorf(at.Key("reply_topic"), "%v", err)
	}
	if c.ReplyPartition != nil {
		checkRange(b, at.Key("reply_partition"), *c.ReplyPartition, 0, 1<<20)
	}
	checkRange(b, at.Key("reply_timeout"), c.ReplyTimeout, 1, 3600000)
	checkRange(b, at.Key("max_pending"), c.MaxPending, 1, 10000000)
	format, err := ParseFormat(c.MessageFormat)
	if err != nil {
		b.Errorf(at.Key("message_format"), "%v", err)
	}
	for _, h := range []struct {
		name, v string
		opt     bool
	}{
		{"correlation_header", c.CorrelationHeader, false}, {"reply_topic_header", c.ReplyTopicHeader, false},
		{"reply_partition_header", c.ReplyPartitionHeader, false}, {"correlation_id_header", c.CorrelationIDHeader, true},
	} {
		if h.opt && h.v == "" {
			continue
		}
		if !httpx.ValidHeaderName(h.v) {
			b.Errorf(at.Key(h.name), "must be a valid header name, got %q", h.v)
		}
	}
	keyHeader := ""
	if c.Key != "correlation_id" {
		if !httpx.ValidHeaderName(c.Key) {
			b.Errorf(at.Key("key"), "must be correlation_id or a request header name, got %q", c.Key)
		}
		keyHeader = c.Key
	}
	if !c.ForwardMethod && !c.ForwardURI && !c.ForwardHeaders && !c.ForwardBody {
		b.Errorf(at, "at least one of forward_method, forward_uri, forward_headers, forward_body must be true")
	}
	sc := compileScale(b, at, &c.scaleConfig, time.Duration(c.ReplyTimeout)*time.Millisecond)
	if b.Failed() {
		return nil, nil
	}
	p := &requestReply{
		topic: c.Topic, route: b.Scope.Route, replyTopic: c.ReplyTopic, timeout: time.Duration(c.ReplyTimeout) * time.Millisecond,
		format: format, names: HeaderNames{c.CorrelationHeader, c.ReplyTopicHeader, c.ReplyPartitionHeader},
		fwdMethod: c.ForwardMethod, fwdURI: c.ForwardURI, fwdHeaders: c.ForwardHeaders, fwdBody: c.ForwardBody,
		keyHeader: keyHeader, idHeader: c.CorrelationIDHeader, maxPending: c.MaxPending, m: k.m,
		client: newClientSettings(addrs, &c.conn, &c.producerSettings),
	}
	p.scale = sc
	part := int32(-1)
	if c.ReplyPartition != nil {
		part = int32(*c.ReplyPartition)
		p.partition = &part
	}
	p.repliesKey = fmt.Sprintf("kafka-replies|%s|%s|%d|%s", connKey(addrs, &c.conn), c.ReplyTopic, part, strings.ToLower(c.CorrelationHeader))
	return p, nil
}

// Provision takes the shared producer and reply consumer for this
// instance's settings; both connect in the background.
func (p *requestReply) Provision(b *flows.Builder) error {
	prod, err := acquireProducer(b, &p.client, p.m)
	if err != nil {
		return err
	}
	prod.gate(b)
	prod.probeTopic(p.topic)
	part := int32(-1)
	if p.partition != nil {
		part = *p.partition
	}
	c := p.client.conn
	rc, err := b.Acquire(p.repliesKey, func() (io.Closer, error) {
		return newReplyConsumer(p.client.addrs, saramaConfig(&c), p.replyTopic, part, p.names.Correlation, p.m, b.Log), nil
	})
	if err != nil {
		return fmt.Errorf("making reply consumer: %w", err)
	}
	p.prod, p.replies = prod, rc.(*replyConsumer)
	if p.scale != nil {
		return p.scale.provision(b)
	}
	return nil
}

// acquireProducer takes the producer shared by every plugin instance with
// the same connection and producer settings.
func acquireProducer(b *flows.Builder, s *clientSettings, m *metrics) (*producer, error) {
	pc, err := b.Acquire(s.key, func() (io.Closer, error) {
		return newProducer(s.addrs, producerConfig(&s.conn, &s.ps), m, b.Log), nil
	})
	if err != nil {
		return nil, fmt.Errorf("making producer: %w", err)
	}
	return pc.(*producer), nil
}

// call produces the request and answers the client with the reply
// (Access in scale.go adds idempotency, async and gather).
func (p *requestReply) call(ctx context.Context, x *flows.Exchange) error {
	id := p.requestID(x)
	fail := func(status int, outcome, msg string, err error) error {
		p.m.requests.WithLabelValues(p.route, p.topic, outcome).Inc()
		return &flows.HTTPError{Status: status, Message: msg + " (correlation id " + id + ")", Err: err,
			Headers: flows.Headers{strings.ToLower(p.names.Correlation): {id}}}
	}
	if p.replies == nil { // a load that did not provision (validate only)
		return fail(503, "unavailable", "kafka clients not started", errNotReady)
	}
	timer := time.NewTimer(p.timeout)
	defer timer.Stop()
	deadline := time.Now().Add(p.timeout)

	w, err := p.replies.Register(id, p.maxPending)
	switch {
	case errors.Is(err, errPendingFull):
		return fail(503, "pending_full", "too many requests waiting for kafka replies", err)
	case errors.Is(err, errDuplicateID):
		return fail(409, "duplicate_id", "a request with this correlation id is already waiting", err)
	case err != nil:
		return fail(503, "unavailable", "kafka reply consumer not ready", err)
	}
	timedOut := false
	defer func() { p.replies.Cancel(w, timedOut) }()

	sctx, span := startSpan(ctx, "send", trace.SpanKindProducer, p.topic, id)
	msg, err := p.record(sctx, x, id, deadline)
	if err != nil {
		endSpan(span, "encode_error", err)
		return fail(500, "encode_error", "could not encode the kafka request", err)
	}
	pctx, cancel := context.WithDeadline(sctx, deadline)
	err = p.prod.Produce(pctx, msg, true, false)
	cancel()
	endSpan(span, "", err)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return fail(499, "canceled", "client went away", ctx.Err())
	case errors.Is(err, context.DeadlineExceeded):
		timedOut = true
		return fail(504, "timeout", "kafka produce timed out", err)
	case unavailable(err):
		return fail(503, "unavailable", "kafka brokers unavailable", err)
	default:
		return fail(502, "produce_error", "could not produce the kafka request", err)
	}

	_, span = startSpan(ctx, "receive", trace.SpanKindConsumer, p.replyTopic, id)
	select {
	case m := <-w.C:
		rep, err := DecodeReply(p.format, p.names, m.Value, m.Headers)
		if err != nil {
			p.replies.malformed.Inc()
			endSpan(span, "bad_reply", err)
			return fail(502, "bad_reply", "malformed kafka reply", err)
		}
		endSpan(span, "replied", nil)
		hs := flows.Headers{}
		for _, h := range rep.Headers {
			hs.Add(h.Name, h.Value)
		}
		p.m.requests.WithLabelValues(p.route, p.topic, "replied").Inc()
		x.Respond(int(rep.Status), hs, rep.Body)
		return nil
	case <-timer.C:
		timedOut = true
		endSpan(span, "timeout", context.DeadlineExceeded)
		return fail(504, "timeout", "no kafka reply within "+p.timeout.String(), nil)
	case <-ctx.Done():
		timedOut = true
		endSpan(span, "canceled", ctx.Err())
		return fail(499, "canceled", "client went away", ctx.Err())
	}
}

// record builds the request record. A traced request's forwarded trace
// headers are the produce span's (see traceHeaders).
func (p *requestReply) record(ctx context.Context, x *flows.Exchange, id string, deadline time.Time) (*sarama.ProducerMessage, error) {
	req := &kafkav1.Request{CorrelationId: id, ReplyTopic: p.replyTopic, Deadline: timestamppb.New(deadline), ReplyPartition: p.partition}
	if p.fwdMethod {
		req.Method = x.Request.Method
	}
	if p.fwdURI {
		req.Path, req.Query = x.Request.Path, x.Request.RawQuery
	}
	if p.fwdHeaders {
		traced := tracing.On(ctx)
		for _, k := range x.Request.Headers.Keys() {
			if traced && tracing.IsPropagationHeader(k) {
				continue
			}
			for _, v := range x.Request.Headers.Values(k) {
				req.Headers = append(req.Headers, &kafkav1.Header{Name: k, Value: v})
			}
		}
		if traced {
			for _, kv := range tracing.Inject(ctx) {
				req.Headers = append(req.Headers, &kafkav1.Header{Name: kv[0], Value: kv[1]})
			}
		}
	}
	if p.fwdBody {
		req.Body = x.Request.Body
	}
	value, hs, err := EncodeRequest(p.format, p.names, req)
	if err != nil {
		return nil, err
	}
	msg := &sarama.ProducerMessage{Topic: p.topic, Value: sarama.ByteEncoder(value), Headers: traceHeaders(ctx, hs)}
	key := id
	if p.keyHeader != "" {
		key = x.Request.Headers.Get(p.keyHeader)
	}
	if key != "" {
		msg.Key = sarama.StringEncoder(key)
	}
	return msg, nil
}
