package kafka

import (
	"strings"
	"testing"
)

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, plugin, cfg string
		want              []string
	}{
		{"empty servers", "kafka-request-reply", "bootstrap_servers: []\ntopic: a\nreply_topic: b", []string{"plugins[0].config.bootstrap_servers: must list at least one"}},
		{"bad server", "kafka-request-reply", "bootstrap_servers: [{host: '', port: 70000}]\ntopic: a\nreply_topic: b",
			[]string{"bootstrap_servers[0].host: is required", "bootstrap_servers[0].port: must be between 1 and 65535"}},
		{"topics", "kafka-request-reply", "bootstrap_servers: [{host: h, port: 1}]\ntopic: 'a b'\nreply_topic: ''",
			[]string{"config.topic: must contain only", "config.reply_topic: is required"}},
		{"ranges", "kafka-request-reply", "bootstrap_servers: [{host: h, port: 1}]\ntopic: a\nreply_topic: b\nreply_timeout: 0\nmax_pending: 0\nproducer_request_acks: 2\ncompression: brotli\nmessage_format: xml",
			[]string{"reply_timeout: must be between", "max_pending: must be between", "producer_request_acks: must be -1, 0 or 1", "compression: must be one of", "message_format: must be one of json, protobuf, raw"}},
		{"headers", "kafka-request-reply", "bootstrap_servers: [{host: h, port: 1}]\ntopic: a\nreply_topic: b\ncorrelation_header: 'a b'\nkey: 'x:y'",
			[]string{"correlation_header: must be a valid header name", "config.key: must be correlation_id or a request header name"}},
		{"auth", "kafka-request-reply", "bootstrap_servers: [{host: h, port: 1}]\ntopic: a\nreply_topic: b\nauthentication: {strategy: ldap, mechanism: GSSAPI}",
			[]string{"authentication.strategy: must be sasl", "authentication.mechanism: must be one of", "authentication.user: is required", "authentication.password: is required"}},
		{"unknown field", "kafka-request-reply", "bootstrap_servers: [{host: h, port: 1}]\ntopic: a\nreply_topic: b\nreplytopic: c", []string{"config.replytopic: unknown field"}},
		{"nothing forwarded", "kafka-upstream", "bootstrap_servers: [{host: h, port: 1}]\ntopic: a\nforward_body: false", []string{"at least one of forward_method"}},
		{"lua", "kafka-upstream", "bootstrap_servers: [{host: h, port: 1}]\ntopic: a\nmessage_by_lua_functions: ['return function(m) return m end']", []string{"message_by_lua_functions: not supported yet"}},
		{"allowed topics", "kafka-upstream", "bootstrap_servers: [{host: h, port: 1}]\ntopic: a\nallowed_topics: ['..']", []string{"allowed_topics[0]: must not be"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, b := tryBuild(t, newResources(t), tc.plugin, tc.cfg)
			var all []string
			for _, p := range b.Problems() {
				all = append(all, p.String())
			}
			joined := strings.Join(all, "\n")
			for _, w := range tc.want {
				if !strings.Contains(joined, w) {
					t.Errorf("problems lack %q:\n%s", w, joined)
				}
			}
			if len(all) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n%s", len(all), len(tc.want), joined)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	p := build(t, newResources(t), "kafka-request-reply", "bootstrap_servers: [{host: 127.0.0.1, port: 1}]\ntopic: a\nreply_topic: b").(*requestReply)
	if p.timeout.Milliseconds() != 5000 || p.format != FormatJSON || p.maxPending != 10000 || !p.fwdBody || !p.fwdHeaders ||
		p.names != DefaultHeaderNames || p.keyHeader != "" || p.partition != nil {
		t.Errorf("defaults: %+v", p)
	}
	if !p.Needs().RequestBody {
		t.Error("forward_body needs the request body")
	}
}
