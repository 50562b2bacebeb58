package callout

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sidecall/sidecall/callout/cache"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/urlsafe"
	"gopkg.in/yaml.v3"
)

// Name and Priority are Kong's.
const (
	Name     = "request-callout"
	Priority = 812
)

// Options are what request-callout shares with the process running it.
type Options struct {
	// Metrics receives the plugin's collectors; nil keeps them unregistered.
	Metrics prometheus.Registerer
	// Version is sidecall's version, in the default User-Agent.
	Version string
	// SelfAddrs are sidecall's own listen addresses (host:port: the gRPC
	// and admin listeners). A callout url whose host or port comes from a
	// template never reaches them; ":port" and "0.0.0.0:port" stand for
	// loopback, localhost and every local interface address.
	SelfAddrs []string
}

// Register adds request-callout to r. Its metrics are made here, once per
// registry, and shared by every instance the registry builds.
func Register(r *flows.Registry, o Options) {
	f := newFactory(o)
	r.Register(Name, Priority, f.New)
}

// UserAgent is the User-Agent a callout sends unless it sets one.
func UserAgent(version string) string { return "sidecall/" + version + "/request-callout" }

// factory is what the instances of one registry share.
type factory struct {
	m    *metrics
	ua   string
	self *urlsafe.Self
}

func newFactory(o Options) *factory {
	v := o.Version
	if v == "" {
		v = "dev"
	}
	return &factory{m: newMetrics(o.Metrics), ua: UserAgent(v), self: urlsafe.NewSelf(o.SelfAddrs)}
}

type kv struct {
	name string
	t    *template // nil: remove
}

type callout struct {
	idx    int
	name   string
	cfg    CalloutConfig
	url    *template
	parsed *url.URL // the url parsed at load, when it is a literal
	// urlT is the url split by its written text (nil when it did not
	// compile); urlVals render its $(...) values, one template each.
	urlT     *urlsafe.Template
	urlVals  []*flows.Template
	hosts    *urlsafe.HostPolicy // request.allowed_hosts and Options.SelfAddrs
	headers  []kv
	query    []kv
	body     []kv
	reqLua   *flows.LuaChunk
	respLua  *flows.LuaChunk
	errMsg   *template
	onError  string
	retries  int
	statuses map[int]bool
	deps     []int
	opts     httpOpts        // http_opts
	tr       *http.Transport // for opts; set by Provision
	m        *series         // set by Provision
	warn     warnLimit       // failure lines
	res      resilience      // breaker and hedge; set by Provision
}

type upstream struct {
	cfg     UpstreamConfig
	headers []kv
	query   []kv
	body    []kv
	lua     *flows.LuaChunk
	noop    bool // forward everything, change nothing
}

// Plugin is one configured request-callout.
type Plugin struct {
	callouts    []*callout
	plan        plan
	up          upstream
	cacheCfg    CacheConfig
	cache       cache.Cache // nil: off; set by Provision
	ttl         time.Duration
	scope       flows.Scope
	timeout     time.Duration
	maxParallel int
	needsBody   bool
	respHeaders bool // some by_lua may set response headers
	params      bool // build Kong's request.params (something may read it)
	// partialHeader is partial_header ("" off); see partial.go.
	partialHeader string
	ua            string
	m             *metrics
	flight        cache.Flight

	extraMu sync.Mutex
	extra   map[httpOpts]*http.Transport // see transportFor
}

func (p *Plugin) Name() string  { return Name }
func (p *Plugin) Priority() int { return Priority }

// Needs asks for the request body when something reads or changes it, and
// for the response headers when a by_lua may set some: they are applied
// when the response arrives.
func (p *Plugin) Needs() flows.Needs {
	return flows.Needs{RequestBody: p.needsBody, ResponseHeaders: p.respHeaders, EarlyResponseHeaders: p.mayBePartial()}
}

// Provision builds the clients: each callout's transport, the cache, and
// the metric series. They are shared by key across routes and reloads.
func (p *Plugin) Provision(b *flows.Builder) error {
	for _, c := range p.callouts {
		c.m = p.m.newSeries(b.Scope.Route, c.name)
		tr, err := acquireTransport(b, c.opts)
		if err != nil {
			return fmt.Errorf("callout %q: %w", c.name, err)
		}
		c.tr = tr
		if err := p.provisionResilience(b, c); err != nil {
			return fmt.Errorf("callout %q: %w", c.name, err)
		}
	}
	b.OnClose(p.closeExtra)
	if p.cacheCfg.Strategy == "off" || p.cacheCfg.Strategy == "" {
		return nil
	}
	c, err := openCache(b, &p.cacheCfg)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	p.cache = c
	return nil
}

// openCache returns the shared cache for c. The memory cache's key holds
// the TTL too: bigcache's life window is fixed at creation.
func openCache(b *flows.Builder, c *CacheConfig) (cache.Cache, error) {
	var key string
	var mk func() (io.Closer, error)
	switch c.Strategy {
	case "memory":
		ttl := time.Duration(c.CacheTTL) * time.Second
		key = fmt.Sprintf("callout-memory|%d|%d", c.Memory.SizeMB, c.CacheTTL)
		mk = func() (io.Closer, error) { return cache.NewMemory(c.Memory.SizeMB, ttl) }
	case "redis":
		o := redisOptions(c.Redis)
		key = fmt.Sprintf("callout-redis|%+v", o)
		mk = func() (io.Closer, error) { return cache.NewRedis(o, "sidecall:callout:"), nil }
	default:
		return nil, nil
	}
	cl, err := b.Acquire(key, mk)
	if err != nil {
		return nil, err
	}
	return cl.(cache.Cache), nil
}

func redisOptions(r RedisConfig) cache.RedisOptions {
	if r.Timeout != nil && *r.Timeout > 0 {
		r.ConnectTimeout, r.SendTimeout, r.ReadTimeout = *r.Timeout, *r.Timeout, *r.Timeout
	}
	return cache.RedisOptions{Host: r.Host, Port: r.Port, Database: r.Database, Username: r.Username,
		Password: r.Password, SSL: r.SSL, SSLVerify: r.SSLVerify, ServerName: r.ServerName,
		ConnectTimeout: time.Duration(r.ConnectTimeout) * time.Millisecond,
		ReadTimeout:    time.Duration(r.ReadTimeout) * time.Millisecond,
		WriteTimeout:   time.Duration(r.SendTimeout) * time.Millisecond,
		PoolSize:       r.KeepalivePoolSize}
}

// New is the request-callout factory: it decodes, validates and compiles;
// clients are built by Provision.
func (f *factory) New(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
	return compile(b, raw, at, f)
}
