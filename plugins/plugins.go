// Package plugins is the one list of the plugins sidecall ships. cmd and
// the test harness build their registry here; no other package imports
// every plugin.
package plugins

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecall/sidecall/callout"
	"github.com/sidecall/sidecall/correlation"
	"github.com/sidecall/sidecall/flowcallout"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"
	"github.com/sidecall/sidecall/kafka"
	"github.com/sidecall/sidecall/serverless"
)

// Options are what the plugins share with the process that runs them.
type Options struct {
	// Metrics receives the plugins' collectors; nil keeps them unregistered.
	Metrics prometheus.Registerer
	// Version is sidecall's version (request-callout's User-Agent).
	Version string
	// Lua sets the limits of the Lua runtime config Lua runs on.
	Lua lua.Options
}

// Set is a registry of every plugin with the state they share with one
// server: metrics and readiness.
type Set struct {
	*flows.Registry
	// Lua is the runtime for config Lua and $(...): pass it to every load
	// (flows.LoadOptions.Lua). Its errors and timeouts are counted.
	Lua   *flows.LuaRuntime
	kafka *kafka.Plugins
}

// New returns every plugin, registered with o's metrics.
func New(o Options) *Set {
	reg := o.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry() // collected by nobody
	}
	r := flows.NewRegistry()
	correlation.Register(r)
	serverless.Register(r)
	flowcallout.Register(r, flowMetrics(reg))
	callout.Register(r, callout.Options{Metrics: reg, Version: o.Version})
	k := kafka.Register(r, reg)
	return &Set{Registry: r, Lua: luaRuntime(o.Lua, reg), kafka: k}
}

// Close releases the Lua runtime's pooled states, once nothing loads or
// serves with the set.
func (s *Set) Close() { s.Lua.Sandbox.Close() }

func luaRuntime(o lua.Options, reg prometheus.Registerer) *flows.LuaRuntime {
	errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecall_lua_errors_total", Help: "Lua runtime errors."})
	timeouts := prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecall_lua_timeouts_total", Help: "Lua calls stopped by the time limit."})
	reg.MustRegister(errs, timeouts)
	rt := flows.NewLuaRuntime(o)
	rt.OnError = func(timeout bool) {
		if timeout {
			timeouts.Inc()
		} else {
			errs.Inc()
		}
	}
	return rt
}

// Ready reports whether long-lived plugin clients held in res are ready
// (Kafka reply consumers positioned).
func (s *Set) Ready(res *flows.Resources) bool { return s.kafka.Ready(res) }

func flowMetrics(reg prometheus.Registerer) flowcallout.Observer {
	runs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecall_flow_runs_total",
		Help: "Shared flow runs by result."}, []string{"flow", "result"})
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sidecall_flow_duration_seconds",
		Help: "Shared flow run time.", Buckets: prometheus.DefBuckets}, []string{"flow"})
	reg.MustRegister(runs, dur)
	return func(flow, result string, d time.Duration) {
		runs.WithLabelValues(flow, result).Inc()
		dur.WithLabelValues(flow).Observe(d.Seconds())
	}
}
