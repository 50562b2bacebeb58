package callout

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sidecall/sidecall/internal/urlsafe"
)

// metrics are one registry's request-callout collectors.
type metrics struct {
	requests *prometheus.CounterVec
	retries  *prometheus.CounterVec
	cache    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	refused  *prometheus.CounterVec
	res      *resilienceMetrics
}

// newMetrics makes the collectors and registers them with reg (nil: kept
// unregistered). A registry that already has them keeps its own.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecall_callout_requests_total",
			Help: "Callout HTTP attempts by route, callout and status class (2xx..5xx, error for transport failures, canceled when the client went away or a failing callout stopped the others). route is empty for a global plugin.",
		}, []string{"route", "callout", "status_class"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecall_callout_retries_total",
			Help: "Callout retries, by route and callout.",
		}, []string{"route", "callout"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecall_callout_cache_total",
			Help: "Callout cache lookups by route, callout and result (hit, miss, error).",
		}, []string{"route", "callout", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sidecall_callout_duration_seconds",
			Help:    "Callout HTTP attempt latency, by route and callout.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "callout"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecall_callout_refused_total",
			Help: "Callouts not sent, by callout and reason: bad_client_value (a control character from the client, 400), url_component, fixed_part, host_not_allowed, forbidden_host, self, invalid_url (the url refused, on_error applies), breaker_open (failed at once by an open circuit breaker). callout is empty for config.upstream; route is empty for a global plugin.",
		}, []string{"route", "callout", "reason"}),
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.retries = register(reg, m.retries)
		m.cache = register(reg, m.cache)
		m.duration = register(reg, m.duration)
		m.refused = register(reg, m.refused)
	}
	m.res = newResilienceMetrics(reg)
	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
		panic(err)
	}
	return c
}

// series are one callout's series, resolved once at load so a request
// does no label lookup. The requests series are made on first use, so
// only status classes that happened show up.
type series struct {
	m        *metrics
	route    string
	name     string
	hit      prometheus.Counter
	miss     prometheus.Counter
	retries  prometheus.Counter
	duration prometheus.Observer
	requests [11]atomic.Pointer[prometheus.Counter] // by statusIndex
}

// newSeries creates the callout's hit, miss, retry and duration series
// now, so dashboards and alerts see zeros rather than gaps. route is the
// config's route name ("" for a global plugin): its cardinality is the
// config's.
func (m *metrics) newSeries(route, callout string) *series {
	return &series{m: m, route: route, name: callout,
		hit:      m.cache.WithLabelValues(route, callout, "hit"),
		miss:     m.cache.WithLabelValues(route, callout, "miss"),
		retries:  m.retries.WithLabelValues(route, callout),
		duration: m.duration.WithLabelValues(route, callout),
	}
}

// cacheError counts a cache failure (rare: no resolved series).
func (s *series) cacheError() { s.m.cache.WithLabelValues(s.route, s.name, "error").Inc() }

// refuse counts a callout not sent (rare: no resolved series).
func (m *metrics) refuse(route, callout string, reason urlsafe.Reason) {
	m.refused.WithLabelValues(route, callout, string(reason)).Inc()
}

// attempt counts one HTTP attempt; status 0 is a transport error,
// statusCanceled an attempt the client's cancellation ended.
func (s *series) attempt(status int) {
	i := statusIndex(status)
	if c := s.requests[i].Load(); c != nil {
		(*c).Inc()
		return
	}
	c := s.m.requests.WithLabelValues(s.route, s.name, statusClass(status))
	s.requests[i].Store(&c)
	c.Inc()
}

// statusCanceled is the status attempt records for an attempt ended by
// the client going away.
const statusCanceled = -1

// statusIndex is 1..9 for 1xx..9xx, 10 for canceled, 0 for anything else
// (error).
func statusIndex(status int) int {
	if status == statusCanceled {
		return 10
	}
	if status < 100 || status > 999 {
		return 0
	}
	return status / 100
}

func statusClass(status int) string {
	switch i := statusIndex(status); {
	case i == 10:
		return "canceled"
	case i > 0:
		return string(rune('0'+i)) + "xx"
	}
	return "error"
}
