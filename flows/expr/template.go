package expr

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/sidecall/sidecall/flows/lua"
)

// Template is a value with $(...) placeholders, parsed once at load.
type Template struct {
	src      string
	parts    []part
	callouts []string
	dynamic  bool
}

type part struct {
	lit string
	ph  *placeholder // nil for literal text
}

type placeholder struct {
	src   string
	chunk *lua.Chunk
	fast  *fastPath // nil: always Lua
}

// Parse parses a template. The error text is usable as a config error
// reason.
func Parse(src string) (*Template, error) {
	if err := checkHash(src); err != nil {
		return nil, err
	}
	t := &Template{src: src}
	names := map[string]bool{}
	var lit strings.Builder
	for i := 0; i < len(src); {
		if src[i] != '$' || i+1 >= len(src) || src[i+1] != '(' {
			lit.WriteByte(src[i])
			i++
			continue
		}
		end, err := scanPlaceholder(src, i+2)
		if err != nil {
			return nil, err
		}
		code := src[i+2 : end]
		if strings.TrimSpace(code) == "" {
			return nil, fmt.Errorf("empty $() placeholder at offset %d", i)
		}
		chunk, err := lua.CompileExpr(code, "template")
		if err != nil {
			return nil, fmt.Errorf("lua syntax error in $(%s): %v", code, err)
		}
		refs := chunk.Refs()
		for _, c := range refs.Callouts {
			names[c] = true
		}
		t.dynamic = t.dynamic || refs.DynamicCallouts
		if lit.Len() > 0 {
			t.parts = append(t.parts, part{lit: lit.String()})
			lit.Reset()
		}
		t.parts = append(t.parts, part{ph: &placeholder{src: code, chunk: chunk, fast: fastPathOf(chunk)}})
		i = end + 1
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, part{lit: lit.String()})
	}
	for n := range names {
		t.callouts = append(t.callouts, n)
	}
	sort.Strings(t.callouts)
	return t, nil
}

// checkHash refuses Penlight's line escape: a line starting with '#' is
// Lua code in Kong's request-callout templates.
func checkHash(src string) error {
	for _, line := range strings.Split(src, "\n") {
		if strings.HasPrefix(strings.TrimLeft(line, " \t"), "#") {
			return fmt.Errorf(`a value starting with "#" is a Lua statement in Kong templates; for a literal "#" write $("#...") instead`)
		}
	}
	return nil
}

// scanPlaceholder returns the index of the ')' closing a placeholder whose
// code starts at i, skipping parentheses inside Lua strings and comments.
func scanPlaceholder(src string, i int) (int, error) {
	start := i - 2
	depth := 1
	for i < len(src) {
		c := src[i]
		switch {
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth == 0 {
				return i, nil
			}
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(src) && src[j] != c && src[j] != '\n' {
				if src[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(src) || src[j] != c {
				return 0, fmt.Errorf("unterminated string in $(...) at offset %d", start)
			}
			i = j
		case c == '[' && longBracket(src, i) >= 0:
			lvl := longBracket(src, i)
			closeAt := strings.Index(src[i+lvl+2:], "]"+strings.Repeat("=", lvl)+"]")
			if closeAt < 0 {
				return 0, fmt.Errorf("unterminated long string in $(...) at offset %d", start)
			}
			i += lvl + 2 + closeAt + lvl + 1
		case c == '-' && strings.HasPrefix(src[i:], "--"):
			if lvl := longBracket(src, i+2); lvl >= 0 {
				closeAt := strings.Index(src[i+2+lvl+2:], "]"+strings.Repeat("=", lvl)+"]")
				if closeAt < 0 {
					return 0, fmt.Errorf("unterminated comment in $(...) at offset %d", start)
				}
				i += 2 + lvl + 2 + closeAt + lvl + 1
			} else {
				nl := strings.IndexByte(src[i:], '\n')
				if nl < 0 {
					return 0, fmt.Errorf("unbalanced parentheses in $(...) at offset %d", start)
				}
				i += nl
			}
		}
		i++
	}
	return 0, fmt.Errorf("unbalanced parentheses in $(...) at offset %d", start)
}

// longBracket returns the level of a Lua long bracket [==[ at i, or -1.
func longBracket(s string, i int) int {
	if i >= len(s) || s[i] != '[' {
		return -1
	}
	j := i + 1
	for j < len(s) && s[j] == '=' {
		j++
	}
	if j < len(s) && s[j] == '[' {
		return j - i - 1
	}
	return -1
}

// IsLiteral tells whether the template has no placeholder.
func (t *Template) IsLiteral() bool {
	for _, p := range t.parts {
		if p.ph != nil {
			return false
		}
	}
	return true
}

// Source is the template as written.
func (t *Template) Source() string { return t.src }

// Code is the Lua source of each $(...) placeholder, in order.
func (t *Template) Code() []string {
	var out []string
	for _, p := range t.parts {
		if p.ph != nil {
			out = append(out, p.ph.src)
		}
	}
	return out
}

// Callouts are the callouts.<name> the template reads, sorted and unique.
func (t *Template) Callouts() []string { return append([]string(nil), t.callouts...) }

// Globals are the global names the placeholders read, sorted and unique.
func (t *Template) Globals() []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range t.parts {
		if p.ph == nil {
			continue
		}
		for _, n := range p.ph.chunk.Globals() {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

// ReadsCalloutsDynamically tells whether the template reads the callouts
// table in a way whose names cannot be known (callouts[x], shared[x]).
func (t *Template) ReadsCalloutsDynamically() bool { return t.dynamic }

// FastPathOnly tells whether every placeholder is evaluated in Go.
func (t *Template) FastPathOnly() bool {
	for _, p := range t.parts {
		if p.ph != nil && p.ph.fast == nil {
			return false
		}
	}
	return true
}

// Render renders the template as a string: each placeholder's value is
// rendered with lua.ToString (nil and false are "").
func (t *Template) Render(ctx context.Context, sb *lua.Sandbox, h lua.Host, v *lua.Vars) (string, error) {
	if len(t.parts) == 1 && t.parts[0].ph == nil {
		return t.parts[0].lit, nil
	}
	if v == nil {
		v = &lua.Vars{}
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.ph == nil {
			b.WriteString(p.lit)
			continue
		}
		val, err := p.ph.eval(ctx, sb, h, v)
		if err != nil {
			return "", err
		}
		b.WriteString(lua.ToString(val))
	}
	return b.String(), nil
}

// Value renders the template keeping the type of a single whole-value
// placeholder (a table is a map[string]any or []any, numbers are int64 or
// float64, nil stays nil); any other template gives a string.
func (t *Template) Value(ctx context.Context, sb *lua.Sandbox, h lua.Host, v *lua.Vars) (any, error) {
	if len(t.parts) == 1 && t.parts[0].ph != nil {
		if v == nil {
			v = &lua.Vars{}
		}
		return t.parts[0].ph.eval(ctx, sb, h, v)
	}
	return t.Render(ctx, sb, h, v)
}

func (p *placeholder) eval(ctx context.Context, sb *lua.Sandbox, h lua.Host, v *lua.Vars) (any, error) {
	if p.fast != nil {
		if val, ok := p.fast.eval(h, v); ok {
			return val, nil
		}
	}
	if sb == nil {
		return nil, fmt.Errorf("no Lua sandbox to evaluate $(%s)", p.src)
	}
	return sb.Eval(ctx, p.chunk, h, v)
}

// fastPath is a plain path (headers["x-id"], callouts.c1.response.body.id)
// evaluated in Go. Anything unusual falls back to Lua, so both give the
// same result.
type fastPath struct {
	root string
	keys []any // string or float64
}

var fastRoots = map[string]bool{"headers": true, "query_params": true, "uri_captures": true, "shared": true, "callouts": true}

func fastPathOf(c *lua.Chunk) *fastPath {
	root, keys, ok := c.PlainPath()
	if !ok || !fastRoots[root] {
		return nil
	}
	return &fastPath{root: root, keys: keys}
}

func (f *fastPath) eval(h lua.Host, v *lua.Vars) (any, bool) {
	keys := f.keys
	var cur any
	switch f.root {
	case "headers":
		if len(keys) == 0 {
			return nil, false
		}
		k, ok := keys[0].(string)
		if !ok {
			cur = nil
		} else {
			cur = lua.HeaderValue(v.Headers, k)
		}
		keys = keys[1:]
	case "query_params":
		if len(keys) == 0 {
			return nil, false
		}
		if k, ok := keys[0].(string); ok {
			cur = v.QueryParams()[k]
		}
		keys = keys[1:]
	case "uri_captures":
		if len(keys) == 0 {
			return nil, false
		}
		switch k := keys[0].(type) {
		case string:
			if c, ok := v.Named[k]; ok {
				cur = c
			}
		case float64:
			if i, ok := index(k); ok && i >= 1 && i <= len(v.Positional) {
				cur = v.Positional[i-1]
			}
		}
		keys = keys[1:]
	case "shared":
		m := v.SharedMap(h)
		if m == nil {
			return nil, false
		}
		cur = m
	case "callouts":
		m, ok := v.SharedMap(h)["callouts"].(map[string]any)
		if !ok || m == nil {
			return nil, false
		}
		cur = m
	}
	for _, k := range keys {
		switch c := cur.(type) {
		case map[string]any:
			if c == nil {
				return nil, false
			}
			ks, ok := k.(string)
			if !ok {
				cur = nil
				continue
			}
			cur = c[ks]
		case []any:
			i, ok := k.(float64)
			n, isInt := index(i)
			if !ok || !isInt || n < 1 || n > len(c) {
				cur = nil
				continue
			}
			cur = c[n-1]
		default:
			return nil, false // nil, strings, numbers...: let Lua decide (errors)
		}
	}
	switch cur.(type) {
	case nil, string, bool, float64, int64, int, map[string]any, []any:
		return cur, true
	}
	return nil, false
}

func index(f float64) (int, bool) {
	if f != math.Trunc(f) || math.Abs(f) > 1<<31 {
		return 0, false
	}
	return int(f), true
}
