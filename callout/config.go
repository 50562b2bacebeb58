package callout

import (
	"net/url"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"
	"github.com/sidecall/sidecall/internal/urlsafe"
	"gopkg.in/yaml.v3"
)

// Config is request-callout's config: Kong 3.14's schema plus sidecall's
// own plugin options (concurrency, max_parallel, timeout).
type Config struct {
	Callouts    []CalloutConfig `yaml:"-"`
	RawCallouts []*yaml.Node    `yaml:"callouts"`
	Upstream    UpstreamConfig  `yaml:"upstream"`
	Cache       CacheConfig     `yaml:"cache"`

	// Concurrency is "parallel" (sidecall's default) or "sequential" (Kong's order).
	Concurrency string `yaml:"concurrency"`
	// MaxParallel limits callouts in flight at once for one request.
	MaxParallel int `yaml:"max_parallel"`
	// Timeout (ms) bounds the whole plugin run; keep it below Envoy's
	// ext_proc message_timeout.
	Timeout int `yaml:"timeout"`
	// PartialHeader is set to "false" on the client's response when a
	// callout failed under on_error continue; "" disables it.
	PartialHeader string `yaml:"partial_header"`
}

// CalloutConfig is one entry of config.callouts.
type CalloutConfig struct {
	Name      string          `yaml:"name"`
	DependsOn []string        `yaml:"depends_on"`
	Request   RequestConfig   `yaml:"request"`
	Response  ResponseConfig  `yaml:"response"`
	Cache     CalloutCacheCfg `yaml:"cache"`
}

// CalloutCacheCfg is callouts[].cache.
type CalloutCacheCfg struct {
	Bypass bool `yaml:"bypass"`
}

// RequestConfig is callouts[].request.
type RequestConfig struct {
	URL string `yaml:"url"`
	// AllowedHosts are the hosts a url whose host comes from a $(...)
	// template may reach: exact names or IP literals, or "*.suffix"
	// (sidecall's; see the package doc).
	AllowedHosts []string    `yaml:"allowed_hosts"`
	Method       string      `yaml:"method"`
	ByLua        string      `yaml:"by_lua"`
	Headers      CustomPart  `yaml:"headers"`
	Query        CustomPart  `yaml:"query"`
	Body         BodyPart    `yaml:"body"`
	HTTPOpts     HTTPOpts    `yaml:"http_opts"`
	Error        ErrorConfig `yaml:"error"`
	// CircuitBreaker, HedgeAfterMS and HedgeUnsafe are sidecall's (see
	// breaker.go, hedge.go).
	CircuitBreaker *BreakerConfig `yaml:"circuit_breaker"`
	HedgeAfterMS   int            `yaml:"hedge_after_ms"`
	HedgeUnsafe    bool           `yaml:"hedge_unsafe"`
}

// CustomPart is headers/query: forward plus custom values (nil removes).
type CustomPart struct {
	Forward bool               `yaml:"forward"`
	Custom  map[string]*string `yaml:"custom"`
}

// BodyPart is a body block: forward, decode, custom.
type BodyPart struct {
	Forward bool               `yaml:"forward"`
	Decode  bool               `yaml:"decode"`
	Custom  map[string]*string `yaml:"custom"`
}

// HTTPOpts is callouts[].request.http_opts.
type HTTPOpts struct {
	SSLVerify     bool        `yaml:"ssl_verify"`
	SSLServerName string      `yaml:"ssl_server_name"`
	Timeouts      Timeouts    `yaml:"timeouts"`
	Proxy         ProxyConfig `yaml:"proxy"`
}

// Timeouts are socket timeouts in ms; all three or none.
type Timeouts struct {
	Connect *int `yaml:"connect"`
	Read    *int `yaml:"read"`
	Write   *int `yaml:"write"`
}

// ProxyConfig is a forward proxy.
type ProxyConfig struct {
	HTTPProxy    string `yaml:"http_proxy"`
	HTTPSProxy   string `yaml:"https_proxy"`
	AuthUsername string `yaml:"auth_username"`
	AuthPassword string `yaml:"auth_password"`
}

// ErrorConfig is callouts[].request.error.
type ErrorConfig struct {
	OnError           string `yaml:"on_error"`
	HTTPStatuses      []int  `yaml:"http_statuses"`
	Retries           *int   `yaml:"retries"`
	ErrorResponseCode int    `yaml:"error_response_code"`
	ErrorResponseMsg  string `yaml:"error_response_msg"`
}

// ResponseConfig is callouts[].response.
type ResponseConfig struct {
	Headers struct {
		Store bool `yaml:"store"`
	} `yaml:"headers"`
	Body struct {
		Store  bool `yaml:"store"`
		Decode bool `yaml:"decode"`
	} `yaml:"body"`
	ByLua string `yaml:"by_lua"`
}

// UpstreamConfig is config.upstream.
type UpstreamConfig struct {
	Headers CustomPart `yaml:"headers"`
	Query   CustomPart `yaml:"query"`
	Body    BodyPart   `yaml:"body"`
	ByLua   string     `yaml:"by_lua"`
}

// CacheConfig is config.cache.
type CacheConfig struct {
	Strategy string      `yaml:"strategy"`
	CacheTTL int         `yaml:"cache_ttl"`
	Memory   MemoryCfg   `yaml:"memory"`
	Redis    RedisConfig `yaml:"redis"`
}

// MemoryCfg is config.cache.memory. dictionary_name is accepted for Kong
// compatibility and ignored; size_mb is sidecall's.
type MemoryCfg struct {
	DictionaryName string `yaml:"dictionary_name"`
	SizeMB         int    `yaml:"size_mb"`
}

// RedisConfig is Kong's standard Redis block.
type RedisConfig struct {
	Host                   string `yaml:"host"`
	Port                   int    `yaml:"port"`
	Timeout                *int   `yaml:"timeout"`
	ConnectTimeout         int    `yaml:"connect_timeout"`
	SendTimeout            int    `yaml:"send_timeout"`
	ReadTimeout            int    `yaml:"read_timeout"`
	Username               string `yaml:"username"`
	Password               string `yaml:"password"`
	SentinelUsername       string `yaml:"sentinel_username"`
	SentinelPassword       string `yaml:"sentinel_password"`
	Database               int    `yaml:"database"`
	KeepalivePoolSize      int    `yaml:"keepalive_pool_size"`
	KeepaliveBacklog       *int   `yaml:"keepalive_backlog"`
	SentinelMaster         string `yaml:"sentinel_master"`
	SentinelRole           string `yaml:"sentinel_role"`
	SentinelNodes          []any  `yaml:"sentinel_nodes"`
	ClusterNodes           []any  `yaml:"cluster_nodes"`
	ClusterMaxRedirections int    `yaml:"cluster_max_redirections"`
	SSL                    bool   `yaml:"ssl"`
	SSLVerify              bool   `yaml:"ssl_verify"`
	ServerName             string `yaml:"server_name"`
	ConnectionIsProxied    bool   `yaml:"connection_is_proxied"`
	CloudAuthentication    any    `yaml:"cloud_authentication"`
	// Deprecated by Kong, present as null in Konnect dumps.
	ClusterAddresses  []any `yaml:"cluster_addresses"`
	SentinelAddresses []any `yaml:"sentinel_addresses"`
}

const maxTimeout = 1<<31 - 2

func defaultConfig() Config {
	return Config{
		Upstream: UpstreamConfig{
			Headers: CustomPart{Forward: true},
			Query:   CustomPart{Forward: true},
			Body:    BodyPart{Forward: true, Decode: true},
		},
		Cache: CacheConfig{
			Strategy: "off",
			CacheTTL: 300,
			Memory:   MemoryCfg{DictionaryName: "kong_db_cache", SizeMB: 64},
			Redis: RedisConfig{Host: "127.0.0.1", Port: 6379, ConnectTimeout: 2000, SendTimeout: 2000,
				ReadTimeout: 2000, KeepalivePoolSize: 256, ClusterMaxRedirections: 5},
		},
		Concurrency:   "parallel",
		MaxParallel:   8,
		Timeout:       10000,
		PartialHeader: "X-Sidecall-Completed",
	}
}

// calloutDefaults are applied to each callouts[] entry before decoding it.
func calloutDefaults() CalloutConfig {
	c := CalloutConfig{}
	c.Request.Method = "GET"
	c.Request.HTTPOpts.SSLVerify = true
	c.Request.Error.ErrorResponseCode = 400
	c.Request.Error.ErrorResponseMsg = "service callout error"
	c.Response.Headers.Store = true
	c.Response.Body.Store = true
	return c
}

// validate reports every problem in c at its path.
func validate(b *flows.Builder, c *Config, at flows.Path) {
	cs := at.Key("callouts")
	if len(c.Callouts) == 0 {
		b.Errorf(cs, "at least one callout is required")
	}
	seen := map[string]int{}
	for i := range c.Callouts {
		co := &c.Callouts[i]
		p := cs.Index(i)
		if co.Name == "" {
			b.Errorf(p.Key("name"), "required field missing")
		} else if j, dup := seen[co.Name]; dup {
			b.Errorf(p.Key("name"), "duplicate callout name %q (also callouts[%d])", co.Name, j)
		} else {
			seen[co.Name] = i
		}
		r := &co.Request
		rp := p.Key("request")
		if r.URL == "" {
			b.Errorf(rp.Key("url"), "required field missing")
		} else if !strings.Contains(r.URL, "$(") {
			if u, err := url.Parse(r.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				b.Errorf(rp.Key("url"), "must be an http or https URL, got %q", redactIfSecret(b, rp.Key("url"), r.URL))
			}
		}
		for j, h := range r.AllowedHosts {
			if err := urlsafe.ValidAllowedHost(h); err != nil {
				b.Errorf(rp.Key("allowed_hosts").Index(j), "%v", err)
			}
		}
		if !httpx.ValidMethod(r.Method) {
			b.Errorf(rp.Key("method"), "must match ^[A-Z]+$, got %q", r.Method)
		}
		t := r.HTTPOpts.Timeouts
		tp := rp.Key("http_opts").Key("timeouts")
		n := 0
		for _, f := range []struct {
			v    *int
			name string
		}{{t.Connect, "connect"}, {t.Read, "read"}, {t.Write, "write"}} {
			if f.v == nil {
				continue
			}
			n++
			if *f.v < 0 || *f.v > maxTimeout {
				b.Errorf(tp.Key(f.name), "must be between 0 and %d, got %d", maxTimeout, *f.v)
			}
		}
		if n != 0 && n != 3 {
			b.Errorf(tp, "connect, read and write must be set together or not at all")
		}
		pp := rp.Key("http_opts").Key("proxy")
		for _, f := range []struct{ v, name string }{{r.HTTPOpts.Proxy.HTTPProxy, "http_proxy"}, {r.HTTPOpts.Proxy.HTTPSProxy, "https_proxy"}} {
			if f.v == "" {
				continue
			}
			if u, err := url.Parse(f.v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				b.Errorf(pp.Key(f.name), "must be an http or https URL")
			}
		}
		e := &r.Error
		ep := rp.Key("error")
		switch e.OnError {
		case "":
			// fail, or retry when retries is set (see onError)
		case "fail", "continue", "retry":
		default:
			b.Errorf(ep.Key("on_error"), "must be one of continue, fail, retry, got %q", e.OnError)
		}
		for j, s := range e.HTTPStatuses {
			if s < 100 || s > 999 {
				b.Errorf(ep.Key("http_statuses").Index(j), "must be between 100 and 999, got %d", s)
			}
		}
		if e.Retries != nil && (*e.Retries < 0 || *e.Retries > 100) {
			b.Errorf(ep.Key("retries"), "must be between 0 and 100, got %d", *e.Retries)
		}
		if e.ErrorResponseCode < 100 || e.ErrorResponseCode > 999 {
			b.Errorf(ep.Key("error_response_code"), "must be between 100 and 999, got %d", e.ErrorResponseCode)
		}
		validateResilience(b, r, rp)
	}
	for i := range c.Callouts {
		for j, d := range c.Callouts[i].DependsOn {
			if _, ok := seen[d]; !ok {
				b.Errorf(cs.Index(i).Key("depends_on").Index(j), "unknown callout %q", d)
			} else if d == c.Callouts[i].Name {
				b.Errorf(cs.Index(i).Key("depends_on").Index(j), "a callout cannot depend on itself")
			}
		}
	}
	switch c.Cache.Strategy {
	case "off", "memory", "redis":
	default:
		b.Errorf(at.Key("cache").Key("strategy"), "must be one of off, memory, redis, got %q", c.Cache.Strategy)
	}
	if c.Cache.CacheTTL <= 0 {
		b.Errorf(at.Key("cache").Key("cache_ttl"), "must be positive, got %d", c.Cache.CacheTTL)
	}
	if c.Cache.Memory.SizeMB <= 0 {
		b.Errorf(at.Key("cache").Key("memory").Key("size_mb"), "must be positive, got %d", c.Cache.Memory.SizeMB)
	}
	rd := &c.Cache.Redis
	rp := at.Key("cache").Key("redis")
	if c.Cache.Strategy == "redis" {
		if rd.Host == "" {
			b.Errorf(rp.Key("host"), "required when strategy is redis")
		}
		if rd.Port < 1 || rd.Port > 65535 {
			b.Errorf(rp.Key("port"), "must be between 1 and 65535, got %d", rd.Port)
		}
		if len(rd.SentinelNodes) > 0 {
			b.Errorf(rp.Key("sentinel_nodes"), "redis sentinel is not supported by sidecall")
		} else if rd.SentinelMaster != "" {
			b.Errorf(rp.Key("sentinel_master"), "redis sentinel is not supported by sidecall")
		}
		if len(rd.ClusterNodes) > 0 {
			b.Errorf(rp.Key("cluster_nodes"), "redis cluster is not supported by sidecall")
		}
		if len(rd.ClusterAddresses) > 0 {
			b.Errorf(rp.Key("cluster_addresses"), "redis cluster is not supported by sidecall")
		}
		if len(rd.SentinelAddresses) > 0 {
			b.Errorf(rp.Key("sentinel_addresses"), "redis sentinel is not supported by sidecall")
		}
		warnIgnoredRedis(b, rd, rp)
		if rd.CloudAuthentication != nil {
			b.Errorf(rp.Key("cloud_authentication"), "redis cloud authentication is not supported by sidecall")
		}
	}
	if c.Cache.Strategy == "memory" && c.Cache.Memory.DictionaryName != "kong_db_cache" {
		b.Warnf("%s: ignored: sidecall's memory cache is its own, per process (size_mb sizes it)", at.Key("cache").Key("memory").Key("dictionary_name"))
	}
	if !c.Upstream.Body.Decode {
		b.Warnf("%s: ignored: sidecall decodes a JSON body only to apply upstream.body.custom, and by_lua reads it with kong.request.get_body", at.Key("upstream").Key("body").Key("decode"))
	}
	switch c.Concurrency {
	case "parallel", "sequential":
	default:
		b.Errorf(at.Key("concurrency"), "must be parallel or sequential, got %q", c.Concurrency)
	}
	if c.MaxParallel < 1 || c.MaxParallel > 256 {
		b.Errorf(at.Key("max_parallel"), "must be between 1 and 256, got %d", c.MaxParallel)
	}
	if c.Timeout < 1 || c.Timeout > maxTimeout {
		b.Errorf(at.Key("timeout"), "must be between 1 and %d ms, got %d", maxTimeout, c.Timeout)
	}
	if c.PartialHeader != "" && !httpx.ValidHeaderName(c.PartialHeader) {
		b.Errorf(at.Key("partial_header"), "invalid header name %q", c.PartialHeader)
	}
}

// warnIgnoredRedis warns about the Redis settings of Kong's that change
// nothing in sidecall's client, when they differ from Kong's defaults.
func warnIgnoredRedis(b *flows.Builder, rd *RedisConfig, rp flows.Path) {
	if rd.KeepaliveBacklog != nil {
		b.Warnf("%s: ignored: sidecall's Redis pool does not queue for a connection (keepalive_pool_size sizes it)", rp.Key("keepalive_backlog"))
	}
	if rd.ConnectionIsProxied {
		b.Warnf("%s: ignored: sidecall talks to the Redis it is given, proxied or not", rp.Key("connection_is_proxied"))
	}
	if len(rd.SentinelNodes) == 0 {
		for _, f := range []struct{ v, name string }{{rd.SentinelUsername, "sentinel_username"}, {rd.SentinelPassword, "sentinel_password"}, {rd.SentinelRole, "sentinel_role"}} {
			if f.v != "" {
				b.Warnf("%s: ignored: no sentinel_nodes are set", rp.Key(f.name))
			}
		}
	}
	if len(rd.ClusterNodes) == 0 && rd.ClusterMaxRedirections != 5 {
		b.Warnf("%s: ignored: no cluster_nodes are set", rp.Key("cluster_max_redirections"))
	}
}

func redactIfSecret(b *flows.Builder, at flows.Path, s string) string {
	if b.IsSecret(at) {
		return "<secret>"
	}
	return s
}

// onError returns the effective policy: retries without on_error means
// retry.
func (e *ErrorConfig) onError() string {
	if e.OnError != "" {
		return e.OnError
	}
	if e.Retries != nil {
		return "retry"
	}
	return "fail"
}

func (e *ErrorConfig) retries() int {
	if e.Retries != nil {
		return *e.Retries
	}
	return 2
}
