package flowcallout

// The response side (phase: response): Apigee's FlowCallout in the
// response flow, and the PostProxy flow hook when the plugin is global.
//
//   - Needs asks Envoy for the response headers and the BUFFERED response
//     body, and nothing on the request side (the request body only if
//     another plugin asks for it). The work is done in body_filter, which
//     the processor runs once the whole body is in (or at the response
//     headers when the upstream sent no body). header_filter plugins of the
//     route have run by then: the stored result is for later body_filter
//     plugins (lower priority, e.g. post-function's body_filter).
//   - The flow's own plugins run their response phases (header_filter,
//     body_filter) on a copy of the upstream response (flows'
//     Service.SubflowResponse); its access phase does not run. Unless one
//     of them answers, the flow's URL then receives a POST: the path and
//     query are the request's as the upstream got them (joined with the
//     service path as in the access phase), the headers are the response's
//     as the flow's plugins left them (hop-by-hop, host and content-length
//     left out), plus X-Upstream-Status (the status as the flow's plugins
//     left it) and the parameters' headers; the body is the response body.
//   - Local replies (an access-phase plugin's answer, an error) do not run
//     the flow: like Apigee's PostProxy hook, it sees only what the target
//     answered. An answer of this plugin (on_flow_error_*) is itself a
//     local reply and so does not run it again.
//   - Failures (transport error, timeout, status >= 400, a flow plugin's
//     error) follow on_flow_error_*: the client gets on_flow_error_status
//     and on_flow_error_body instead of the upstream response, or, with
//     on_flow_error_continue, the upstream response as it was.
//   - apply_flow_response: true, on success, replaces the client response
//     with the flow's: its status, its headers (the upstream's are removed;
//     hop-by-hop ones are not copied; content-length is the new body's) and
//     its body.
//   - preserve_original_request_body has no effect in this phase.

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"
)

// BodyFilter runs a response-phase flow on the upstream response.
func (p *flowCallout) BodyFilter(ctx context.Context, x *flows.Exchange) error {
	if !p.response || x.Reply != nil || flows.IsLocalReply(ctx) {
		return nil
	}
	if p.svc == nil {
		return errors.New("flow-callout: no shared flow service")
	}
	out, failed := p.settle(ctx, x, func(ctx context.Context, vals []string) flowOutcome {
		return p.runResponse(ctx, x, vals)
	})
	if !failed && p.apply {
		applyFlowResponse(x, out)
	}
	return nil
}

// runResponse runs the flow's response phases on a copy of x's response,
// then POSTs the result to the flow's URL.
func (p *flowCallout) runResponse(ctx context.Context, x *flows.Exchange, vals []string) flowOutcome {
	sub := p.subExchange(x)
	sub.Response = flows.Response{Status: x.Response.Status, Headers: x.Response.Headers.Clone(),
		Body: bytes.Clone(x.Response.Body), HasBody: true}
	ctx, span := p.startFlow(ctx)
	out := subflowOutcome(p.svc.SubflowResponse(ctx, sub, p.upstream(func(sub *flows.Exchange) *flows.Exchange {
		return p.postExchange(x, sub, vals)
	})))
	endFlow(span, out)
	return out
}

// postExchange is the POST the flow's URL receives in the response phase:
// the request's path and query, the response's headers and body (as the
// flow's plugins left them) and X-Upstream-Status.
func (p *flowCallout) postExchange(x, sub *flows.Exchange, vals []string) *flows.Exchange {
	h := sub.Response.Headers.Clone()
	h.Set("x-upstream-status", strconv.Itoa(sub.Response.Status))
	p.setParamHeaders(h, vals)
	req := flows.Request{Method: "POST", Scheme: x.Request.Scheme, Authority: x.Request.Authority,
		Path: x.Request.Path, RawQuery: x.Request.RawQuery, Headers: h, Body: sub.Response.Body, HasBody: true}
	return flows.NewExchange(x.ID, req, x.Log)
}

// subflowOutcome is a Subflow or SubflowResponse result as a flowOutcome.
func subflowOutcome(resp flows.Response, err error) flowOutcome {
	var se *sendError
	switch {
	case errors.As(err, &se):
		return se.out
	case err != nil:
		he := flows.AsHTTPError(err)
		return flowOutcome{status: he.Status, err: err, result: ResultPluginError}
	}
	out := flowOutcome{status: resp.Status, headers: resp.Headers, body: resp.Body, result: ResultOK}
	if out.status >= 400 {
		out.result = ResultStatus
	}
	return out
}

// applyFlowResponse makes the flow's response the client's, through the
// Exchange's response setters so the processor sends the changes.
func applyFlowResponse(x *flows.Exchange, out flowOutcome) {
	flow := make(flows.Headers, len(out.headers))
	for k, vs := range out.headers {
		k = strings.ToLower(k)
		if httpx.HopByHop(k) || k == "content-length" || strings.HasPrefix(k, ":") || len(vs) == 0 {
			continue
		}
		flow[k] = append(flow[k], vs...)
	}
	for k := range x.Response.Headers {
		if _, keep := flow[k]; !keep && k != "content-length" {
			x.ClearResponseHeader(k)
		}
	}
	for _, k := range flow.Keys() {
		vs := flow[k]
		x.SetResponseHeader(k, vs[0])
		for _, v := range vs[1:] {
			x.AddResponseHeader(k, v)
		}
	}
	x.SetResponseHeader("content-length", strconv.Itoa(len(out.body)))
	x.SetResponseStatus(out.status)
	x.SetResponseBody(out.body)
}
