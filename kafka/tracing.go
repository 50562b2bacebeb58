package kafka

import (
	"context"
	"strings"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sidecall/sidecall/internal/tracing"
)

// startSpan starts a messaging span when the request is traced (nil
// otherwise): op is send (a produce) or receive (the reply wait).
func startSpan(ctx context.Context, op string, kind trace.SpanKind, topic, id string) (context.Context, trace.Span) {
	if !tracing.On(ctx) {
		return ctx, nil
	}
	attrs := []attribute.KeyValue{tracing.MsgSystem.String("kafka"), tracing.MsgDestination.String(topic),
		tracing.MsgOperation.String(op), tracing.MsgOperationNm.String(op)}
	if id != "" {
		attrs = append(attrs, tracing.MsgConversation.String(id))
	}
	return tracing.Start(ctx, op+" "+topic, kind, attrs...)
}

// endSpan ends span (nil: untraced) with its outcome.
func endSpan(span trace.Span, outcome string, err error) {
	if span == nil {
		return
	}
	if outcome != "" {
		span.SetAttributes(tracing.Outcome.String(outcome))
	}
	tracing.EndError(span, err)
}

// traceHeaders puts ctx's traceparent, tracestate and baggage in the
// record headers, in every envelope format, replacing any forwarded from
// the client. Untraced, hs is returned as it is.
func traceHeaders(ctx context.Context, hs []sarama.RecordHeader) []sarama.RecordHeader {
	if !tracing.On(ctx) {
		return hs
	}
	out := hs[:0]
	for _, h := range hs {
		if !tracing.IsPropagationHeader(strings.ToLower(string(h.Key))) {
			out = append(out, h)
		}
	}
	for _, kv := range tracing.Inject(ctx) {
		out = append(out, rh(kv[0], kv[1]))
	}
	return out
}
