package transformer

import (
	"context"
	"mime"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"

	"gopkg.in/yaml.v3"
)

type respFields struct {
	JSON    []string `yaml:"json"`
	Headers []string `yaml:"headers"`
}

type respTyped struct {
	JSON      []string `yaml:"json"`
	JSONTypes []string `yaml:"json_types"`
	Headers   []string `yaml:"headers"`
}

type respConfig struct {
	Remove  respFields `yaml:"remove"`
	Rename  respFields `yaml:"rename"`
	Replace respTyped  `yaml:"replace"`
	Add     respTyped  `yaml:"add"`
	Append  respTyped  `yaml:"append"`
}

// respEntry is one compiled response entry; typ is its json_types cast.
type respEntry struct {
	name, value string
	empty       bool
	typ         string
}

// responseTransformer is Kong's response-transformer: headers in
// header_filter, the JSON body in body_filter, each in the order remove,
// rename, replace, add, append.
type responseTransformer struct {
	headers [nOps][]respEntry
	json    [nOps][]respEntry
}

func newResponseTransformer(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
	var c respConfig
	b.Decode(raw, at, &c)
	p := &responseTransformer{}
	type lists struct {
		json, types, headers []string
	}
	all := [nOps]lists{{c.Remove.JSON, nil, c.Remove.Headers}, {c.Rename.JSON, nil, c.Rename.Headers},
		{c.Replace.JSON, c.Replace.JSONTypes, c.Replace.Headers}, {c.Add.JSON, c.Add.JSONTypes, c.Add.Headers},
		{c.Append.JSON, c.Append.JSONTypes, c.Append.Headers}}
	for op, l := range all {
		sec := at.Key(opNames[op])
		for i, t := range l.types {
			if t != "boolean" && t != "number" && t != "string" {
				b.Errorf(sec.Key("json_types").Index(i), "must be one of boolean, number, string, got %q", t)
			}
		}
		for i, s := range l.headers {
			if e, ok := respCompile(b, op, s, sec.Key("headers").Index(i), true); ok {
				p.headers[op] = append(p.headers[op], e)
			}
		}
		for i, s := range l.json {
			e, ok := respCompile(b, op, s, sec.Key("json").Index(i), false)
			if !ok {
				continue
			}
			if i < len(l.types) {
				e.typ = l.types[i]
			}
			p.json[op] = append(p.json[op], e)
		}
	}
	return p, nil
}

func respCompile(b *flows.Builder, op int, s string, at flows.Path, header bool) (respEntry, bool) {
	name, value, ok := splitEntry(s)
	switch {
	case op != opRemove && !hasColon(s):
		b.Errorf(at, "must be name:value, got %q", s)
		return respEntry{}, false
	case !ok:
		b.Errorf(at, "must start with a name, got %q", s)
		return respEntry{}, false
	case header && op == opRename && (!kongHeaderName.MatchString(name) || !kongHeaderName.MatchString(value)):
		b.Errorf(at, "'%s' is not a valid header (Kong allows A-Z, a-z, 0-9, _ and -)", s)
		return respEntry{}, false
	case header && !httpx.ValidHeaderName(name):
		// Kong's PDK fails on such a name when the response comes.
		b.Errorf(at, "%q is not a valid header name", name)
		return respEntry{}, false
	case header && op == opAppend && value == "":
		b.Errorf(at, "has no value (Kong's add_header fails on every response)")
		return respEntry{}, false
	}
	if op == opRemove {
		value = ""
	}
	return respEntry{name: name, value: value, empty: value == ""}, true
}

func (p *responseTransformer) Name() string  { return "response-transformer" }
func (p *responseTransformer) Priority() int { return ResponsePriority }

func (p *responseTransformer) bodySet() bool {
	for _, l := range p.json {
		if len(l) > 0 {
			return true
		}
	}
	return false
}

func (p *responseTransformer) Needs() flows.Needs {
	return flows.Needs{ResponseHeaders: true, ResponseBody: p.bodySet()}
}

// HeaderFilter is Kong's transform_headers: conditions read the headers as
// they were when it started; changes go to the live response.
func (p *responseTransformer) HeaderFilter(_ context.Context, x *flows.Exchange) error {
	was := x.Response.Headers.Clone()
	for _, e := range p.headers[opRemove] {
		x.ClearResponseHeader(e.name)
	}
	for _, e := range p.headers[opRename] {
		if vals, ok := was[strings.ToLower(e.name)]; ok && !e.empty {
			setAll(x, e.value, vals)
			x.ClearResponseHeader(e.name)
		}
	}
	for _, e := range p.headers[opReplace] {
		if was.Has(e.name) && !e.empty {
			x.SetResponseHeader(e.name, e.value)
		}
	}
	for _, e := range p.headers[opAdd] {
		if !was.Has(e.name) && !e.empty {
			x.SetResponseHeader(e.name, e.value)
		}
	}
	for _, e := range p.headers[opAppend] {
		x.AddResponseHeader(e.name, e.value)
	}
	return nil
}

func setAll(x *flows.Exchange, name string, vals []string) {
	x.ClearResponseHeader(name)
	for _, v := range vals {
		x.AddResponseHeader(name, v)
	}
}

// isJSON is Kong's is_json_body: one of the comma-separated media types
// is application/json or application/*+json.
func isJSON(ct string) bool {
	for _, part := range strings.Split(ct, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		typ, sub, ok := strings.Cut(mt, "/")
		if ok && typ == "application" && (sub == "json" || strings.HasSuffix(sub, "+json")) {
			return true
		}
	}
	return false
}

// BodyFilter is Kong's transform_json_body on a JSON response; a body
// that is not a JSON object is left as it is.
func (p *responseTransformer) BodyFilter(_ context.Context, x *flows.Exchange) error {
	if !p.bodySet() || !x.Response.HasBody || !isJSON(x.Response.Headers.Get("content-type")) {
		return nil
	}
	o, ok := parseObject(x.Response.Body)
	if !ok {
		x.Log.Debug("response-transformer: the body is not a JSON object; left as it is")
		return nil
	}
	for _, e := range p.json[opRemove] {
		o.del(e.name)
	}
	for _, e := range p.json[opRename] {
		switch _, ok := o.get(e.name); {
		case !ok || e.empty:
		case e.name == e.value:
			o.del(e.name) // Kong sets new, then clears old: the same key
		default:
			o.rename(e.name, e.value, false)
		}
	}
	for _, e := range p.json[opReplace] {
		v, ok := kongJSONValue(e.value, e.empty, e.typ)
		if ok && truthy(o.get(e.name)) {
			o.set(e.name, v)
		}
	}
	for _, e := range p.json[opAdd] {
		v, ok := kongJSONValue(e.value, e.empty, e.typ)
		if ok && !truthy(o.get(e.name)) {
			o.set(e.name, v)
		}
	}
	for _, e := range p.json[opAppend] {
		if v, ok := kongJSONValue(e.value, e.empty, e.typ); ok {
			cur, had := o.get(e.name)
			o.set(e.name, appendJSON(cur, had, v))
		}
	}
	x.SetResponseBody(o.encode())
	return nil
}
