package flowcallout

import (
	"time"

	"github.com/sidecall/sidecall/flows"
)

// Budget implements flows.Budgeter: the worst case of the call to the
// shared flow's URL (send): connect_timeout for every attempt (retries
// happen only while the request was never written, so only a connect can
// be repeated), then write_timeout and read_timeout once. The phase is the
// access phase, or body_filter with phase: response. The flow's own
// plugins are not counted.
func (p *flowCallout) Budget(phase flows.Phase) time.Duration {
	want := flows.PhaseAccess
	if p.response {
		want = flows.PhaseBodyFilter
	}
	if phase != want || p.svc == nil {
		return 0
	}
	connect, write, read := 60*time.Second, 60*time.Second, 60*time.Second
	retries := 0
	if sc := p.svc.Config; sc != nil {
		connect, write, read = ms(sc.ConnectTimeout), ms(sc.WriteTimeout), ms(sc.ReadTimeout)
		retries = sc.Retries
	}
	if retries < 0 {
		retries = 0
	}
	if retries > 1000 { // the caller caps the sum; keep the product finite
		retries = 1000
	}
	return connect*time.Duration(retries+1) + write + read
}
