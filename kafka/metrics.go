package kafka

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Prometheus collectors of one Register call; every plugin,
// producer and reply consumer that call builds counts into them. A nil
// *metrics counts nothing (the Responder's producer).
type metrics struct {
	produced     *prometheus.CounterVec
	replies      *prometheus.CounterVec
	requests     *prometheus.CounterVec
	pending      *prometheus.GaugeVec
	replyLatency *prometheus.HistogramVec
}

func newMetrics() *metrics {
	return &metrics{
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecall_kafka_produced_total",
			Help: "Records produced, by topic and result (ok, error).",
		}, []string{"topic", "result"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecall_kafka_replies_total",
			Help: "Reply records read, by reply topic and result (matched, late, unknown, malformed).",
		}, []string{"reply_topic", "result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecall_kafka_requests_total",
			Help: "kafka-request-reply requests, by route (empty for a global plugin), topic and outcome (replied, timeout, unavailable, produce_error, pending_full, bad_reply, canceled; with idempotency, async or gather also replayed, idempotency_conflict, store_unavailable, accepted, partial, duplicate_id).",
		}, []string{"route", "topic", "outcome"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sidecall_kafka_pending",
			Help: "Requests waiting for their reply, by reply topic.",
		}, []string{"reply_topic"}),
		replyLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sidecall_kafka_reply_latency_seconds",
			Help:    "Time from producing a request to reading its reply.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"reply_topic"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.produced, m.replies, m.requests, m.pending, m.replyLatency}
}

// countProduced counts one record acknowledged (ok) or refused (error).
func (m *metrics) countProduced(topic, result string) {
	if m != nil {
		m.produced.WithLabelValues(topic, result).Inc()
	}
}
