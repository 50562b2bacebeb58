package flows

import "gopkg.in/yaml.v3"

// Config is a Kong decK-style file: services, routes and plugins.
type Config struct {
	FormatVersion string          `yaml:"_format_version"`
	Transform     *bool           `yaml:"_transform"`
	Info          yaml.Node       `yaml:"_info"`
	Workspace     string          `yaml:"_workspace"`
	Services      []ServiceConfig `yaml:"services"`
	Routes        []RouteConfig   `yaml:"routes"`
	Plugins       []PluginConfig  `yaml:"plugins"`
	// CACertificates are Kong's ca_certificates entities, for the services'
	// ca_certificates (see cacerts.go).
	CACertificates []CACertificateConfig `yaml:"ca_certificates"`
}

// ignoredSections are Kong entities sidecall does not use: one warning each.
var ignoredSections = []string{"consumers", "consumer_groups", "upstreams", "targets", "certificates",
	"snis", "keys", "key_sets", "partials", "filter_chains", "licenses",
	"rbac_roles", "workspaces", "custom_entities"}

// ServiceConfig is a Kong service. Durations are milliseconds, as in Kong.
type ServiceConfig struct {
	ID             string         `yaml:"id"`
	Name           string         `yaml:"name"`
	URL            string         `yaml:"url"`
	Protocol       string         `yaml:"protocol"`
	Host           string         `yaml:"host"`
	Port           int            `yaml:"port"`
	Path           string         `yaml:"path"`
	Retries        int            `yaml:"retries"`
	ConnectTimeout int            `yaml:"connect_timeout"`
	WriteTimeout   int            `yaml:"write_timeout"`
	ReadTimeout    int            `yaml:"read_timeout"`
	TLSVerify      *bool          `yaml:"tls_verify"`
	TLSVerifyDepth *int           `yaml:"tls_verify_depth"`
	CACertificates []string       `yaml:"ca_certificates"`
	Enabled        *bool          `yaml:"enabled"`
	Tags           []string       `yaml:"tags"`
	Routes         []RouteConfig  `yaml:"routes"`
	Plugins        []PluginConfig `yaml:"plugins"`

	tls *ServiceTLS // resolved tls_verify, tls_verify_depth and ca_certificates (Service.TLS)
}

// RouteConfig is a Kong route.
type RouteConfig struct {
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
}

// EntityRef names another entity ("service: orders" or "service: {name: orders}").
type EntityRef struct {
	Name string
}

// UnmarshalYAML accepts a plain name or {name|id: ...}.
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
	r.Name = m.Name
	if r.Name == "" {
		r.Name = m.ID
	}
	return nil
}

// PluginConfig is a Kong plugin entry. Config stays raw for the factory.
type PluginConfig struct {
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
}

// Ordering is Kong's dynamic plugin ordering (phase → plugin names).
type Ordering struct {
	Before map[string][]string `yaml:"before"`
	After  map[string][]string `yaml:"after"`
}
