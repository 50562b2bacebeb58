package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/sidecall/sidecall/internal/tracing"
	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

// Handler answers one request read by a Responder. It must not keep req.
type Handler func(ctx context.Context, req *kafkav1.Request) *kafkav1.Reply

// Responder is a service side of kafka-request-reply: it reads requests
// from Topic (every partition, from the newest offset, no consumer group),
// calls Handler, and produces each reply to the request's reply topic (and
// reply partition when the request names one), echoing the correlation ID.
// It is the core of examples/kafka-responder and of `sidecall demo`.
type Responder struct {
	Brokers     []string
	Topic       string
	Format      Format
	Names       HeaderNames // zero value: DefaultHeaderNames
	Handler     Handler
	Concurrency int // requests handled at once; default 64
	Log         *zap.Logger
	// TracerProvider, when set, makes a consumer span per request, child of
	// the trace context in its record headers, and carries it on the reply.
	TracerProvider trace.TracerProvider

	conn *conn // broker connection settings (SASL, TLS); nil: plain, 10 s timeout
}

// Run serves until ctx is done. ready, if not nil, is called once every
// partition consumer is positioned (requests produced after that are seen).
func (r *Responder) Run(ctx context.Context, ready func()) error {
	if r.Handler == nil || r.Topic == "" || len(r.Brokers) == 0 {
		return errors.New("responder needs brokers, a topic and a handler")
	}
	names := r.Names
	if names == (HeaderNames{}) {
		names = DefaultHeaderNames
	}
	log := r.Log
	if log == nil {
		log = zap.NewNop()
	}
	c := r.conn
	if c == nil {
		c = &conn{Timeout: 10000}
	}
	cfg := saramaConfig(c)
	client, err := sarama.NewClient(r.Brokers, cfg)
	if err != nil {
		return fmt.Errorf("connecting to %v: %w", r.Brokers, err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return fmt.Errorf("making consumer: %w", err)
	}
	defer consumer.Close()
	parts, err := client.Partitions(r.Topic)
	if err != nil {
		return fmt.Errorf("listing partitions of %q: %w", r.Topic, err)
	}
	ps := defaultProducerSettings()
	ps.ProducerRequestRetriesMaxAttempts = 3
	prod := newProducer(r.Brokers, producerConfig(c, &ps), nil, log)
	defer prod.Close()

	var pcs []sarama.PartitionConsumer
	defer func() {
		for _, pc := range pcs {
			pc.AsyncClose()
		}
	}()
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(r.Topic, p, sarama.OffsetNewest)
		if err != nil {
			return fmt.Errorf("consuming %s/%d: %w", r.Topic, p, err)
		}
		pcs = append(pcs, pc)
	}
	// Wait for the producer too, so the first reply does not fail.
	for i := 0; i < 200 && !prod.Ready(); i++ {
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	if ready != nil {
		ready()
	}
	n := r.Concurrency
	if n <= 0 {
		n = 64
	}
	sem := make(chan struct{}, n)
	msgs := make(chan *sarama.ConsumerMessage)
	var wg, handlers sync.WaitGroup
	for _, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range pc.Messages() {
				select {
				case msgs <- m:
				case <-ctx.Done():
				}
			}
		}()
	}
	defer wg.Wait()
	defer handlers.Wait()
	for {
		select {
		case <-ctx.Done():
			for _, pc := range pcs {
				pc.AsyncClose()
			}
			pcs = nil
			return nil
		case m := <-msgs:
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				continue
			}
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				defer func() { <-sem }()
				r.handle(ctx, prod, names, log, m)
			}()
		}
	}
}

func (r *Responder) handle(ctx context.Context, prod *producer, names HeaderNames, log *zap.Logger, m *sarama.ConsumerMessage) {
	req, err := DecodeRequest(r.Format, names, m.Value, m.Headers)
	if err != nil {
		log.Warn("responder: dropping malformed request", zap.Error(err))
		return
	}
	if req.GetReplyTopic() == "" || req.GetCorrelationId() == "" {
		log.Warn("responder: request without reply topic or correlation id dropped")
		return
	}
	var span trace.Span
	if r.TracerProvider != nil {
		ctx, span = r.startSpan(ctx, m, req.GetCorrelationId())
		defer span.End()
	}
	rep := r.Handler(ctx, req)
	if rep == nil {
		return
	}
	rep.CorrelationId = req.GetCorrelationId()
	value, hs, err := EncodeReply(r.Format, names, rep)
	if err != nil {
		log.Warn("responder: encoding reply", zap.Error(err))
		if span != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		return
	}
	hs = traceHeaders(ctx, hs)
	msg := &sarama.ProducerMessage{Topic: req.GetReplyTopic(), Key: sarama.StringEncoder(req.GetCorrelationId()), Value: sarama.ByteEncoder(value), Headers: hs}
	pin := req.ReplyPartition != nil
	if pin {
		msg.Partition = req.GetReplyPartition()
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := prod.Produce(pctx, msg, true, pin); err != nil {
		log.Warn("responder: producing reply", zap.Error(err))
		if span != nil {
			span.SetStatus(codes.Error, err.Error())
		}
	}
}

// startSpan continues the trace the request's record headers carry (a new
// one without them) with a consumer span.
func (r *Responder) startSpan(ctx context.Context, m *sarama.ConsumerMessage, id string) (context.Context, trace.Span) {
	c := propagation.MapCarrier{}
	for _, h := range m.Headers {
		if k := strings.ToLower(string(h.Key)); tracing.IsPropagationHeader(k) {
			c[k] = string(h.Value)
		}
	}
	ctx = tracing.Propagator.Extract(ctx, c)
	attrs := []attribute.KeyValue{tracing.MsgSystem.String("kafka"), tracing.MsgDestination.String(m.Topic),
		tracing.MsgOperation.String("process"), tracing.MsgOperationNm.String("process")}
	if id != "" {
		attrs = append(attrs, tracing.MsgConversation.String(id))
	}
	return r.TracerProvider.Tracer(tracing.ScopeName).Start(ctx, "process "+m.Topic,
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// EchoHandler answers 200 with a JSON description of the request
// (method, path, query, headers, body as text) and the header
// x-correlation-id. It is the example responder's and the demo's handler.
func EchoHandler(_ context.Context, req *kafkav1.Request) *kafkav1.Reply {
	hs := map[string][]string{}
	for _, h := range req.GetHeaders() {
		hs[h.GetName()] = append(hs[h.GetName()], h.GetValue())
	}
	body, _ := json.Marshal(map[string]any{
		"method": req.GetMethod(), "path": req.GetPath(), "query": req.GetQuery(),
		"headers": hs, "body": string(RequestBodyOf(req)), "correlation_id": req.GetCorrelationId(),
	})
	return &kafkav1.Reply{
		Status: 200,
		Headers: []*kafkav1.Header{
			{Name: "content-type", Value: "application/json"},
			{Name: "x-correlation-id", Value: req.GetCorrelationId()},
		},
		Body: body,
	}
}
