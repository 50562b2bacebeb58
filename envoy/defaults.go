package envoy

import (
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// SidecallDefaults configures c like the shipped bootstraps
// (envoy/sidecar.yaml, envoy/front-proxy.yaml): request headers SEND,
// response headers SKIP, bodies NONE, allow_mode_override, the attributes
// sidecall's routing reads, their message_timeout of 2s (a reply slower
// than that is a 504 in production too) and their max_message_timeout,
// the longest override_message_timeout Envoy accepts, and their
// mutation_rules (allow_all_routing: Kong's host and method rewrites).
func SidecallDefaults(c *Config) {
	c.ProcessingMode = &ProcessingMode{RequestHeaderMode: 1, ResponseHeaderMode: 2} // SEND, SKIP
	c.AllowModeOverride = true
	c.RequestAttributes = []string{"xds.route_name", "source.address", "destination.address"}
	c.MessageTimeout = ShippedMessageTimeout
	c.MaxMessageTimeout = ShippedMaxMessageTimeout
	c.MutationRules = &mutationrulesv3.HeaderMutationRules{AllowAllRouting: wrapperspb.Bool(true)}
}

// ShippedMessageTimeout is the message_timeout of envoy/sidecar.yaml and
// envoy/front-proxy.yaml (a test keeps the two in step).
const ShippedMessageTimeout = 2 * time.Second

// ShippedMaxMessageTimeout is the max_message_timeout of every shipped
// Envoy config: at least sidecall's --envoy-max-message-timeout default
// (10s), so Envoy takes every override_message_timeout sidecall sends
// (deploy's tests keep them in step).
const ShippedMaxMessageTimeout = 10 * time.Second
