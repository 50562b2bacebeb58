package lua

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"

	glua "github.com/yuin/gopher-lua"
)

// maxExact is the largest integer a Lua number (float64) holds exactly.
const maxExact = 1 << 53

const maxDepth = 200

// FormatNumber formats a number the way Lua's tostring does (%.14g, with
// integral values printed without a fraction).
func FormatNumber(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	if math.IsInf(f, 1) {
		return "inf"
	}
	if math.IsInf(f, -1) {
		return "-inf"
	}
	if math.IsNaN(f) {
		return "nan"
	}
	return strconv.FormatFloat(f, 'g', 14, 64)
}

// ToString renders a Go value the way a $(...) placeholder does: nil and
// false are "", numbers as Lua prints them, tables (maps, slices) as JSON.
func ToString(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case bool:
		if t {
			return "true"
		}
		return ""
	case []byte:
		return string(t)
	case float64:
		return FormatNumber(t)
	case float32:
		return FormatNumber(float64(t))
	case int:
		return strconv.Itoa(t)
	case int64:
		return strconv.FormatInt(t, 10)
	case int32:
		return strconv.FormatInt(int64(t), 10)
	case uint64:
		return strconv.FormatUint(t, 10)
	case json.Number:
		return t.String()
	case fmt.Stringer:
		return t.String()
	}
	b, err := marshalJSON(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// ParseQuery parses a raw query the way ngx.req.get_uri_args does: a key
// without '=' is true, repeated keys become lists ([]any).
func ParseQuery(raw string) map[string]any {
	out := map[string]any{}
	for _, kv := range strings.Split(raw, "&") {
		if kv == "" {
			continue
		}
		k, v, hasEq := strings.Cut(kv, "=")
		k = unescape(k)
		if k == "" {
			continue
		}
		var val any = true
		if hasEq {
			val = unescape(v)
		}
		switch old := out[k].(type) {
		case nil:
			out[k] = val
		case []any:
			out[k] = append(old, val)
		default:
			out[k] = []any{old, val}
		}
	}
	return out
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// EncodeQuery encodes args (string, bool true, number or list values) as
// kong.service.request.set_query and set_body (form) do: each key through
// ngx.encode_args (percent-encoding with %20 for a space, a bare key for
// true, nothing for false, one pair per list item in order), then the
// per-key strings sorted and joined with '&'.
func EncodeQuery(args map[string]any) string {
	parts := make([]string, 0, len(args))
	for k, v := range args {
		var b strings.Builder
		add := func(v any) {
			switch t := v.(type) {
			case nil:
				return
			case bool:
				if !t {
					return
				}
				if b.Len() > 0 {
					b.WriteByte('&')
				}
				b.WriteString(escapeURIComponent(k))
				return
			}
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(escapeURIComponent(k))
			b.WriteByte('=')
			b.WriteString(escapeURIComponent(ToString(v)))
		}
		if l, ok := v.([]any); ok {
			for _, e := range l {
				add(e)
			}
		} else {
			add(v)
		}
		if b.Len() > 0 {
			parts = append(parts, b.String())
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "&")
}

// escapeURIComponent is ngx.escape_uri: everything but A-Z a-z 0-9 - . _ ~
// is percent-encoded, a space as %20.
func escapeURIComponent(s string) string {
	// url.QueryEscape keeps the same set; it writes a space as '+' and a
	// literal '+' as %2B, so every '+' left is a space.
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// bignum is an integer a Lua number cannot hold exactly (|n| > 2^53); it
// passes through Lua and cjson unchanged and does float arithmetic.
type bignum struct{ n json.Number }

func (s *state) numberOrBig(n json.Number) glua.LValue {
	if i, err := n.Int64(); err == nil {
		if i <= maxExact && i >= -maxExact {
			return glua.LNumber(float64(i))
		}
		return s.newBignum(n)
	}
	str := n.String()
	if !strings.ContainsAny(str, ".eE") {
		return s.newBignum(n) // beyond int64
	}
	f, _ := n.Float64()
	return glua.LNumber(f)
}

func (s *state) newBignum(n json.Number) glua.LValue {
	ud := s.L.NewUserData()
	ud.Value = bignum{n}
	ud.Metatable = s.bignumMT
	return ud
}

func (s *state) intToLua(i int64) glua.LValue {
	if i <= maxExact && i >= -maxExact {
		return glua.LNumber(float64(i))
	}
	return s.newBignum(json.Number(strconv.FormatInt(i, 10)))
}

// toGo converts a Lua value to a Go value: tables become map[string]any or
// []any (a table with keys 1..n, or marked with cjson.array_mt), integral
// numbers int64, others float64, cjson.null nil. Proxies of Go values give
// back the Go value itself.
func (s *state) toGo(lv glua.LValue, depth int) any {
	v, err := s.toGoErr(lv, depth)
	if err != nil {
		s.L.RaiseError("%s", err.Error())
	}
	return v
}

func (s *state) toGoErr(lv glua.LValue, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("table nested too deep (or cyclic)")
	}
	switch t := lv.(type) {
	case *glua.LNilType:
		return nil, nil
	case glua.LBool:
		return bool(t), nil
	case glua.LString:
		return string(t), nil
	case glua.LNumber:
		f := float64(t)
		if f == math.Trunc(f) && math.Abs(f) <= maxExact {
			return int64(f), nil
		}
		return f, nil
	case *glua.LUserData:
		switch u := t.Value.(type) {
		case bignum:
			if i, err := u.n.Int64(); err == nil {
				return i, nil
			}
			return u.n, nil
		}
		if t == s.null {
			return nil, nil
		}
		if t == s.emptyArray {
			return []any{}, nil
		}
		return nil, errors.New("cannot convert userdata")
	case *glua.LTable:
		if p := s.proxies[t]; p != nil {
			return withoutHidden(p.value()), nil
		}
		n := t.Len()
		// A table reached many times (a = {a, a} nested) converts once per
		// path: charge each conversion, so that cannot build anything
		// exponential outside the budget.
		if !s.bud.spend(int64(1 + n/2)) {
			return nil, errBudget
		}
		isArray := t.Metatable == s.arrayMT
		count := 0
		allInts := true
		t.ForEach(func(k, _ glua.LValue) {
			count++
			if kn, ok := k.(glua.LNumber); !ok || float64(kn) != math.Trunc(float64(kn)) || kn < 1 || int(kn) > n {
				allInts = false
			}
		})
		if (count > 0 && allInts && count == n) || (isArray && count == 0) {
			out := make([]any, n)
			for i := 1; i <= n; i++ {
				v, err := s.toGoErr(t.RawGetInt(i), depth+1)
				if err != nil {
					return nil, err
				}
				out[i-1] = v
			}
			return out, nil
		}
		out := make(map[string]any, count)
		var ferr error
		t.ForEach(func(k, v glua.LValue) {
			if ferr != nil {
				return
			}
			var key string
			switch kk := k.(type) {
			case glua.LString:
				key = string(kk)
			case glua.LNumber:
				key = FormatNumber(float64(kk))
			default:
				ferr = fmt.Errorf("cannot convert a table key of type %s", k.Type())
				return
			}
			gv, err := s.toGoErr(v, depth+1)
			if err != nil {
				ferr = err
				return
			}
			out[key] = gv
		})
		return out, ferr
	}
	return nil, fmt.Errorf("cannot convert a %s value", lv.Type())
}

// toLuaCopy converts a Go value to a new Lua value (no live view).
func (s *state) toLuaCopy(v any, depth int) glua.LValue {
	if depth > maxDepth {
		return glua.LNil
	}
	L := s.L
	switch t := v.(type) {
	case nil:
		return s.null
	case string:
		return glua.LString(t)
	case []byte:
		return glua.LString(t)
	case bool:
		return glua.LBool(t)
	case float64:
		return glua.LNumber(t)
	case float32:
		return glua.LNumber(t)
	case int:
		return s.intToLua(int64(t))
	case int64:
		return s.intToLua(t)
	case int32:
		return glua.LNumber(t)
	case uint64:
		if t > math.MaxInt64 {
			return s.newBignum(json.Number(strconv.FormatUint(t, 10)))
		}
		return s.intToLua(int64(t))
	case json.Number:
		return s.numberOrBig(t)
	case map[string]any:
		tb := L.CreateTable(0, len(t))
		for k, e := range t {
			tb.RawSetString(k, s.toLuaCopy(e, depth+1))
		}
		return tb
	case []any:
		tb := L.CreateTable(len(t), 0)
		for i, e := range t {
			tb.RawSetInt(i+1, s.toLuaCopy(e, depth+1))
		}
		tb.Metatable = s.arrayMT
		return tb
	case []string:
		tb := L.CreateTable(len(t), 0)
		for i, e := range t {
			tb.RawSetInt(i+1, glua.LString(e))
		}
		tb.Metatable = s.arrayMT
		return tb
	case map[string]string:
		tb := L.CreateTable(0, len(t))
		for k, e := range t {
			tb.RawSetString(k, glua.LString(e))
		}
		return tb
	case map[string][]string:
		return s.headersTable(t)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return s.intToLua(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return s.toLuaCopy(rv.Uint(), depth)
	}
	// Anything else goes through JSON.
	b, err := json.Marshal(v)
	if err != nil {
		return glua.LString(fmt.Sprint(v))
	}
	var x any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if d.Decode(&x) != nil {
		return glua.LString(fmt.Sprint(v))
	}
	return s.toLuaCopy(x, depth+1)
}

// headersTable is a headers table: single values as strings, repeated
// ones as lists; lookups are case-insensitive and '_' matches '-'.
func (s *state) headersTable(h map[string][]string) *glua.LTable {
	tb := s.L.CreateTable(0, len(h))
	for k, vs := range h {
		k = strings.ToLower(k)
		switch len(vs) {
		case 0:
			continue
		case 1:
			tb.RawSetString(k, glua.LString(vs[0]))
		default:
			l := s.L.CreateTable(len(vs), 0)
			for i, v := range vs {
				l.RawSetInt(i+1, glua.LString(v))
			}
			tb.RawSetString(k, l)
		}
	}
	tb.Metatable = s.headersMT
	return tb
}

// HeaderValue is the Go twin of a headers table lookup: the value of name
// (case-insensitive, '_' matching '-') as a string, a []any of strings for
// repeated headers, or nil.
func HeaderValue(h map[string][]string, name string) any {
	k := strings.ToLower(name)
	vs, ok := h[k]
	if !ok || len(vs) == 0 {
		k2 := strings.ReplaceAll(k, "_", "-")
		if k2 == k {
			return nil
		}
		vs = h[k2]
	}
	switch len(vs) {
	case 0:
		return nil
	case 1:
		return vs[0]
	}
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

// proxy is a live Lua view of a Go map[string]any or []any.
type proxy struct {
	m    map[string]any
	getS func() []any
	setS func([]any)
}

func (p *proxy) value() any {
	if p.m != nil {
		return p.m
	}
	return p.getS()
}

type pendKey struct {
	m uintptr
	k string
}

type pendVal struct {
	m  map[string]any
	lt *glua.LTable
}

// mapPtr identifies a Go map (maps are not comparable).
func mapPtr(m map[string]any) uintptr { return reflect.ValueOf(m).Pointer() }

// liveMap returns the proxy table of m (one per map per call).
func (s *state) liveMap(m map[string]any) *glua.LTable {
	id := mapPtr(m)
	if t, ok := s.mapProxies[id]; ok {
		return t
	}
	t := s.L.CreateTable(0, 0)
	t.Metatable = s.proxyMT
	s.proxies[t] = &proxy{m: m}
	s.mapProxies[id] = t
	return t
}

func (s *state) liveSlice(get func() []any, set func([]any)) *glua.LTable {
	t := s.L.CreateTable(0, 0)
	t.Metatable = s.proxyMT
	s.proxies[t] = &proxy{getS: get, setS: set}
	return t
}

// liveValue converts a value read from a live container.
func (s *state) liveValue(v any, get func() []any, set func([]any)) glua.LValue {
	switch t := v.(type) {
	case map[string]any:
		if t == nil {
			return s.null
		}
		return s.liveMap(t)
	case []any:
		return s.liveSlice(get, set)
	}
	return s.toLuaCopy(v, 0)
}

func (s *state) proxyIndex(L *glua.LState) int {
	t := L.CheckTable(1)
	p := s.proxies[t]
	if p == nil {
		L.Push(glua.LNil)
		return 1
	}
	key := L.Get(2)
	if p.m != nil {
		k, ok := key.(glua.LString)
		if !ok {
			L.Push(glua.LNil)
			return 1
		}
		ks := string(k)
		if hidden(ks) {
			L.Push(glua.LNil)
			return 1
		}
		if pv, ok := s.pending[pendKey{mapPtr(p.m), ks}]; ok {
			L.Push(pv.lt)
			return 1
		}
		v, ok := p.m[ks]
		if !ok {
			L.Push(glua.LNil)
			return 1
		}
		m := p.m
		L.Push(s.liveValue(v, func() []any { l, _ := m[ks].([]any); return l }, func(n []any) { m[ks] = n }))
		return 1
	}
	i, ok := intKey(key)
	sl := p.getS()
	if !ok || i < 1 || i > len(sl) {
		L.Push(glua.LNil)
		return 1
	}
	get := p.getS
	L.Push(s.liveValue(sl[i-1], func() []any {
		cur := get()
		if i > len(cur) {
			return nil
		}
		l, _ := cur[i-1].([]any)
		return l
	}, func(n []any) {
		if cur := get(); i <= len(cur) {
			cur[i-1] = n
		}
	}))
	return 1
}

// hidden keys (starting with NUL) are Go-only entries of kong.ctx.shared.
func hidden(k string) bool { return k != "" && k[0] == 0 }

// withoutHidden drops the hidden keys of a shared map (ngx.ctx,
// kong.ctx.plugin) when Lua copies it out (cjson.encode(kong.ctx.shared)).
func withoutHidden(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	for k := range m {
		if hidden(k) {
			out := make(map[string]any, len(m))
			for k, e := range m {
				if !hidden(k) {
					out[k] = e
				}
			}
			return out
		}
	}
	return v
}

func intKey(v glua.LValue) (int, bool) {
	n, ok := v.(glua.LNumber)
	if !ok || float64(n) != math.Trunc(float64(n)) || math.Abs(float64(n)) > 1<<31 {
		return 0, false
	}
	return int(n), true
}

func (s *state) proxyNewIndex(L *glua.LState) int {
	t := L.CheckTable(1)
	p := s.proxies[t]
	if p == nil {
		L.RaiseError("stale kong.ctx.shared view")
	}
	key, val := L.Get(2), L.Get(3)
	if _, isFn := val.(*glua.LFunction); isFn {
		L.RaiseError("kong.ctx.shared holds JSON-like values only: cannot store a function")
	}
	var gv any
	lt, isTable := val.(*glua.LTable)
	if isTable && s.proxies[lt] != nil {
		gv = s.proxies[lt].value()
		isTable = false
	} else {
		gv = s.toGo(val, 0)
	}
	if p.m != nil {
		var ks string
		switch k := key.(type) {
		case glua.LString:
			ks = string(k)
		case glua.LNumber:
			ks = FormatNumber(float64(k))
		default:
			L.RaiseError("kong.ctx.shared keys must be strings")
		}
		if hidden(ks) {
			L.RaiseError("kong.ctx.shared keys must not start with a NUL byte")
		}
		pk := pendKey{mapPtr(p.m), ks}
		if val == glua.LNil {
			delete(p.m, ks)
			delete(s.pending, pk)
			return 0
		}
		p.m[ks] = gv
		if isTable {
			s.pending[pk] = pendVal{p.m, lt}
		} else {
			delete(s.pending, pk)
		}
		return 0
	}
	i, ok := intKey(key)
	sl := p.getS()
	switch {
	case !ok || i < 1 || i > len(sl)+1:
		L.RaiseError("index out of range for a list in kong.ctx.shared")
	case i == len(sl)+1:
		if val != glua.LNil {
			if len(sl) >= s.sb.opts.MaxTableLen {
				L.RaiseError("list too long")
			}
			p.setS(append(sl, gv))
		}
	case val == glua.LNil && i == len(sl):
		p.setS(sl[:i-1])
	default:
		sl[i-1] = gv
	}
	return 0
}

func (s *state) proxyLen(L *glua.LState) int {
	p := s.proxies[L.CheckTable(1)]
	if p == nil || p.m != nil {
		L.Push(glua.LNumber(0))
		return 1
	}
	L.Push(glua.LNumber(len(p.getS())))
	return 1
}

// flush writes Lua tables stored in kong.ctx.shared during the call back
// to Go, so changes made after the assignment are kept.
func (s *state) flush() {
	for k, pv := range s.pending {
		if v, err := s.toGoErr(pv.lt, 0); err == nil {
			pv.m[k.k] = v
		}
	}
}
