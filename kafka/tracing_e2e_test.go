package kafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/internal/tracing/tracingtest"
	"github.com/sidecall/sidecall/kafka"
	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

const (
	clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientTP    = "00-" + clientTrace + "-00f067aa0ba902b7-01"
)

// countHeader counts the record headers named name.
func countHeader(m *sarama.ConsumerMessage, name string) int {
	n := 0
	for _, h := range m.Headers {
		if strings.EqualFold(string(h.Key), name) {
			n++
		}
	}
	return n
}

// A request traced in through the stand-in gives stream → plugin →
// produce and reply-wait spans, and the record carries the produce span's
// traceparent (and the client's baggage) as record headers in every
// envelope format, once.
func TestTraceTreeKafkaRequestReply(t *testing.T) {
	for _, f := range []kafka.Format{kafka.FormatJSON, kafka.FormatProtobuf, kafka.FormatRaw} {
		t.Run(f.String(), func(t *testing.T) {
			_, addr := e2eCluster(t, 0)
			rcv := tracingtest.GRPC(t)
			tp := tracingtest.Provider(t, rcv)
			h := envoytest.Start(t, deck(addr, "reply_timeout: 10000\nmessage_format: "+f.String(), ""), envoytest.Options{TracerProvider: tp})
			seen := make(chan string, 1)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			ready := make(chan struct{})
			r := &kafka.Responder{Brokers: []string{addr}, Topic: "requests", Format: f, Handler: func(_ context.Context, req *kafkav1.Request) *kafkav1.Reply {
				for _, hd := range req.GetHeaders() {
					if hd.GetName() == "traceparent" {
						select {
						case seen <- hd.GetValue():
						default:
						}
					}
				}
				return &kafkav1.Reply{Status: 200, BodyText: "ok"}
			}}
			// The service side continues the trace from the record headers.
			rtp := tracingtest.Provider(t, rcv)
			r.TracerProvider = rtp
			go func() { done <- r.Run(ctx, func() { close(ready) }) }()
			t.Cleanup(func() { cancel(); <-done })
			<-ready
			waitKafkaReady(t, h)
			requests := watch(t, addr, "requests")

			a := send(client(t), h, "POST", "/rr/x", "hi", "traceparent", clientTP, "baggage", "tenant=acme")
			if a.err != nil || a.status != 200 {
				t.Fatalf("got %v %d %s", a.err, a.status, a.body)
			}
			m := next(t, requests)
			tracingtest.Flush(t, tp)
			spans := rcv.WaitFor(t, "kafka spans", func(s []tracingtest.Span) bool {
				return len(tracingtest.Find(s, "receive replies")) == 1 && len(tracingtest.Find(s, "ext_proc rr")) == 1
			})
			stream := tracingtest.One(t, spans, "ext_proc rr")
			plugin := tracingtest.One(t, spans, "plugin kafka-request-reply")
			produce := tracingtest.One(t, spans, "send requests")
			wait := tracingtest.One(t, spans, "receive replies")
			if stream.TraceID != clientTrace || plugin.ParentID != stream.SpanID || produce.ParentID != plugin.SpanID || wait.ParentID != plugin.SpanID {
				t.Fatalf("span tree:%s", tracingtest.Dump(spans))
			}
			if produce.Kind != tracepb.Span_SPAN_KIND_PRODUCER || produce.Attrs["messaging.system"] != "kafka" ||
				produce.Attrs["messaging.destination.name"] != "requests" || produce.Attrs["messaging.message.conversation_id"] == "" {
				t.Errorf("produce span %+v", produce)
			}
			if wait.Attrs["sidecall.outcome"] != "replied" || wait.Error {
				t.Errorf("wait span %+v", wait)
			}
			if countHeader(m, "traceparent") != 1 || !strings.Contains(recordHeader(m, "traceparent"), "-"+produce.SpanID+"-") {
				t.Errorf("record traceparent %q (%d), want the produce span %s", recordHeader(m, "traceparent"), countHeader(m, "traceparent"), produce.SpanID)
			}
			if recordHeader(m, "baggage") != "tenant=acme" {
				t.Errorf("record baggage %q", recordHeader(m, "baggage"))
			}
			// The responder's span is the produce span's child: it ends after
			// the reply is produced, so flush until it is there.
			var process []tracingtest.Span
			for i := 0; i < 100 && len(process) == 0; i++ {
				tracingtest.Flush(t, rtp)
				process = tracingtest.Find(rcv.Spans(), "process requests")
				if len(process) == 0 {
					time.Sleep(20 * time.Millisecond)
				}
			}
			if len(process) != 1 || process[0].TraceID != clientTrace || process[0].ParentID != produce.SpanID ||
				process[0].Kind != tracepb.Span_SPAN_KIND_CONSUMER || process[0].Attrs["messaging.message.conversation_id"] == "" {
				t.Errorf("responder spans %+v, want one consumer span under the produce span %s", process, produce.SpanID)
			}
			// The envelope's forwarded trace context is the produce span's too.
			select {
			case got := <-seen:
				if got != recordHeader(m, "traceparent") {
					t.Errorf("envelope traceparent %q, record header %q", got, recordHeader(m, "traceparent"))
				}
			default:
				t.Error("the responder saw no traceparent in the envelope")
			}
		})
	}
}

// kafka-upstream (Kong's envelope) gets a producer span per topic and the
// trace headers on the record; with tracing off the record has none.
func TestTraceKafkaUpstream(t *testing.T) {
	_, addr := e2eCluster(t, 0)
	rcv := tracingtest.HTTP(t)
	tp := tracingtest.Provider(t, rcv)
	h := envoytest.Start(t, upstreamDeck(addr, false), envoytest.Options{TracerProvider: tp})
	waitKafkaReady(t, h)
	records := watch(t, addr, "requests")
	a := send(client(t), h, "POST", "/up/x", "hi", "traceparent", clientTP)
	if a.err != nil || a.status != 200 {
		t.Fatalf("got %v %d %s", a.err, a.status, a.body)
	}
	m := next(t, records)
	tracingtest.Flush(t, tp)
	spans := rcv.WaitFor(t, "produce span", func(s []tracingtest.Span) bool { return len(tracingtest.Find(s, "send requests")) == 1 })
	produce := tracingtest.One(t, spans, "send requests")
	plugin := tracingtest.One(t, spans, "plugin kafka-upstream")
	if produce.ParentID != plugin.SpanID || produce.TraceID != clientTrace {
		t.Fatalf("span tree:%s", tracingtest.Dump(spans))
	}
	if !strings.Contains(recordHeader(m, "traceparent"), "-"+produce.SpanID+"-") {
		t.Errorf("record traceparent %q, want the produce span %s", recordHeader(m, "traceparent"), produce.SpanID)
	}

	off := envoytest.Start(t, upstreamDeck(addr, false), envoytest.Options{})
	waitKafkaReady(t, off)
	a = send(client(t), off, "POST", "/up/x", "hi", "traceparent", clientTP)
	if a.err != nil || a.status != 200 {
		t.Fatalf("got %v %d %s", a.err, a.status, a.body)
	}
	if m := next(t, records); countHeader(m, "traceparent") != 0 {
		t.Errorf("tracing off added a record header: %v", m.Headers)
	}
}
