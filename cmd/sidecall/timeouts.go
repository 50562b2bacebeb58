package main

import (
	"fmt"
	"time"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/processor"
)

// envoyTimeouts are --envoy-message-timeout and --envoy-max-message-timeout:
// what sidecall assumes Envoy's ext_proc filter is configured with. Before a
// phase whose budget (the worst case its plugins' own timeouts allow)
// exceeds the message timeout, sidecall sends override_message_timeout:
// the budget plus processor.OverrideMargin, at most the max.
type envoyTimeouts struct {
	msg, max time.Duration
}

const (
	envoyMessageTimeoutUsage = "Envoy's ext_proc message_timeout as configured (Envoy's default 200ms); " +
		"a phase whose plugins may take longer first gets override_message_timeout. Setting it below Envoy's " +
		"only sends overrides more often; above it, Envoy may answer its own 504 first (SIDECALL_ENVOY_MESSAGE_TIMEOUT)"
	envoyMaxMessageTimeoutUsage = "Envoy's ext_proc max_message_timeout (Envoy must set at least this): the longest " +
		"override_message_timeout sidecall asks for; validate warns about routes whose budget exceeds it (SIDECALL_ENVOY_MAX_MESSAGE_TIMEOUT)"
)

// register adds the two flags to fs.
func (t *envoyTimeouts) register(fs interface {
	DurationVar(*time.Duration, string, time.Duration, string)
}) {
	fs.DurationVar(&t.msg, "envoy-message-timeout", processor.DefaultEnvoyMessageTimeout, envoyMessageTimeoutUsage)
	fs.DurationVar(&t.max, "envoy-max-message-timeout", processor.DefaultEnvoyMaxMessageTimeout, envoyMaxMessageTimeoutUsage)
}

// check returns the flag at fault and why, or "" and nil.
func (t envoyTimeouts) check() (string, error) {
	// Envoy takes message_timeout and max_message_timeout within [0, 3600s].
	if t.msg < time.Millisecond || t.msg > time.Hour {
		return "--envoy-message-timeout", fmt.Errorf("want a duration from 1ms to 1h, got %v", t.msg)
	}
	if t.max < time.Millisecond || t.max > time.Hour {
		return "--envoy-max-message-timeout", fmt.Errorf("want a duration from 1ms to 1h, got %v", t.max)
	}
	return "", nil
}

// budgetWarnings names every pipeline of snap (routes, then the global
// plugins) whose access or response budget, plus the override margin, is
// over max: Envoy's max_message_timeout cuts it and answers its own 504
// before the plugins' own timeouts fire.
func budgetWarnings(snap *flows.Snapshot, max time.Duration) []string {
	var out []string
	check := func(what string, p *flows.Pipeline) {
		for _, ph := range []struct {
			phase flows.Phase
			name  string
		}{{flows.PhaseAccess, "access phase"}, {flows.PhaseBodyFilter, "response phases"}} {
			if b := p.Budget(ph.phase); b+processor.OverrideMargin > max {
				out = append(out, fmt.Sprintf("%s: its plugins may take up to %v in the %s (their own timeouts), "+
					"more than --envoy-max-message-timeout %v less sidecall's %v margin: Envoy would answer its own 504 first; "+
					"lower the plugins' timeouts or raise Envoy's max_message_timeout and the flag together", what, b, ph.name, max, processor.OverrideMargin))
			}
		}
	}
	for _, r := range snap.Routes {
		check("route "+r.Name, r.Pipeline)
	}
	check("global plugins", snap.Global)
	return out
}
