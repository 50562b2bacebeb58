package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sidecall/sidecall/flows"
)

// RouteMetadataKey is the gRPC initial metadata naming the route
// (Envoy per-route grpc_initial_metadata).
const RouteMetadataKey = "x-sidecall-route"

const attrNamespace = "envoy.filters.http.ext_proc"

// step is how far an HTTP exchange has got, as Envoy's messages tell it.
type step int

const (
	stepStart        step = iota
	stepRequestSent       // request headers received; body chunks may follow
	stepRequestDone       // the whole request received
	stepResponseSent      // response headers received
	stepResponseDone      // the whole response received
)

// reach moves the exchange forward to s (never back).
func (st *stream) reach(s step) {
	if s > st.at {
		st.at = s
	}
}

// stream is one ext_proc stream's state, owned by its goroutine.
type stream struct {
	srv   *Server
	snap  *flows.Snapshot
	ctx   context.Context
	x     *flows.Exchange
	pipe  *flows.Pipeline
	route string // metrics label
	needs flows.Needs
	obs   flows.Observer

	at              step // how far the HTTP exchange has got
	wantReqBody     bool
	wantRespBody    bool
	reqBuf, respBuf []byte
	done            bool

	// out sends the override_message_timeout ahead of a reply (nil in
	// tests that call handle directly: no override then). msgs counts the
	// messages handled; extendedAt is the one the last override was for
	// (Envoy takes one per message).
	out        extprocv3.ExternalProcessor_ProcessServer
	msgs       int
	extendedAt int

	span   trace.Span // the stream's span; nil with tracing off
	status int        // the local reply's status, for the span
}

func newStream(s *Server, snap *flows.Snapshot, ctx context.Context) *stream {
	return &stream{srv: s, snap: snap, ctx: ctx}
}

func (st *stream) finished() bool { return st.done }

func (st *stream) id() string {
	if st.x == nil {
		return ""
	}
	return st.x.ID
}

// handle answers one message. A non-nil error is a protocol fault.
func (st *stream) handle(req *extprocv3.ProcessingRequest) (resp *extprocv3.ProcessingResponse, err error) {
	start := time.Now()
	phase := -1
	st.msgs++
	defer func() {
		if r := recover(); r != nil { // outside the plugins: answer without them
			st.panicked(r, debug.Stack())
			resp, err = st.plainError(), nil
		}
		if resp != nil && sizeBound(resp) > st.srv.maxRecv {
			resp = st.tooLarge(resp)
		}
		if phase >= 0 {
			st.srv.metrics.phaseObs[phase].Observe(time.Since(start).Seconds())
		}
	}()
	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		phase = 0
		if st.at >= stepRequestSent {
			return nil, protocolFault("request_headers out of order")
		}
		st.reach(stepRequestSent)
		st.begin(req, r.RequestHeaders.GetHeaders())
		return st.onRequestHeaders(r.RequestHeaders.GetEndOfStream()), nil
	case *extprocv3.ProcessingRequest_RequestBody:
		phase = 1
		if st.at >= stepRequestDone {
			return nil, protocolFault("request_body after the request ended")
		}
		if st.x == nil {
			if resp := st.beginLate(req, "request_body"); resp != nil {
				return resp, nil
			}
		}
		return st.onRequestBody(r.RequestBody), nil
	case *extprocv3.ProcessingRequest_RequestTrailers:
		if st.at >= stepRequestDone && !st.wantReqBody {
			return nil, protocolFault("request_trailers after the request ended")
		}
		if st.x == nil {
			if resp := st.beginLate(req, "request_trailers"); resp != nil {
				return resp, nil
			}
		}
		return st.onRequestTrailers(), nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		phase = 2
		if st.at >= stepResponseSent {
			return nil, protocolFault("response_headers received twice")
		}
		st.reach(stepResponseSent)
		if st.x == nil {
			if resp := st.beginLate(req, "response_headers"); resp != nil {
				return resp, nil
			}
		}
		return st.onResponseHeaders(r.ResponseHeaders), nil
	case *extprocv3.ProcessingRequest_ResponseBody:
		phase = 3
		if st.at >= stepResponseDone {
			return nil, protocolFault("response_body after the response ended")
		}
		if st.x == nil {
			if resp := st.beginLate(req, "response_body"); resp != nil {
				return resp, nil
			}
		}
		return st.onResponseBody(r.ResponseBody), nil
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		st.reach(stepResponseDone)
		st.done = true
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}, nil
	default:
		return nil, protocolFault("message with no request set")
	}
}

// begin builds the Exchange from the first message and selects the route.
// Regular headers are copied into the Exchange only when the router or the
// route's plugins look at them: a pass-through costs no header map.
func (st *stream) begin(req *extprocv3.ProcessingRequest, hm *corev3.HeaderMap) {
	var r flows.Request
	var id, host string
	for _, h := range hm.GetHeaders() {
		k := h.GetKey()
		if len(k) == 0 {
			continue
		}
		if k[0] == ':' {
			v := headerValue(h)
			switch strings.ToLower(k) {
			case ":method":
				r.Method = v
			case ":path":
				r.Path, r.RawQuery, _ = strings.Cut(v, "?")
			case ":scheme":
				r.Scheme = v
			case ":authority":
				r.Authority = v
			}
			continue
		}
		if strings.EqualFold(k, "x-request-id") {
			id = headerValue(h)
		} else if r.Authority == "" && strings.EqualFold(k, "host") {
			host = headerValue(h)
		}
	}
	if r.Authority == "" {
		r.Authority = host
	}
	st.x = flows.NewExchange(id, r, st.srv.log)
	if a := req.GetAttributes()[attrNamespace]; a != nil {
		st.x.Attributes = make(map[string]string, len(a.GetFields()))
		for k, v := range a.GetFields() {
			st.x.Attributes[k] = attrString(v)
		}
	}
	if st.snap.MatchUsesHeaders() {
		copyHeaders(st.x.Request.Headers, hm)
	}
	route, caps := st.selectRoute(req)
	st.snap.SelectRoute(st.x, route, caps)
	if route != nil {
		st.pipe = route.Pipeline
		st.route = route.Name
	} else {
		st.pipe = st.snap.Global
	}
	st.needs = st.pipe.Needs()
	st.srv.metrics.routeStream(st.route).Inc()
	if st.srv.tracer != nil && st.span == nil {
		st.startSpan(hm)
		if st.span.IsRecording() {
			// The span ends with the response's status, and spans the
			// upstream call.
			st.needs.ResponseHeaders = true
		}
	}
	if !st.pipe.Empty() {
		if !st.snap.MatchUsesHeaders() {
			copyHeaders(st.x.Request.Headers, hm) // not done for the router
		}
		st.obs = st.srv.metrics.observer(st.route)
		if st.x.ID != "" {
			// WithLazy encodes the field only if the request logs at all.
			st.x.Log = st.srv.log.WithLazy(zap.String("request_id", st.x.ID))
		}
	}
}

// beginLate begins the stream on a message other than the request headers:
// an Envoy route whose processing_mode skips them. The access phase never
// runs then, so a pipeline with access plugins (authentication, callouts)
// fails closed with 500 rather than letting the request through unchecked.
// Without access plugins the stream goes on as before.
func (st *stream) beginLate(req *extprocv3.ProcessingRequest, first string) *extprocv3.ProcessingResponse {
	st.begin(req, nil)
	if !st.pipe.HasAccess() {
		return nil
	}
	st.srv.metrics.headersSkipped.Inc()
	return st.fail(&flows.HTTPError{Status: 500, Message: "request headers not processed",
		Err: fmt.Errorf("the ext_proc stream began with %s, not request_headers: the route's access plugins cannot run "+
			"(set Envoy's processing_mode.request_header_mode to SEND on routes with sidecall plugins)", first)})
}

func headerValue(h *corev3.HeaderValue) string {
	if v := h.GetRawValue(); len(v) > 0 {
		return string(v)
	}
	return h.GetValue() // Envoy sends raw_value; other clients may not
}

// copyHeaders adds hm's regular headers to dst with lower-case names and
// returns :status, if hm has it (response headers).
func copyHeaders(dst flows.Headers, hm *corev3.HeaderMap) (status int) {
	for _, h := range hm.GetHeaders() {
		k := h.GetKey()
		if len(k) == 0 {
			continue
		}
		if k[0] == ':' {
			if strings.EqualFold(k, ":status") {
				status, _ = strconv.Atoi(headerValue(h))
			}
			continue
		}
		k = strings.ToLower(k)
		dst[k] = append(dst[k], headerValue(h))
	}
	return status
}

func attrString(v *structpb.Value) string {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(k.NumberValue, 'f', -1, 64)
	case *structpb.Value_BoolValue:
		return strconv.FormatBool(k.BoolValue)
	}
	b, _ := json.Marshal(v.AsInterface())
	return string(b)
}

// selectRoute picks the route in this order: xds.route_name attribute,
// x-sidecall-route metadata, sidecall filter metadata, then Kong-style matching.
func (st *stream) selectRoute(req *extprocv3.ProcessingRequest) (*flows.Route, flows.Captures) {
	if name := st.x.Attributes["xds.route_name"]; name != "" {
		if r := st.snap.RouteByName(name); r != nil {
			return r, st.snap.Captures(r, st.x.Request.Path)
		}
	}
	if md, ok := metadata.FromIncomingContext(st.ctx); ok {
		if v := md.Get(RouteMetadataKey); len(v) > 0 {
			if r := st.snap.RouteByName(v[0]); r != nil {
				return r, st.snap.Captures(r, st.x.Request.Path)
			}
		}
	}
	if ns := req.GetMetadataContext().GetFilterMetadata()["sidecall"]; ns != nil {
		if r := st.snap.RouteByName(ns.GetFields()["route"].GetStringValue()); r != nil {
			return r, st.snap.Captures(r, st.x.Request.Path)
		}
	}
	host := st.x.Request.Authority
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	r, caps, ok := st.snap.Match(flows.MatchInput{Method: st.x.Request.Method, Host: host,
		Path: st.x.Request.Path, Headers: st.x.Request.Headers})
	if !ok {
		return nil, flows.Captures{}
	}
	return r, caps
}

// serve runs phase through the engine's walk; a panic is counted here.
func (st *stream) serve(phase flows.Phase) {
	if st.pipe.Budget(phase) > st.srv.msgTO {
		st.extend(phase)
	}
	st.check(st.pipe.Serve(st.ctx, phase, st.x, st.obs))
}

// extend asks Envoy, before a phase whose budget exceeds Envoy's
// message_timeout, to wait for the budget plus OverrideMargin (at most
// max_message_timeout) for this message's reply: without it Envoy answers
// its own 504 while a plugin is still within its own timeout. Envoy takes
// one override per message. A failed send is left to the reply's Send.
func (st *stream) extend(phase flows.Phase) {
	if st.out == nil || st.extendedAt == st.msgs {
		return
	}
	d := st.pipe.Budget(phase) + OverrideMargin
	if d > st.srv.maxMsgTO {
		d = st.srv.maxMsgTO
	}
	if d <= st.srv.msgTO {
		return
	}
	st.extendedAt = st.msgs
	if err := st.out.Send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(d)}); err == nil {
		st.srv.metrics.overrides.Inc()
	}
}

func (st *stream) check(err error) {
	if err == nil {
		return // before errors.As: its target would escape on every call
	}
	var pe *flows.PanicError
	if errors.As(err, &pe) {
		st.panicked(pe.Value, pe.Stack)
	}
}

func (st *stream) panicked(v any, stack []byte) {
	st.srv.metrics.panics.Inc()
	st.srv.log.Error("panic while handling a message", zap.Any("panic", v),
		zap.String("request_id", st.id()), zap.ByteString("stack", stack))
}

// fail answers err through the response phases (a change Envoy would refuse).
func (st *stream) fail(err error) *extprocv3.ProcessingResponse {
	st.pipe.Fail(st.ctx, st.x, err, st.obs)
	return st.immediate()
}

func (st *stream) onRequestHeaders(eos bool) *extprocv3.ProcessingResponse {
	st.wantReqBody = st.needs.RequestBody && !eos
	if eos {
		st.reach(stepRequestDone)
		st.x.Request.HasBody = true // no body: known, and empty (Kong's get_raw_body gives "")
	}
	if st.wantReqBody && st.needs.EarlyResponseHeaders {
		st.needs.ResponseHeaders = true // access runs on the body: too late to ask then
	}
	mode := modeOverride(st.wantReqBody, st.needs.ResponseHeaders, st.needs.ResponseBody)
	if st.wantReqBody {
		// The route's upstream path and host are known already: sent now,
		// they stand even when the body ends in trailers.
		common, err := st.requestMutation(false)
		if err != nil {
			return st.fail(err)
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{Response: st.upstreamTrace(common)}}, ModeOverride: mode}
	}
	st.serve(flows.PhaseAccess)
	if st.x.Reply != nil {
		return st.immediate()
	}
	common, err := st.requestMutation(false)
	if err != nil {
		return st.fail(err)
	}
	if !st.needs.ResponseHeaders && st.x.HasEarlyResponseHeaders() {
		// Asked for on this request only (e.g. request-callout's partial marker).
		st.needs.ResponseHeaders = true
		mode = modeOverride(false, true, st.needs.ResponseBody)
	}
	st.done = !st.needs.ResponseHeaders
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: st.upstreamTrace(common)}}, ModeOverride: mode}
}

func (st *stream) onRequestBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	empty := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{}}}
	if !st.wantReqBody {
		if b.GetEndOfStream() {
			st.reach(stepRequestDone)
		}
		return empty
	}
	if len(b.GetBody()) > st.srv.maxBody-len(st.reqBuf) {
		st.reqBuf, st.wantReqBody = nil, false
		st.reach(stepRequestDone)
		st.srv.metrics.reqBodyTooLarge.Inc()
		return st.fail(&flows.HTTPError{Status: 413, Message: "request body too large"})
	}
	st.reqBuf = append(st.reqBuf, b.GetBody()...)
	if !b.GetEndOfStream() {
		return empty // trailers follow; access runs on them
	}
	st.reach(stepRequestDone)
	return st.accessWithBody(func(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{Response: c}}}
	})
}

func (st *stream) onRequestTrailers() *extprocv3.ProcessingResponse {
	st.reach(stepRequestDone)
	if st.wantReqBody {
		// The body is gone already; header and body changes cannot be sent
		// with trailers, only a local reply can.
		resp := st.accessWithBody(nil)
		if resp != nil {
			return resp
		}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
		RequestTrailers: &extprocv3.TrailersResponse{}}}
}

func (st *stream) accessWithBody(wrap func(*extprocv3.CommonResponse) *extprocv3.ProcessingResponse) *extprocv3.ProcessingResponse {
	st.wantReqBody = false
	st.x.Request.Body, st.x.Request.HasBody = st.reqBuf, true
	st.x.OriginalBody = st.reqBuf
	st.reqBuf = nil
	st.serve(flows.PhaseAccess)
	if st.x.Reply != nil {
		return st.immediate()
	}
	if wrap == nil {
		st.done = !st.needs.ResponseHeaders
		return nil
	}
	common, err := st.requestMutation(true)
	if err != nil {
		return st.fail(err)
	}
	st.done = !st.needs.ResponseHeaders
	return wrap(common)
}

func (st *stream) onResponseHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	resp := flows.Response{Headers: flows.Headers{}}
	resp.Status = copyHeaders(resp.Headers, h.GetHeaders())
	st.x.Response = resp
	st.x.ResetChanges()
	st.wantRespBody = st.needs.ResponseBody && !h.GetEndOfStream()
	st.serve(flows.PhaseHeaderFilter)
	if st.x.Reply == nil && !st.wantRespBody {
		st.serve(flows.PhaseBodyFilter) // no body is coming: body_filter sees none
	}
	if st.x.Reply != nil {
		return st.immediate()
	}
	common, err := st.responseMutation(false)
	if err != nil {
		return st.fail(err)
	}
	st.done = !st.wantRespBody
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: common}}}
}

func (st *stream) onResponseBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	empty := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{}}}
	if !st.wantRespBody {
		if b.GetEndOfStream() {
			st.reach(stepResponseDone)
			st.done = true
		}
		return empty
	}
	if len(b.GetBody()) > st.srv.maxBody-len(st.respBuf) {
		st.respBuf, st.wantRespBody = nil, false
		st.reach(stepResponseDone)
		st.srv.metrics.respBodyTooLarge.Inc()
		return st.fail(&flows.HTTPError{Status: 502, Message: "response body too large",
			Err: fmt.Errorf("the upstream response body exceeds --max-body-size (%d bytes)", st.srv.maxBody)})
	}
	st.respBuf = append(st.respBuf, b.GetBody()...)
	if !b.GetEndOfStream() {
		return empty
	}
	st.wantRespBody = false
	st.reach(stepResponseDone)
	st.done = true
	st.x.Response.Body, st.x.Response.HasBody = st.respBuf, true
	st.respBuf = nil
	st.serve(flows.PhaseBodyFilter)
	if st.x.Reply != nil {
		return st.immediate()
	}
	common, err := st.responseMutation(true)
	if err != nil {
		return st.fail(err)
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: common}}}
}

// requestMutation turns the Exchange's request changes into a reply.
func (st *stream) requestMutation(bodyPhase bool) (*extprocv3.CommonResponse, error) {
	c := st.x.Changes()
	if len(c.RequestHeaders) == 0 && !c.Path && !c.RoutePath && c.Authority == "" && !c.Method && !c.Body {
		return nil, nil
	}
	r := &st.x.Request
	hm, err := headerMutation(r.Headers, c.RequestHeaders)
	if err != nil {
		return nil, err
	}
	common := &extprocv3.CommonResponse{HeaderMutation: hm}
	if c.Path || c.RoutePath {
		p := st.x.UpstreamURI()
		if err := checkValue(p); err != nil {
			return nil, err
		}
		hm.SetHeaders = append(hm.SetHeaders, setOpt(":path", p, false))
		// A plugin's new path may pick another Envoy route; the route's
		// own rewrite (strip_path) must not.
		common.ClearRouteCache = c.Path
	}
	if c.Authority != "" && !slices.Contains(c.RequestHeaders, "host") {
		// Envoy applies it only with mutation_rules.allow_all_routing.
		hm.SetHeaders = append(hm.SetHeaders, setOpt(":authority", c.Authority, false))
	}
	if c.Method {
		hm.SetHeaders = append(hm.SetHeaders, setOpt(":method", r.Method, false))
		common.Status = extprocv3.CommonResponse_CONTINUE_AND_REPLACE
	}
	if c.Body {
		replaceBody(common, r.Body, bodyPhase)
	}
	st.x.ResetChanges()
	return common, nil
}

// replaceBody sets a body mutation. In the body phase content-length is
// set to match; from the headers phase it needs CONTINUE_AND_REPLACE, and
// Envoy drops content-length itself.
func replaceBody(common *extprocv3.CommonResponse, body []byte, bodyPhase bool) {
	common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}}
	if bodyPhase {
		common.HeaderMutation.SetHeaders = append(common.HeaderMutation.SetHeaders, setOpt("content-length", strconv.Itoa(len(body)), false))
	} else {
		common.Status = extprocv3.CommonResponse_CONTINUE_AND_REPLACE
	}
}

func (st *stream) responseMutation(bodyPhase bool) (*extprocv3.CommonResponse, error) {
	c := st.x.Changes()
	if len(c.ResponseHeaders) == 0 && !c.Status && !c.ResponseBody {
		return nil, nil
	}
	r := &st.x.Response
	hm, err := headerMutation(r.Headers, c.ResponseHeaders)
	if err != nil {
		return nil, err
	}
	common := &extprocv3.CommonResponse{HeaderMutation: hm}
	if c.Status {
		hm.SetHeaders = append(hm.SetHeaders, setOpt(":status", strconv.Itoa(r.Status), false))
	}
	if c.ResponseBody {
		replaceBody(common, r.Body, bodyPhase)
	}
	st.x.ResetChanges()
	return common, nil
}

func setOpt(k, v string, appendIt bool) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		Append: wrapperspb.Bool(appendIt)} //nolint:staticcheck // Envoy reads only the deprecated append.
}

func checkValue(v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return &flows.HTTPError{Status: 500, Message: "a plugin produced a header value with CR, LF or NUL"}
	}
	return nil
}

// headerMutation sets the current values of the changed names, or removes
// names that are gone. Names are sorted so replies are deterministic.
func headerMutation(h flows.Headers, names []string) (*extprocv3.HeaderMutation, error) {
	hm := &extprocv3.HeaderMutation{}
	sort.Strings(names)
	for _, n := range names {
		vs := h[n]
		if len(vs) == 0 {
			hm.RemoveHeaders = append(hm.RemoveHeaders, n)
			continue
		}
		for i, v := range vs {
			if err := checkValue(v); err != nil {
				return nil, err
			}
			hm.SetHeaders = append(hm.SetHeaders, setOpt(n, v, i > 0))
		}
	}
	return hm, nil
}

// plainError is the 500 for a panic outside the plugins: sent without
// running them, since the walk itself may be what broke.
func (st *stream) plainError() *extprocv3.ProcessingResponse {
	if st.x == nil {
		st.x = flows.NewExchange("", flows.Request{}, st.srv.log)
	}
	st.x.Reply = flows.ErrorReply(st.x, &flows.HTTPError{Status: 500, Message: "internal error"})
	return st.immediate()
}

// immediate sends x.Reply, already through the response phases, as an
// ImmediateResponse and ends the stream.
func (st *stream) immediate() *extprocv3.ProcessingResponse {
	r := st.x.Reply
	st.done = true
	hm := &extprocv3.HeaderMutation{}
	for _, k := range r.Headers.Keys() {
		for i, v := range r.Headers[k] {
			if strings.ContainsAny(v, "\r\n\x00") {
				continue // never send what Envoy would reject
			}
			hm.SetHeaders = append(hm.SetHeaders, setOpt(k, v, i > 0))
		}
	}
	status := r.Status
	if status < 200 || status > 599 {
		status = 500
	}
	st.status = status
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: hm,
			Body:    r.Body,
			Details: "sidecall_local_reply",
		}}}
}

// tooLarge replaces a reply over the gRPC send limit, which grpc-go would
// refuse by ending the stream (ResourceExhausted: Envoy then answers an
// empty 500 or, with failure_mode_allow, lets the request through
// unchanged), with sidecall's 500 JSON error. The error is logged (by the
// engine's renderer) and counted. The replacement skips the response
// plugins: it must fit whatever they would do.
func (st *stream) tooLarge(resp *extprocv3.ProcessingResponse) *extprocv3.ProcessingResponse {
	n := proto.Size(resp)
	if n <= st.srv.maxRecv {
		return resp // sizeBound is generous
	}
	what := "a header or body mutation"
	if resp.GetImmediateResponse() != nil {
		what = "a local reply"
	}
	if st.x == nil {
		st.x = flows.NewExchange("", flows.Request{}, st.srv.log)
	}
	st.srv.metrics.replyTooLarge.Inc()
	st.x.Reply = flows.ErrorReply(st.x, &flows.HTTPError{Status: 500, Message: "reply too large",
		Err: fmt.Errorf("%s of %d bytes exceeds the gRPC message limit, %d bytes (--max-recv-msg-size)", what, n, st.srv.maxRecv)})
	out := st.immediate()
	if proto.Size(out) > st.srv.maxRecv { // a huge request id or a tiny limit
		ir := out.GetImmediateResponse()
		ir.Body, ir.Headers, ir.Details = nil, nil, ""
	}
	return out
}

// sizeBound is a cheap upper bound of proto.Size(resp), so the exact size
// (a walk of the whole message) is computed only near the limit: the bytes
// plugins control (bodies, header names and values) plus more than their
// protobuf framing, and 1 KiB for the fixed fields. It must count every
// variable-length field the processor sets (FuzzProcess checks it).
func sizeBound(resp *extprocv3.ProcessingResponse) int {
	const fixed, perHeader = 1024, 64
	n := fixed
	var hm *extprocv3.HeaderMutation
	var c *extprocv3.CommonResponse
	switch r := resp.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		n += len(r.ImmediateResponse.GetBody()) + len(r.ImmediateResponse.GetDetails())
		hm = r.ImmediateResponse.GetHeaders()
	case *extprocv3.ProcessingResponse_RequestHeaders:
		c = r.RequestHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_RequestBody:
		c = r.RequestBody.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		c = r.ResponseHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseBody:
		c = r.ResponseBody.GetResponse()
	}
	if c != nil {
		n += len(c.GetBodyMutation().GetBody())
		hm = c.GetHeaderMutation()
	}
	for _, h := range hm.GetSetHeaders() {
		hv := h.GetHeader()
		n += perHeader + len(hv.GetKey()) + len(hv.GetValue()) + len(hv.GetRawValue())
	}
	for _, k := range hm.GetRemoveHeaders() {
		n += perHeader + len(k)
	}
	return n
}

// modeOverrides are shared read-only messages: marshalling only reads.
var modeOverrides [8]*filterv3.ProcessingMode

func init() {
	for i := range modeOverrides {
		m := &filterv3.ProcessingMode{ResponseHeaderMode: filterv3.ProcessingMode_SKIP}
		if i&1 != 0 {
			m.RequestBodyMode = filterv3.ProcessingMode_BUFFERED
		}
		if i&2 != 0 {
			m.ResponseHeaderMode = filterv3.ProcessingMode_SEND
		}
		if i&4 != 0 {
			m.ResponseHeaderMode = filterv3.ProcessingMode_SEND
			m.ResponseBodyMode = filterv3.ProcessingMode_BUFFERED
		}
		modeOverrides[i] = m
	}
}

func modeOverride(reqBody, respHeaders, respBody bool) *filterv3.ProcessingMode {
	i := 0
	if reqBody {
		i |= 1
	}
	if respHeaders {
		i |= 2
	}
	if respBody {
		i |= 4
	}
	return modeOverrides[i]
}
