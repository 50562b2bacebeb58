package flowcallout

// flow-callout: Apigee's FlowCallout over a Kong service used as a shared
// flow. The service's own plugins run on a copy of the request; unless one
// of them answers, the copy is sent to the service URL.
//
// Choices where Kong and Apigee are silent:
//   - The flow's sub-exchange SHARES kong.ctx.shared (x.Shared) with the main
//     request, like Apigee's FlowCallout that runs in the caller's message
//     context: what the flow's plugins write there is visible afterwards. Its
//     request view (method, path, query, headers, body), Reply and Response
//     are its own: the main request changes only through Shared, and with
//     preserve_original_request_body: false, through a body the flow's
//     plugins replaced (copied to the main request with SetBody). So a
//     correlation-id on the flow's service overwrites shared.correlation_id.
//   - The copy is the request as it is when flow-callout runs (after the
//     earlier plugins, e.g. correlation-id, as Kong's kong.request sees it).
//     The body is always asked from Envoy (Needs.RequestBody) so the flow gets
//     the whole body.
//   - Upstream path: the service path joined with the request path (Kong's
//     path_handling v0: "/check" + "/orders" = "/check/orders"; a request
//     path "/" gives the service path alone); the query is kept. The
//     request path stays below the service path: its "." and ".." segments
//     (%2e%2e too) are resolved within it, clamped at its root
//     ("/check" + "/../admin" = "/check/admin"); escapes the client sent
//     (%2F, %3F) are kept; '?', '#' and other bytes a path cannot hold are
//     percent-encoded, and a '#' or space in the query is too, so the query
//     stays one query. Hop-by-hop
//     headers, host and content-length are not forwarded: Host is the
//     service's host, as Kong does without preserve_host.
//   - Timeouts are Kong's per-phase socket timeouts: connect_timeout until
//     the connection is up, write_timeout to send the request, read_timeout
//     until the response headers and then between body reads.
//   - retries: only while the request was never written (dial errors,
//     connect timeouts, a reused connection that broke before writing),
//     like nginx's proxy_next_upstream without non_idempotent; a flow that
//     may have seen the request is not called twice.
//   - TLS: verified unless the service says tls_verify: false (Kong leaves
//     an unset tls_verify to nginx, which does not verify; we fail closed).
//     A certificate that does not verify is a transport error (502 stored).
//     The service's ca_certificates, when it has some, are the only trusted
//     CAs (Kong's per-service trust store), else the system roots;
//     tls_verify_depth bounds the intermediates (see cacerts.go). One
//     keep-alive transport per distinct setting, shared across reloads.
//   - The flow's response phases (header_filter, body_filter plugins of the
//     service) run on its response, as they would in Kong's sub-request.
//   - Stored result: status (int), headers (lower-case names, a string or a
//     list of strings), body (string), json (decoded body when the
//     content-type is JSON and it parses), failed (bool), error (string, for
//     transport errors, timeouts and plugin errors). A transport error is
//     stored with status 502 and a timeout with 504, what Kong's proxy would
//     answer for the sub-request. A plugin error in the flow is a failure
//     with the HTTPError's status.
//   - on_flow_error_body is sent as written when it is a JSON object or
//     array (the user's own body, no request_id added); anything else, the
//     default included, is the message of sidecall's error body:
//     {"message": body, "request_id": x-request-id}. A bare JSON scalar
//     ("42") is a message.
//   - The flow response body is read up to 16 MiB; more is a failure.
//   - Shared flows nest at most 8 deep at run time too (the loader rejects
//     cycles and deeper configs; this guards anything it cannot see).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"
	"github.com/sidecall/sidecall/internal/tracing"
	"github.com/sidecall/sidecall/internal/urlsafe"
)

// Priority is flow-callout's Kong plugin priority.
const Priority = 815

const (
	maxFlowDepth    = 8
	maxFlowBodySize = 16 << 20
)

// Flow results reported to the flow observer (metric label values).
const (
	ResultOK             = "ok"
	ResultStatus         = "error_status" // the flow answered >= 400
	ResultTimeout        = "timeout"
	ResultTransportError = "transport_error"
	ResultPluginError    = "plugin_error"
)

// Observer is told about every shared-flow run: the route of the
// flow-callout plugin ("" for a global or service plugin), the flow
// (service) name, one of the Result* values and how long the flow took
// (metrics).
type Observer func(route, flow, result string, d time.Duration)

type flowCalloutConfig struct {
	SharedFlowServiceName       string            `yaml:"shared_flow_service_name"`
	PreserveOriginalRequestBody bool              `yaml:"preserve_original_request_body"`
	OnFlowErrorStatus           int               `yaml:"on_flow_error_status"`
	OnFlowErrorBody             string            `yaml:"on_flow_error_body"`
	OnFlowErrorContinue         bool              `yaml:"on_flow_error_continue"`
	StoreKey                    string            `yaml:"store_flow_response_in_shared_context_key"`
	Parameters                  []flowParamConfig `yaml:"parameters"`
	ParametersAsHeaders         string            `yaml:"parameters_as_headers"`
	Phase                       string            `yaml:"phase"` // access (default) or response
	ApplyFlowResponse           bool              `yaml:"apply_flow_response"`
}

type flowCallout struct {
	svc       *flows.Service // Pipeline is read at request time (filled after the load)
	preserve  bool
	status    int
	errBody   []byte // on_flow_error_body as written (JSON object or array), else nil
	errMsg    string // else: the message of the {message, request_id} body
	cont      bool
	key       string
	transport *http.Transport
	obs       Observer
	route     string      // b.Scope.Route, for obs
	params    []flowParam // params.go
	response  bool        // phase: response (response.go)
	apply     bool        // apply_flow_response
}

// Register adds flow-callout to r; obs (optional) sees every flow run.
func Register(r *flows.Registry, obs Observer) {
	r.Register("flow-callout", Priority, func(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
		return newFlowCallout(b, raw, at, obs)
	})
}

func newFlowCallout(b *flows.Builder, raw *yaml.Node, at flows.Path, obs Observer) (flows.Plugin, error) {
	c := flowCalloutConfig{
		PreserveOriginalRequestBody: true,
		OnFlowErrorStatus:           500,
		OnFlowErrorBody:             "Shared Flow execution failed.",
	}
	b.Decode(raw, at, &c)
	p := &flowCallout{preserve: c.PreserveOriginalRequestBody, status: c.OnFlowErrorStatus,
		cont: c.OnFlowErrorContinue, key: c.StoreKey, obs: obs, route: b.Scope.Route}
	if c.SharedFlowServiceName == "" {
		b.Errorf(at.Key("shared_flow_service_name"), "required field missing")
	} else {
		p.svc = b.SharedFlow(c.SharedFlowServiceName, at.Key("shared_flow_service_name"))
	}
	if c.OnFlowErrorStatus < 400 || c.OnFlowErrorStatus > 599 {
		b.Errorf(at.Key("on_flow_error_status"), "must be between 400 and 599, got %d", c.OnFlowErrorStatus)
	}
	p.errBody, p.errMsg = userErrorBody(c.OnFlowErrorBody), c.OnFlowErrorBody
	p.compileExtras(b, &c, at)
	return p, nil
}

// Provision takes the keep-alive transport for the service's TLS setting.
func (p *flowCallout) Provision(b *flows.Builder) error {
	if p.svc == nil {
		return nil
	}
	t, err := flowTransport(b, p.svc.TLS())
	if err != nil {
		return err
	}
	p.transport = t
	return nil
}

// userErrorBody is s when it is a JSON object or array (sent as written),
// else nil: s is then the message of sidecall's error body.
func userErrorBody(s string) []byte {
	t := strings.TrimSpace(s)
	if (strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[")) && json.Valid([]byte(t)) {
		return []byte(s)
	}
	return nil
}

// errorReply is the client body when the flow fails: the user's JSON body
// as written, else {"message": ..., "request_id": ...} like every sidecall
// error (the processor's errorReply: an id is generated when Envoy sent
// none, and kept on x for the rest of the request).
func (p *flowCallout) errorReply(x *flows.Exchange) []byte {
	if p.errBody != nil {
		return bytes.Clone(p.errBody) // later plugins may change the reply body in place
	}
	return x.ErrorBody(p.errMsg)
}

type flowTransportCloser struct{ *http.Transport }

func (t flowTransportCloser) Close() error { t.CloseIdleConnections(); return nil }

// flowTransport is one keep-alive pool per TLS setting (verify, trusted
// CAs, depth: ServiceTLS.Key), shared by the services that have it and
// across reloads. Timeouts are per request (see httpx.Watchdog), not per
// transport.
func flowTransport(b *flows.Builder, st flows.ServiceTLS) (*http.Transport, error) {
	c, err := b.Acquire("flow-callout-transport|"+st.Key(), func() (io.Closer, error) {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		return flowTransportCloser{&http.Transport{
			DialContext:         d.DialContext,
			TLSClientConfig:     st.ClientConfig(),
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			// Forward the client's Accept-Encoding as is; do not add gzip.
			DisableCompression: true,
		}}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("building flow transport: %w", err)
	}
	t, ok := c.(flowTransportCloser)
	if !ok {
		return nil, errors.New("flow transport: resource key in use by another type")
	}
	return t.Transport, nil
}

func (p *flowCallout) Name() string  { return "flow-callout" }
func (p *flowCallout) Priority() int { return Priority }

// Needs: the flow gets the whole original body, so Envoy must buffer it.
// The flow's own pipeline needs are covered: it runs on that copy. In the
// response phase the flow gets the whole response instead (response.go).
func (p *flowCallout) Needs() flows.Needs {
	if p.response {
		return flows.Needs{ResponseHeaders: true, ResponseBody: true}
	}
	return flows.Needs{RequestBody: true}
}

type flowDepthKey struct{}

// flowOutcome is one flow run's response or failure.
type flowOutcome struct {
	status  int
	headers flows.Headers
	body    []byte
	err     error  // transport error, timeout or plugin error
	result  string // FlowResult*
}

func (p *flowCallout) Access(ctx context.Context, x *flows.Exchange) error {
	if p.response {
		return nil // runs on the response (BodyFilter)
	}
	if p.svc == nil {
		return errors.New("flow-callout: no shared flow service")
	}
	sub := p.subExchange(x)
	if _, failed := p.settle(ctx, x, func(ctx context.Context, vals []string) flowOutcome {
		p.setParamHeaders(sub.Request.Headers, vals)
		return p.run(ctx, sub)
	}); failed && !p.cont {
		return nil
	}
	if !p.preserve && sub.BodyChanged() {
		x.SetBody(sub.Request.Body)
	}
	return nil
}

// settle is what both phases share: it runs one flow call under the
// nesting limit and with its parameters, reports and stores the outcome
// and, when the call failed and on_flow_error does not continue, answers
// the client with the error reply.
func (p *flowCallout) settle(ctx context.Context, x *flows.Exchange, run func(ctx context.Context, vals []string) flowOutcome) (out flowOutcome, failed bool) {
	start := time.Now()
	depth, _ := ctx.Value(flowDepthKey{}).(int)
	if x.Shared == nil {
		x.Shared = map[string]any{}
	}
	if depth >= maxFlowDepth {
		out = flowOutcome{status: 500, err: fmt.Errorf("shared flows nest deeper than %d", maxFlowDepth), result: ResultPluginError}
	} else {
		out = p.withParams(ctx, x, func(vals []string) flowOutcome {
			return run(context.WithValue(ctx, flowDepthKey{}, depth+1), vals)
		})
	}
	if p.obs != nil {
		p.obs(p.route, p.svc.Name, out.result, time.Since(start))
	}
	failed = out.result != ResultOK
	if p.key != "" {
		x.Shared[p.key] = flowResult(out, failed)
	}
	if failed {
		x.Log.Debug("shared flow failed", flowLogFields(p.svc.Name, out)...)
		if !p.cont {
			x.Respond(p.status, flows.Headers{"content-type": {"application/json"}}, p.errorReply(x))
		}
	}
	return out, failed
}

// subExchange copies the request; Shared is the same map (see top).
func (p *flowCallout) subExchange(x *flows.Exchange) *flows.Exchange {
	if x.Shared == nil {
		x.Shared = map[string]any{}
	}
	req := x.Request
	req.Headers = x.Request.Headers.Clone()
	req.Body = bytes.Clone(x.Request.Body)
	sub := flows.NewExchange(x.ID, req, x.Log)
	sub.Shared = x.Shared
	sub.Attributes = x.Attributes
	sub.Captures = x.Captures
	sub.Route = &flows.Route{Name: p.svc.Name, Service: p.svc, Pipeline: p.svc.Pipeline, Index: -1}
	if x.Route != nil {
		sub.Route.Config = x.Route.Config
	}
	return sub
}

// sendError carries a failed send's outcome through Subflow.
type sendError struct{ out flowOutcome }

func (e *sendError) Error() string { return e.out.err.Error() }

func (p *flowCallout) run(ctx context.Context, sub *flows.Exchange) flowOutcome {
	ctx, span := p.startFlow(ctx)
	out := subflowOutcome(p.svc.Subflow(ctx, sub, p.upstream(func(sub *flows.Exchange) *flows.Exchange { return sub })))
	endFlow(span, out)
	return out
}

// startFlow starts the sub-request's span when the request is traced
// (nil otherwise): the parent of the flow's plugins and its HTTP call.
func (p *flowCallout) startFlow(ctx context.Context) (context.Context, trace.Span) {
	if !tracing.On(ctx) {
		return ctx, nil
	}
	return tracing.Start(ctx, "flow "+p.svc.Name, trace.SpanKindInternal, tracing.Flow.String(p.svc.Name), tracing.Route.String(p.route))
}

func endFlow(span trace.Span, out flowOutcome) {
	if span == nil {
		return
	}
	span.SetAttributes(tracing.Outcome.String(out.result))
	if out.status != 0 {
		span.SetAttributes(tracing.HTTPStatus.Int(out.status))
	}
	tracing.EndError(span, out.err)
}

// upstream is the sub-request's call to the flow service: the exchange
// prep returns is sent, and a failed send travels as a *sendError.
func (p *flowCallout) upstream(prep func(*flows.Exchange) *flows.Exchange) flows.Upstream {
	return func(ctx context.Context, sub *flows.Exchange) (flows.Response, error) {
		out := p.send(ctx, prep(sub))
		if out.err != nil {
			return flows.Response{}, &sendError{out}
		}
		return flows.Response{Status: out.status, Headers: out.headers, Body: out.body}, nil
	}
}

// upstreamPath joins the service's escaped path and the request's raw
// path (Kong v0), the request path kept below the service path: its "."
// and ".." segments (%2e%2e too) resolve within it, and '?', '#' and other
// bytes a path cannot hold are percent-encoded (urlsafe.JoinPath).
func upstreamPath(svc, req string) string { return urlsafe.JoinPath(svc, req) }

func (p *flowCallout) send(ctx context.Context, sub *flows.Exchange) flowOutcome {
	if p.svc.URL == nil || p.transport == nil {
		return flowOutcome{status: 502, err: errors.New("shared flow service has no url"), result: ResultTransportError}
	}
	raw := upstreamPath(p.svc.URL.EscapedPath(), sub.Request.Path)
	path, err := url.PathUnescape(raw)
	if err != nil { // cannot happen: JoinPath escapes every stray '%'
		return flowOutcome{status: 502, err: errors.New("invalid upstream path"), result: ResultTransportError}
	}
	// The query stays one query: a '#' or a space in it is encoded.
	u := &url.URL{Scheme: p.svc.URL.Scheme, Host: p.svc.URL.Host, Path: path, RawPath: raw,
		RawQuery: urlsafe.CleanQuery(sub.Request.RawQuery)}
	target := u.String()
	sc := p.svc.Config
	to := flowTimeouts{connect: 60 * time.Second, write: 60 * time.Second, read: 60 * time.Second}
	retries := 0
	if sc != nil {
		to = flowTimeouts{connect: ms(sc.ConnectTimeout), write: ms(sc.WriteTimeout), read: ms(sc.ReadTimeout)}
		retries = sc.Retries
	}
	var last flowOutcome
	for attempt := 0; attempt <= retries; attempt++ { // bounded: retries <= 32767 (loader)
		out, written := p.attempt(ctx, sub, target, to)
		if out.err == nil || written || ctx.Err() != nil {
			return out
		}
		last = out
	}
	return last
}

func ms(v int) time.Duration {
	if v <= 0 {
		return 60 * time.Second
	}
	return time.Duration(v) * time.Millisecond
}

type flowTimeouts struct{ connect, write, read time.Duration }

// attempt sends the request once. written tells whether the request may
// have reached the flow service (then it is not retried).
func (p *flowCallout) attempt(ctx context.Context, sub *flows.Exchange, target string, to flowTimeouts) (out flowOutcome, written bool) {
	if tracing.On(ctx) {
		u, _, _ := strings.Cut(target, "?") // the query may carry secrets
		var span trace.Span
		ctx, span = tracing.StartHTTPClient(ctx, sub.Request.Method, u, tracing.Flow.String(p.svc.Name))
		defer func() {
			status := out.status
			if out.err != nil {
				status = 0
			}
			tracing.EndHTTPClient(span, status, out.err)
		}()
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := httpx.NewWatchdog(cancel)
	defer w.Stop()
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{
		GotConn:      func(httptrace.GotConnInfo) { w.Arm("write", to.write) },
		WroteHeaders: func() { wrote.Store(true) },
		WroteRequest: func(httptrace.WroteRequestInfo) { w.Arm("read", to.read) },
	}
	w.Arm("connect", to.connect)
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(actx, trace), sub.Request.Method, target, bytes.NewReader(sub.Request.Body))
	if err != nil {
		return flowOutcome{status: 502, err: fmt.Errorf("building flow request: %w", err), result: ResultTransportError}, true
	}
	for k, vs := range sub.Request.Headers {
		if httpx.NotForwarded(k) || strings.HasPrefix(k, ":") {
			continue
		}
		req.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	if tracing.On(ctx) {
		tracing.InjectHTTP(ctx, req.Header) // ours replaces the client's
	}
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		return transportFailure(actx, target, err), wrote.Load()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(httpx.WatchedReader{R: resp.Body, W: w, Phase: "read", D: to.read}, maxFlowBodySize+1))
	if err != nil {
		return transportFailure(actx, target, err), true
	}
	if len(body) > maxFlowBodySize {
		return flowOutcome{status: 502, err: fmt.Errorf("calling %q: response body exceeds %d bytes", target, maxFlowBodySize), result: ResultTransportError}, true
	}
	h := make(flows.Headers, len(resp.Header))
	for k, vs := range resp.Header {
		h[strings.ToLower(k)] = vs
	}
	return flowOutcome{status: resp.StatusCode, headers: h, body: body}, true
}

func transportFailure(actx context.Context, target string, err error) flowOutcome {
	var te *httpx.TimeoutError
	if errors.As(context.Cause(actx), &te) {
		return flowOutcome{status: 504, err: fmt.Errorf("calling %q: %w", target, te), result: ResultTimeout}
	}
	return flowOutcome{status: 502, err: fmt.Errorf("calling %q: %w", target, err), result: ResultTransportError}
}

// flowResult is the Lua-visible table stored under the key.
func flowResult(out flowOutcome, failed bool) map[string]any {
	hs := make(map[string]any, len(out.headers))
	for k, vs := range out.headers {
		k = strings.ToLower(k)
		if len(vs) == 1 {
			hs[k] = vs[0]
			continue
		}
		l := make([]any, len(vs))
		for i, v := range vs {
			l[i] = v
		}
		hs[k] = l
	}
	m := map[string]any{"status": out.status, "headers": hs, "body": string(out.body), "failed": failed}
	if isJSONContentType(out.headers.Get("content-type")) {
		var v any
		if json.Unmarshal(out.body, &v) == nil {
			m["json"] = v
		}
	}
	if out.err != nil {
		m["error"] = out.err.Error()
	}
	return m
}

func isJSONContentType(ct string) bool {
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func flowLogFields(flow string, out flowOutcome) []zap.Field {
	fs := []zap.Field{zap.String("flow", flow), zap.String("result", out.result), zap.Int("status", out.status)}
	if out.err != nil {
		fs = append(fs, zap.Error(out.err))
	}
	return fs
}
