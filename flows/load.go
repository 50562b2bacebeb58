package flows

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sidecall/sidecall/internal/graph"
	"github.com/sidecall/sidecall/internal/httpx"

	goyaml "github.com/goccy/go-yaml"
	goyamlparser "github.com/goccy/go-yaml/parser"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"
)

// LoadOptions are what a load needs besides the file.
type LoadOptions struct {
	Registry  *Registry
	Resources *Resources // nil: a fresh set (validate, tests)
	Log       *zap.Logger
	LookupEnv func(string) (string, bool)
	// Lua is the runtime for config Lua and $(...); nil gives the snapshot
	// a private one with the default limits.
	Lua *LuaRuntime
	// NoProvision stops after validation: no plugin builds clients
	// (sidecall validate).
	NoProvision bool
	// UntrustedLua is Kong's untrusted_lua: "sandbox" (or "") runs config
	// Lua in the sandbox; "off" rejects every Lua chunk and $(...)
	// expression at load.
	UntrustedLua string
	// UnsupportedPlugins is what an enabled plugin sidecall does not run
	// gets: "error" (or "") refuses the file; "warn" skips the plugin with
	// a warning naming what does its job in Envoy.
	UnsupportedPlugins string
	// Offline checks vault references (syntax, and that their vault
	// exists and is supported) without reading any value; checks of the
	// values they stand for are skipped (validate on a machine without the
	// secrets).
	Offline bool
}

// CheckUntrustedLua validates an UntrustedLua value.
func CheckUntrustedLua(v string) error {
	switch v {
	case "", "sandbox", "off":
		return nil
	case "on":
		return errors.New(`untrusted_lua "on" (unsandboxed) is not offered: use sandbox or off`)
	}
	return fmt.Errorf("untrusted_lua %q: want sandbox or off", v)
}

// LoadFile reads and loads a config file.
func LoadFile(file string, o LoadOptions) (*Snapshot, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, &ConfigError{Problems: []FieldError{{File: file, Path: "", Reason: "cannot read file: " + errors.Unwrap(err).Error()}}}
	}
	return Load(file, data, o)
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// Load decodes, validates and compiles a config. It returns a *ConfigError
// listing every problem, or a Snapshot ready to serve.
func Load(file string, data []byte, o LoadOptions) (*Snapshot, error) {
	if o.Registry == nil {
		o.Registry = NewRegistry()
	}
	if o.Resources == nil {
		o.Resources = NewResources()
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	b := NewBuilder(file)
	b.Dir = filepath.Dir(file)
	b.Log = o.Log
	b.Registry = o.Registry
	b.Resources = o.Resources
	b.LookupEnv = o.LookupEnv
	b.Runtime = o.Lua
	if b.LookupEnv == nil {
		b.LookupEnv = os.LookupEnv
	}
	if err := CheckUntrustedLua(o.UntrustedLua); err != nil {
		return nil, err
	}
	if err := CheckUnsupportedPlugins(o.UnsupportedPlugins); err != nil {
		return nil, fmt.Errorf("unsupported plugins: %w", err)
	}
	b.luaOff = o.UntrustedLua == "off"
	b.warnUnsupported = o.UnsupportedPlugins == "warn"
	b.offline = o.Offline

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line := 0
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		reason := strings.TrimPrefix(err.Error(), "yaml: ")
		reason = yamlLine.ReplaceAllString(reason, "")
		reason = strings.TrimLeft(reason, ": ")
		if l, col, msg, ok := yamlErrorAt(data); ok && l > line {
			// yaml.v3 names the line where the enclosing block began
			reason = fmt.Sprintf("%s (column %d: %s)", reason, col, msg)
			line = l
		}
		if strings.Contains(string(data), "${{") {
			reason += "; " + templateHint(nil)
		}
		return nil, &ConfigError{Problems: []FieldError{{File: file, Line: line, Path: "", Reason: "invalid YAML: " + reason}}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if root.Kind == 0 {
		return nil, &ConfigError{Problems: []FieldError{{File: file, Line: 1, Reason: "empty config"}}}
	}
	if root.Kind != yaml.MappingNode {
		return nil, &ConfigError{Problems: []FieldError{{File: file, Line: root.Line, Reason: "must be a mapping with services, routes and plugins"}}}
	}
	redacted := redact(root)
	root = dropIgnored(b, root)
	templates := deckTemplates(root, "", nil) // the sections sidecall ignores need no hint

	var cfg Config
	b.Decode(root, "", &cfg)
	s, active := build(b, &cfg)
	if !b.Failed() && !o.NoProvision {
		provision(b, active)
	}
	hintTemplates(b, templates)
	if b.Failed() {
		for _, c := range b.closers {
			c()
		}
		b.Resources.release(b.leases)
		ce := &ConfigError{Problems: b.problems, Warnings: b.warned}
		ce.firstPerPath()
		ce.sort()
		return nil, ce
	}
	for _, w := range b.warned {
		o.Log.Warn(w.message(), zap.String("file", file), zap.Int("line", w.Line))
	}
	s.File = file
	s.Loaded = time.Now()
	s.Warnings = b.warnings
	s.WarningsAt = b.warned
	s.Redacted = redacted
	s.closers = b.closers
	s.res, s.leases = b.Resources, b.leases
	return s, nil
}

// provision lets each plugin build its clients, in file order, once the
// whole file is valid. A failure is reported at the plugin's config; the
// caller then closes what the others built.
func provision(b *Builder, active []*pluginAt) {
	for _, p := range active {
		pv, ok := p.instance.Plugin.(Provisioner)
		if !ok {
			continue
		}
		b.Scope = p.instance.Scope
		err := pv.Provision(b)
		b.Scope = Scope{}
		if err != nil {
			b.Errorf(p.at.Key("config"), "%v", err)
		}
	}
}

func dropIgnored(b *Builder, root *yaml.Node) *yaml.Node {
	out := *root
	out.Content = nil
	for i := 0; i+1 < len(root.Content); i += 2 {
		kn, val := root.Content[i], root.Content[i+1]
		k := kn.Value
		at := Path(k)
		switch {
		case k == "vaults":
			loadVaults(b, val)
		case k == "_plugin_configs":
			loadPluginConfigs(b, val)
		case ignoredSections[k] != "":
			b.mark(at, kn)
			switch k {
			case "upstreams":
				b.upstreams = upstreamNames(val)
			case "certificates":
				b.certificates = val // for services' client_certificate
			}
			b.WarnAt(at, "section %q is ignored: %s", k, ignoredSections[k])
		case slices.Contains(credentialSections, k):
			b.mark(at, kn)
			b.WarnAt(at, "section %q is ignored: sidecall has no consumers (authentication belongs to Envoy: jwt_authn, ext_authz)", k)
		case metaSections[k] != "":
			b.mark(at, kn)
			b.WarnAt(at, "%s", metaSections[k])
		default:
			out.Content = append(out.Content, kn, val)
		}
	}
	return &out
}

// upstreamNames are the names of the upstreams section's entries.
func upstreamNames(n *yaml.Node) map[string]bool {
	names := map[string]bool{}
	if n.Kind != yaml.SequenceNode {
		return names
	}
	for _, e := range n.Content {
		if e.Kind != yaml.MappingNode {
			continue
		}
		for i := 0; i+1 < len(e.Content); i += 2 {
			if e.Content[i].Value == "name" && e.Content[i+1].Kind == yaml.ScalarNode {
				names[e.Content[i+1].Value] = true
			}
		}
	}
	return names
}

// deckTemplate is decK's ${{ env "DECK_NAME" }}, rendered by deck file
// render before Kong ever sees the file.
var deckTemplate = regexp.MustCompile(`\$\{\{\s*env\s+"([^"]*)"\s*\}\}`)

type templateAt struct {
	at   Path
	vars []string
}

// deckTemplates lists the values holding an unrendered decK template, in
// file order, with the variables they name.
func deckTemplates(n *yaml.Node, at Path, out []templateAt) []templateAt {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			out = deckTemplates(n.Content[i+1], at.Key(n.Content[i].Value), out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			out = deckTemplates(c, at.Index(i), out)
		}
	case yaml.ScalarNode:
		if strings.Contains(n.Value, "${{") {
			var vars []string
			for _, m := range deckTemplate.FindAllStringSubmatch(n.Value, -1) {
				vars = append(vars, m[1])
			}
			out = append(out, templateAt{at, vars})
		}
	}
	return out
}

func templateHint(vars []string) string {
	if len(vars) == 0 {
		return `an unrendered decK template: run "deck file render" first, or set its variables`
	}
	return fmt.Sprintf(`an unrendered decK template: run "deck file render" first, or set %s`, strings.Join(vars, ", "))
}

// hintTemplates adds the hint to the problem at each templated value, or
// warns where the value loaded as it is (it would be used literally).
func hintTemplates(b *Builder, ts []templateAt) {
	for _, t := range ts {
		hinted := false
		for i := range b.problems {
			if b.problems[i].Path == t.at {
				b.problems[i].Reason += " (" + templateHint(t.vars) + ")"
				hinted = true
			}
		}
		if !hinted {
			b.WarnAt(t.at, "%s; sidecall uses the text as written", templateHint(t.vars))
		}
	}
}

type routeAt struct {
	r  *Route
	at Path
}

type pluginAt struct {
	cfg      *PluginConfig
	at       Path
	route    string // scope
	service  string
	order    int
	instance *Instance
	priority int
}

func boolOr(p *bool, d bool) bool {
	if p == nil {
		return d
	}
	return *p
}

func build(b *Builder, cfg *Config) (*Snapshot, []*pluginAt) {
	switch cfg.FormatVersion {
	case "", "1.1", "2.1", "3.0":
	default:
		b.Errorf("_format_version", "unsupported format version %q (want \"3.0\")", cfg.FormatVersion)
	}
	s := &Snapshot{Services: map[string]*Service{}, byName: map[string]*Route{}}
	b.services = s.Services
	b.Config = cfg
	cas := loadCACertificates(b, cfg.CACertificates)

	// Services.
	svcByID := map[string]*Service{}
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		at := Path("services").Index(i)
		if sc.Name == "" && sc.ID != "" { // Kong needs no name; plugins and flows name it somehow
			sc.Name = sc.ID
			b.WarnAt(at.Key("id"), "service has no name: sidecall names it by its id %q", sc.ID)
		}
		if sc.Name == "" {
			b.Errorf(at, "service needs a name or an id: add name: (what plugins and shared flows call it)")
			continue
		}
		if _, dup := s.Services[sc.Name]; dup {
			b.Errorf(at.Key("name"), "duplicate service name %q", sc.Name)
			continue
		}
		if sc.ID != "" && svcByID[strings.ToLower(sc.ID)] != nil {
			b.Errorf(at.Key("id"), "duplicate service id %q", sc.ID)
			continue
		}
		warnFilterChains(b, sc.FilterChains, at.Key("filter_chains"))
		u := serviceURL(b, sc, at)
		if u != nil && b.upstreams[u.Hostname()] {
			hp := at.Key("host")
			if sc.URL != "" {
				hp = at.Key("url")
			}
			b.WarnAt(hp, "names upstream %q, which sidecall ignores: Envoy's cluster for this service must provide its targets (sidecall itself would resolve %q by DNS, for a shared flow)", u.Hostname(), u.Hostname())
		}
		resolveServiceTLS(b, sc, at, u, cas)
		svc := &Service{Name: sc.Name, URL: u, Config: sc}
		s.Services[sc.Name] = svc
		if sc.ID != "" {
			svcByID[strings.ToLower(sc.ID)] = svc
		}
	}
	// A reference names a service or route by name or by id (Admin API
	// exports refer by id).
	serviceRef := func(ref *EntityRef) *Service {
		if sv := s.Services[ref.Name]; ref.Name != "" && sv != nil {
			return sv
		}
		return svcByID[strings.ToLower(cmp.Or(ref.ID, ref.Name))]
	}
	routeByID := map[string]*Route{}
	routeRef := func(ref *EntityRef) *Route {
		if r := s.byName[ref.Name]; ref.Name != "" && r != nil {
			return r
		}
		return routeByID[strings.ToLower(cmp.Or(ref.ID, ref.Name))]
	}

	// Routes, nested and top-level.
	var routes []routeAt
	addRoute := func(rc *RouteConfig, svc *Service, at Path) {
		if rc.Name == "" && rc.ID != "" {
			rc.Name = rc.ID
			b.WarnAt(at.Key("id"), "route has no name: sidecall names it by its id %q, which Envoy's route name (or x-sidecall-route) must then use", rc.ID)
		}
		if rc.Name == "" {
			b.Errorf(at, "route needs a name or an id (Envoy selects routes by name): add name: and give Envoy's route the same name")
			return
		}
		if _, dup := s.byName[rc.Name]; dup {
			b.Errorf(at.Key("name"), "duplicate route name %q", rc.Name)
			return
		}
		if rc.ID != "" && routeByID[strings.ToLower(rc.ID)] != nil {
			b.Errorf(at.Key("id"), "duplicate route id %q", rc.ID)
			return
		}
		warnFilterChains(b, rc.FilterChains, at.Key("filter_chains"))
		for j, m := range rc.Methods {
			if !httpx.ValidMethod(m) {
				b.Errorf(at.Key("methods").Index(j), "invalid method %q", m)
			}
		}
		for j, p := range rc.Protocols {
			if p != "http" && p != "https" && p != "grpc" && p != "grpcs" {
				b.Errorf(at.Key("protocols").Index(j), "unsupported protocol %q (sidecall serves http, https, grpc, grpcs)", p)
			}
		}
		r := &Route{Name: rc.Name, Service: svc, Config: rc, Index: len(routes)}
		s.byName[rc.Name] = r
		if rc.ID != "" {
			routeByID[strings.ToLower(rc.ID)] = r
		}
		routes = append(routes, routeAt{r, at})
	}
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		for j := range sc.Routes {
			at := Path("services").Index(i).Key("routes").Index(j)
			if sc.Routes[j].Service != nil {
				b.Errorf(at.Key("service"), "a route nested in a service cannot name another service")
			}
			addRoute(&sc.Routes[j], s.Services[sc.Name], at)
		}
	}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		at := Path("routes").Index(i)
		var svc *Service
		if rc.Service != nil {
			svc = serviceRef(rc.Service)
			if svc == nil {
				b.Errorf(at.Key("service"), "no service %s", rc.Service)
			}
		}
		addRoute(rc, svc, at)
	}

	// Plugins with their scope.
	var plugins []*pluginAt
	add := func(pc *PluginConfig, at Path, route, service string) {
		plugins = append(plugins, &pluginAt{cfg: pc, at: at, route: route, service: service, order: len(plugins)})
	}
	for i := range cfg.Plugins {
		pc := &cfg.Plugins[i]
		at := Path("plugins").Index(i)
		route, service := "", ""
		if pc.Route != nil {
			r := routeRef(pc.Route)
			if r == nil {
				b.Errorf(at.Key("route"), "no route %s", pc.Route)
				continue
			}
			route = r.Name
		}
		if pc.Service != nil {
			sv := serviceRef(pc.Service)
			if sv == nil {
				b.Errorf(at.Key("service"), "no service %s", pc.Service)
				continue
			}
			service = sv.Name
		}
		add(pc, at, route, service)
	}
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		for j := range sc.Plugins {
			pc := &sc.Plugins[j]
			at := Path("services").Index(i).Key("plugins").Index(j)
			if pc.Service != nil && serviceRef(pc.Service) != s.Services[sc.Name] {
				b.Errorf(at.Key("service"), "a plugin nested in service %q cannot name another service", sc.Name)
				continue
			}
			route := ""
			if pc.Route != nil { // decK's service+route scope
				r := routeRef(pc.Route)
				if r == nil {
					b.Errorf(at.Key("route"), "no route %s", pc.Route)
					continue
				}
				route = r.Name
				if r.Service == nil || r.Service.Name != sc.Name {
					b.WarnAt(at.Key("route"), "route %q is not a route of service %q: this plugin never runs", route, sc.Name)
				}
			}
			add(pc, at, route, sc.Name)
		}
		for j := range sc.Routes {
			for k := range sc.Routes[j].Plugins {
				at := Path("services").Index(i).Key("routes").Index(j).Key("plugins").Index(k)
				add(&sc.Routes[j].Plugins[k], at, sc.Routes[j].Name, "")
			}
		}
	}
	for i := range cfg.Routes {
		for k := range cfg.Routes[i].Plugins {
			at := Path("routes").Index(i).Key("plugins").Index(k)
			add(&cfg.Routes[i].Plugins[k], at, cfg.Routes[i].Name, "")
		}
	}

	// Build each enabled plugin once.
	type scopeKey struct{ name, route, service string }
	seen := map[scopeKey]Path{}
	var active []*pluginAt
	for _, p := range plugins {
		pc := p.cfg
		if pc.Name == "" {
			b.Errorf(p.at, "plugin needs a name")
			continue
		}
		if !boolOr(pc.Enabled, true) {
			continue // Kong keeps a disabled plugin without running it: its consumer, partials, config are not ours
		}
		typ, known := b.Registry.Lookup(pc.Name)
		if !known {
			if b.warnUnsupported {
				b.WarnAt(p.at.Key("name"), "plugin %q is not run by sidecall; %s", pc.Name, unsupportedHint(pc.Name))
			} else {
				b.Errorf(p.at.Key("name"), "unknown plugin %q (sidecall has: %s); %s; set enabled: false to keep it in the file, or load with --unsupported-plugins warn",
					pc.Name, strings.Join(b.Registry.Names(), ", "), unsupportedHint(pc.Name))
			}
			continue
		}
		if pc.ConsumerGroup != nil {
			if b.warnUnsupported {
				b.WarnAt(p.at.Key("consumer_group"), "consumer-group-scoped plugin %q is not run: sidecall has no consumers or consumer groups", pc.Name)
			} else {
				b.Errorf(p.at.Key("consumer_group"), "consumer-group-scoped plugins are not supported: sidecall has no consumers or consumer groups; set enabled: false to keep it in the file, or load with --unsupported-plugins warn")
			}
			continue
		}
		if pc.Condition != "" {
			if b.warnUnsupported {
				b.WarnAt(p.at.Key("condition"), "plugin %q is not run: sidecall cannot evaluate plugin conditions, and running it on every request would change what the file does", pc.Name)
			} else {
				b.Errorf(p.at.Key("condition"), "sidecall cannot evaluate plugin conditions: remove condition to run the plugin on every request of its scope, set enabled: false, or load with --unsupported-plugins warn to skip it")
			}
			continue
		}
		if pc.Consumer != nil {
			if b.warnUnsupported {
				b.WarnAt(p.at.Key("consumer"), "consumer-scoped plugin %q is not run: sidecall has no consumers", pc.Name)
			} else {
				b.Errorf(p.at.Key("consumer"), "consumer-scoped plugins are not supported: sidecall has no consumers")
			}
			continue
		}
		if pc.Partials != nil {
			b.Errorf(p.at.Key("partials"), "partials are not supported: write the shared settings into the plugin's config")
			continue
		}
		k := scopeKey{pc.Name, p.route, p.service}
		if prev, dup := seen[k]; dup {
			b.Errorf(p.at, "plugin %q is configured twice for the same scope (also at %s)", pc.Name, prev)
			continue
		}
		seen[k] = p.at
		id := pc.ID
		if id == "" {
			id = string(p.at)
		}
		b.Scope = Scope{Route: p.route, Service: p.service, PluginID: id}
		raw := pc.Config
		if raw == nil {
			raw = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		}
		if pc.ConfigSource != "" {
			if raw = pluginConfigFrom(b, pc, p.at, raw); raw == nil {
				continue
			}
		}
		if pc.Name == "pre-function" || pc.Name == "post-function" {
			raw = legacyFunctions(b, raw, p.at.Key("config"), cfg.FormatVersion)
		}
		before := len(b.problems)
		b.failedFrom = before
		plug, err := typ.New(b, raw, p.at.Key("config"))
		b.failedFrom = 0
		b.Scope = Scope{}
		if err != nil {
			b.Errorf(p.at.Key("config"), "%v", err)
			continue
		}
		if len(b.problems) > before || plug == nil {
			continue
		}
		p.priority = typ.Priority
		p.instance = &Instance{Plugin: plug, Name: pc.Name, Scope: Scope{Route: p.route, Service: p.service, PluginID: id},
			protocols: pluginProtocols(b, pc.Protocols, p.at.Key("protocols"))}
		active = append(active, p)
	}
	checkOrdering(b, active)
	checkFlowCycles(b)
	warnClientCertificates(b, cfg)

	// Pipelines: per route, the most specific instance of each plugin name.
	for _, ra := range routes {
		svc := ""
		if ra.r.Service != nil {
			svc = ra.r.Service.Name
		}
		ra.r.Pipeline = assemble(b, active, func(p *pluginAt) int {
			switch {
			case p.route == ra.r.Name && p.service == svc && svc != "":
				return 4
			case p.route == ra.r.Name && p.service == "":
				return 3
			case p.route == "" && p.service == svc && svc != "":
				return 2
			case p.route == "" && p.service == "":
				return 1
			}
			return 0
		})
		s.Routes = append(s.Routes, ra.r)
	}
	s.Global = assemble(b, active, func(p *pluginAt) int {
		if p.route == "" && p.service == "" {
			return 1
		}
		return 0
	})
	for name, svc := range s.Services {
		svc.Pipeline = assemble(b, active, func(p *pluginAt) int {
			if p.route == "" && p.service == name {
				return 1
			}
			return 0
		})
	}
	rs := make([]*Route, len(routes))
	ps := make([]Path, len(routes))
	for i, ra := range routes {
		rs[i], ps[i] = ra.r, ra.at
	}
	s.router = NewRouter(b, rs, ps)
	s.matchHeaders = s.router.UsesHeaders()
	return s, active
}

// legacyFunctions reads pre/post-function's functions (Kong 1.x/2.x's name
// for access) as access in a 1.1 or 2.1 file, as deck file convert does;
// in a 3.x file it is refused with the rename to make.
func legacyFunctions(b *Builder, raw *yaml.Node, at Path, format string) *yaml.Node {
	if raw.Kind != yaml.MappingNode {
		return raw
	}
	fi, ai := -1, -1
	for i := 0; i+1 < len(raw.Content); i += 2 {
		switch raw.Content[i].Value {
		case "functions":
			fi = i
		case "access":
			ai = i
		}
	}
	if fi < 0 {
		return raw
	}
	fp := at.Key("functions")
	b.mark(fp, raw.Content[fi])
	if format != "1.1" && format != "2.1" {
		if format == "" {
			format = "3.0" // what the loader reads a file without one as
		}
		b.Errorf(fp, "functions was removed in Kong 3.0 (this file is _format_version %q): rename it to access, as deck file convert does", format)
		return raw
	}
	if ai >= 0 {
		b.Errorf(fp, "functions is the old name of access: set one of them, not both")
		return raw
	}
	b.WarnAt(fp, "functions is Kong 2.x's name for access: read as access, as deck file convert does")
	out := *raw
	out.Content = append([]*yaml.Node(nil), raw.Content...)
	key := *raw.Content[fi]
	key.Value = "access"
	out.Content[fi] = &key
	return &out
}

// warnFilterChains warns about a service's or route's Wasm filter chains,
// which sidecall does not run.
func warnFilterChains(b *Builder, n *yaml.Node, at Path) {
	if n == nil || (n.Kind == yaml.SequenceNode && len(n.Content) == 0) || n.Tag == "!!null" {
		return
	}
	b.WarnAt(at, "Wasm filter chains are not run by sidecall: Envoy runs Wasm filters itself (the envoy.filters.http.wasm filter on this route or cluster)")
}

func serviceURL(b *Builder, sc *ServiceConfig, at Path) *url.URL {
	if sc.Retries == 0 && !b.present(at.Key("retries")) {
		sc.Retries = 5
	}
	for _, f := range []struct {
		v    *int
		name string
	}{{&sc.ConnectTimeout, "connect_timeout"}, {&sc.ReadTimeout, "read_timeout"}, {&sc.WriteTimeout, "write_timeout"}} {
		if !b.present(at.Key(f.name)) {
			*f.v = 60000
		} else if *f.v < 1 || *f.v > 2147483646 {
			b.Errorf(at.Key(f.name), "must be between 1 and 2147483646 milliseconds, got %d", *f.v)
		}
	}
	if sc.Retries < 0 || sc.Retries > 32767 {
		b.Errorf(at.Key("retries"), "must be between 0 and 32767, got %d", sc.Retries)
	}
	if sc.URL != "" {
		u, err := url.Parse(sc.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			b.Errorf(at.Key("url"), "must be an absolute http(s) URL, got %q", sc.URL)
			return nil
		}
		if over := overriddenByURL(sc, u); len(over) > 0 {
			b.WarnAt(at.Key("url"), "url wins, as in Kong: %s ignored", strings.Join(over, ", "))
		}
		return u
	}
	if sc.Host == "" {
		if !b.present(at.Key("url")) { // a bad url was reported already
			b.Errorf(at, "service needs url or host")
		}
		return nil
	}
	proto := sc.Protocol
	if proto == "" {
		proto = "http"
	}
	if proto != "http" && proto != "https" {
		b.Errorf(at.Key("protocol"), "unsupported protocol %q (want http or https)", proto)
		return nil
	}
	host := sc.Host
	if sc.Port != 0 {
		if sc.Port < 0 || sc.Port > 65535 {
			b.Errorf(at.Key("port"), "must be between 0 and 65535, got %d", sc.Port)
		}
		host += ":" + strconv.Itoa(sc.Port)
	}
	if sc.Path != "" && !strings.HasPrefix(sc.Path, "/") {
		b.Errorf(at.Key("path"), "must start with /, got %q", sc.Path)
	}
	return &url.URL{Scheme: proto, Host: host, Path: sc.Path}
}

// overriddenByURL names the protocol, host, port and path fields whose
// value differs from what the service's url says (Kong's url wins).
func overriddenByURL(sc *ServiceConfig, u *url.URL) []string {
	var over []string
	if sc.Protocol != "" && sc.Protocol != u.Scheme {
		over = append(over, "protocol")
	}
	if sc.Host != "" && sc.Host != u.Hostname() {
		over = append(over, "host")
	}
	if sc.Port != 0 {
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		if strconv.Itoa(sc.Port) != port {
			over = append(over, "port")
		}
	}
	if sc.Path != "" && sc.Path != u.Path {
		over = append(over, "path")
	}
	return over
}

// present tells whether the config wrote a value at path.
func (b *Builder) present(at Path) bool { _, ok := b.lines[at]; return ok }

// assemble picks, for each plugin name, the instance with the highest
// specificity (0 = not applicable), then orders by priority and ordering.
func assemble(b *Builder, active []*pluginAt, spec func(*pluginAt) int) *Pipeline {
	best := map[string]*pluginAt{}
	bestSpec := map[string]int{}
	for _, p := range active {
		sp := spec(p)
		if sp == 0 {
			continue
		}
		if sp > bestSpec[p.cfg.Name] {
			best[p.cfg.Name], bestSpec[p.cfg.Name] = p, sp
		}
	}
	list := make([]*pluginAt, 0, len(best))
	for _, p := range best {
		list = append(list, p)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].priority != list[j].priority {
			return list[i].priority > list[j].priority
		}
		return list[i].order < list[j].order
	})
	list = applyOrdering(list)
	ins := make([]*Instance, len(list))
	for i, p := range list {
		ins[i] = p.instance
	}
	return NewPipeline(ins)
}

// applyOrdering honours Kong's ordering.before/after.access: a stable
// topological sort that keeps priority order where ordering is silent.
func applyOrdering(list []*pluginAt) []*pluginAt {
	idx := map[string]int{}
	for i, p := range list {
		idx[p.cfg.Name] = i
	}
	deps := make([][]int, len(list)) // deps[i]: what must run before i
	ordered := false
	for i, p := range list {
		if p.cfg.Ordering == nil {
			continue
		}
		for _, name := range p.cfg.Ordering.Before["access"] {
			if j, ok := idx[name]; ok {
				deps[j] = append(deps[j], i)
				ordered = true
			}
		}
		for _, name := range p.cfg.Ordering.After["access"] {
			if j, ok := idx[name]; ok {
				deps[i] = append(deps[i], j)
				ordered = true
			}
		}
	}
	if !ordered {
		return list
	}
	order, ok := graph.StableOrder(deps)
	if !ok { // a cycle, reported by checkOrdering: keep priority order
		return list
	}
	out := make([]*pluginAt, len(list))
	for k, i := range order {
		out[k] = list[i]
	}
	return out
}

func checkOrdering(b *Builder, active []*pluginAt) {
	var g graph.Named
	for _, p := range active {
		o := p.cfg.Ordering
		if o == nil {
			continue
		}
		at := p.at.Key("ordering")
		for dir, m := range map[string]map[string][]string{"before": o.Before, "after": o.After} {
			for phase, names := range m {
				if phase != "access" {
					b.Errorf(at.Key(dir).Key(phase), "ordering is only supported for the access phase, got %q", phase)
					continue
				}
				for i, name := range names {
					if _, ok := b.Registry.Lookup(name); !ok {
						b.Errorf(at.Key(dir).Key(phase).Index(i), "unknown plugin %q", name)
						continue
					}
					if name == p.cfg.Name {
						b.Errorf(at.Key(dir).Key(phase).Index(i), "a plugin cannot be ordered against itself")
						continue
					}
					if dir == "before" {
						g.Edge(p.cfg.Name, name)
					} else {
						g.Edge(name, p.cfg.Name)
					}
				}
			}
		}
	}
	if cyc := g.Cycle(); cyc != nil {
		for _, p := range active {
			if p.cfg.Ordering != nil && p.cfg.Name == cyc[0] {
				b.Errorf(p.at.Key("ordering"), "ordering cycle: %s", strings.Join(cyc, " -> "))
				return
			}
		}
	}
}

func checkFlowCycles(b *Builder) {
	var g graph.Named
	where := map[string]Path{}
	froms := make([]string, 0, len(b.flowEdges))
	for from := range b.flowEdges {
		froms = append(froms, from)
	}
	sort.Strings(froms) // a stable report
	for _, from := range froms {
		for _, e := range b.flowEdges[from] {
			g.Edge(from, e.to)
			if _, ok := where[from]; !ok {
				where[from] = e.at
			}
		}
	}
	if cyc := g.Cycle(); cyc != nil {
		b.Errorf(where[cyc[0]], "shared flow cycle: %s", strings.Join(cyc, " -> "))
		return
	}
	depths := graph.Depths(g.Deps())
	for i, d := range depths {
		if d > 8 {
			b.Errorf(where[g.Name(i)], "shared flows nest %d deep; the limit is 8", d)
			return
		}
	}
}

// secretKey matches the names whose values are secrets, wherever such a
// name stands: a map key (a config field, a header or query name in a
// custom map), a query parameter inside a URL, the name of a "Name: value"
// header line. Api key, token, secret, password, authorization, cookie,
// credential, private or access key: any case, with -, _, . or nothing
// between the words, anywhere in the name (X-Api-Key, apikey, Api-Token,
// x-auth-token, Set-Cookie, client_secret, db-password, keyauth_credentials).
var secretKey = regexp.MustCompile(`(?i)(api[-_.]?key|token|secret|passw(or)?d|authorization|cookie|credential|private[-_.]?key|access[-_.]?key)`)

// luaKey marks fields whose strings are Lua source (by_lua,
// message_by_lua_functions, custom_fields_by_lua...).
var luaKey = regexp.MustCompile(`(?i)lua`)

// redactedValue replaces a secret; luaHidden replaces Lua source that
// names a secret.
const (
	redactedValue = "<redacted>"
	luaHidden     = "<lua>"
)

// redact turns the raw config into JSON-able data for /config with secrets
// hidden:
//   - every scalar under a key matching secretKey is <redacted> (a list or
//     map under it too, leaf by leaf; null and booleans stay);
//   - in any string that is a URL (scheme://... or /path), query parameters
//     whose names match and the userinfo password are <redacted>;
//   - a "Name: value" string whose name matches keeps the name only;
//   - a PEM private key is <redacted> wherever it is;
//   - Lua source (the config of pre-function and post-function, fields
//     whose name contains "lua") is shown as written unless it mentions a
//     name matching secretKey anywhere, then as <lua>;
//   - vault references ({vault://...}) stay as written, alone or inside a
//     URL.
func redact(n *yaml.Node) any { return redactNode(n, false) }

func redactNode(n *yaml.Node, lua bool) any {
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		luaConfig := lua || serverlessPlugin(n)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			v := n.Content[i+1]
			switch {
			case secretKey.MatchString(k):
				m[k] = redactAll(v)
			case luaConfig && k == "config", luaKey.MatchString(k):
				m[k] = redactNode(v, true)
			default:
				m[k] = redactNode(v, lua)
			}
		}
		return m
	case yaml.SequenceNode:
		l := make([]any, len(n.Content))
		for i, c := range n.Content {
			l[i] = redactNode(c, lua)
		}
		return l
	case yaml.AliasNode:
		if n.Alias != nil {
			return redactNode(n.Alias, lua)
		}
		return nil
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return redactString(n.Value, lua)
		}
		if s, ok := v.(string); ok {
			return redactString(s, lua)
		}
		return normalize(v)
	}
	return nil
}

// serverlessPlugin tells whether a mapping is a pre-function or
// post-function plugin entry, whose config is Lua.
func serverlessPlugin(n *yaml.Node) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" {
			name := n.Content[i+1].Value
			return name == "pre-function" || name == "post-function"
		}
	}
	return false
}

// redactAll hides every scalar under a secret-named key, keeping the shape
// (map keys, list lengths), null, booleans and vault references.
func redactAll(n *yaml.Node) any {
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			m[n.Content[i].Value] = redactAll(n.Content[i+1])
		}
		return m
	case yaml.SequenceNode:
		l := make([]any, len(n.Content))
		for i, c := range n.Content {
			l[i] = redactAll(c)
		}
		return l
	case yaml.AliasNode:
		if n.Alias != nil {
			return redactAll(n.Alias)
		}
		return nil
	case yaml.ScalarNode:
		if n.Tag == "!!null" || n.Tag == "!!bool" || isVaultRef(n.Value) {
			return redactNode(n, false)
		}
		return redactedValue
	}
	return nil
}

func isVaultRef(s string) bool {
	s = strings.TrimSpace(s)
	return strings.HasPrefix(s, "{vault://") && strings.HasSuffix(s, "}")
}

// headerLine is a "Name: value" string (Kong's header lists).
var headerLine = regexp.MustCompile(`^(\s*([A-Za-z0-9!#$%&'*+.^_|~-]+)\s*:\s*)(\S.*)$`)

// urlStart is a URL's scheme and "//".
var urlStart = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)

func redactString(s string, lua bool) string {
	switch {
	case isVaultRef(s):
		return s
	case strings.Contains(s, "PRIVATE KEY-----"):
		return redactedValue
	case lua:
		if secretKey.MatchString(s) {
			return luaHidden
		}
		return s
	}
	if m := headerLine.FindStringSubmatch(s); m != nil && !strings.HasPrefix(m[3], "//") && secretKey.MatchString(m[2]) {
		if isVaultRef(m[3]) {
			return s
		}
		return m[1] + redactedValue
	}
	return redactURL(s)
}

// redactURL hides the userinfo password and the values of secret-named
// query parameters of a URL (scheme://... or an absolute path), keeping
// everything else as written; any other string is returned as is.
func redactURL(s string) string {
	scheme := urlStart.FindString(s)
	if scheme == "" && !strings.HasPrefix(s, "/") {
		return s
	}
	rest, frag := s[len(scheme):], ""
	if i := indexOutsideVault(rest, "#"); i >= 0 {
		rest, frag = rest[:i], rest[i:]
	}
	query, hasQuery := "", false
	if i := indexOutsideVault(rest, "?"); i >= 0 {
		rest, query, hasQuery = rest[:i], rest[i+1:], true
	}
	if scheme != "" {
		end := indexOutsideVault(rest, "/")
		if end < 0 {
			end = len(rest)
		}
		if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
			if c := strings.IndexByte(rest[:at], ':'); c >= 0 && c+1 < at && !isVaultRef(rest[c+1:at]) {
				rest = rest[:c+1] + redactedValue + rest[at:]
			}
		}
	}
	if hasQuery {
		pairs := strings.Split(query, "&")
		for i, p := range pairs {
			name, val, ok := strings.Cut(p, "=")
			if !ok || val == "" || isVaultRef(val) {
				continue
			}
			if un, err := url.QueryUnescape(name); err == nil {
				name = un
			}
			if secretKey.MatchString(name) {
				pairs[i] = p[:len(p)-len(val)] + redactedValue
			}
		}
		rest += "?" + strings.Join(pairs, "&")
	}
	return scheme + rest + frag
}

// indexOutsideVault is the index of the first of chars in s that is not
// inside a {vault://...} reference, or -1.
func indexOutsideVault(s, chars string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch {
		case strings.HasPrefix(s[i:], "{vault://"):
			depth++
		case s[i] == '}' && depth > 0:
			depth--
		case depth == 0 && strings.IndexByte(chars, s[i]) >= 0:
			return i
		}
	}
	return -1
}

// String of a snapshot, for logs.
func (s *Snapshot) String() string {
	return fmt.Sprintf("%d services, %d routes", len(s.Services), len(s.Routes))
}

// yamlErrorAt is where a second YAML parser (goccy/go-yaml) puts a syntax
// error: yaml.v3 reports the line of the enclosing block instead, so a
// mis-indented key on line 5 would be reported at line 2.
func yamlErrorAt(data []byte) (line, col int, msg string, ok bool) {
	_, err := goyamlparser.ParseBytes(data, 0)
	var se *goyaml.SyntaxError
	if !errors.As(err, &se) || se.Token == nil || se.Token.Position == nil {
		return 0, 0, "", false
	}
	return se.Token.Position.Line, se.Token.Position.Column, se.Message, true
}
