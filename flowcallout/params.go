package flowcallout

// Parameters (Apigee's FlowCallout <Parameters>), the phase option and
// apply_flow_response: their config, validation and run-time scope.
//
//   - parameters: [{name, value}]; value is a literal or a $(...) template
//     rendered on the calling request when the flow-callout runs. While
//     the flow runs, kong.ctx.shared.flow_parameters is a table of them
//     (name → string), seen by the flow's plugins (Lua, and templates as
//     $(shared.flow_parameters.NAME)); afterwards whatever the caller had
//     under flow_parameters (nothing, or an outer flow's parameters) is put
//     back. A flow-callout without parameters leaves flow_parameters as it
//     is (a nested flow then sees its caller's).
//   - parameters_as_headers: PREFIX also sends each parameter as the
//     header "PREFIX-NAME" on the flow's sub-request (the request copy in
//     the access phase, the POST in the response phase). A rendered value
//     with CR, LF or NUL cannot be a header: the flow is not called and
//     fails with status 400 (stored with failed and error), and
//     on_flow_error_* apply as to any failure (answer on_flow_error_status
//     with on_flow_error_body, or continue).
//   - A template that fails (a Lua error or timeout) fails the flow with
//     status 500, handled the same way.

import (
	"context"
	"fmt"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"
)

// sharedParamsKey is where the flow's parameters are in kong.ctx.shared.
const sharedParamsKey = "flow_parameters"

// Phases a flow-callout runs in.
const (
	phaseAccess   = "access"
	phaseResponse = "response"
)

type flowParamConfig struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

type flowParam struct {
	name   string
	header string // PREFIX-NAME, lower-case, when parameters_as_headers is set
	value  *flows.Template
}

// compileExtras validates and compiles parameters, parameters_as_headers,
// phase and apply_flow_response.
func (p *flowCallout) compileExtras(b *flows.Builder, c *flowCalloutConfig, at flows.Path) {
	switch c.Phase {
	case "", phaseAccess:
	case phaseResponse:
		p.response = true
	default:
		b.Errorf(at.Key("phase"), "must be access or response, got %q", c.Phase)
	}
	p.apply = c.ApplyFlowResponse
	if c.ApplyFlowResponse && !p.response {
		b.Errorf(at.Key("apply_flow_response"), "only with phase: response (an access-phase flow's response is not the client's)")
	}
	prefix := c.ParametersAsHeaders
	if prefix != "" && !httpx.ValidHeaderName(prefix) {
		b.Errorf(at.Key("parameters_as_headers"), "%q is not a valid header name prefix", prefix)
		prefix = ""
	}
	seen := map[string]bool{}
	for i, pc := range c.Parameters {
		pat := at.Key("parameters").Index(i)
		if pc.Name == "" {
			b.Errorf(pat.Key("name"), "required field missing")
			continue
		}
		if seen[pc.Name] {
			b.Errorf(pat.Key("name"), "parameter %q is listed twice", pc.Name)
			continue
		}
		seen[pc.Name] = true
		fp := flowParam{name: pc.Name, value: b.Template(pc.Value, pat.Key("value"))}
		if prefix != "" {
			fp.header = strings.ToLower(prefix + "-" + pc.Name)
			if !httpx.ValidHeaderName(fp.header) {
				b.Errorf(pat.Key("name"), "%q is not a valid header name (parameters_as_headers)", prefix+"-"+pc.Name)
			}
		}
		p.params = append(p.params, fp)
	}
}

// withParams renders the parameters on x and runs run with them published
// in x.Shared (flow_parameters), putting back what was there once run
// returns. run gets the rendered values, in config order, to send as
// headers (setParamHeaders). A value that cannot be rendered, or cannot be
// a header, is the flow's failure; run is not called.
func (p *flowCallout) withParams(ctx context.Context, x *flows.Exchange, run func(vals []string) flowOutcome) flowOutcome {
	if len(p.params) == 0 {
		return run(nil)
	}
	vals := make([]string, len(p.params))
	m := make(map[string]any, len(p.params))
	for i, fp := range p.params {
		v, err := flows.RenderString(ctx, fp.value, x)
		if err != nil {
			return flowOutcome{status: 500, err: fmt.Errorf("parameter %q: %w", fp.name, err), result: ResultPluginError}
		}
		if fp.header != "" && strings.ContainsAny(v, "\r\n\x00") {
			return flowOutcome{status: 400, err: fmt.Errorf("parameter %q: a value with CR, LF or NUL cannot be sent as header %s", fp.name, fp.header),
				result: ResultPluginError}
		}
		vals[i] = v
		m[fp.name] = v
	}
	if x.Shared == nil {
		x.Shared = map[string]any{}
	}
	prev, had := x.Shared[sharedParamsKey]
	defer func() {
		if had {
			x.Shared[sharedParamsKey] = prev
		} else {
			delete(x.Shared, sharedParamsKey)
		}
	}()
	x.Shared[sharedParamsKey] = m
	return run(vals)
}

// setParamHeaders sets the PREFIX-NAME headers on h (parameters_as_headers).
func (p *flowCallout) setParamHeaders(h flows.Headers, vals []string) {
	for i, fp := range p.params {
		if fp.header != "" && i < len(vals) {
			h.Set(fp.header, vals[i])
		}
	}
}
