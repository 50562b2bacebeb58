package callout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sidecall/sidecall/flows"
	"go.uber.org/zap"
)

// BreakerConfig is callouts[].request.circuit_breaker (sidecall's).
type BreakerConfig struct {
	Failures         int  `yaml:"failures"`
	OpenMS           int  `yaml:"open_ms"`
	HalfOpenRequests *int `yaml:"half_open_requests"`
}

func (c *BreakerConfig) trials() int {
	if c.HalfOpenRequests == nil {
		return 1
	}
	return *c.HalfOpenRequests
}

// validateResilience checks circuit_breaker and the hedge settings of one
// callout's request block.
func validateResilience(b *flows.Builder, r *RequestConfig, rp flows.Path) {
	if cb := r.CircuitBreaker; cb != nil {
		bp := rp.Key("circuit_breaker")
		if cb.Failures < 1 || cb.Failures > 10000 {
			b.Errorf(bp.Key("failures"), "must be between 1 and 10000, got %d", cb.Failures)
		}
		if cb.OpenMS < 1 || cb.OpenMS > maxTimeout {
			b.Errorf(bp.Key("open_ms"), "must be between 1 and %d, got %d", maxTimeout, cb.OpenMS)
		}
		if k := cb.trials(); k < 1 || k > 1000 {
			b.Errorf(bp.Key("half_open_requests"), "must be between 1 and 1000, got %d", k)
		}
	}
	if r.HedgeAfterMS < 0 || r.HedgeAfterMS > maxTimeout {
		b.Errorf(rp.Key("hedge_after_ms"), "must be between 0 and %d, got %d", maxTimeout, r.HedgeAfterMS)
	} else if r.HedgeAfterMS > 0 && !r.HedgeUnsafe && !idempotent(r.Method) {
		b.WarnAt(rp.Key("hedge_after_ms"), "hedging is off: %s is not idempotent (set hedge_unsafe: true to hedge it anyway)", r.Method)
	}
}

// Breaker states, as sidecall_callout_breaker_state reports them.
const (
	breakerClosed   = 0
	breakerOpen     = 1
	breakerHalfOpen = 2
)

func stateName(s int) string {
	switch s {
	case breakerOpen:
		return "open"
	case breakerHalfOpen:
		return "half_open"
	}
	return "closed"
}

// outcome is how a call the breaker let through ended.
type outcome int

const (
	outcomeOK outcome = iota
	outcomeFailed
	outcomeCanceled // neither: the client went away or a sibling failed
)

// ticket is what allow hands a call, for done: calls from an earlier
// state (epoch) are ignored when they end.
type ticket struct {
	epoch uint64
	trial bool
}

// breaker is one target's circuit breaker: closed, open after failures
// consecutive failures, half-open after openFor, where trials calls
// decide: one failure reopens, trials successes close.
type breaker struct {
	target   string
	failures int
	openFor  time.Duration
	trials   int
	now      func() time.Time
	changed  func(b *breaker, from, to int) // under mu; transitions are rare

	mu       sync.Mutex
	state    int
	epoch    uint64
	fails    int       // consecutive failures while closed
	until    time.Time // end of open
	inFlight int       // trial calls out
	passed   int       // trial calls succeeded
}

// allow tells whether a call may go to the network.
func (b *breaker) allow() (ticket, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case breakerClosed:
		return ticket{epoch: b.epoch}, true
	case breakerOpen:
		if b.now().Before(b.until) {
			return ticket{}, false
		}
		b.set(breakerHalfOpen)
	}
	if b.inFlight+b.passed >= b.trials {
		return ticket{}, false
	}
	b.inFlight++
	return ticket{epoch: b.epoch, trial: true}, true
}

// done records how an allowed call ended.
func (b *breaker) done(t ticket, o outcome) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.epoch != b.epoch {
		return
	}
	if t.trial {
		b.inFlight--
		switch o {
		case outcomeFailed:
			b.set(breakerOpen)
		case outcomeOK:
			if b.passed++; b.passed >= b.trials {
				b.set(breakerClosed)
			}
		}
		return
	}
	switch o {
	case outcomeOK:
		b.fails = 0
	case outcomeFailed:
		if b.fails++; b.fails >= b.failures {
			b.set(breakerOpen)
		}
	}
}

// set moves to state s (mu held).
func (b *breaker) set(s int) {
	from := b.state
	b.state = s
	b.epoch++
	b.fails, b.inFlight, b.passed = 0, 0, 0
	if s == breakerOpen {
		b.until = b.now().Add(b.openFor)
	}
	if b.changed != nil {
		b.changed(b, from, s)
	}
}

// current is the state now (for tests).
func (b *breaker) current() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// errBreakerOpen is a call failed at once by an open breaker.
var errBreakerOpen = errors.New("circuit breaker open")

type breakerOpenError struct{ target string }

func (e *breakerOpenError) Error() string { return "circuit breaker open for " + e.target }
func (e *breakerOpenError) Unwrap() error { return errBreakerOpen }

// maxBreakerTargets bounds the breakers of one group whose url host comes
// from a template: past it a new target gets none.
const maxBreakerTargets = 1024

// breakerGroup holds the breakers of one settings triple, by target. It is
// a shared resource: every route and callout with these settings uses it,
// and a reload keeps it (and the breakers' state) while one still does.
type breakerGroup struct {
	failures, trials int
	openFor          time.Duration
	m                *resilienceMetrics
	log              *zap.Logger
	now              func() time.Time

	mu       sync.Mutex
	byTarget map[string]*breaker
}

func breakerKey(cb *BreakerConfig) string {
	return fmt.Sprintf("callout-breaker|%d|%d|%d", cb.Failures, cb.OpenMS, cb.trials())
}

// get returns target's breaker, made on first use; nil past the bound.
func (g *breakerGroup) get(target string) *breaker {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := g.byTarget[target]; ok {
		return b
	}
	if g.byTarget == nil || len(g.byTarget) >= maxBreakerTargets { // closed, or full
		return nil
	}
	b := &breaker{target: target, failures: g.failures, openFor: g.openFor, trials: g.trials, now: g.now, changed: g.changed}
	g.byTarget[target] = b
	g.m.hold(target)
	return b
}

func (g *breakerGroup) changed(b *breaker, from, to int) {
	g.m.transition(b.target, from, to)
	switch to {
	case breakerOpen:
		g.log.Warn("request-callout: circuit breaker open", zap.String("target", b.target),
			zap.String("from", stateName(from)), zap.Duration("for", b.openFor))
	case breakerClosed:
		g.log.Warn("request-callout: circuit breaker closed", zap.String("target", b.target))
	}
}

// Close drops the group's state series (Resources calls it once no
// snapshot uses the group).
func (g *breakerGroup) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for t := range g.byTarget {
		g.m.release(t)
	}
	g.byTarget = nil
	return nil
}

// targetOf is a url's breaker key: scheme://host:port, the port made
// explicit.
func targetOf(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = "80"
		if scheme == "https" {
			port = "443"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// resilience is a callout's breaker and hedge settings, resolved by
// Provision.
type resilience struct {
	group  *breakerGroup
	fixed  *breaker // the breaker when the url is a literal (one target)
	hedge  time.Duration
	unsafe bool // hedge_unsafe
	hedges prometheus.Counter
}

// provisionResilience takes the callout's breaker group and resolves its
// hedge settings.
func (p *Plugin) provisionResilience(b *flows.Builder, c *callout) error {
	r := &c.cfg.Request
	c.res = resilience{hedge: time.Duration(r.HedgeAfterMS) * time.Millisecond, unsafe: r.HedgeUnsafe}
	if c.res.hedge > 0 {
		c.res.hedges = p.m.res.hedges.WithLabelValues(b.Scope.Route, c.name)
	}
	cb := r.CircuitBreaker
	if cb == nil {
		return nil
	}
	log := b.Log
	if log == nil {
		log = zap.NewNop()
	}
	m := p.m.res
	g, err := b.Acquire(breakerKey(cb), func() (io.Closer, error) {
		return &breakerGroup{failures: cb.Failures, trials: cb.trials(), openFor: time.Duration(cb.OpenMS) * time.Millisecond,
			m: m, log: log, now: time.Now, byTarget: map[string]*breaker{}}, nil
	})
	if err != nil {
		return err
	}
	c.res.group = g.(*breakerGroup)
	if c.parsed != nil {
		c.res.fixed = c.res.group.get(targetOf(c.parsed))
	}
	return nil
}

// breakerFor is the breaker guarding a request to u, or nil.
func (c *callout) breakerFor(u *url.URL) *breaker {
	if c.res.fixed != nil || c.res.group == nil {
		return c.res.fixed
	}
	return c.res.group.get(targetOf(u))
}

// attempt is one attempt of a callout through its breaker: failed at once
// while the breaker is open, else sent (hedged when set) and its outcome
// recorded. A failure is what the error block counts as one.
func (p *Plugin) attempt(ctx context.Context, c *callout, s *sendReq) (int, http.Header, []byte, error) {
	b := c.breakerFor(s.u)
	if b == nil {
		return p.hedged(ctx, c, s)
	}
	t, ok := b.allow()
	if !ok {
		return 0, nil, nil, &breakerOpenError{target: b.target}
	}
	status, h, body, err := p.hedged(ctx, c, s)
	o := outcomeOK
	switch {
	case err != nil && errors.Is(ctx.Err(), context.Canceled):
		o = outcomeCanceled
	case err != nil || c.statuses[status]:
		o = outcomeFailed
	}
	b.done(t, o)
	return status, h, body, err
}

// resilienceMetrics are the breaker and hedge collectors of one registry.
type resilienceMetrics struct {
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	hedges      *prometheus.CounterVec

	mu   sync.Mutex
	refs map[string]int // breakers per target label, across groups
}

func newResilienceMetrics(reg prometheus.Registerer) *resilienceMetrics {
	m := &resilienceMetrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sidecall_callout_breaker_state",
			Help: "Callout circuit breaker state by target (scheme://host:port): 0 closed, 1 open, 2 half-open.",
		}, []string{"target"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecall_callout_breaker_transitions_total",
			Help: "Callout circuit breaker state changes by target and new state (open, half_open, closed).",
		}, []string{"target", "to"}),
		hedges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecall_callout_hedges_total",
			Help: "Hedged second attempts sent (hedge_after_ms passed with no answer), by route and callout.",
		}, []string{"route", "callout"}),
		refs: map[string]int{},
	}
	if reg != nil {
		m.state = register(reg, m.state)
		m.transitions = register(reg, m.transitions)
		m.hedges = register(reg, m.hedges)
	}
	return m
}

func (m *resilienceMetrics) hold(target string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refs[target]++; m.refs[target] == 1 {
		m.state.WithLabelValues(target).Set(breakerClosed)
	}
}

func (m *resilienceMetrics) release(target string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refs[target]--; m.refs[target] <= 0 {
		delete(m.refs, target)
		m.state.DeleteLabelValues(target)
	}
}

func (m *resilienceMetrics) transition(target string, _, to int) {
	m.transitions.WithLabelValues(target, stateName(to)).Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refs[target] > 0 { // a released breaker's late call leaves no series behind
		m.state.WithLabelValues(target).Set(float64(to))
	}
}
