package callout

import (
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"
	"github.com/sidecall/sidecall/internal/urlsafe"
	"gopkg.in/yaml.v3"
)

// compile decodes, validates and compiles one request-callout config.
func compile(b *flows.Builder, raw *yaml.Node, at flows.Path, f *factory) (*Plugin, error) {
	cfg := defaultConfig()
	b.Decode(raw, at, &cfg)
	cs := at.Key("callouts")
	for i, n := range cfg.RawCallouts {
		c := calloutDefaults()
		if n != nil {
			b.Decode(n, cs.Index(i), &c)
		}
		cfg.Callouts = append(cfg.Callouts, c)
	}
	validate(b, &cfg, at)

	p := &Plugin{scope: b.Scope, timeout: time.Duration(cfg.Timeout) * time.Millisecond,
		maxParallel: cfg.MaxParallel, ttl: time.Duration(cfg.Cache.CacheTTL) * time.Second,
		cacheCfg: cfg.Cache, ua: f.ua, m: f.m, partialHeader: cfg.PartialHeader}

	index := map[string]int{}
	for i, c := range cfg.Callouts {
		if _, dup := index[c.Name]; !dup && c.Name != "" {
			index[c.Name] = i
		}
	}
	var templates []*template // every template of the plugin
	var luas []*flows.LuaChunk
	for i, cc := range cfg.Callouts {
		c, refs, chunks := compileCallout(b, i, cc, cs.Index(i), f.self)
		c.deps = dependencies(i, cc.DependsOn, index, refs, chunks)
		p.callouts = append(p.callouts, c)
		templates = append(templates, refs...)
		luas = append(luas, chunks...)
	}
	up := at.Key("upstream")
	p.up.cfg = cfg.Upstream
	p.up.headers = compileKV(b, cfg.Upstream.Headers.Custom, up.Key("headers").Key("custom"), true, &templates)
	p.up.query = compileKV(b, cfg.Upstream.Query.Custom, up.Key("query").Key("custom"), false, &templates)
	p.up.body = compileKV(b, cfg.Upstream.Body.Custom, up.Key("body").Key("custom"), false, &templates)
	if cfg.Upstream.ByLua != "" {
		p.up.lua = b.Lua(cfg.Upstream.ByLua, up.Key("by_lua"))
		luas = append(luas, p.up.lua)
	}
	p.up.noop = cfg.Upstream.Headers.Forward && cfg.Upstream.Query.Forward && cfg.Upstream.Body.Forward &&
		len(cfg.Upstream.Headers.Custom) == 0 && len(cfg.Upstream.Query.Custom) == 0 &&
		len(cfg.Upstream.Body.Custom) == 0 && cfg.Upstream.ByLua == ""

	for _, c := range cfg.Callouts {
		p.needsBody = p.needsBody || c.Request.Body.Forward
	}
	p.needsBody = p.needsBody || len(cfg.Upstream.Body.Custom) > 0 || !cfg.Upstream.Body.Forward || mentionsBody(cfg)
	for _, l := range luas {
		p.respHeaders = p.respHeaders || l.SetsResponseHeaders()
	}
	// Kong's request.params is built only when something may read it: any
	// by_lua, a template reading a callout's request, or another plugin of
	// the file that mentions the callouts.
	p.params = len(luas) > 0 || othersReadCallouts(b.Config)
	for _, t := range templates {
		p.params = p.params || t.readsRequest()
	}
	checkCalloutNames(b, index, templates, luas)

	if !b.Failed() {
		names := make([]string, len(p.callouts))
		deps := make([][]int, len(p.callouts))
		for i, c := range p.callouts {
			names[i], deps[i] = c.name, c.deps
		}
		pl, err := newPlan(names, deps, cfg.Concurrency == "sequential")
		if err != nil {
			b.Errorf(cs, "%v", err)
		}
		p.plan = pl
	}
	return p, nil
}

// checkCalloutNames refuses a template reading callouts.<name> the plugin
// does not have: indexing its nil result fails every request. Lua often
// tests for a callout (if callouts.x then), so there it is a warning.
func checkCalloutNames(b *flows.Builder, index map[string]int, templates []*template, luas []*flows.LuaChunk) {
	have := make([]string, 0, len(index))
	for n := range index {
		have = append(have, n)
	}
	sort.Strings(have)
	list := strings.Join(have, ", ")
	for _, t := range templates {
		if t.t == nil {
			continue
		}
		for _, n := range t.t.Callouts() {
			if _, ok := index[n]; !ok {
				b.Errorf(t.t.Path(), "$(...) reads callouts.%s, but this plugin has no callout named %q (it has: %s)", n, n, list)
			}
		}
	}
	for _, l := range luas {
		if l == nil {
			continue
		}
		for _, n := range l.Callouts() {
			if _, ok := index[n]; !ok {
				b.WarnAt(l.Path(), "reads callouts.%s, but this plugin has no callout named %q (it has: %s)", n, n, list)
			}
		}
	}
}

// compileCallout compiles callouts[i]; it returns the callout's templates
// and Lua chunks (for dependencies).
func compileCallout(b *flows.Builder, i int, cc CalloutConfig, at flows.Path, self *urlsafe.Self) (*callout, []*template, []*flows.LuaChunk) {
	rp := at.Key("request")
	c := &callout{idx: i, name: cc.Name, cfg: cc, onError: cc.Request.Error.onError(),
		retries: cc.Request.Error.retries(), statuses: map[int]bool{}, opts: optsOf(cc.Request.HTTPOpts)}
	for _, s := range cc.Request.Error.HTTPStatuses {
		c.statuses[s] = true
	}
	var refs []*template
	var luas []*flows.LuaChunk
	c.url = compileTemplate(b, cc.Request.URL, rp.Key("url"))
	if c.url != nil {
		refs = append(refs, c.url)
		if c.url.literal() {
			if u, err := url.Parse(c.url.lit); err == nil {
				c.parsed = u
			}
		}
		compileURL(b, c, cc.Request, rp, self)
	}
	c.headers = compileKV(b, cc.Request.Headers.Custom, rp.Key("headers").Key("custom"), true, &refs)
	c.query = compileKV(b, cc.Request.Query.Custom, rp.Key("query").Key("custom"), false, &refs)
	c.body = compileKV(b, cc.Request.Body.Custom, rp.Key("body").Key("custom"), false, &refs)
	c.errMsg = compileTemplate(b, cc.Request.Error.ErrorResponseMsg, rp.Key("error").Key("error_response_msg"))
	if c.errMsg != nil {
		refs = append(refs, c.errMsg)
	}
	if cc.Request.ByLua != "" {
		if c.reqLua = b.Lua(cc.Request.ByLua, rp.Key("by_lua")); c.reqLua != nil {
			luas = append(luas, c.reqLua)
		}
	}
	if cc.Response.ByLua != "" {
		if c.respLua = b.Lua(cc.Response.ByLua, at.Key("response").Key("by_lua")); c.respLua != nil {
			luas = append(luas, c.respLua)
		}
	}
	return c, refs, luas
}

// dependencies are callout i's: depends_on, every callouts.<name> its
// templates and Lua read, and every earlier callout when one of them reads
// the callouts table in a way whose names cannot be known.
func dependencies(i int, dependsOn []string, index map[string]int, refs []*template, luas []*flows.LuaChunk) []int {
	dep := map[int]bool{}
	add := func(names []string) {
		for _, n := range names {
			if j, ok := index[n]; ok && j != i {
				dep[j] = true
			}
		}
	}
	add(dependsOn)
	dynamic := false
	for _, t := range refs {
		add(t.callouts())
		dynamic = dynamic || t.dynamic()
	}
	for _, l := range luas {
		add(l.Callouts())
		dynamic = dynamic || l.ReadsCalloutsDynamically()
	}
	if dynamic {
		for j := 0; j < i; j++ {
			dep[j] = true
		}
	}
	out := make([]int, 0, len(dep))
	for j := range dep {
		out = append(out, j)
	}
	sort.Ints(out)
	return out
}

// compileKV compiles a custom block in name order; a nil value removes.
func compileKV(b *flows.Builder, m map[string]*string, at flows.Path, header bool, refs *[]*template) []kv {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]kv, 0, len(keys))
	for _, k := range keys {
		if header && !httpx.ValidHeaderName(k) {
			b.Errorf(at.Key(k), "invalid header name %q", k)
			continue
		}
		v := m[k]
		if header && v != nil && !strings.Contains(*v, "$(") && urlsafe.HasCTL(*v, true) {
			b.Errorf(at.Key(k), "a header value cannot hold control characters (CR, LF, NUL...)")
			continue
		}
		if v == nil {
			out = append(out, kv{name: k})
			continue
		}
		t := compileTemplate(b, *v, at.Key(k))
		if t == nil {
			continue
		}
		*refs = append(*refs, t)
		out = append(out, kv{name: k, t: t})
	}
	return out
}

// optsOf is the transport settings http_opts gives.
func optsOf(o HTTPOpts) httpOpts {
	h := httpOpts{sslVerify: o.SSLVerify, serverName: o.SSLServerName, httpProxy: o.Proxy.HTTPProxy,
		httpsProxy: o.Proxy.HTTPSProxy, proxyUser: o.Proxy.AuthUsername, proxyPass: o.Proxy.AuthPassword}
	if t := o.Timeouts; t.Connect != nil && t.Read != nil && t.Write != nil {
		h.connect = time.Duration(*t.Connect) * time.Millisecond
		h.read = time.Duration(*t.Read) * time.Millisecond
		h.write = time.Duration(*t.Write) * time.Millisecond
	}
	return h
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
