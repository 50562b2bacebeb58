package callout

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sidecall/sidecall/callout/cache"
	"github.com/sidecall/sidecall/flows"
	"gopkg.in/yaml.v3"
)

// Name and Priority are Kong's.
const (
	Name     = "request-callout"
	Priority = 812
)

// Version is the product version in the default User-Agent
// (sidecall/<Version>/request-callout); cmd sets it.
var Version = "dev"

// Register adds request-callout to r.
func Register(r *flows.Registry) { r.Register(Name, Priority, New) }

// defaultEngine compiles templates and Lua (see script.go).
var defaultEngine engine = flowsEngine{}

// New is the request-callout factory.
func New(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
	return newWith(b, raw, at, defaultEngine)
}

type kv struct {
	name string
	t    template // nil: remove
}

type callout struct {
	idx      int
	name     string
	cfg      CalloutConfig
	url      template
	headers  []kv
	query    []kv
	body     []kv
	reqLua   script
	respLua  script
	errMsg   template
	onError  string
	retries  int
	statuses map[int]bool
	deps     []int
	// cache hit/miss counters, resolved on first use
	mHit, mMiss atomic.Pointer[prometheus.Counter]
	parsed      atomic.Pointer[parsedURL] // the literal url, parsed
	ua          atomic.Pointer[string]    // default User-Agent
}

// counter returns mCache's series for result, resolving it once into *at.
func (c *callout) counter(at *atomic.Pointer[prometheus.Counter], result string) prometheus.Counter {
	if m := at.Load(); m != nil {
		return *m
	}
	m := mCache.WithLabelValues(c.name, result)
	at.Store(&m)
	return m
}

type upstream struct {
	cfg     UpstreamConfig
	headers []kv
	query   []kv
	body    []kv
	lua     script
	noop    bool // forward everything, change nothing
}

// Plugin is one configured request-callout.
type Plugin struct {
	callouts    []*callout
	waves       [][]int
	up          upstream
	cache       cache.Cache // nil: off
	ttl         time.Duration
	res         *flows.Resources
	scope       flows.Scope
	timeout     time.Duration
	maxParallel int
	needsBody   bool
}

func (p *Plugin) Name() string       { return Name }
func (p *Plugin) Priority() int      { return Priority }
func (p *Plugin) Needs() flows.Needs { return flows.Needs{RequestBody: p.needsBody} }
func (p *Plugin) waveCount() int     { return len(p.waves) }
func (p *Plugin) calloutNames() []string {
	ns := make([]string, len(p.callouts))
	for i, c := range p.callouts {
		ns[i] = c.name
	}
	return ns
}

func newWith(b *flows.Builder, raw *yaml.Node, at flows.Path, eng engine) (flows.Plugin, error) {
	cfg := defaultConfig()
	b.Decode(raw, at, &cfg)
	defer func() {
		if !b.Failed() {
			for _, c := range cfg.Callouts {
				initSeries(c.Name)
			}
		}
	}()
	cs := at.Key("callouts")
	for i, n := range cfg.RawCallouts {
		c := calloutDefaults()
		if n != nil {
			b.Decode(n, cs.Index(i), &c)
		}
		cfg.Callouts = append(cfg.Callouts, c)
	}
	validate(b, &cfg, at)

	res := b.Resources
	if res == nil {
		res = flows.NewResources()
		b.OnClose(func() { _ = res.Close() })
	}
	p := &Plugin{res: res, scope: b.Scope, timeout: time.Duration(cfg.Timeout) * time.Millisecond,
		maxParallel: cfg.MaxParallel, ttl: time.Duration(cfg.Cache.CacheTTL) * time.Second}

	index := map[string]int{}
	for i, c := range cfg.Callouts {
		if _, dup := index[c.Name]; !dup && c.Name != "" {
			index[c.Name] = i
		}
	}
	bodyNeeded := false
	for i, cc := range cfg.Callouts {
		ca := cs.Index(i)
		rp := ca.Key("request")
		c := &callout{idx: i, name: cc.Name, cfg: cc, onError: cc.Request.Error.onError(),
			retries: cc.Request.Error.retries(), statuses: map[int]bool{}}
		for _, s := range cc.Request.Error.HTTPStatuses {
			c.statuses[s] = true
		}
		var refs []template
		var luas []script
		c.url = compileTemplate(b, eng, cc.Request.URL, rp.Key("url"))
		refs = append(refs, c.url)
		c.headers = compileKV(b, eng, cc.Request.Headers.Custom, rp.Key("headers").Key("custom"), true, &refs)
		c.query = compileKV(b, eng, cc.Request.Query.Custom, rp.Key("query").Key("custom"), false, &refs)
		c.body = compileKV(b, eng, cc.Request.Body.Custom, rp.Key("body").Key("custom"), false, &refs)
		c.errMsg = compileTemplate(b, eng, cc.Request.Error.ErrorResponseMsg, rp.Key("error").Key("error_response_msg"))
		refs = append(refs, c.errMsg)
		if cc.Request.ByLua != "" {
			c.reqLua = eng.Lua(b, cc.Request.ByLua, rp.Key("by_lua"))
			luas = append(luas, c.reqLua)
		}
		if cc.Response.ByLua != "" {
			c.respLua = eng.Lua(b, cc.Response.ByLua, ca.Key("response").Key("by_lua"))
			luas = append(luas, c.respLua)
		}
		if cc.Request.Body.Forward {
			bodyNeeded = true
		}
		// Dependencies: depends_on, then callouts.<name> references.
		dep := map[int]bool{}
		for _, d := range cc.DependsOn {
			if j, ok := index[d]; ok && j != i {
				dep[j] = true
			}
		}
		dynamic := false
		addRefs := func(names []string, dyn bool) {
			for _, n := range names {
				if j, ok := index[n]; ok && j != i {
					dep[j] = true
				}
			}
			dynamic = dynamic || dyn
		}
		for _, t := range refs {
			if t != nil {
				addRefs(t.Callouts(), t.Dynamic())
			}
		}
		for _, s := range luas {
			if s != nil {
				addRefs(s.Callouts(), s.Dynamic())
			}
		}
		if dynamic {
			for j := 0; j < i; j++ {
				dep[j] = true
			}
		}
		for j := range dep {
			c.deps = append(c.deps, j)
		}
		sort.Ints(c.deps)
		p.callouts = append(p.callouts, c)
	}
	up := at.Key("upstream")
	p.up.cfg = cfg.Upstream
	var ignored []template
	p.up.headers = compileKV(b, eng, cfg.Upstream.Headers.Custom, up.Key("headers").Key("custom"), true, &ignored)
	p.up.query = compileKV(b, eng, cfg.Upstream.Query.Custom, up.Key("query").Key("custom"), false, &ignored)
	p.up.body = compileKV(b, eng, cfg.Upstream.Body.Custom, up.Key("body").Key("custom"), false, &ignored)
	if cfg.Upstream.ByLua != "" {
		p.up.lua = eng.Lua(b, cfg.Upstream.ByLua, up.Key("by_lua"))
	}
	p.up.noop = cfg.Upstream.Headers.Forward && cfg.Upstream.Query.Forward && cfg.Upstream.Body.Forward &&
		len(cfg.Upstream.Headers.Custom) == 0 && len(cfg.Upstream.Query.Custom) == 0 &&
		len(cfg.Upstream.Body.Custom) == 0 && cfg.Upstream.ByLua == ""
	if len(cfg.Upstream.Body.Custom) > 0 || !cfg.Upstream.Body.Forward {
		bodyNeeded = true
	}
	// Lua and templates that read or write the body need it buffered.
	if mentionsBody(cfg) {
		bodyNeeded = true
	}
	p.needsBody = bodyNeeded

	if !b.Failed() {
		names := p.calloutNames()
		deps := make([][]int, len(p.callouts))
		for i, c := range p.callouts {
			deps[i] = c.deps
		}
		w, err := waves(names, deps, cfg.Concurrency == "sequential")
		if err != nil {
			b.Errorf(cs, "%v", err)
		}
		p.waves = w
	}

	if cfg.Cache.Strategy != "off" && !b.Failed() {
		c, err := openCache(res, &cfg.Cache)
		if err != nil {
			b.Errorf(at.Key("cache"), "%v", err)
		}
		p.cache = c
	}
	return p, nil
}

func compileKV(b *flows.Builder, eng engine, m map[string]*string, at flows.Path, header bool, refs *[]template) []kv {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]kv, 0, len(keys))
	for _, k := range keys {
		if header && !validHeaderName(k) {
			b.Errorf(at.Key(k), "invalid header name %q", k)
			continue
		}
		v := m[k]
		if v == nil {
			out = append(out, kv{name: k})
			continue
		}
		t := compileTemplate(b, eng, *v, at.Key(k))
		if t == nil {
			continue
		}
		*refs = append(*refs, t)
		out = append(out, kv{name: k, t: t})
	}
	return out
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// mentionsBody is a cheap scan: Lua or templates that use the request
// body PDK calls need the body buffered by Envoy.
func mentionsBody(cfg Config) bool {
	srcs := []string{cfg.Upstream.ByLua}
	for _, c := range cfg.Callouts {
		srcs = append(srcs, c.Request.ByLua, c.Response.ByLua, c.Request.URL)
		for _, m := range []map[string]*string{c.Request.Headers.Custom, c.Request.Query.Custom, c.Request.Body.Custom} {
			for _, v := range m {
				if v != nil {
					srcs = append(srcs, *v)
				}
			}
		}
	}
	for _, m := range []map[string]*string{cfg.Upstream.Headers.Custom, cfg.Upstream.Query.Custom} {
		for _, v := range m {
			if v != nil {
				srcs = append(srcs, *v)
			}
		}
	}
	for _, s := range srcs {
		if strings.Contains(s, "get_body") || strings.Contains(s, "get_raw_body") ||
			strings.Contains(s, "set_body") || strings.Contains(s, "set_raw_body") {
			return true
		}
	}
	return false
}

func openCache(res *flows.Resources, c *CacheConfig) (cache.Cache, error) {
	switch c.Strategy {
	case "memory":
		ttl := time.Duration(c.CacheTTL) * time.Second
		key := fmt.Sprintf("callout-memory|%d|%d", c.Memory.SizeMB, c.CacheTTL)
		cl, err := res.Get(key, func() (io.Closer, error) { return cache.NewMemory(c.Memory.SizeMB, ttl) })
		if err != nil {
			return nil, err
		}
		return cl.(cache.Cache), nil
	case "redis":
		r := c.Redis
		if r.Timeout != nil && *r.Timeout > 0 {
			r.ConnectTimeout, r.SendTimeout, r.ReadTimeout = *r.Timeout, *r.Timeout, *r.Timeout
		}
		o := cache.RedisOptions{Host: r.Host, Port: r.Port, Database: r.Database, Username: r.Username,
			Password: r.Password, SSL: r.SSL, SSLVerify: r.SSLVerify, ServerName: r.ServerName,
			ConnectTimeout: time.Duration(r.ConnectTimeout) * time.Millisecond,
			ReadTimeout:    time.Duration(r.ReadTimeout) * time.Millisecond,
			WriteTimeout:   time.Duration(r.SendTimeout) * time.Millisecond,
			PoolSize:       r.KeepalivePoolSize}
		key := fmt.Sprintf("callout-redis|%+v", o)
		cl, err := res.Get(key, func() (io.Closer, error) { return cache.NewRedis(o, "sidecall:callout:"), nil })
		if err != nil {
			return nil, err
		}
		return cl.(cache.Cache), nil
	}
	return nil, nil
}
