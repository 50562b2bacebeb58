// Package plugins is the one list of the plugins sidecall ships. cmd and
// the test harness build their registry here; no other package imports
// every plugin.
package plugins

import (
	"io"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecall/sidecall/callout"
	"github.com/sidecall/sidecall/correlation"
	"github.com/sidecall/sidecall/cors"
	"github.com/sidecall/sidecall/flowcallout"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"
	"github.com/sidecall/sidecall/kafka"
	"github.com/sidecall/sidecall/serverless"
	"github.com/sidecall/sidecall/transformer"
)

// Options are what the plugins share with the process that runs them.
type Options struct {
	// Metrics receives the plugins' collectors; nil keeps them unregistered.
	Metrics prometheus.Registerer
	// Version is sidecall's version (request-callout's User-Agent).
	Version string
	// Lua sets the limits of the Lua runtime config Lua runs on.
	Lua lua.Options
	// SelfAddrs are sidecall's own listen addresses (host:port): a callout
	// whose host comes from the request may never reach them.
	SelfAddrs []string
}

// Set is a registry of every plugin with the state they share with one
// server: metrics and the Lua runtime. Readiness is read from the clients a
// flows.Resources holds (Dependencies, Ready).
type Set struct {
	*flows.Registry
	// Lua is the runtime for config Lua and $(...): pass it to every load
	// (flows.LoadOptions.Lua). Its errors and timeouts are counted.
	Lua *flows.LuaRuntime
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
	transformer.Register(r)
	cors.Register(r)
	flowcallout.Register(r, flowMetrics(reg))
	callout.Register(r, callout.Options{Metrics: reg, Version: o.Version, SelfAddrs: o.SelfAddrs})
	kafka.Register(r, reg)
	o.Lua.Plugins = r.Names()
	return &Set{Registry: r, Lua: luaRuntime(o.Lua, reg)}
}

// Close releases the Lua runtime's pooled states, once nothing loads or
// serves with the set.
func (s *Set) Close() { s.Lua.Sandbox.Close() }

func luaRuntime(o lua.Options, reg prometheus.Registerer) *flows.LuaRuntime {
	errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecall_lua_errors_total", Help: "Lua runtime errors."})
	timeouts := prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecall_lua_timeouts_total", Help: "Lua calls stopped by the time limit."})
	vaultDenied := prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecall_lua_vault_denied_total",
		Help: "kong.vault.get calls refused: the config does not name the reference."})
	reg.MustRegister(errs, timeouts, vaultDenied)
	rt := flows.NewLuaRuntime(o)
	rt.OnVaultDenied = vaultDenied.Inc
	rt.OnError = func(timeout bool) {
		if timeout {
			timeouts.Inc()
		} else {
			errs.Inc()
		}
	}
	return rt
}

// Dependency is the state of one long-lived client held in a
// flows.Resources (a Kafka producer or reply consumer, a Redis cache), as
// /readyz lists it and sidecall_dependency_up counts it.
type Dependency struct {
	Kind string `json:"kind"` // kafka-producer, kafka-reply-consumer, redis
	// Name says which one: brokers (host:port list), brokers/topic for a
	// reply consumer, host:port for Redis. Never credentials.
	Name string `json:"name"`
	// Gates: while it is not ready, neither is the instance. Only the
	// clients kafka-request-reply routes need gate; kafka-upstream
	// producers and caches are reported, not gating.
	Gates bool      `json:"gates"`
	Ready bool      `json:"ready"`
	Since time.Time `json:"since"` // when Ready last changed
}

// reporter is implemented by the clients in flows.Resources that report
// their state (kafka's producer and reply consumer, callout/cache.Redis).
type reporter interface {
	Health() (kind, name string, gates, ready bool, since time.Time)
}

// Dependencies lists the clients held in res that report their state,
// sorted by kind, then name.
func (s *Set) Dependencies(res *flows.Resources) []Dependency {
	deps := []Dependency{}
	res.Each(func(_ string, c io.Closer) {
		if r, ok := c.(reporter); ok {
			var d Dependency
			d.Kind, d.Name, d.Gates, d.Ready, d.Since = r.Health()
			deps = append(deps, d)
		}
	})
	sort.Slice(deps, func(i, j int) bool {
		if deps[i].Kind != deps[j].Kind {
			return deps[i].Kind < deps[j].Kind
		}
		if deps[i].Name != deps[j].Name {
			return deps[i].Name < deps[j].Name
		}
		return deps[i].Gates && !deps[j].Gates
	})
	return deps
}

// Ready reports whether every client held in res that gates readiness is
// ready (the Kafka producers and reply consumers of kafka-request-reply).
func (s *Set) Ready(res *flows.Resources) bool { return GatesReady(s.Dependencies(res)) }

// GatesReady tells whether every gating dependency in deps is ready.
func GatesReady(deps []Dependency) bool {
	for _, d := range deps {
		if d.Gates && !d.Ready {
			return false
		}
	}
	return true
}

// DependencyMetrics returns a collector of sidecall_dependency_up{kind,name}:
// 1 when the client is ready, 0 when not, for every client held in res
// that reports its state, read at scrape time. Clients with the same kind
// and name (two producers with different settings on one cluster) are one
// series, 1 only when all are ready.
func (s *Set) DependencyMetrics(res *flows.Resources) prometheus.Collector {
	return &dependencyCollector{s: s, res: res, desc: prometheus.NewDesc("sidecall_dependency_up",
		"1 if a long-lived client (Kafka producer or reply consumer, Redis cache) is ready, else 0.", []string{"kind", "name"}, nil)}
}

type dependencyCollector struct {
	s    *Set
	res  *flows.Resources
	desc *prometheus.Desc
}

func (c *dependencyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *dependencyCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ kind, name string }
	up := map[key]bool{}
	var order []key
	for _, d := range c.s.Dependencies(c.res) {
		k := key{d.Kind, d.Name}
		if was, seen := up[k]; seen {
			up[k] = was && d.Ready
			continue
		}
		up[k] = d.Ready
		order = append(order, k)
	}
	for _, k := range order {
		v := 0.0
		if up[k] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, k.kind, k.name)
	}
}

func flowMetrics(reg prometheus.Registerer) flowcallout.Observer {
	runs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecall_flow_runs_total",
		Help: "Shared flow runs by route (of the flow-callout plugin; empty for a global one), flow and result."}, []string{"route", "flow", "result"})
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sidecall_flow_duration_seconds",
		Help: "Shared flow run time, by route and flow.", Buckets: prometheus.DefBuckets}, []string{"route", "flow"})
	reg.MustRegister(runs, dur)
	return func(route, flow, result string, d time.Duration) {
		runs.WithLabelValues(route, flow, result).Inc()
		dur.WithLabelValues(route, flow).Observe(d.Seconds())
	}
}
