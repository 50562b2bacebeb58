package callout

import "github.com/sidecall/sidecall/flows"

// failedKey is kong.ctx.shared.callouts_failed: the names of the callouts
// that failed and were continued, in the order they finished.
const failedKey = "callouts_failed"

// markPartial records a callout that failed under on_error continue: its
// name in kong.ctx.shared.callouts_failed, and partial_header: false on
// the client's response. The header waits for the response phases; the
// processor asks Envoy for the response headers on such requests only.
func (p *Plugin) markPartial(x *flows.Exchange, name string) {
	l, _ := x.Shared[failedKey].([]any)
	x.Shared[failedKey] = append(l, name)
	if p.partialHeader != "" && len(l) == 0 {
		x.SetResponseHeaderEarly(p.partialHeader, "false")
	}
}

// mayBePartial tells whether a request may end with a continued failure.
func (p *Plugin) mayBePartial() bool {
	if p.partialHeader == "" {
		return false
	}
	for _, c := range p.callouts {
		if c.onError == "continue" {
			return true
		}
	}
	return false
}
