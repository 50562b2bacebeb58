// Package wire is the one place that knows every plugin sidecall ships: it
// fills the registry and registers the plugins' metrics and readiness
// checks. flows never imports plugin packages; cmd and tests use this.
package wire

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecall/sidecall/callout"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/kafka"
)

// Registry returns a registry with every plugin.
func Registry() *flows.Registry {
	r := flows.NewRegistry()
	flows.RegisterCorrelationID(r)
	flows.RegisterServerless(r)
	flows.RegisterFlowCallout(r)
	callout.Register(r)
	kafka.Register(r)
	return r
}

// Metrics registers the plugins' collectors with reg and wires the hooks
// that feed flow and Lua metrics.
func Metrics(reg prometheus.Registerer) {
	reg.MustRegister(callout.Collectors()...)
	reg.MustRegister(kafka.Collectors()...)
	runs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecall_flow_runs_total",
		Help: "Shared flow runs by result."}, []string{"flow", "result"})
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sidecall_flow_duration_seconds",
		Help: "Shared flow run time.", Buckets: prometheus.DefBuckets}, []string{"flow"})
	reg.MustRegister(runs, dur)
	flows.SetFlowObserver(func(flow, result string, d time.Duration) {
		runs.WithLabelValues(flow, result).Inc()
		dur.WithLabelValues(flow).Observe(d.Seconds())
	})
	luaErrs := prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecall_lua_errors_total", Help: "Lua runtime errors."})
	luaTimeouts := prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecall_lua_timeouts_total", Help: "Lua calls stopped by the time limit."})
	reg.MustRegister(luaErrs, luaTimeouts)
	flows.SetLuaObserver(func(timeout bool) {
		if timeout {
			luaTimeouts.Inc()
		} else {
			luaErrs.Inc()
		}
	})
}

// Ready reports whether long-lived plugin clients are ready (Kafka reply
// consumers positioned).
func Ready(res *flows.Resources) bool { return kafka.Ready(res) }
