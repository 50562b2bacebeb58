package callout

import "github.com/prometheus/client_golang/prometheus"

var (
	mRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecall_callout_requests_total",
		Help: "Callout HTTP attempts by callout and status class (2xx..5xx, or error for transport failures).",
	}, []string{"callout", "status_class"})
	mRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecall_callout_retries_total",
		Help: "Callout retries.",
	}, []string{"callout"})
	mCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecall_callout_cache_total",
		Help: "Callout cache lookups by result (hit, miss, error).",
	}, []string{"callout", "result"})
	mDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sidecall_callout_duration_seconds",
		Help:    "Callout HTTP attempt latency.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"callout"})
)

// Collectors returns request-callout's metrics for registration.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{mRequests, mRetries, mCache, mDuration}
}

func statusClass(status int) string {
	if status < 100 || status > 999 {
		return "error"
	}
	return string(rune('0'+status/100)) + "xx"
}

// initSeries creates a callout's series at load, so dashboards and alerts
// see zeros rather than gaps before the first retry or cache lookup.
func initSeries(callout string) {
	mRetries.WithLabelValues(callout)
	mCache.WithLabelValues(callout, "hit")
	mCache.WithLabelValues(callout, "miss")
	mDuration.WithLabelValues(callout)
}
