package serverless

import (
	"time"

	"github.com/sidecall/sidecall/flows"
)

// Budget implements flows.Budgeter: every chunk of the phase may run up
// to the Lua time limit (--lua-timeout, the load's sandbox). rewrite
// chunks run in the access phase.
func (p *serverless) Budget(phase flows.Phase) time.Duration {
	n := 0
	switch phase {
	case flows.PhaseAccess:
		n = len(p.rewrite) + len(p.access)
	case flows.PhaseHeaderFilter:
		n = len(p.header)
	case flows.PhaseBodyFilter:
		n = len(p.body)
	}
	return time.Duration(n) * p.luaLimit
}
