package flows

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"
)

// Plugin is one configured plugin instance. Phase methods are optional
// interfaces: AccessPlugin, HeaderFilterPlugin, BodyFilterPlugin.
type Plugin interface {
	Name() string
	Priority() int
}

// AccessPlugin runs before the upstream call (request headers, or the
// buffered request body when Needs.RequestBody).
type AccessPlugin interface {
	Access(ctx context.Context, x *Exchange) error
}

// HeaderFilterPlugin runs on the response headers.
type HeaderFilterPlugin interface {
	HeaderFilter(ctx context.Context, x *Exchange) error
}

// BodyFilterPlugin runs on the buffered response body.
type BodyFilterPlugin interface {
	BodyFilter(ctx context.Context, x *Exchange) error
}

// Needs tells the processor what to ask Envoy for.
type Needs struct {
	RequestBody, ResponseHeaders, ResponseBody bool
	// EarlyResponseHeaders: the access phase may set response headers on
	// some requests (Exchange.SetResponseHeaderEarly). The processor asks
	// for the response headers only on those, when access runs on the
	// request headers; when it runs on the body it is too late to ask, so
	// it always asks.
	EarlyResponseHeaders bool
}

// Or merges two Needs.
func (n Needs) Or(o Needs) Needs {
	return Needs{n.RequestBody || o.RequestBody, n.ResponseHeaders || o.ResponseHeaders || o.ResponseBody || n.ResponseBody,
		n.ResponseBody || o.ResponseBody, n.EarlyResponseHeaders || o.EarlyResponseHeaders}
}

// NeedsReporter is implemented by plugins that need more than request headers.
type NeedsReporter interface{ Needs() Needs }

// Factory decodes one plugin's raw config strictly (b.Decode), applies
// defaults, validates (b.Errorf for every problem), and compiles. No network.
// The returned plugin is discarded if the builder recorded problems.
type Factory func(b *Builder, raw *yaml.Node, at Path) (Plugin, error)

// PluginType is a registered plugin.
type PluginType struct {
	Name     string
	Priority int
	New      Factory
}

// Registry maps plugin names to factories. cmd fills it; flows never
// imports plugin packages.
type Registry struct{ types map[string]PluginType }

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{types: map[string]PluginType{}} }

// Register adds a plugin type; registering a name twice panics.
func (r *Registry) Register(name string, priority int, f Factory) {
	if _, dup := r.types[name]; dup {
		panic("flows: plugin registered twice: " + name)
	}
	r.types[name] = PluginType{Name: name, Priority: priority, New: f}
}

// Lookup returns the plugin type for name.
func (r *Registry) Lookup(name string) (PluginType, bool) { t, ok := r.types[name]; return t, ok }

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	var ns []string
	for n := range r.types {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Scope says where a plugin instance is configured.
type Scope struct {
	Route    string // route name, "" for none
	Service  string // service name, "" for none
	PluginID string // the plugin's id, or a stable position-based one
}

// Builder is handed to every Factory during one config load.
type Builder struct {
	File      string
	Dir       string // for relative {vault://file/...}
	Log       *zap.Logger
	Registry  *Registry
	Resources *Resources
	Config    *Config // the whole config, for plugins that refer to services
	Scope     Scope
	LookupEnv func(string) (string, bool)
	// Runtime is what config Lua and templates of this load run on.
	Runtime *LuaRuntime

	// services are the compiled services of this load; their Pipelines are
	// filled once every plugin is built, so a shared-flow plugin keeps the
	// *Service and reads its Pipeline at request time.
	services  map[string]*Service
	flowEdges map[string][]flowEdge

	vaults   map[string]vaultEntity // the config's vaults entities, by prefix
	refs     *vaultSet              // every reference the config names, resolved (kong.vault.get's allow-set)
	hidden   *strings.Replacer      // secret values → their {vault://...} references
	hide     [][2]string            // {secret value, reference} pairs
	luaOff   bool                   // untrusted_lua off
	tplNames map[string]bool        // what $(...) may read (templateNames)
	lines    map[Path]int
	literal  map[Path]bool // string values written as | blocks: their line N is on file line lines[path]+N
	secrets  map[Path]bool
	problems []FieldError
	closers  []func()
	leases   []string     // Resources keys held by this load
	warnings []string     // warned as PATH: REASON
	warned   []FieldError // with their lines
	// failedFrom is where the problems of the plugin being built start:
	// Failed answers for that plugin alone, so one bad route does not hide
	// a plugin's later checks (cycles) from the same run.
	failedFrom int
	// offline checks vault references without reading values; offlineRefs
	// are the paths holding one, whose value is unknown.
	offline     bool
	offlineRefs map[Path]bool
	// warnUnsupported: an enabled plugin sidecall lacks is a warning.
	warnUnsupported bool
	upstreams       map[string]bool // names of the ignored upstreams entities
	certificates    *yaml.Node      // the certificates section, for client_certificate
	// pluginConfigs are decK's _plugin_configs, by name (a plugin's _config).
	pluginConfigs map[string]*yaml.Node
}

// NewBuilder returns a Builder for file.
func NewBuilder(file string) *Builder {
	return &Builder{File: file, Log: zap.NewNop(), lines: map[Path]int{}, secrets: map[Path]bool{}}
}

func (b *Builder) mark(at Path, n *yaml.Node) {
	if _, ok := b.lines[at]; !ok {
		b.lines[at] = n.Line
	}
}

type flowEdge struct {
	to string
	at Path
}

// SharedFlow returns the service named name for use as a shared flow (its
// Pipeline is set when the load completes). It records the dependency so
// the loader can report cycles. A missing service is reported at at.
func (b *Builder) SharedFlow(name string, at Path) *Service {
	s := b.services[name]
	if s == nil {
		b.Errorf(at, "no service named %q", name)
		return nil
	}
	if b.flowEdges == nil {
		b.flowEdges = map[string][]flowEdge{}
	}
	from := b.Scope.Service
	if b.Scope.Route != "" && b.Scope.Service == "" {
		from = "route:" + b.Scope.Route
	}
	b.flowEdges[from] = append(b.flowEdges[from], flowEdge{to: name, at: at})
	return s
}

// Line returns the line where at (or its nearest parent) was written.
func (b *Builder) Line(at Path) int {
	for p := at; ; {
		if l, ok := b.lines[p]; ok {
			return l
		}
		q := parentPath(p)
		if q == p {
			return 0
		}
		p = q
	}
}

func parentPath(p Path) Path {
	s := string(p)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' || s[i] == '[' {
			return Path(s[:i])
		}
	}
	return ""
}

// Errorf records a problem at path at.
func (b *Builder) Errorf(at Path, format string, args ...any) {
	b.errorAt(b.Line(at), at, fmt.Sprintf(format, args...))
}

func (b *Builder) errorAt(line int, at Path, reason string) {
	if b.offlineRefs[at] {
		return
	}
	b.problems = append(b.problems, FieldError{File: b.File, Line: line, Path: at, Reason: b.redact(reason)})
}

// Warnf records a warning. A leading "%s: " with a Path argument is the
// warning's path (the form plugins use), so it gets its line.
func (b *Builder) Warnf(format string, args ...any) {
	if at, ok := firstPath(args); ok && strings.HasPrefix(format, "%s: ") {
		b.WarnAt(at, format[4:], args[1:]...)
		return
	}
	b.WarnAt("", format, args...)
}

func firstPath(args []any) (Path, bool) {
	if len(args) == 0 {
		return "", false
	}
	p, ok := args[0].(Path)
	return p, ok
}

// WarnAt records a warning about the value at path at: what the load
// accepts but sidecall ignores or changes. The same warning twice is kept
// once.
func (b *Builder) WarnAt(at Path, format string, args ...any) {
	w := FieldError{File: b.File, Line: b.Line(at), Path: at, Reason: b.redact(fmt.Sprintf(format, args...))}
	for _, o := range b.warned {
		if o.Path == w.Path && o.Reason == w.Reason {
			return
		}
	}
	b.warned = append(b.warned, w)
	b.warnings = append(b.warnings, w.message())
}

// hideSecret makes every later problem or warning show ref instead of the
// secret value it resolved to, also inside a quoted ("%q") value.
func (b *Builder) hideSecret(value, ref string) {
	if len(value) < 3 {
		return // too short to hide without garbling the message; says little
	}
	b.hide = append(b.hide, [2]string{value, ref})
	if q := strconv.Quote(value); q[1:len(q)-1] != value {
		b.hide = append(b.hide, [2]string{q[1 : len(q)-1], ref})
	}
	// Longest first, so a secret containing another is hidden whole.
	sort.SliceStable(b.hide, func(i, j int) bool { return len(b.hide[i][0]) > len(b.hide[j][0]) })
	b.hidden = nil
}

func (b *Builder) redact(s string) string {
	if len(b.hide) == 0 {
		return s
	}
	if b.hidden == nil {
		args := make([]string, 0, 2*len(b.hide))
		for _, p := range b.hide {
			args = append(args, p[0], p[1])
		}
		b.hidden = strings.NewReplacer(args...)
	}
	return b.hidden.Replace(s)
}

// Failed tells whether any problem was recorded; inside a plugin's
// Factory, whether any was recorded for that plugin.
func (b *Builder) Failed() bool { return len(b.problems) > b.failedFrom }

// Warnings returns the recorded warnings as "PATH: REASON".
func (b *Builder) Warnings() []string { return b.warnings }

// WarningsAt returns the recorded warnings with their paths and lines.
func (b *Builder) WarningsAt() []FieldError { return b.warned }

// Problems returns the recorded problems.
func (b *Builder) Problems() []FieldError { return b.problems }

// IsSecret tells whether the value at path came from a vault.
func (b *Builder) IsSecret(at Path) bool { return b.secrets[at] }

// OnClose registers cleanup for when the snapshot built by this load is
// retired (or the load fails).
func (b *Builder) OnClose(f func()) { b.closers = append(b.closers, f) }

// Provisioner is implemented by plugins that build long-lived clients
// (sockets, goroutines). The loader calls Provision only once the whole file
// decoded and validated; clients are taken with Builder.Acquire so they are
// shared across reloads and closed with the last snapshot that uses them.
type Provisioner interface {
	Provision(b *Builder) error
}

// Acquire returns the shared resource for key, making it with mk the first
// time, and holds it for the snapshot this load builds. Only call it from
// Provision.
func (b *Builder) Acquire(key string, mk func() (io.Closer, error)) (io.Closer, error) {
	if b.Resources == nil {
		b.Resources = NewResources()
	}
	c, err := b.Resources.acquire(key, mk)
	if err != nil {
		return nil, err
	}
	b.leases = append(b.leases, key)
	return c, nil
}

// Resources holds long-lived clients shared across reloads, keyed by their
// settings (Kafka producers, Redis clients, HTTP transports). Each client
// counts the snapshots holding it; the last release closes it, so a reload
// that changes a setting closes the client it replaced once the old
// snapshot's streams have finished.
type Resources struct {
	mu sync.Mutex
	m  map[string]*resource
}

type resource struct {
	c    io.Closer
	refs int
}

// NewResources returns an empty set.
func NewResources() *Resources { return &Resources{m: map[string]*resource{}} }

func (r *Resources) acquire(key string, mk func() (io.Closer, error)) (io.Closer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.m[key]; ok {
		e.refs++
		return e.c, nil
	}
	c, err := mk()
	if err != nil {
		return nil, err
	}
	r.m[key] = &resource{c: c, refs: 1}
	return c, nil
}

// release drops one hold on each key, closing clients nobody holds.
func (r *Resources) release(keys []string) {
	var done []io.Closer
	r.mu.Lock()
	for _, k := range keys {
		e, ok := r.m[k]
		if !ok {
			continue
		}
		if e.refs--; e.refs <= 0 {
			delete(r.m, k)
			done = append(done, e.c)
		}
	}
	r.mu.Unlock()
	for _, c := range done { // outside the lock: closing may block
		_ = c.Close()
	}
}

// Len returns how many clients are open.
func (r *Resources) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// Each calls f for every open client (for readiness checks).
func (r *Resources) Each(f func(key string, c io.Closer)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, e := range r.m {
		f(k, e.c)
	}
}

// Close closes every client, held or not (process exit).
func (r *Resources) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var first error
	for k, e := range r.m {
		if err := e.c.Close(); err != nil && first == nil {
			first = err
		}
		delete(r.m, k)
	}
	return first
}
