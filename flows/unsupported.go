package flows

import (
	"errors"
	"sort"
)

// CheckUnsupportedPlugins validates a LoadOptions.UnsupportedPlugins value.
func CheckUnsupportedPlugins(v string) error {
	switch v {
	case "", "error", "warn":
		return nil
	}
	return errors.New(`want error or warn, got "` + v + `"`)
}

// envoyDoes says, for Kong plugins sidecall does not run, what does their
// job beside it in Envoy: a Kong user pasting a whole file learns where
// each one goes. docs/migration.md carries the same table (a test checks).
// Plugins sidecall is gaining (cors, the transformers) are left out.
var envoyDoes = map[string]string{
	"rate-limiting":                  "the local_ratelimit filter, or the global rate limit filter with a rate limit service",
	"rate-limiting-advanced":         "the local_ratelimit filter, or the global rate limit filter with a rate limit service",
	"response-ratelimiting":          "the global rate limit filter with a rate limit service",
	"graphql-rate-limiting-advanced": "the global rate limit filter with a rate limit service",
	"key-auth":                       "the ext_authz filter (an auth service checks the key)",
	"basic-auth":                     "the ext_authz filter (an auth service checks the credentials)",
	"hmac-auth":                      "the ext_authz filter (an auth service checks the signature)",
	"ldap-auth":                      "the ext_authz filter (an auth service asks LDAP)",
	"jwt":                            "the jwt_authn filter",
	"openid-connect":                 "the oauth2 filter with jwt_authn, or ext_authz",
	"oauth2":                         "the oauth2 filter, or ext_authz",
	"oauth2-introspection":           "the ext_authz filter (an auth service introspects the token)",
	"session":                        "the oauth2 filter (its cookies), or ext_authz",
	"mtls-auth":                      "TLS client certificate validation on the listener, with RBAC on the certificate",
	"acl":                            "the RBAC filter, on the identity jwt_authn or ext_authz established",
	"ip-restriction":                 "the RBAC filter (remote_ip or direct_remote_ip principals)",
	"bot-detection":                  "the RBAC filter on the user-agent header",
	"prometheus":                     "Envoy's stats (/stats/prometheus), with sidecall's /metrics",
	"statsd":                         "a statsd stats sink, with sidecall's /metrics",
	"datadog":                        "a dog_statsd stats sink, with sidecall's /metrics",
	"opentelemetry":                  "Envoy's tracing (the OpenTelemetry tracer)",
	"zipkin":                         "Envoy's tracing (the Zipkin tracer)",
	"http-log":                       "access logs",
	"file-log":                       "access logs",
	"tcp-log":                        "access logs",
	"udp-log":                        "access logs",
	"syslog":                         "access logs",
	"proxy-cache":                    "the cache filter",
	"request-size-limiting":          "the buffer filter (max_request_bytes)",
	"request-termination":            "a route with direct_response",
	"redirect":                       "a route with a redirect action",
	"grpc-web":                       "the grpc_web filter",
	"grpc-gateway":                   "the grpc_json_transcoder filter",
	"aws-lambda":                     "the aws_lambda filter",
	"canary":                         "weighted clusters on the route",
	"route-by-header":                "header matching on the routes",
}

// unsupportedHint is what a plugin sidecall lacks leaves to Envoy.
func unsupportedHint(name string) string {
	if d, ok := envoyDoes[name]; ok {
		return "in Envoy, use " + d
	}
	return "in Envoy, use the equivalent filter"
}

// EnvoyEquivalents returns the table, sorted by plugin name: name and what
// does its job in Envoy.
func EnvoyEquivalents() [][2]string {
	out := make([][2]string, 0, len(envoyDoes))
	for k, v := range envoyDoes {
		out = append(out, [2]string{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}
