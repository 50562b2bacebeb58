package transformer

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"

	"gopkg.in/yaml.v3"
)

type reqFields struct {
	Body        []string `yaml:"body"`
	Headers     []string `yaml:"headers"`
	Querystring []string `yaml:"querystring"`
}

type reqReplace struct {
	Body        []string `yaml:"body"`
	Headers     []string `yaml:"headers"`
	Querystring []string `yaml:"querystring"`
	URI         *string  `yaml:"uri"`
}

type reqConfig struct {
	HTTPMethod *string    `yaml:"http_method"`
	Remove     reqFields  `yaml:"remove"`
	Rename     reqFields  `yaml:"rename"`
	Replace    reqReplace `yaml:"replace"`
	Add        reqFields  `yaml:"add"`
	Append     reqFields  `yaml:"append"`
}

// entry is one compiled "name:value" entry.
type entry struct {
	name  string
	value string          // literal value
	tpl   *flows.Template // a $(...) value, else nil
	empty bool            // no value after the colon
	path  flows.Path
	// usesHeaders, usesQuery: the template reads headers / query_params,
	// which Kong snapshots at their first use in the request.
	usesHeaders, usesQuery bool
}

type section struct{ headers, query, body []entry }

// requestTransformer is Kong's request-transformer: replace.uri, then
// http_method, headers, body and querystring, each in the order remove,
// rename, replace, add, append (multipart bodies: rename, remove, replace,
// add, as Kong does).
type requestTransformer struct {
	ops       [nOps]section
	uri       *entry
	method    string
	needs     flows.Needs
	templates int // non-literal templates, for the budget
	luaLimit  time.Duration
}

// methods kong.service.request.set_method accepts.
var setMethods = map[string]bool{"GET": true, "HEAD": true, "PUT": true, "POST": true, "DELETE": true,
	"OPTIONS": true, "MKCOL": true, "COPY": true, "MOVE": true, "PROPFIND": true, "PROPPATCH": true,
	"LOCK": true, "UNLOCK": true, "PATCH": true, "TRACE": true}

var upper = regexp.MustCompile(`^[A-Z]+$`)

func newRequestTransformer(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
	var c reqConfig
	b.Decode(raw, at, &c)
	p := &requestTransformer{luaLimit: b.LuaTimeLimit()}
	if c.HTTPMethod != nil {
		m := *c.HTTPMethod
		switch {
		case !upper.MatchString(m):
			b.Errorf(at.Key("http_method"), "must be an upper-case HTTP method, got %q", m)
		case !setMethods[m]:
			b.Errorf(at.Key("http_method"), "%q is not a method Kong can set (kong.service.request.set_method fails on it)", m)
		}
		p.method = m
	}
	lists := [nOps]reqFields{c.Remove, c.Rename,
		{Body: c.Replace.Body, Headers: c.Replace.Headers, Querystring: c.Replace.Querystring}, c.Add, c.Append}
	for op, f := range lists {
		sec := at.Key(opNames[op])
		p.ops[op].headers = p.compileHeaders(b, op, f.Headers, sec.Key("headers"))
		p.ops[op].query = p.compile(b, op, f.Querystring, sec.Key("querystring"))
		p.ops[op].body = p.compile(b, op, f.Body, sec.Key("body"))
	}
	if c.Replace.URI != nil && *c.Replace.URI != "" {
		e := p.entryValue(b, *c.Replace.URI, at.Key("replace").Key("uri"))
		p.uri = &e
	}
	hasBody := false
	for _, s := range p.ops {
		hasBody = hasBody || len(s.body) > 0
	}
	if len(p.ops[opAppend].body) > 0 {
		b.Warnf("%s: append.body does not change multipart/form-data bodies (as in Kong); JSON and form-urlencoded ones get it", at.Key("append").Key("body"))
	}
	// GET, HEAD and TRACE move a form body's fields to the query string.
	p.needs.RequestBody = hasBody || p.method == "GET" || p.method == "HEAD" || p.method == "TRACE"
	return p, nil
}

// compileHeaders checks header entries as Kong's schema does.
func (p *requestTransformer) compileHeaders(b *flows.Builder, op int, list []string, at flows.Path) []entry {
	out := make([]entry, 0, len(list))
	for i, s := range list {
		ep := at.Index(i)
		name, value, ok := splitEntry(s)
		switch {
		case op != opRemove && !hasColon(s):
			b.Errorf(ep, "must be name:value, got %q", s)
			continue
		case !ok || !kongHeaderName.MatchString(name):
			b.Errorf(ep, "%q is not a valid header name (Kong allows A-Z, a-z, 0-9, _ and -)", name)
			continue
		case op == opRename && !kongHeaderName.MatchString(value):
			b.Errorf(ep, "%q is not a valid header name (Kong allows A-Z, a-z, 0-9, _ and -)", value)
			continue
		}
		e := entry{name: strings.ToLower(name), path: ep}
		if op != opRemove {
			e = p.entryValue(b, value, ep)
			e.name = strings.ToLower(name)
		}
		if (op == opReplace || op == opAppend) && e.name == "host" {
			b.Warnf("%s: a host change reaches the upstream only when Envoy's ext_proc mutation_rules allow it (allow_all_routing)", ep)
		}
		out = append(out, e)
	}
	return out
}

// compile checks querystring and body entries: names for remove,
// name:value with a value for the others (Kong's check_for_value).
func (p *requestTransformer) compile(b *flows.Builder, op int, list []string, at flows.Path) []entry {
	out := make([]entry, 0, len(list))
	for i, s := range list {
		ep := at.Index(i)
		name, value, ok := splitEntry(s)
		if !ok {
			b.Errorf(ep, "must start with a name, got %q", s)
			continue
		}
		if op == opRemove {
			out = append(out, entry{name: name, path: ep})
			continue
		}
		if value == "" {
			b.Errorf(ep, "key '%s' has no value", name)
			continue
		}
		e := p.entryValue(b, value, ep)
		e.name = name
		out = append(out, e)
	}
	return out
}

// entryValue compiles a value: literal unless it holds $(...). Kong
// renders with '#' lines literal, so only $(...) makes a template.
func (p *requestTransformer) entryValue(b *flows.Builder, value string, at flows.Path) entry {
	e := entry{value: value, empty: value == "", path: at}
	if !strings.Contains(value, "$(") {
		return e
	}
	t := b.Template(value, at)
	if t == nil || t.IsLiteral() {
		return e
	}
	e.tpl = t
	p.templates++
	for _, code := range t.Code() {
		e.usesHeaders = e.usesHeaders || strings.Contains(code, "headers")
		e.usesQuery = e.usesQuery || strings.Contains(code, "query_params")
	}
	return e
}

func (p *requestTransformer) Name() string       { return "request-transformer" }
func (p *requestTransformer) Priority() int      { return RequestPriority }
func (p *requestTransformer) Needs() flows.Needs { return p.needs }

// Budget implements flows.Budgeter: a template may run Lua.
func (p *requestTransformer) Budget(phase flows.Phase) time.Duration {
	if phase != flows.PhaseAccess {
		return 0
	}
	return time.Duration(p.templates) * p.luaLimit
}

// env is Kong's template environment for one request: headers and
// query_params are read once, at their first use, and kept.
type env struct {
	ctx          context.Context
	x            *flows.Exchange
	headers      flows.Headers
	query        string
	hasH, hasQry bool
}

func (v *env) queryParams() string {
	if !v.hasQry {
		v.query, v.hasQry = v.x.Request.RawQuery, true
	}
	return v.query
}

// render gives e's value; a template sees the snapshots.
func (v *env) render(e entry) (string, error) {
	if e.tpl == nil {
		return e.value, nil
	}
	x := v.x
	if e.usesHeaders && !v.hasH {
		v.headers, v.hasH = x.Request.Headers.Clone(), true
	}
	if e.usesQuery {
		v.queryParams()
	}
	h, q := x.Request.Headers, x.Request.RawQuery
	if v.hasH {
		x.Request.Headers = v.headers
	}
	if v.hasQry {
		x.Request.RawQuery = v.query
	}
	s, err := flows.RenderString(v.ctx, e.tpl, x)
	x.Request.Headers, x.Request.RawQuery = h, q
	if err != nil {
		return "", &flows.HTTPError{Status: 500, Message: "An unexpected error occurred",
			Err: fmt.Errorf("request-transformer: failed to render the template at %s: %w", e.path, err)}
	}
	return s, nil
}

func (p *requestTransformer) Access(ctx context.Context, x *flows.Exchange) error {
	v := &env{ctx: ctx, x: x}
	if p.uri != nil {
		s, err := v.render(*p.uri)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(s, "/") {
			return &flows.HTTPError{Status: 500, Message: "An unexpected error occurred",
				Err: fmt.Errorf("request-transformer: %s rendered %q: path must start with /", p.uri.path, s)}
		}
		x.SetPath(escapePath(s))
	}
	p.transformMethod(x)
	if err := p.transformHeaders(v); err != nil {
		return err
	}
	if err := p.transformBody(v); err != nil {
		return err
	}
	return p.transformQuery(v)
}

func (p *requestTransformer) transformMethod(x *flows.Exchange) {
	if p.method == "" {
		return
	}
	x.SetMethod(p.method)
	if p.method != "GET" && p.method != "HEAD" && p.method != "TRACE" {
		return
	}
	if bodyKind(x.Request.Headers.Get("content-type")) != kindForm {
		return
	}
	params := lua.ParseQuery(string(x.Request.Body))
	if len(params) == 0 {
		return
	}
	q := lua.ParseQuery(x.Request.RawQuery)
	for name, val := range params {
		cur, ok := q[name]
		if !ok {
			q[name] = val
			continue
		}
		add := []any{val}
		if l, isList := val.([]any); isList {
			add = l
		}
		if l, isList := cur.([]any); isList {
			q[name] = append(l, add...)
		} else {
			q[name] = append([]any{cur}, add...)
		}
	}
	setQuery(x, q)
}

func setQuery(x *flows.Exchange, q map[string]any) {
	if s := lua.EncodeQuery(q); s != x.Request.RawQuery {
		x.SetRawQuery(s)
	}
}

// transformHeaders works on a copy of the headers, as Kong's does on
// get_headers(), then clears what it removed and sets what differs.
func (p *requestTransformer) transformHeaders(v *env) error {
	if len(p.ops[opRemove].headers)+len(p.ops[opRename].headers)+len(p.ops[opReplace].headers)+
		len(p.ops[opAdd].headers)+len(p.ops[opAppend].headers) == 0 {
		return nil
	}
	x := v.x
	h := x.Request.Headers.Clone()
	delete(h, "host")
	removed := map[string]bool{}
	for _, e := range p.ops[opRemove].headers {
		if _, ok := h[e.name]; ok {
			delete(h, e.name)
			removed[e.name] = true
		}
	}
	for _, e := range p.ops[opRename].headers {
		nv, err := v.render(e)
		if err != nil {
			return err
		}
		nv = strings.ToLower(nv)
		if nv == e.name {
			continue // a change of case only: header names are lower-case here
		}
		if vals, ok := h[e.name]; ok {
			delete(h, e.name)
			h[nv] = vals
			removed[e.name] = true
		}
	}
	for _, e := range p.ops[opReplace].headers {
		val, err := v.render(e)
		if err != nil {
			return err
		}
		if _, ok := h[e.name]; ok || e.name == "host" {
			if e.empty {
				delete(h, e.name) // Kong sets nil in its table: the header is left as it is
			} else {
				h[e.name] = []string{val}
			}
		}
	}
	for _, e := range p.ops[opAdd].headers {
		val, err := v.render(e)
		if err != nil {
			return err
		}
		if _, ok := h[e.name]; !ok && e.name != "host" && !e.empty {
			h[e.name] = []string{val}
		}
	}
	for _, e := range p.ops[opAppend].headers {
		val, err := v.render(e)
		if err != nil {
			return err
		}
		if !e.empty {
			h[e.name] = append(h[e.name], val)
		}
	}
	for name := range removed {
		if _, back := h[name]; !back {
			x.ClearHeader(name)
		}
	}
	for name, vals := range h {
		if sameValues(x.Request.Headers[name], vals) {
			continue
		}
		x.ClearHeader(name)
		for _, s := range vals {
			x.AddHeader(name, s)
		}
	}
	return nil
}

func (p *requestTransformer) transformQuery(v *env) error {
	n := 0
	for _, s := range p.ops {
		n += len(s.query)
	}
	if n == 0 {
		return nil
	}
	q := lua.ParseQuery(v.queryParams())
	for _, e := range p.ops[opRemove].query {
		delete(q, e.name)
	}
	for _, e := range p.ops[opRename].query {
		nv, err := v.render(e)
		if err != nil {
			return err
		}
		if val, ok := q[e.name]; ok && nv != e.name {
			delete(q, e.name)
			q[nv] = val
		}
	}
	for _, e := range p.ops[opReplace].query {
		val, err := v.render(e)
		if err != nil {
			return err
		}
		if _, ok := q[e.name]; ok {
			q[e.name] = val
		}
	}
	for _, e := range p.ops[opAdd].query {
		val, err := v.render(e)
		if err != nil {
			return err
		}
		if _, ok := q[e.name]; !ok {
			q[e.name] = val
		}
	}
	for _, e := range p.ops[opAppend].query {
		val, err := v.render(e)
		if err != nil {
			return err
		}
		q[e.name] = appendValue(q[e.name], val)
	}
	setQuery(v.x, q)
	return nil
}

const (
	kindNone = iota
	kindJSON
	kindMultipart
	kindForm
)

// bodyKind is Kong's get_content_type: a case-insensitive substring test.
func bodyKind(ct string) int {
	ct = strings.ToLower(ct)
	switch {
	case ct == "":
		return kindNone
	case strings.Contains(ct, "application/json"):
		return kindJSON
	case strings.Contains(ct, "multipart/form-data"):
		return kindMultipart
	case strings.Contains(ct, "application/x-www-form-urlencoded"):
		return kindForm
	}
	return kindNone
}

func (p *requestTransformer) transformBody(v *env) error {
	n := 0
	for _, s := range p.ops {
		n += len(s.body)
	}
	x := v.x
	if n == 0 || !x.Request.HasBody {
		return nil
	}
	var out []byte
	var err error
	ct := x.Request.Headers.Get("content-type")
	switch bodyKind(ct) {
	case kindJSON:
		out, err = p.jsonBody(v, x.Request.Body)
	case kindForm:
		out, err = p.formBody(v, x.Request.Body)
	case kindMultipart:
		out, err = p.multipartBody(v, x.Request.Body, ct)
	}
	if err != nil || out == nil {
		return err
	}
	x.SetBody(out)
	return nil
}

// jsonBody is transform_json_body: remove, rename and replace only when
// there is a body; an invalid body is left alone. nil means unchanged.
func (p *requestTransformer) jsonBody(v *env, body []byte) ([]byte, error) {
	o, ok := parseObject(body)
	if !ok {
		if len(body) > 0 {
			return nil, nil
		}
		o = &object{vals: map[string]jsonValue{}}
	}
	has := len(body) > 0
	changed := false
	if has {
		for _, e := range p.ops[opRemove].body {
			o.del(e.name)
			changed = true
		}
		for _, e := range p.ops[opRename].body {
			nv, err := v.render(e)
			if err != nil {
				return nil, err
			}
			changed = o.rename(e.name, nv, true) || changed
		}
		for _, e := range p.ops[opReplace].body {
			val, err := v.render(e)
			if err != nil {
				return nil, err
			}
			if truthy(o.get(e.name)) {
				o.set(e.name, jsonString(val))
				changed = true
			}
		}
	}
	for _, e := range p.ops[opAdd].body {
		val, err := v.render(e)
		if err != nil {
			return nil, err
		}
		if !truthy(o.get(e.name)) {
			o.set(e.name, jsonString(val))
			changed = true
		}
	}
	for _, e := range p.ops[opAppend].body {
		val, err := v.render(e)
		if err != nil {
			return nil, err
		}
		cur, ok := o.get(e.name)
		o.set(e.name, appendJSON(cur, ok, jsonString(val)))
		changed = true
	}
	if !changed {
		return nil, nil
	}
	return o.encode(), nil
}

// formBody is transform_url_encoded_body.
func (p *requestTransformer) formBody(v *env, body []byte) ([]byte, error) {
	q := lua.ParseQuery(string(body))
	has := len(body) > 0
	changed := false
	if has {
		for _, e := range p.ops[opRemove].body {
			delete(q, e.name)
			changed = true
		}
		for _, e := range p.ops[opRename].body {
			nv, err := v.render(e)
			if err != nil {
				return nil, err
			}
			if val, ok := q[e.name]; ok && nv != e.name {
				delete(q, e.name)
				q[nv] = val
				changed = true
			}
		}
		for _, e := range p.ops[opReplace].body {
			val, err := v.render(e)
			if err != nil {
				return nil, err
			}
			if _, ok := q[e.name]; ok {
				q[e.name] = val
				changed = true
			}
		}
	}
	for _, e := range p.ops[opAdd].body {
		val, err := v.render(e)
		if err != nil {
			return nil, err
		}
		if _, ok := q[e.name]; !ok {
			q[e.name] = val
			changed = true
		}
	}
	for _, e := range p.ops[opAppend].body {
		val, err := v.render(e)
		if err != nil {
			return nil, err
		}
		q[e.name] = appendValue(q[e.name], val)
		changed = true
	}
	if !changed {
		return nil, nil
	}
	return []byte(lua.EncodeQuery(q)), nil
}

// multipartBody is transform_multipart_body: rename, remove, replace,
// add (Kong has no append here). A body without a boundary or that does
// not parse is left alone.
func (p *requestTransformer) multipartBody(v *env, body []byte, ct string) ([]byte, error) {
	f, ok := parseFormData(body, ct)
	if !ok {
		return nil, nil
	}
	has := len(body) > 0
	changed := false
	if has {
		for _, e := range p.ops[opRename].body {
			nv, err := v.render(e)
			if err != nil {
				return nil, err
			}
			if val, ok := f.get(e.name); ok && nv != e.name {
				f.setSimple(nv, val)
				f.del(e.name)
				changed = true
			}
		}
		for _, e := range p.ops[opRemove].body {
			f.del(e.name)
			changed = true
		}
		for _, e := range p.ops[opReplace].body {
			val, err := v.render(e)
			if err != nil {
				return nil, err
			}
			if _, ok := f.get(e.name); ok {
				f.del(e.name)
				f.setSimple(e.name, []byte(val))
				changed = true
			}
		}
	}
	for _, e := range p.ops[opAdd].body {
		val, err := v.render(e)
		if err != nil {
			return nil, err
		}
		if _, ok := f.get(e.name); !ok {
			f.setSimple(e.name, []byte(val))
			changed = true
		}
	}
	if !changed {
		return nil, nil
	}
	out, ok := f.encode()
	if !ok {
		return nil, nil
	}
	return out, nil
}

// escapePath is Kong's set_path escaping: every byte outside the URI
// reserved and unreserved sets (and '%') is percent-encoded.
func escapePath(s string) string {
	const keep = "!#$&'()*+,/:;=?@[]-_.~%"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(keep, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
