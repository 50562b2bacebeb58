package processor

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sidecall/sidecall/internal/tracing"
)

// startSpan starts the stream's server span, a child of the trace context
// (and baggage) in the request headers, and makes it the plugins' parent.
func (st *stream) startSpan(hm *corev3.HeaderMap) {
	ctx := tracing.Propagator.Extract(st.ctx, headerCarrier{hm})
	name := "ext_proc"
	if st.route != "" {
		name += " " + st.route
	}
	st.ctx, st.span = st.srv.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(tracing.Route.String(st.route), tracing.HTTPMethod.String(st.x.Request.Method),
			tracing.URLPath.String(st.x.Request.Path)))
}

// endSpan ends the stream's span with the status the client got, when
// sidecall saw it (a local reply, or the response headers).
func (st *stream) endSpan() {
	if st.span == nil {
		return
	}
	if st.x != nil && st.x.ID != "" {
		st.span.SetAttributes(tracing.RequestID.String(st.x.ID))
	}
	status := st.status
	if status == 0 && st.x != nil {
		status = st.x.Response.Status
	}
	if status != 0 {
		st.span.SetAttributes(tracing.HTTPStatus.Int(status))
		if status >= 500 {
			st.span.SetStatus(codes.Error, "")
		}
	}
	st.span.End()
}

// upstreamTrace sets the upstream request's traceparent (and tracestate)
// to the stream span's, so the upstream's spans are its children; a
// traceparent a plugin set wins.
func (st *stream) upstreamTrace(common *extprocv3.CommonResponse) *extprocv3.CommonResponse {
	if st.span == nil {
		return common
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(st.ctx, c)
	tp := c["traceparent"]
	if tp == "" {
		return common
	}
	if common == nil {
		common = &extprocv3.CommonResponse{}
	}
	if common.HeaderMutation == nil {
		common.HeaderMutation = &extprocv3.HeaderMutation{}
	}
	hm := common.HeaderMutation
	for _, h := range hm.GetSetHeaders() {
		if strings.EqualFold(h.GetHeader().GetKey(), "traceparent") {
			return common
		}
	}
	hm.SetHeaders = append(hm.SetHeaders, setOpt("traceparent", tp, false))
	if ts := c["tracestate"]; ts != "" {
		hm.SetHeaders = append(hm.SetHeaders, setOpt("tracestate", ts, false))
	}
	return common
}

// headerCarrier reads trace headers straight from Envoy's header map.
type headerCarrier struct{ hm *corev3.HeaderMap }

func (c headerCarrier) Get(key string) string {
	for _, h := range c.hm.GetHeaders() {
		if strings.EqualFold(h.GetKey(), key) {
			return headerValue(h)
		}
	}
	return ""
}

func (headerCarrier) Set(string, string) {}

func (c headerCarrier) Keys() []string {
	ks := make([]string, 0, len(c.hm.GetHeaders()))
	for _, h := range c.hm.GetHeaders() {
		ks = append(ks, strings.ToLower(h.GetKey()))
	}
	return ks
}
