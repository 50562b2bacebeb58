package flows

import (
	"strconv"

	"gopkg.in/yaml.v3"
)

// Config is a Kong decK-style file: services, routes and plugins.
// _info, _workspace and _konnect are taken out before decoding (see
// metaSections).
type Config struct {
	FormatVersion string          `yaml:"_format_version"`
	Transform     *bool           `yaml:"_transform"`
	Services      []ServiceConfig `yaml:"services"`
	Routes        []RouteConfig   `yaml:"routes"`
	Plugins       []PluginConfig  `yaml:"plugins"`
	// CACertificates are Kong's ca_certificates entities, for the services'
	// ca_certificates (see cacerts.go).
	CACertificates []CACertificateConfig `yaml:"ca_certificates"`
}

// ignoredSections are Kong entities sidecall does not use: one warning
// each, saying what the section is and what does its job in Envoy.
var ignoredSections = map[string]string{
	"consumers":        "sidecall has no consumers (authentication belongs to Envoy: jwt_authn, ext_authz)",
	"consumer_groups":  "consumer groups tier plugin settings per consumer, and sidecall has no consumers: in Envoy, authenticate with jwt_authn or ext_authz and split on the identity with RBAC or per-route config",
	"upstreams":        "Kong's load balancers: in Envoy, the service's cluster (endpoints, lb_policy, health_checks)",
	"targets":          "the upstreams' targets: in Envoy, the cluster's endpoints",
	"certificates":     "the TLS certificates Kong serves: in Envoy, the listener's DownstreamTlsContext tls_certificates (sidecall reads one only as a service's client_certificate)",
	"snis":             "server names mapped to certificates: in Envoy, filter_chain_match server_names with a TLS context per filter chain",
	"keys":             "JWK and PEM keys for Kong plugins: in Envoy, jwt_authn's local_jwks or remote_jwks, or secrets over SDS",
	"key_sets":         "sets of Kong keys: in Envoy, jwt_authn's local_jwks or remote_jwks",
	"partials":         "shared plugin settings (redis); a plugin using them is refused unless disabled",
	"filter_chains":    "Wasm filter chains: Envoy runs Wasm filters itself (the envoy.filters.http.wasm filter)",
	"licenses":         "Kong Enterprise licenses: nothing in Envoy needs one",
	"rbac_roles":       "Kong Admin API roles, not proxy traffic: nothing to do in Envoy",
	"workspaces":       "Kong workspaces: sidecall loads one file as one workspace",
	"custom_entities":  "entities of Kong plugins (degraphql_routes...): used only by plugins sidecall does not run",
	"cloned_plugins":   "Kong Enterprise plugin clones (a plugin under another name and priority): in Envoy, a second instance of the filter that does the original plugin's job",
	"custom_plugins":   "Konnect custom plugins (Lua streamed to the gateway): sidecall does not run custom plugins; port the code to pre-function/post-function, or to an Envoy Lua or Wasm filter",
	"ai_models":        "Kong AI Gateway models: sidecall has no AI plugins; in Envoy, route to the model providers with Envoy AI Gateway or an ext_proc service",
	"parameters":       "Kong's internal parameters (cluster_id) from a database export: nothing to configure in Envoy",
	"service_packages": "Konnect's API catalog: nothing to configure in Envoy",
}

// credentialSections are consumers' credentials, which decK may also write
// at the top level; like consumers they are ignored with a warning.
var credentialSections = []string{"jwt_secrets", "acls", "basicauth_credentials", "keyauth_credentials",
	"hmacauth_credentials", "oauth2_credentials", "mtls_auth_credentials"}

// metaSections are decK's file metadata: accepted, with what sidecall
// does not do about them.
var metaSections = map[string]string{
	"_konnect":   "_konnect selects a Konnect control plane for decK; sidecall ignores it",
	"_info":      "_info (select_tags, defaults) is decK's; sidecall ignores it: the file is loaded as written",
	"_workspace": "_workspace is ignored: sidecall has no workspaces",
}

// EntityMeta are the keys Kong allows on any entity and ignores: decK's
// _comment and _ignore, and the timestamps and workspace id of Admin API
// exports.
type EntityMeta struct {
	Comment   *yaml.Node `yaml:"_comment"`
	Ignore    *yaml.Node `yaml:"_ignore"`
	CreatedAt *yaml.Node `yaml:"created_at"`
	UpdatedAt *yaml.Node `yaml:"updated_at"`
	WSID      *yaml.Node `yaml:"ws_id"`
}

// ServiceConfig is a Kong service. Durations are milliseconds, as in Kong.
type ServiceConfig struct {
	EntityMeta     `yaml:",inline"`
	ID             string   `yaml:"id"`
	Name           string   `yaml:"name"`
	URL            string   `yaml:"url"`
	Protocol       string   `yaml:"protocol"`
	Host           string   `yaml:"host"`
	Port           int      `yaml:"port"`
	Path           string   `yaml:"path"`
	Retries        int      `yaml:"retries"`
	ConnectTimeout int      `yaml:"connect_timeout"`
	WriteTimeout   int      `yaml:"write_timeout"`
	ReadTimeout    int      `yaml:"read_timeout"`
	TLSVerify      *bool    `yaml:"tls_verify"`
	TLSVerifyDepth *int     `yaml:"tls_verify_depth"`
	CACertificates []string `yaml:"ca_certificates"`
	// ClientCertificate names a certificates entity (by id): presented when
	// sidecall calls the service itself (flow-callout); see cacerts.go.
	ClientCertificate *EntityRef `yaml:"client_certificate"`
	// TLSSANs and FilterChains are read only to warn (Envoy's job).
	TLSSANs      *yaml.Node     `yaml:"tls_sans"`
	FilterChains *yaml.Node     `yaml:"filter_chains"`
	Enabled      *bool          `yaml:"enabled"`
	Tags         []string       `yaml:"tags"`
	Routes       []RouteConfig  `yaml:"routes"`
	Plugins      []PluginConfig `yaml:"plugins"`

	tls *ServiceTLS // resolved tls_verify, tls_verify_depth and ca_certificates (Service.TLS)
}

// RouteConfig is a Kong route.
type RouteConfig struct {
	EntityMeta              `yaml:",inline"`
	ID                      string              `yaml:"id"`
	Name                    string              `yaml:"name"`
	Service                 *EntityRef          `yaml:"service"` // top-level routes only
	Protocols               []string            `yaml:"protocols"`
	Methods                 []string            `yaml:"methods"`
	Hosts                   []string            `yaml:"hosts"`
	Paths                   []string            `yaml:"paths"`
	Headers                 map[string][]string `yaml:"headers"`
	StripPath               *bool               `yaml:"strip_path"`
	PreserveHost            *bool               `yaml:"preserve_host"`
	RegexPriority           int                 `yaml:"regex_priority"`
	PathHandling            string              `yaml:"path_handling"`
	HTTPSRedirectStatusCode int                 `yaml:"https_redirect_status_code"`
	RequestBuffering        *bool               `yaml:"request_buffering"`
	ResponseBuffering       *bool               `yaml:"response_buffering"`
	Tags                    []string            `yaml:"tags"`
	Plugins                 []PluginConfig      `yaml:"plugins"`

	// Read only to warn (snis) or refuse (sources, destinations: Kong's
	// stream routes); see upstream.go.
	SNIs         []string    `yaml:"snis"`
	Sources      []yaml.Node `yaml:"sources"`
	Destinations []yaml.Node `yaml:"destinations"`
	FilterChains *yaml.Node  `yaml:"filter_chains"` // warned: Envoy runs Wasm filters
}

// EntityRef names another entity by name or id: "service: orders",
// "service: {name: orders}", "service: {id: UUID}" or a plain UUID (Admin
// API exports).
type EntityRef struct {
	Name string // a plain string is either: looked up by name, then by id
	ID   string
}

// UnmarshalYAML accepts a plain name or id, or {name: ...}, {id: ...}.
func (r *EntityRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		r.Name = n.Value
		return nil
	}
	var m struct {
		Name string `yaml:"name"`
		ID   string `yaml:"id"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	r.Name, r.ID = m.Name, m.ID
	return nil
}

// String is how messages name the reference: named "x" or with id "x".
func (r *EntityRef) String() string {
	if r.Name == "" {
		return "with id " + strconv.Quote(r.ID)
	}
	return "named " + strconv.Quote(r.Name)
}

// PluginConfig is a Kong plugin entry. Config stays raw for the factory.
type PluginConfig struct {
	EntityMeta   `yaml:",inline"`
	ID           string     `yaml:"id"`
	Name         string     `yaml:"name"`
	InstanceName string     `yaml:"instance_name"`
	Enabled      *bool      `yaml:"enabled"`
	Config       *yaml.Node `yaml:"config"`
	Route        *EntityRef `yaml:"route"`
	Service      *EntityRef `yaml:"service"`
	Consumer     *EntityRef `yaml:"consumer"`
	Protocols    []string   `yaml:"protocols"`
	Tags         []string   `yaml:"tags"`
	Ordering     *Ordering  `yaml:"ordering"`
	// Partials are Kong's shared settings (redis); refused on an enabled
	// plugin, kept on a disabled one.
	Partials *yaml.Node `yaml:"partials"`
	// ConfigSource is decK's _config: a _plugin_configs entry merged under
	// Config.
	ConfigSource string `yaml:"_config"`
	// Condition (Kong 3.12) and ConsumerGroup are refused on a plugin that
	// would run: sidecall can evaluate neither.
	Condition     string     `yaml:"condition"`
	ConsumerGroup *EntityRef `yaml:"consumer_group"`
}

// Ordering is Kong's dynamic plugin ordering (phase → plugin names).
type Ordering struct {
	Before map[string][]string `yaml:"before"`
	After  map[string][]string `yaml:"after"`
}
