package callout

import (
	"time"

	"github.com/sidecall/sidecall/flows"
)

// Budget implements flows.Budgeter: the plugin-level timeout bounds the
// whole access run (every callout, its retries and cache lookups); the
// response side only applies headers.
func (p *Plugin) Budget(phase flows.Phase) time.Duration {
	if phase != flows.PhaseAccess {
		return 0
	}
	return p.timeout
}
