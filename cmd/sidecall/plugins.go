package main

import (
	"github.com/sidecall/sidecall/callout"
	"github.com/sidecall/sidecall/cmd/sidecall/wire"
	"github.com/sidecall/sidecall/flows"
)

func registry() *flows.Registry { return wire.Registry() }

// registerPluginMetrics registers the plugins' own collectors and
// readiness checks with the app.
func registerPluginMetrics(a *app) {
	callout.Version = version
	wire.Metrics(a.prom)
	a.ready = append(a.ready, func() bool { return wire.Ready(a.res) })
}
