package flows

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/sidecall/sidecall/flows/expr"
	"github.com/sidecall/sidecall/flows/lua"
	"go.uber.org/zap"
)

// Lua binding choices (where Kong is silent):
//   - One process-wide sandbox (ConfigureLua) serves every chunk and
//     template; the time limit is per call.
//   - A Lua error or timeout answers 500 {"message":"An unexpected error
//     occurred"} (Kong's text); the log names the chunk's config path.
//   - kong.response.set_header/add_header/clear_header in rewrite/access are
//     kept until the response exists (applied at the first serverless
//     header_filter) or go on the reply of kong.response.exit, under the
//     exit's own headers.
//   - Template variables read the Exchange live at render time (Kong
//     snapshots them at first access; the difference shows only inside one
//     plugin that changes headers between renders).
//   - Keep kong.ctx.shared values JSON-like (map[string]any, []any, string,
//     numbers, bool, nil): those are live in Lua; other Go types are seen
//     through a JSON copy.

// LuaRuntime is what config Lua and $(...) templates run on: the sandbox
// (time limit, caps, pooled states), a hook told of every Lua error or
// timeout and one told of every kong.vault.get refused because the config
// does not name the reference (metrics). One runtime serves the snapshots
// of one server.
type LuaRuntime struct {
	Sandbox       *lua.Sandbox
	OnError       func(timeout bool)
	OnVaultDenied func()
}

// NewLuaRuntime returns a runtime with a sandbox made from o.
func NewLuaRuntime(o lua.Options) *LuaRuntime { return &LuaRuntime{Sandbox: lua.New(o)} }

func (rt *LuaRuntime) observe(err error) {
	if rt.OnError != nil && (IsLuaTimeout(err) || IsLuaError(err)) {
		rt.OnError(IsLuaTimeout(err))
	}
}

// Template is a compiled $(...) template bound to its load's Lua runtime.
type Template struct {
	*expr.Template
	rt   *LuaRuntime
	refs *vaultSet // what kong.vault.get may answer
	path Path
}

// Template parses a $(...) template; a problem is reported at at and nil
// returned.
func (b *Builder) Template(src string, at Path) *Template {
	t, err := expr.Parse(src)
	if err != nil {
		b.Errorf(at, "%v", err)
		return nil
	}
	if b.luaOff && !t.IsLiteral() {
		b.Errorf(at, "$(...) expressions run Lua, which is off (untrusted_lua off)")
		return nil
	}
	// References inside $(...) are Lua's (resolved here, for
	// kong.vault.get); one in the literal text stays refused.
	lit := src
	for _, code := range t.Code() {
		lit = strings.Replace(lit, "$("+code+")", "", 1)
	}
	if !strings.Contains(lit, "{vault://") {
		b.withdrawNotWhole(at)
	}
	ok := true
	for _, code := range t.Code() {
		ok = b.luaRefs(code, at) && ok
	}
	if g := t.Globals(); len(g) > 0 {
		known := b.templateNames()
		for _, n := range g {
			if !known[n] {
				b.Errorf(at, "$(...) reads %q, which no template provides (%s)", n, exprNamesHint)
				ok = false
			}
		}
	}
	if !ok {
		return nil
	}
	return &Template{Template: t, rt: b.lua(), refs: b.vaultRefs(), path: at}
}

// exprNamesHint names what a $(...) expression reads, for its errors.
const exprNamesHint = "a template reads headers, query_params, uri_captures, shared, callouts, kong, ngx and Lua's string, table, math"

// templateNames are the names a $(...) expression may read, asked of the
// sandbox once per load.
func (b *Builder) templateNames() map[string]bool {
	if b.tplNames == nil {
		b.tplNames = map[string]bool{}
		for _, n := range b.lua().Sandbox.TemplateNames() {
			b.tplNames[n] = true
		}
	}
	return b.tplNames
}

// Path is where the template is in the config.
func (t *Template) Path() Path { return t.path }

// lua returns the load's runtime, making a private one for a Builder used
// without Load (tests).
func (b *Builder) lua() *LuaRuntime {
	if b.Runtime == nil {
		b.Runtime = NewLuaRuntime(lua.Options{})
		b.OnClose(b.Runtime.Sandbox.Close)
	}
	return b.Runtime
}

// templateVars are the template variables of x.
func templateVars(x *Exchange) *lua.Vars {
	if x.Shared == nil {
		x.Shared = map[string]any{}
	}
	return &lua.Vars{
		Headers:    x.Request.Headers,
		RawQuery:   x.Request.RawQuery,
		Named:      x.Captures.Named,
		Positional: x.Captures.Positional,
		Shared:     x.Shared,
	}
}

// RenderString renders t for x. A Lua error or timeout is an error
// (lua.RuntimeError or lua.TimeoutError inside).
func RenderString(ctx context.Context, t *Template, x *Exchange) (string, error) {
	if t == nil {
		return "", nil
	}
	if t.IsLiteral() {
		return t.Source(), nil
	}
	v, err := t.Render(ctx, t.rt.Sandbox, &exchangeHost{x: x, refs: t.refs, rt: t.rt, at: t.path}, templateVars(x))
	if err != nil {
		t.rt.observe(err)
	}
	return v, err
}

// RenderValue renders t for x keeping the type of a single whole-value
// placeholder (map[string]any, []any, int64, float64, bool, nil); any
// other template gives a string.
func RenderValue(ctx context.Context, t *Template, x *Exchange) (any, error) {
	if t == nil {
		return nil, nil
	}
	if t.IsLiteral() {
		return t.Source(), nil
	}
	v, err := t.Value(ctx, t.rt.Sandbox, &exchangeHost{x: x, refs: t.refs, rt: t.rt, at: t.path}, templateVars(x))
	if err != nil {
		t.rt.observe(err)
	}
	return v, err
}

// LuaChunk is Lua code from the config, compiled at load.
type LuaChunk struct {
	chunk *lua.Chunk
	path  Path
	refs  *vaultSet // what kong.vault.get may answer: the references the config names
	phase string    // overrides the Exchange's phase ("rewrite")
	rt    *LuaRuntime
}

// AsRewrite makes the chunk see Kong's rewrite phase (it runs in access).
func (c *LuaChunk) AsRewrite() { c.phase = "rewrite" }

// AsLog makes the chunk see Kong's log phase (run on a LogCopy).
func (c *LuaChunk) AsLog() { c.phase = "log" }

// LogCopy is what a log phase chunk sees of x once the response is done:
// a copy that another goroutine may read and change (the request's
// headers, the response's status and headers, kong.ctx.shared deep
// copied; no bodies).
func LogCopy(x *Exchange) *Exchange {
	req := x.Request
	req.Headers = x.Request.Headers.Clone()
	req.Body, req.HasBody = nil, false
	cp := NewExchange(x.ID, req, x.Log)
	cp.Route, cp.Captures = x.Route, x.Captures
	cp.Attributes = make(map[string]string, len(x.Attributes))
	for k, v := range x.Attributes {
		cp.Attributes[k] = v
	}
	cp.Response = Response{Status: x.Response.Status, Headers: x.Response.Headers.Clone()}
	if x.Reply != nil {
		cp.Reply = &Reply{Status: x.Reply.Status, Headers: x.Reply.Headers.Clone()}
	}
	cp.Shared, _ = deepCopy(x.Shared).(map[string]any)
	cp.Phase = PhaseBodyFilter
	return cp
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		if t == nil {
			return map[string]any{}
		}
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// SetsResponseHeaders tells whether the chunk may change response headers
// (kong.response.set_header and friends): when it runs in access, Envoy
// must send the response headers for the change to reach the client.
func (c *LuaChunk) SetsResponseHeaders() bool {
	for _, f := range []string{"set_header", "add_header", "clear_header", "set_headers"} {
		if c.UsesKong("kong.response." + f) {
			return true
		}
	}
	return c.UsesKong("ngx.header")
}

// Lua compiles a chunk; a syntax error is reported at at and nil returned.
// The {vault://...} references written in the code are resolved now (an
// error is reported at at): kong.vault.get answers those and the other
// references the config names, and nothing else.
func (b *Builder) Lua(src string, at Path) *LuaChunk {
	b.withdrawNotWhole(at) // Lua code may name references anywhere in its text
	if b.luaOff {
		b.Errorf(at, "Lua is off (untrusted_lua off)")
		return nil
	}
	c, err := lua.Compile(src, string(at))
	if err != nil {
		var se *lua.SyntaxError
		if l, ok := b.lines[at]; ok && b.literal[at] && errors.As(err, &se) && se.Line > 0 {
			// A | block starts on the line after its key: chunk line N is
			// file line l+N.
			b.errorAt(l+se.Line, at, "lua syntax error: "+se.Msg)
			return nil
		}
		var ue *lua.UnknownNameError
		if errors.As(err, &ue) {
			msg := ue.Name + " is not provided by sidecall (see docs/lua.md)"
			l, ok := b.lines[at]
			switch {
			case ok && b.literal[at]:
				b.errorAt(l+ue.Line, at, msg)
			case ok && !strings.Contains(strings.TrimRight(src, "\n"), "\n"):
				b.errorAt(l, at, msg) // a one-line scalar
			default:
				b.Errorf(at, "line %d of the chunk: %s", ue.Line, msg)
			}
			return nil
		}
		b.Errorf(at, "lua syntax error: %v", err)
		return nil
	}
	if !b.luaRefs(src, at) {
		return nil
	}
	return &LuaChunk{chunk: c, path: at, refs: b.vaultRefs(), rt: b.lua()}
}

// Path is where the chunk was configured.
func (c *LuaChunk) Path() Path { return c.path }

// Callouts are the kong.ctx.shared.callouts.<name> the chunk reads.
func (c *LuaChunk) Callouts() []string {
	if c == nil {
		return nil
	}
	return append([]string(nil), c.chunk.Refs().Callouts...)
}

// ReadsCalloutsDynamically tells whether the chunk may read callouts whose
// names cannot be known statically.
func (c *LuaChunk) ReadsCalloutsDynamically() bool { return c != nil && c.chunk.Refs().DynamicCallouts }

// UsesKong tells whether the chunk may use a PDK path such as
// "kong.request.get_body" (true when kong is used dynamically).
func (c *LuaChunk) UsesKong(path string) bool { return c != nil && c.chunk.Refs().UsesKong(path) }

// Run runs the chunk with the PDK bound to x in x.Phase.
// kong.response.exit sets x.Reply and returns nil. A Lua error or timeout
// is logged with the chunk's path and returned as a 500 *HTTPError whose
// Err is the *lua.RuntimeError or *lua.TimeoutError.
func (c *LuaChunk) Run(ctx context.Context, x *Exchange) error {
	if c == nil {
		return nil
	}
	err := c.rt.Sandbox.Run(ctx, c.chunk, &exchangeHost{x: x, phase: c.phase, refs: c.refs, rt: c.rt, chunk: c.path})
	if err == nil {
		return nil
	}
	log := x.Log
	if log == nil {
		log = zap.NewNop()
	}
	c.rt.observe(err)
	var te *lua.TimeoutError
	if errors.As(err, &te) {
		log.Error("lua chunk timed out", zap.String("chunk", string(c.path)), zap.Error(err))
	} else {
		log.Error("lua chunk failed", zap.String("chunk", string(c.path)), zap.Error(err))
	}
	return &HTTPError{Status: 500, Message: "An unexpected error occurred", Err: err}
}

// IsLuaTimeout tells whether err comes from a Lua time limit.
func IsLuaTimeout(err error) bool {
	var te *lua.TimeoutError
	return errors.As(err, &te)
}

// IsLuaError tells whether err comes from a Lua runtime error.
func IsLuaError(err error) bool {
	var re *lua.RuntimeError
	return errors.As(err, &re)
}

// exchangeHost is the PDK's view of an Exchange.
type exchangeHost struct {
	x     *Exchange
	phase string
	refs  *vaultSet // the references the config names, resolved at load
	rt    *LuaRuntime
	chunk Path // the chunk being run, "" for templates
	at    Path // the template being rendered
}

var _ lua.Host = (*exchangeHost)(nil)

func (h *exchangeHost) Phase() string {
	if h.phase != "" {
		return h.phase
	}
	return h.x.Phase.String()
}

func (h *exchangeHost) Method() string { return h.x.Request.Method }

func (h *exchangeHost) Scheme() string {
	if h.x.Request.Scheme == "" {
		return "http"
	}
	return h.x.Request.Scheme
}

func (h *exchangeHost) Host() string {
	a := h.x.Request.Authority
	if host, _, err := net.SplitHostPort(a); err == nil {
		return host
	}
	return a
}

func (h *exchangeHost) Port() int {
	if _, p, err := net.SplitHostPort(h.x.Request.Authority); err == nil {
		if n, err := strconv.Atoi(p); err == nil {
			return n
		}
	}
	if h.Scheme() == "https" {
		return 443
	}
	return 80
}

func (h *exchangeHost) Path() string                 { return h.x.Request.Path }
func (h *exchangeHost) RawQuery() string             { return h.x.Request.RawQuery }
func (h *exchangeHost) Headers() map[string][]string { return h.x.Request.Headers }
func (h *exchangeHost) Body() ([]byte, bool)         { return h.x.Request.Body, h.x.Request.HasBody }
func (h *exchangeHost) SetHeader(n, v string)        { h.x.SetHeader(n, v) }
func (h *exchangeHost) AddHeader(n, v string)        { h.x.AddHeader(n, v) }
func (h *exchangeHost) ClearHeader(n string)         { h.x.ClearHeader(n) }
func (h *exchangeHost) SetPath(p string)             { h.x.SetPath(p) }
func (h *exchangeHost) SetRawQuery(q string)         { h.x.SetRawQuery(q) }
func (h *exchangeHost) SetMethod(m string)           { h.x.SetMethod(m) }
func (h *exchangeHost) SetBody(b []byte)             { h.x.SetBody(b) }

func (h *exchangeHost) Status() int {
	if h.x.Reply != nil {
		return h.x.Reply.Status
	}
	return h.x.Response.Status
}

func (h *exchangeHost) ResponseHeaders() map[string][]string {
	if h.x.Reply != nil {
		return h.x.Reply.Headers
	}
	if h.x.Response.Headers == nil {
		return map[string][]string{}
	}
	return h.x.Response.Headers
}

func (h *exchangeHost) early() bool {
	p := h.Phase()
	return h.x.Reply == nil && (p == "access" || p == "rewrite")
}

func (h *exchangeHost) pend(op byte, name, value string) {
	h.x.early = append(h.x.early, respHeaderOp{op, name, value})
}

func (h *exchangeHost) SetResponseHeader(n, v string) {
	if h.early() {
		h.pend('s', n, v)
		return
	}
	h.x.SetResponseHeader(n, v)
}

func (h *exchangeHost) AddResponseHeader(n, v string) {
	if h.early() {
		h.pend('a', n, v)
		return
	}
	h.x.AddResponseHeader(n, v)
}

func (h *exchangeHost) ClearResponseHeader(n string) {
	if h.early() {
		h.pend('c', n, "")
		return
	}
	h.x.ClearResponseHeader(n)
}

func (h *exchangeHost) SetStatus(code int) {
	if h.x.Reply != nil {
		h.x.Reply.Status = code
		return
	}
	h.x.SetResponseStatus(code)
}

func (h *exchangeHost) ResponseBody() ([]byte, bool) {
	if h.x.Reply != nil {
		return h.x.Reply.Body, true
	}
	return h.x.Response.Body, h.x.Response.HasBody
}

func (h *exchangeHost) SetResponseBody(b []byte) {
	if h.x.Reply != nil {
		h.x.Reply.Body = b
		return
	}
	h.x.SetResponseBody(b)
}

// Exit answers the client; response headers set earlier in access apply
// to the reply, under the exit's own headers (as in Kong).
func (h *exchangeHost) Exit(status int, body []byte, headers map[string][]string) {
	h.x.Respond(status, Headers{}, body)
	h.x.applyEarlyResponseHeaders()
	for k, v := range headers {
		h.x.Reply.Headers[strings.ToLower(k)] = v
	}
}

func (h *exchangeHost) Shared() map[string]any {
	if h.x.Shared == nil {
		h.x.Shared = map[string]any{}
	}
	return h.x.Shared
}

// Logger is where print and kong.log go: the request's logger, with the
// chunk's config path so a log line says which chunk wrote it.
func (h *exchangeHost) Logger() *zap.Logger {
	if h.x.Log == nil {
		return zap.NewNop()
	}
	if h.chunk != "" {
		return h.x.Log.With(zap.String("chunk", string(h.chunk)))
	}
	return h.x.Log
}

// Vault answers kong.vault.get from the references the config names,
// resolved at load: no file or environment variable is read at request
// time. Any other reference is refused (nil, err in Lua), counted
// (LuaRuntime.OnVaultDenied) and logged at warn with the config path of
// the code that asked and the reference (secret values in it hidden).
func (h *exchangeHost) Vault(ref string) (string, error) {
	if v, ok := h.refs.get(ref); ok {
		return v, nil
	}
	if !strings.HasPrefix(ref, "{vault://") || !strings.HasSuffix(ref, "}") {
		return "", errors.New("not a vault reference")
	}
	if h.rt != nil && h.rt.OnVaultDenied != nil {
		h.rt.OnVaultDenied()
	}
	if h.x.Log != nil {
		at := h.chunk
		if at == "" {
			at = h.at
		}
		shown := h.refs.redact(ref)
		if len(shown) > 256 {
			shown = shown[:256] + "..."
		}
		h.x.Log.Warn("kong.vault.get refused a reference the config does not name",
			zap.String("chunk", string(at)), zap.String("reference", shown))
	}
	return "", errors.New("vault reference not found: sidecall resolves only the references its config names")
}

// Var is the ngx.var subset sidecall knows.
func (h *exchangeHost) Var(name string) (string, bool) {
	r := &h.x.Request
	switch name {
	case "request_method":
		return r.Method, true
	case "uri":
		return r.Path, true
	case "request_uri":
		if r.RawQuery != "" {
			return r.Path + "?" + r.RawQuery, true
		}
		return r.Path, true
	case "args", "query_string":
		return r.RawQuery, true
	case "is_args":
		if r.RawQuery != "" {
			return "?", true
		}
		return "", true
	case "host", "server_name":
		return h.Host(), true
	case "http_host":
		return r.Authority, true
	case "scheme":
		return h.Scheme(), true
	case "server_port":
		return strconv.Itoa(h.Port()), true
	case "request_id":
		return h.x.ID, true
	case "server_addr":
		a := h.x.Attributes["destination.address"]
		if host, _, err := net.SplitHostPort(a); err == nil {
			return host, true
		}
		return a, a != ""
	case "remote_addr", "remote_port":
		a := h.x.Attributes["source.address"]
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return a, a != ""
		}
		if name == "remote_port" {
			return port, true
		}
		return host, true
	case "status":
		if s := h.Status(); s != 0 {
			return strconv.Itoa(s), true
		}
		return "", false
	}
	if n, ok := strings.CutPrefix(name, "http_"); ok {
		v := r.Headers.Get(strings.ReplaceAll(n, "_", "-"))
		return v, r.Headers.Has(strings.ReplaceAll(n, "_", "-"))
	}
	if n, ok := strings.CutPrefix(name, "arg_"); ok {
		v, ok := lua.ParseQuery(r.RawQuery)[n]
		if !ok {
			return "", false
		}
		if l, isList := v.([]any); isList && len(l) > 0 {
			v = l[0]
		}
		if s, isStr := v.(string); isStr {
			return s, true
		}
		return "", true
	}
	return "", false
}

var _ lua.HostInfo = (*exchangeHost)(nil)

// Route is kong.router.get_route: the matched route's Kong fields.
func (h *exchangeHost) Route() map[string]any {
	r := h.x.Route
	if r == nil || r.Config == nil {
		return nil
	}
	c := r.Config
	m := map[string]any{"id": orNil(c.ID), "name": orNil(r.Name), "paths": strList(c.Paths),
		"hosts": strList(c.Hosts), "methods": strList(c.Methods), "protocols": strList(c.Protocols),
		"regex_priority": int64(c.RegexPriority)}
	if c.StripPath != nil {
		m["strip_path"] = *c.StripPath
	}
	if c.PreserveHost != nil {
		m["preserve_host"] = *c.PreserveHost
	}
	if s := r.Service; s != nil {
		m["service"] = map[string]any{"id": orNil(s.Config.ID)}
	}
	return m
}

// Service is kong.router.get_service: the route's service, from its URL.
func (h *exchangeHost) Service() map[string]any {
	if h.x.Route == nil || h.x.Route.Service == nil {
		return nil
	}
	s := h.x.Route.Service
	m := map[string]any{"name": orNil(s.Name)}
	if s.Config != nil {
		m["id"] = orNil(s.Config.ID)
	}
	if u := s.URL; u != nil {
		m["protocol"] = u.Scheme
		m["host"] = u.Hostname()
		port, _ := strconv.Atoi(u.Port())
		if port == 0 {
			port = 80
			if u.Scheme == "https" || u.Scheme == "grpcs" {
				port = 443
			}
		}
		m["port"] = int64(port)
		m["path"] = orNil(u.Path)
	}
	return m
}

func orNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func strList(l []string) any {
	if len(l) == 0 {
		return nil
	}
	out := make([]any, len(l))
	for i, v := range l {
		out[i] = v
	}
	return out
}

// URICaptures are the route's regex path captures.
func (h *exchangeHost) URICaptures() (map[string]string, []string) {
	return h.x.Captures.Named, h.x.Captures.Positional
}

// ResponseSource is kong.response.get_source.
func (h *exchangeHost) ResponseSource() string {
	if h.x.Reply != nil {
		return "exit"
	}
	return "service"
}
