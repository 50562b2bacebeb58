package callout

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sidecall/sidecall/flows"
)

// fakeClock is a breaker clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newTestBreaker(c *fakeClock, n, k int) *breaker {
	return &breaker{target: "http://h:80", failures: n, openFor: time.Second, trials: k, now: c.now}
}

func mustAllow(t *testing.T, b *breaker) ticket {
	t.Helper()
	tk, ok := b.allow()
	if !ok {
		t.Fatalf("call refused in state %s, want it let through", stateName(b.current()))
	}
	return tk
}

func mustRefuse(t *testing.T, b *breaker) {
	t.Helper()
	if _, ok := b.allow(); ok {
		t.Fatalf("call let through in state %s, want it refused", stateName(b.current()))
	}
}

func wantState(t *testing.T, b *breaker, s int) {
	t.Helper()
	if got := b.current(); got != s {
		t.Fatalf("state %s, want %s", stateName(got), stateName(s))
	}
}

func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := newTestBreaker(clk, 3, 1)
	b.done(mustAllow(t, b), outcomeFailed)
	b.done(mustAllow(t, b), outcomeFailed)
	b.done(mustAllow(t, b), outcomeOK) // a success resets the count
	b.done(mustAllow(t, b), outcomeFailed)
	b.done(mustAllow(t, b), outcomeFailed)
	b.done(mustAllow(t, b), outcomeCanceled) // neither
	wantState(t, b, breakerClosed)
	b.done(mustAllow(t, b), outcomeFailed)
	wantState(t, b, breakerOpen)
	mustRefuse(t, b)
	clk.add(999 * time.Millisecond)
	mustRefuse(t, b)
}

func TestBreakerHalfOpenTrialsDecide(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := newTestBreaker(clk, 1, 2)
	b.done(mustAllow(t, b), outcomeFailed)
	wantState(t, b, breakerOpen)

	// After open_ms: two trials, a third call is refused; one failure reopens.
	clk.add(time.Second)
	t1 := mustAllow(t, b)
	wantState(t, b, breakerHalfOpen)
	t2 := mustAllow(t, b)
	mustRefuse(t, b)
	b.done(t1, outcomeOK)
	b.done(t2, outcomeFailed)
	wantState(t, b, breakerOpen)
	mustRefuse(t, b)

	// A canceled trial frees its slot; two successes close.
	clk.add(time.Second)
	t1 = mustAllow(t, b)
	t2 = mustAllow(t, b)
	b.done(t1, outcomeCanceled)
	t3 := mustAllow(t, b)
	b.done(t2, outcomeOK)
	wantState(t, b, breakerHalfOpen)
	b.done(t3, outcomeOK)
	wantState(t, b, breakerClosed)
	mustAllow(t, b)
}

// A call let through before the breaker opened does not count once it
// ends in a later state.
func TestBreakerIgnoresStaleOutcomes(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := newTestBreaker(clk, 1, 1)
	old := mustAllow(t, b)
	b.done(mustAllow(t, b), outcomeFailed)
	wantState(t, b, breakerOpen)
	clk.add(time.Second)
	trial := mustAllow(t, b)
	b.done(old, outcomeFailed) // from the closed epoch: ignored
	wantState(t, b, breakerHalfOpen)
	b.done(trial, outcomeOK)
	wantState(t, b, breakerClosed)
}

func TestBreakerTargetNormalised(t *testing.T) {
	for in, want := range map[string]string{
		"http://Svc/a":          "http://svc:80",
		"http://svc:80/b?x=1":   "http://svc:80",
		"https://svc/":          "https://svc:443",
		"http://[::1]:8080/":    "http://[::1]:8080",
		"https://user@svc:8443": "https://svc:8443",
	} {
		u, _ := url.Parse(in)
		if got := targetOf(u); got != want {
			t.Errorf("targetOf(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestBreakerConfigErrorsAtTheirPath(t *testing.T) {
	res := flows.NewResources()
	defer res.Close()
	_, probs := buildWith(t, res, nil, `{callouts: [{name: a, request: {url: "http://127.0.0.1:1/",
  circuit_breaker: {failures: 0, open_ms: -1, half_open_requests: 0}, hedge_after_ms: -5}}], partial_header: "bad header"}`)
	want := map[string]bool{
		"plugins[0].config.callouts[0].request.circuit_breaker.failures":           false,
		"plugins[0].config.callouts[0].request.circuit_breaker.open_ms":            false,
		"plugins[0].config.callouts[0].request.circuit_breaker.half_open_requests": false,
		"plugins[0].config.callouts[0].request.hedge_after_ms":                     false,
		"plugins[0].config.partial_header":                                         false,
	}
	for _, p := range probs {
		if _, ok := want[string(p.Path)]; ok {
			want[string(p.Path)] = true
		}
	}
	for p, seen := range want {
		if !seen {
			t.Errorf("no problem at %s; got %v", p, probs)
		}
	}
}

// Callouts with the same settings share one breaker per target, across
// routes; other settings get another group.
func TestBreakerSharedByTargetAndSettings(t *testing.T) {
	res := flows.NewResources()
	defer res.Close()
	cfg := func(open int) string {
		return `{callouts: [{name: a, request: {url: "http://127.0.0.1:1/a", circuit_breaker: {failures: 2, open_ms: ` +
			strconv.Itoa(open) + `}}}, {name: b, request: {url: "http://127.0.0.1:1/b?x=1", circuit_breaker: {failures: 2, open_ms: ` + strconv.Itoa(open) + `}}}]}`
	}
	p1, _ := buildWith(t, res, nil, cfg(100))
	p2, _ := buildWith(t, res, nil, cfg(100))
	p3, _ := buildWith(t, res, nil, cfg(200))
	a := p1.callouts[0].res.fixed
	if a == nil || a != p1.callouts[1].res.fixed || a != p2.callouts[0].res.fixed {
		t.Fatal("callouts with one target and settings do not share a breaker")
	}
	if p3.callouts[0].res.fixed == a {
		t.Fatal("other settings share the breaker")
	}
}

// An open breaker fails the call at once, without touching the network,
// through on_error; the state gauge follows.
func TestBreakerFailsFastThroughOnError(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(503)
	}))
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	f := newFactory(Options{Metrics: reg, Version: "test"})
	p, _ := buildSec(t, f, `{callouts: [{name: a, request: {url: "`+srv.URL+`/x",
  error: {on_error: continue, http_statuses: [503]}, circuit_breaker: {failures: 2, open_ms: 60000}}}]}`)
	for i := 0; i < 4; i++ {
		x := newX("GET", "/", "", nil, "")
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := x.Shared["callouts_failed"]; len(got.([]any)) != 1 {
			t.Fatalf("callouts_failed %v", got)
		}
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("server hits %d, want 2 (then open)", n)
	}
	target := "http://" + strings.TrimPrefix(srv.URL, "http://")
	if v := testutil.ToFloat64(f.m.res.state.WithLabelValues(target)); v != breakerOpen {
		t.Fatalf("state gauge %v, want 1 (open)", v)
	}
	if v := testutil.ToFloat64(f.m.res.transitions.WithLabelValues(target, "open")); v != 1 {
		t.Fatalf("transitions to open %v, want 1", v)
	}
	st := &state{c: p.callouts[0], send: &sendReq{method: "GET", u: mustURL(srv.URL + "/x"), url: srv.URL + "/x", headers: http.Header{}}}
	_, _, _, err := p.attempt(context.Background(), st.c, st.send)
	if !errors.Is(err, errBreakerOpen) {
		t.Fatalf("attempt error %v, want the breaker's", err)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
