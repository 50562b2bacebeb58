package callout

import (
	"strings"
	"testing"
	"time"

	"github.com/sidecall/sidecall/flows"
)

// hedge_after_ms on a method that is not idempotent is a load warning, and
// hedging stays off for it unless hedge_unsafe.
func TestHedgeOnPOSTWarnsWithoutOptIn(t *testing.T) {
	f := newFactory(Options{Version: "test"})
	_, warns := buildSec(t, f, `{callouts: [{name: a, request: {url: "http://127.0.0.1:1/", method: POST, hedge_after_ms: 20}}]}`)
	if w := strings.Join(warns, "\n"); !strings.Contains(w, "callouts[0].request.hedge_after_ms: hedging is off: POST is not idempotent") {
		t.Fatalf("warnings %q", w)
	}
	_, warns = buildSec(t, f, `{callouts: [{name: a, request: {url: "http://127.0.0.1:1/", method: POST, hedge_after_ms: 20, hedge_unsafe: true}}]}`)
	if strings.Contains(strings.Join(warns, "\n"), "hedge_after_ms") {
		t.Fatalf("warned with hedge_unsafe: %q", warns)
	}
}

// The shipped example loads with its breakers, hedge and partial marker.
func TestBreakerHedgePartialExampleLoads(t *testing.T) {
	reg := flows.NewRegistry()
	Register(reg, Options{})
	res := flows.NewResources()
	defer res.Close()
	snap, err := flows.LoadFile("../examples/resilient-callouts.yaml", flows.LoadOptions{Registry: reg, Resources: res})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var p *Plugin
	for _, r := range snap.Routes {
		for _, in := range r.Pipeline.Instances {
			if pl, ok := in.Plugin.(*Plugin); ok {
				p = pl
			}
		}
	}
	if p == nil || len(p.callouts) != 2 {
		t.Fatal("no request-callout with two callouts")
	}
	if p.partialHeader != "X-Sidecall-Completed" || !p.Needs().EarlyResponseHeaders || p.Needs().ResponseHeaders {
		t.Fatalf("partial marker: %q %+v", p.partialHeader, p.Needs())
	}
	rev, price := p.callouts[0], p.callouts[1]
	if rev.res.fixed == nil || rev.res.fixed.failures != 5 || rev.res.fixed.openFor != 10*time.Second || rev.res.fixed.trials != 1 {
		t.Fatalf("reviews breaker %+v", rev.res.fixed)
	}
	if price.res.fixed == nil || price.res.fixed == rev.res.fixed || price.res.hedge != 100*time.Millisecond {
		t.Fatalf("price: breaker %+v, hedge %v", price.res.fixed, price.res.hedge)
	}
}
