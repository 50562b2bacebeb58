package envoy

import "time"

// SidecallDefaults configures c like the shipped bootstraps
// (envoy/sidecar.yaml): request headers SEND, response headers SKIP, bodies
// NONE, allow_mode_override, the attributes sidecall's routing reads, and a
// message_timeout above sidecall's plugin deadlines.
func SidecallDefaults(c *Config) {
	c.ProcessingMode = &ProcessingMode{RequestHeaderMode: 1, ResponseHeaderMode: 2} // SEND, SKIP
	c.AllowModeOverride = true
	c.RequestAttributes = []string{"xds.route_name", "source.address", "destination.address"}
	c.MessageTimeout = 5 * time.Second
}
