package kafka

import (
	"time"

	"github.com/sidecall/sidecall/flows"
)

// Budget implements flows.Budgeter. The produce and the wait for the reply
// share one deadline, reply_timeout from the start of the access run, so
// reply_timeout bounds them both (the produce's own `timeout` cannot
// extend it).
func (p *requestReply) Budget(phase flows.Phase) time.Duration {
	if phase != flows.PhaseAccess {
		return 0
	}
	return p.timeout
}

// Budget implements flows.Budgeter: every produce of the request runs
// under one context of `timeout`.
func (p *upstream) Budget(phase flows.Phase) time.Duration {
	if phase != flows.PhaseAccess {
		return 0
	}
	return p.timeout
}
