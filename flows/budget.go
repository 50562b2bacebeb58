package flows

import (
	"time"

	"github.com/sidecall/sidecall/flows/lua"
)

// Budgeter is implemented by plugins whose work in a phase may take long
// (network calls, Lua under a time limit). Budget is the worst case the
// plugin's work in phase may take, as its config bounds it: 0 when the
// plugin does nothing slow in that phase.
//
// The processor asks Envoy to extend its ext_proc message_timeout
// (override_message_timeout) before a phase whose pipeline budget exceeds
// it, so Envoy does not answer its own 504 while a plugin is still within
// its own timeout.
type Budgeter interface {
	Budget(phase Phase) time.Duration
}

// Budget is the worst-case time the pipeline's plugins may take on one
// ext_proc message of phase, computed at compile time from the plugins'
// Budgeter figures:
//
//   - PhaseAccess: the sum over the access-phase plugins;
//   - PhaseHeaderFilter, PhaseBodyFilter: one figure for the response
//     side, the sum over the header_filter and body_filter plugins (the
//     processor may run both on one message: the response headers of a
//     response without a body).
//
// A shared flow's own plugins are not counted (the flow-callout plugin's
// figure is the call to the flow's URL).
func (p *Pipeline) Budget(phase Phase) time.Duration {
	if p == nil {
		return 0
	}
	if phase == PhaseAccess {
		return p.budget[0]
	}
	return p.budget[1]
}

// addBudget adds in's figures to the pipeline's.
func (p *Pipeline) addBudget(in *Instance) {
	bg, ok := in.Plugin.(Budgeter)
	if !ok {
		return
	}
	if in.access != nil {
		p.budget[0] = sat(p.budget[0], bg.Budget(PhaseAccess))
	}
	if in.header != nil {
		p.budget[1] = sat(p.budget[1], bg.Budget(PhaseHeaderFilter))
	}
	if in.body != nil {
		p.budget[1] = sat(p.budget[1], bg.Budget(PhaseBodyFilter))
	}
}

// maxBudget caps every figure: far above any message timeout Envoy takes.
const maxBudget = 24 * time.Hour

func sat(a, b time.Duration) time.Duration {
	if b <= 0 {
		return a
	}
	if a+b > maxBudget || a+b < a {
		return maxBudget
	}
	return a + b
}

// LuaTimeLimit is the time limit of one Lua call on this load's runtime
// (the sandbox's Timeout, after defaults): what plugins running Lua chunks
// count per chunk in their Budget.
func (b *Builder) LuaTimeLimit() time.Duration {
	if b.Runtime != nil && b.Runtime.Sandbox != nil {
		return b.Runtime.Sandbox.Options().Timeout
	}
	return lua.DefaultTimeout
}
