package kafka

import "github.com/prometheus/client_golang/prometheus"

var (
	producedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecall_kafka_produced_total",
		Help: "Records produced, by topic and result (ok, error).",
	}, []string{"topic", "result"})
	repliesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecall_kafka_replies_total",
		Help: "Reply records read, by reply topic and result (matched, late, unknown, malformed).",
	}, []string{"reply_topic", "result"})
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecall_kafka_requests_total",
		Help: "kafka-request-reply requests, by topic and outcome (replied, timeout, unavailable, produce_error, pending_full, bad_reply, canceled).",
	}, []string{"topic", "outcome"})
	pendingGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sidecall_kafka_pending",
		Help: "Requests waiting for their reply, by reply topic.",
	}, []string{"reply_topic"})
	replyLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sidecall_kafka_reply_latency_seconds",
		Help:    "Time from producing a request to reading its reply.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"reply_topic"})
)

// Collectors returns the package's Prometheus collectors, for the caller to
// register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{producedTotal, repliesTotal, requestsTotal, pendingGauge, replyLatency}
}
