package main

import "github.com/sidecall/sidecall/flows"

// registry wires every plugin sidecall ships. flows never imports plugin
// packages; this is the one place that does.
func registry() *flows.Registry {
	r := flows.NewRegistry()
	flows.RegisterCorrelationID(r)
	return r
}

// registerPluginMetrics registers the plugins' own collectors and
// readiness checks with the app.
func registerPluginMetrics(a *app) {}
