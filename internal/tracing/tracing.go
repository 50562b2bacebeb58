// Package tracing holds the OpenTelemetry helpers the processor and the
// plugins share. Tracing is on for a request when its context carries a
// span context, which the processor puts there only when a TracerProvider
// is configured: plugins take their tracer from that span, so no global
// provider is read and tests with their own providers run in parallel.
// Off, every helper here is a context lookup and nothing more.
package tracing

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of sidecall's spans.
const ScopeName = "github.com/sidecall/sidecall"

// Attribute keys sidecall sets besides the semantic conventions'.
const (
	Route     = attribute.Key("sidecall.route")
	RequestID = attribute.Key("sidecall.request_id")
	Plugin    = attribute.Key("sidecall.plugin")
	PluginID  = attribute.Key("sidecall.plugin.id")
	Phase     = attribute.Key("sidecall.phase")
	Callout   = attribute.Key("sidecall.callout")
	Flow      = attribute.Key("sidecall.flow")
	Outcome   = attribute.Key("sidecall.outcome")
)

// Semantic-convention keys (HTTP client and messaging), spelled here so no
// semconv schema version is pinned.
const (
	HTTPMethod      = attribute.Key("http.request.method")
	HTTPStatus      = attribute.Key("http.response.status_code")
	URLFull         = attribute.Key("url.full")
	URLPath         = attribute.Key("url.path")
	ServerAddress   = attribute.Key("server.address")
	ServerPort      = attribute.Key("server.port")
	ErrorType       = attribute.Key("error.type")
	MsgSystem       = attribute.Key("messaging.system")
	MsgDestination  = attribute.Key("messaging.destination.name")
	MsgOperation    = attribute.Key("messaging.operation.type")
	MsgOperationNm  = attribute.Key("messaging.operation.name")
	MsgConversation = attribute.Key("messaging.message.conversation_id")
)

// Propagator is W3C trace context and baggage.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// On tells whether ctx belongs to a traced request: its trace context is
// propagated (even when the sampler dropped it).
func On(ctx context.Context) bool { return trace.SpanContextFromContext(ctx).IsValid() }

// Recording tells whether spans started under ctx are recorded.
func Recording(ctx context.Context) bool { return trace.SpanFromContext(ctx).IsRecording() }

// Tracer is the tracer of the provider that made ctx's span.
func Tracer(ctx context.Context) trace.Tracer {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(ScopeName)
}

// Start starts a child span of ctx's span on the same provider.
func Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return Tracer(ctx).Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// InjectHTTP sets traceparent and tracestate from ctx, replacing any, and
// baggage unless h has one already (a callout's own wins).
func InjectHTTP(ctx context.Context, h http.Header) {
	h.Del("Traceparent")
	h.Del("Tracestate")
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
	if h.Get("Baggage") == "" {
		propagation.Baggage{}.Inject(ctx, propagation.HeaderCarrier(h))
	}
}

// Inject returns ctx's propagation headers (traceparent, tracestate,
// baggage) as name/value pairs, for Kafka record headers.
func Inject(ctx context.Context) [][2]string {
	c := propagation.MapCarrier{}
	Propagator.Inject(ctx, c)
	out := make([][2]string, 0, len(c))
	for _, k := range []string{"traceparent", "tracestate", "baggage"} {
		if v, ok := c[k]; ok {
			out = append(out, [2]string{k, v})
		}
	}
	return out
}

// IsPropagationHeader tells whether lower-case name is one Inject writes.
func IsPropagationHeader(name string) bool {
	return name == "traceparent" || name == "tracestate" || name == "baggage"
}

// StartHTTPClient starts a client span for one HTTP attempt with the
// semantic conventions' request attributes. rawURL must already be free of
// credentials.
func StartHTTPClient(ctx context.Context, method, rawURL string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	attrs = append(attrs, HTTPMethod.String(method), URLFull.String(rawURL))
	if u, err := url.Parse(rawURL); err == nil {
		host, port := u.Hostname(), u.Port()
		attrs = append(attrs, ServerAddress.String(host))
		if port == "" {
			switch u.Scheme {
			case "https":
				port = "443"
			case "http":
				port = "80"
			}
		}
		if n, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, ServerPort.Int(n))
		}
	}
	return Start(ctx, method, trace.SpanKindClient, attrs...)
}

// EndHTTPClient ends an HTTP client span: status, or the error's type.
// A 4xx or 5xx is an error for a client span.
func EndHTTPClient(span trace.Span, status int, err error) {
	switch {
	case err != nil:
		span.SetAttributes(ErrorType.String(ErrorTypeOf(err)))
		span.SetStatus(codes.Error, err.Error())
	case status >= 400:
		span.SetAttributes(HTTPStatus.Int(status), ErrorType.String(strconv.Itoa(status)))
		span.SetStatus(codes.Error, "")
	default:
		span.SetAttributes(HTTPStatus.Int(status))
	}
	span.End()
}

// ErrorTypeOf is a low-cardinality error.type: timeout, canceled,
// connection_error (dial failed) or _OTHER.
func ErrorTypeOf(err error) string {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &oe) && oe.Op == "dial":
		return "connection_error"
	}
	return "_OTHER"
}

// Observe records v on o, with the trace id of ctx's sampled span as
// exemplar when there is one: Grafana links the sample to its trace.
func Observe(ctx context.Context, o prometheus.Observer, v float64) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": sc.TraceID().String()})
			return
		}
	}
	o.Observe(v)
}

// EndError ends span, marking it failed when err is set.
func EndError(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
