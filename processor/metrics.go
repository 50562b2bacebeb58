package processor

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecall/sidecall/flows"
)

// Metrics are sidecall's stream, phase and plugin metrics.
type Metrics struct {
	streams      *prometheus.CounterVec
	streamDur    prometheus.Histogram
	phaseDur     *prometheus.HistogramVec
	pluginRuns   *prometheus.CounterVec
	pluginErrors *prometheus.CounterVec
	pluginDur    *prometheus.HistogramVec
	streamErrors *prometheus.CounterVec
	panics       prometheus.Counter
	active       prometheus.Gauge
	overrides    prometheus.Counter // override_message_timeout sent

	// Streams answered with sidecall's error reply for a limit or a
	// misconfiguration (sidecall_stream_errors_total reasons).
	reqBodyTooLarge, respBodyTooLarge, replyTooLarge, headersSkipped prometheus.Counter

	// Label lookups are cached: WithLabelValues hashes on every call.
	routeCounters sync.Map // route → prometheus.Counter
	pluginObs     sync.Map // pluginKey → *pluginMetrics
	phaseObs      [4]prometheus.Observer
}

type pluginKey struct {
	route, plugin string
	phase         flows.Phase
}

type pluginMetrics struct {
	runs, errors prometheus.Counter
	dur          prometheus.Observer
}

var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// NewMetrics creates and registers the metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecall_streams_total",
			Help: "ext_proc streams handled, by route (\"\" for none)."}, []string{"route"}),
		streamDur: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sidecall_stream_duration_seconds",
			Help: "Time from a stream's first message to its end.", Buckets: latencyBuckets}),
		phaseDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sidecall_phase_duration_seconds",
			Help: "Time spent answering one Envoy message, by phase.", Buckets: latencyBuckets}, []string{"phase"}),
		pluginRuns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecall_plugin_runs_total",
			Help: "Plugin phase runs."}, []string{"route", "plugin", "phase"}),
		pluginErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecall_plugin_errors_total",
			Help: "Plugin phase runs that returned an error."}, []string{"route", "plugin", "phase"}),
		pluginDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sidecall_plugin_duration_seconds",
			Help: "Plugin phase run time.", Buckets: latencyBuckets}, []string{"route", "plugin", "phase"}),
		streamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecall_stream_errors_total",
			Help: "Streams ended with a gRPC error (recv, send, protocol) or answered with sidecall's error reply " +
				"(request_body_too_large 413, response_body_too_large 502, reply_too_large 500, headers_skipped 500), by reason."},
			[]string{"reason"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecall_panics_total",
			Help: "Panics recovered while handling a message (answered with 500)."}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecall_streams_active",
			Help: "Streams open now."}),
		overrides: prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecall_message_timeout_overrides_total",
			Help: "override_message_timeout messages sent to Envoy before a phase whose budget exceeds --envoy-message-timeout."}),
	}
	for _, r := range []string{"recv", "send", "protocol"} {
		m.streamErrors.WithLabelValues(r)
	}
	m.reqBodyTooLarge = m.streamErrors.WithLabelValues("request_body_too_large")
	m.respBodyTooLarge = m.streamErrors.WithLabelValues("response_body_too_large")
	m.replyTooLarge = m.streamErrors.WithLabelValues("reply_too_large")
	m.headersSkipped = m.streamErrors.WithLabelValues("headers_skipped")
	for i, p := range []string{"request_headers", "request_body", "response_headers", "response_body"} {
		m.phaseObs[i] = m.phaseDur.WithLabelValues(p)
	}
	if reg != nil {
		reg.MustRegister(m.streams, m.streamDur, m.phaseDur, m.pluginRuns, m.pluginErrors, m.pluginDur,
			m.streamErrors, m.panics, m.active, m.overrides)
	}
	return m
}

func (m *Metrics) routeStream(route string) prometheus.Counter {
	if c, ok := m.routeCounters.Load(route); ok {
		return c.(prometheus.Counter)
	}
	c := m.streams.WithLabelValues(route)
	m.routeCounters.Store(route, c)
	return c
}

func (m *Metrics) plugin(route string, in *flows.Instance, phase flows.Phase) *pluginMetrics {
	k := pluginKey{route, in.Name, phase}
	if pm, ok := m.pluginObs.Load(k); ok {
		return pm.(*pluginMetrics)
	}
	ph := phase.String()
	pm := &pluginMetrics{
		runs:   m.pluginRuns.WithLabelValues(route, in.Name, ph),
		errors: m.pluginErrors.WithLabelValues(route, in.Name, ph),
		dur:    m.pluginDur.WithLabelValues(route, in.Name, ph),
	}
	m.pluginObs.Store(k, pm)
	return pm
}

func (m *Metrics) observer(route string) flows.Observer {
	return func(in *flows.Instance, phase flows.Phase, d time.Duration, err error) {
		pm := m.plugin(route, in, phase)
		pm.runs.Inc()
		pm.dur.Observe(d.Seconds())
		if err != nil {
			pm.errors.Inc()
		}
	}
}
