package lua

import (
	"context"
	"errors"
	"regexp"
	"sort"
	"strings"
	"time"

	glua "github.com/yuin/gopher-lua"
	"go.uber.org/zap"
)

// state is one pooled Lua state with the sandbox built once.
type state struct {
	sb   *Sandbox
	L    *glua.LState
	ctx  context.Context // &bud during a call
	bud  budget
	host Host
	vars *Vars

	exited  bool
	exitVal *glua.LUserData

	// Per call: the chunk, its start, ngx.say output, ngx.status in
	// rewrite/access and whether ngx.header set a content-type.
	chunk     *Chunk
	start     time.Time
	say       []byte
	said      bool
	ngxStatus int
	ngxCT     bool
	cacheView *glua.LTable
	// fns are the functions chunks returned (return function() ... end),
	// kept per state as Kong keeps them per worker.
	fns map[*Chunk]*glua.LFunction
	// keepErr is the error handler of every protected call (see the
	// function keepErr).
	keepErr *glua.LFunction

	null       *glua.LUserData
	emptyArray *glua.LUserData
	arrayMT    *glua.LTable
	proxyMT    *glua.LTable
	bignumMT   *glua.LTable
	headersMT  *glua.LTable

	base       *glua.LTable // read-only globals
	chunkEnvMT *glua.LTable
	tplEnv     *glua.LTable
	tplCache   map[string]glua.LValue

	// sealed are the read-only tables (library views, kong.ctx, ngx.var,
	// cjson.array_mt): rawset and table.insert/remove/sort refuse them.
	sealed map[*glua.LTable]struct{}
	cjson  [2]*glua.LTable // require("cjson"), require("cjson.safe") (made on first use)

	proxies    map[*glua.LTable]*proxy
	mapProxies map[uintptr]*glua.LTable
	pending    map[pendKey]pendVal
}

// Globals a chunk may use from Lua's base library.
var safeBase = []string{"assert", "error", "next", "select", "tonumber", "tostring", "type", "unpack", "rawequal", "rawget", "getmetatable", "_VERSION"}

func newState(sb *Sandbox) *state {
	L := glua.NewState(glua.Options{SkipOpenLibs: true, CallStackSize: callStackSize, RegistrySize: 1024 * 4, RegistryGrowStep: registryGrowStep, RegistryMaxSize: 1024 * 256})
	for _, lib := range []struct {
		name string
		fn   glua.LGFunction
	}{{glua.BaseLibName, glua.OpenBase}, {glua.TabLibName, glua.OpenTable}, {glua.StringLibName, glua.OpenString}, {glua.MathLibName, glua.OpenMath}} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(glua.LString(lib.name))
		L.Call(1, 0)
	}
	s := &state{sb: sb, L: L, sealed: map[*glua.LTable]struct{}{}}
	s.reset()
	s.keepErr = L.NewFunction(keepErr)
	g := L.G.Global
	s.exitVal = L.NewUserData()
	s.null = L.NewUserData()
	s.null.Metatable = s.protectedMT(map[string]glua.LValue{"__tostring": L.NewFunction(func(L *glua.LState) int { L.Push(glua.LString("null")); return 1 })})
	s.emptyArray = L.NewUserData()
	// Tables of user code take cjson.array_mt as their metatable; it is
	// itself read-only (Lua reads metamethods raw, so its own metatable
	// changes nothing for them, and getmetatable(t) == cjson.array_mt).
	s.arrayMT = s.seal(L.NewTable())
	s.arrayMT.Metatable = s.protectedMT(map[string]glua.LValue{"__newindex": L.NewFunction(refuseWrite)})
	s.proxyMT = s.protectedMT(map[string]glua.LValue{
		"__index":    L.NewFunction(s.proxyIndex),
		"__newindex": L.NewFunction(s.proxyNewIndex),
		"__len":      L.NewFunction(s.proxyLen),
		"__pairs":    L.NewFunction(s.proxyPairs),
	})
	s.bignumMT = s.newBignumMT()
	s.headersMT = s.protectedMT(map[string]glua.LValue{"__index": L.NewFunction(headersIndex)})

	base := L.NewTable()
	for _, n := range safeBase {
		base.RawSetString(n, g.RawGetString(n))
	}
	unpack := g.RawGetString("unpack").(*glua.LFunction).GFunction
	base.RawSetString("unpack", L.NewFunction(func(L *glua.LState) int {
		s.materialize(L, 1)
		n := L.CheckTable(1).Len()
		s.afford(L, span(L.OptInt(2, 1), L.OptInt(3, n), max(n, L.OptInt(3, n))))
		return unpack(L)
	}))
	base.RawSetString("print", L.NewFunction(s.print))
	base.RawSetString("pairs", L.NewFunction(s.pairs))
	base.RawSetString("ipairs", L.NewFunction(s.ipairs))
	base.RawSetString("rawset", L.NewFunction(s.rawset))
	setmt := g.RawGetString("setmetatable").(*glua.LFunction).GFunction
	base.RawSetString("setmetatable", L.NewFunction(func(L *glua.LState) int {
		// Tables only, as in Lua 5.1: gopher-lua would set the metatable
		// shared by every number, boolean or function of the state, and
		// that of the library's userdata (cjson.empty_array).
		L.CheckTable(1)
		return setmt(L)
	}))
	base.RawSetString("pcall", s.guard(s.pcall))
	base.RawSetString("xpcall", s.guard(s.xpcall))
	base.RawSetString("require", L.NewFunction(s.require))
	base.RawSetString(concatName, L.NewFunction(s.metered(s.concat)))

	str := g.RawGetString("string").(*glua.LTable)
	s.capStrings(str)
	s.meter(str, "rep", "format", "gsub", "upper", "lower", "reverse", "char")
	strByte := str.RawGetString("byte").(*glua.LFunction).GFunction
	str.RawSetString("byte", L.NewFunction(func(L *glua.LState) int {
		src := L.CheckString(1)
		i := L.OptInt(2, 1)
		s.afford(L, span(i, L.OptInt(3, i), len(src)))
		return strByte(L)
	}))
	str.RawSetString("dump", glua.LNil)
	// gopher-lua makes the string library the strings' metatable, with
	// __index pointing to itself: ("").__index was the writable library.
	// Strings get a metatable of their own, locked, whose __index is the
	// library without an __index field.
	str.RawSetString("__index", glua.LNil)
	L.SetMetatable(glua.LString(""), s.protectedMT(map[string]glua.LValue{"__index": str}))
	tbl := g.RawGetString("table").(*glua.LTable)
	s.capTables(tbl)
	s.meter(tbl, "concat")
	mth := g.RawGetString("math").(*glua.LTable)
	mth.RawSetString("randomseed", glua.LNil)
	base.RawSetString("string", s.readOnly(str))
	base.RawSetString("table", s.readOnly(tbl))
	base.RawSetString("math", s.readOnly(mth))
	base.RawSetString("kong", s.readOnly(s.kongTable()))
	base.RawSetString("ngx", s.ngxView(s.ngxTable()))
	base.RawSetString("os", s.readOnly(s.osTable(g)))
	s.cjson[0] = s.readOnly(s.cjsonTable(false))
	base.RawSetString("cjson", s.cjson[0])
	s.base = base

	// Globals written by a chunk live in a per-call table over base.
	s.chunkEnvMT = L.NewTable()
	s.chunkEnvMT.RawSetString("__index", base)
	s.chunkEnvMT.RawSetString("__metatable", glua.LFalse)

	// Templates see a read-only environment.
	s.tplEnv = L.NewTable()
	s.tplEnv.Metatable = s.protectedMT(map[string]glua.LValue{
		"__index":    L.NewFunction(s.tplIndex),
		"__newindex": L.NewFunction(func(L *glua.LState) int { L.RaiseError("This environment is read-only"); return 0 }),
	})
	// Nothing may reach the unrestricted globals.
	L.G.Global = L.NewTable()
	return s
}

func (s *state) protectedMT(fields map[string]glua.LValue) *glua.LTable {
	mt := s.L.NewTable()
	for k, v := range fields {
		mt.RawSetString(k, v)
	}
	mt.RawSetString("__metatable", glua.LFalse)
	return mt
}

// readOnly returns an empty table reading through to t and refusing writes
// (sealed, so rawset cannot shadow t's fields either). Nothing hands out t
// itself: its functions and values only.
func (s *state) readOnly(t *glua.LTable) *glua.LTable {
	p := s.seal(s.L.NewTable())
	p.Metatable = s.protectedMT(map[string]glua.LValue{
		"__index":    t,
		"__newindex": s.L.NewFunction(refuseWrite),
		"__pairs": s.L.NewFunction(func(L *glua.LState) int {
			return s.pushSortedIter(L, t)
		}),
	})
	return p
}

// seal marks t read-only for rawset and the table library.
func (s *state) seal(t *glua.LTable) *glua.LTable {
	s.sealed[t] = struct{}{}
	return t
}

func refuseWrite(L *glua.LState) int {
	L.RaiseError("attempt to modify a read-only table")
	return 0
}

func (s *state) newChunkEnv() *glua.LTable {
	env := s.L.CreateTable(0, 4)
	env.Metatable = s.chunkEnvMT
	return env
}

func (s *state) begin(ctx context.Context, h Host, v *Vars) {
	s.bud.start(ctx, s.sb.opts.Instructions)
	s.ctx, s.host, s.vars = &s.bud, h, v
	s.exited = false
	s.start = time.Now()
}

func (s *state) reset() {
	s.ctx, s.host, s.vars = nil, nil, nil
	s.bud.stop()
	s.exited = false
	s.chunk, s.say, s.said, s.ngxStatus, s.ngxCT = nil, nil, false, 0, false
	if s.proxies == nil {
		s.proxies = map[*glua.LTable]*proxy{}
		s.mapProxies = map[uintptr]*glua.LTable{}
		s.pending = map[pendKey]pendVal{}
		s.tplCache = map[string]glua.LValue{}
	}
	clear(s.proxies)
	clear(s.mapProxies)
	clear(s.pending)
	clear(s.tplCache)
}

func (s *state) logger() *zap.Logger {
	if s.host != nil {
		if l := s.host.Logger(); l != nil {
			return l
		}
	}
	return s.sb.opts.Log
}

// guard wraps pcall/xpcall so they cannot swallow kong.response.exit, the
// time limit or the instruction budget.
func (s *state) guard(f glua.LGFunction) *glua.LFunction {
	return s.L.NewFunction(func(L *glua.LState) int {
		n := f(L)
		if s.exited {
			L.Error(s.exitVal, 0)
		}
		if s.ctx != nil && s.ctx.Err() != nil {
			L.RaiseError("%s", s.ctx.Err().Error())
		}
		return n
	})
}

// tracebackLevels is the deepest stack (tail calls count) for which a
// failed protected call lets gopher-lua build its traceback.
const tracebackLevels = 1000

// keepErr is the error handler of every protected call; the error value
// is kept as it is. Without a handler gopher-lua builds a stack traceback
// with one line per tail call: after a tail-call loop that is millions of
// lines, built outside the time limit (a loop stopped at 100 ms would take
// several times that and hundreds of MB more). With a handler it builds
// none, but it also leaves the failed frames' upvalues open, so a closure
// made there would read registers reused later. So on an ordinary stack
// the handler raises the value again, handler-less, which closes them (and
// costs a short traceback); only past tracebackLevels is the value
// returned as is.
func keepErr(L *glua.LState) int {
	if _, deep := L.GetStack(tracebackLevels); !deep {
		L.Error(L.Get(1), 0)
	}
	return 1
}

func errValue(err error) glua.LValue {
	var ae *glua.ApiError
	if errors.As(err, &ae) && ae.Object != nil {
		return ae.Object
	}
	return glua.LString(err.Error())
}

// pcall is Lua's pcall without gopher-lua's stack traceback (see keepErr).
func (s *state) pcall(L *glua.LState) int {
	L.CheckAny(1)
	v := L.Get(1)
	if v.Type() != glua.LTFunction && L.GetMetaField(v, "__call").Type() != glua.LTFunction {
		L.Push(glua.LFalse)
		L.Push(glua.LString("attempt to call a " + v.Type().String() + " value"))
		return 2
	}
	if err := L.PCall(L.GetTop()-1, glua.MultRet, s.keepErr); err != nil {
		L.Push(glua.LFalse)
		L.Push(errValue(err))
		return 2
	}
	L.Insert(glua.LTrue, 1)
	return L.GetTop()
}

// xpcall is Lua's xpcall; the handler runs once the failed call has
// unwound (without the debug library nothing can tell the difference),
// and not at all after kong.response.exit or the time limit (guard raises
// those again).
func (s *state) xpcall(L *glua.LState) int {
	fn := L.CheckFunction(1)
	handler := L.CheckFunction(2)
	top := L.GetTop()
	L.Push(fn)
	err := L.PCall(0, glua.MultRet, s.keepErr)
	if err == nil {
		L.Insert(glua.LTrue, top+1)
		return L.GetTop() - top
	}
	ev := errValue(err)
	if s.exited || (s.ctx != nil && s.ctx.Err() != nil) {
		L.Push(glua.LFalse)
		L.Push(ev)
		return 2
	}
	L.Push(handler)
	L.Push(ev)
	if herr := L.PCall(1, 1, s.keepErr); herr != nil {
		L.Push(glua.LFalse)
		L.Push(errValue(herr))
		return 2
	}
	res := L.Get(-1)
	L.Pop(1)
	L.Push(glua.LFalse)
	L.Push(res)
	return 2
}

func (s *state) print(L *glua.LState) int {
	parts := make([]string, L.GetTop())
	for i := range parts {
		parts[i] = L.ToStringMeta(L.Get(i + 1)).String()
	}
	s.logger().Info(strings.Join(parts, "\t"), zap.String("source", "lua print"))
	return 0
}

func (s *state) require(L *glua.LState) int {
	switch name := L.CheckString(1); name {
	case "cjson":
		L.Push(s.cjson[0])
	case "cjson.safe":
		if s.cjson[1] == nil {
			s.cjson[1] = s.readOnly(s.cjsonTable(true))
		}
		L.Push(s.cjson[1])
	default:
		L.RaiseError("module '%s' not found (the sandbox allows only cjson and cjson.safe)", name)
	}
	return 1
}

func (s *state) rawset(L *glua.LState) int {
	t := L.CheckTable(1)
	if _, ok := s.sealed[t]; ok {
		L.RaiseError("attempt to modify a read-only table")
	}
	if mt, ok := t.Metatable.(*glua.LTable); ok && mt.RawGetString("__metatable") != glua.LNil {
		L.RaiseError("cannot rawset a protected table")
	}
	t.RawSet(L.CheckAny(2), L.CheckAny(3))
	L.SetTop(1)
	return 1
}

// pairs honours __pairs (Lua 5.2) so live views and read-only tables
// iterate.
func (s *state) pairs(L *glua.LState) int {
	t := L.CheckAny(1)
	if mt, ok := L.GetMetaField(t, "__pairs").(*glua.LFunction); ok {
		L.Push(mt)
		L.Push(t)
		L.Call(1, 3)
		return 3
	}
	tb := L.CheckTable(1)
	L.Push(L.NewFunction(func(L *glua.LState) int {
		k, v := tb.Next(L.Get(2))
		if k == glua.LNil {
			L.Push(glua.LNil)
			return 1
		}
		L.Push(k)
		L.Push(v)
		return 2
	}))
	L.Push(tb)
	L.Push(glua.LNil)
	return 3
}

// ipairs reads through __index so live lists iterate.
func (s *state) ipairs(L *glua.LState) int {
	t := L.CheckAny(1)
	L.Push(L.NewFunction(func(L *glua.LState) int {
		i := L.CheckInt(2) + 1
		v := L.GetTable(L.Get(1), glua.LNumber(i))
		if v == glua.LNil {
			L.Push(glua.LNil)
			return 1
		}
		L.Push(glua.LNumber(i))
		L.Push(v)
		return 2
	}))
	L.Push(t)
	L.Push(glua.LNumber(0))
	return 3
}

func (s *state) proxyPairs(L *glua.LState) int {
	t := L.CheckTable(1)
	p := s.proxies[t]
	var keys []glua.LValue
	if p != nil && p.m != nil {
		ks := make([]string, 0, len(p.m))
		for k := range p.m {
			if !hidden(k) {
				ks = append(ks, k)
			}
		}
		sort.Strings(ks)
		for _, k := range ks {
			keys = append(keys, glua.LString(k))
		}
	} else if p != nil {
		for i := range p.getS() {
			keys = append(keys, glua.LNumber(i+1))
		}
	}
	i := 0
	L.Push(L.NewFunction(func(L *glua.LState) int {
		for i < len(keys) {
			k := keys[i]
			i++
			v := L.GetTable(t, k)
			if v != glua.LNil {
				L.Push(k)
				L.Push(v)
				return 2
			}
		}
		L.Push(glua.LNil)
		return 1
	}))
	L.Push(t)
	L.Push(glua.LNil)
	return 3
}

func (s *state) pushSortedIter(L *glua.LState, t *glua.LTable) int {
	var keys []string
	t.ForEach(func(k, _ glua.LValue) {
		if ks, ok := k.(glua.LString); ok && !strings.HasPrefix(string(ks), "__") {
			keys = append(keys, string(ks))
		}
	})
	sort.Strings(keys)
	i := 0
	L.Push(L.NewFunction(func(L *glua.LState) int {
		if i >= len(keys) {
			L.Push(glua.LNil)
			return 1
		}
		k := keys[i]
		i++
		L.Push(glua.LString(k))
		L.Push(t.RawGetString(k))
		return 2
	}))
	L.Push(L.Get(1)) // the read-only view, never t
	L.Push(glua.LNil)
	return 3
}

func headersIndex(L *glua.LState) int {
	t := L.CheckTable(1)
	k, ok := L.Get(2).(glua.LString)
	if !ok {
		L.Push(glua.LNil)
		return 1
	}
	lk := strings.ToLower(string(k))
	v := t.RawGetString(lk)
	if v == glua.LNil {
		v = t.RawGetString(strings.ReplaceAll(lk, "_", "-"))
	}
	L.Push(v)
	return 1
}

// tplIndex resolves template variables lazily, once per call.
func (s *state) tplIndex(L *glua.LState) int {
	name := L.CheckString(2)
	if v, ok := s.tplCache[name]; ok {
		L.Push(v)
		return 1
	}
	var v glua.LValue = glua.LNil
	vars := s.vars
	if vars == nil {
		vars = &Vars{}
	}
	switch name {
	case "headers":
		v = s.headersTable(vars.Headers)
	case "query_params":
		t := s.toLuaCopy(vars.QueryParams(), 0)
		v = t
	case "uri_captures":
		t := L.CreateTable(len(vars.Positional), len(vars.Named))
		for i, c := range vars.Positional {
			t.RawSetInt(i+1, glua.LString(c))
		}
		for k, c := range vars.Named {
			t.RawSetString(k, glua.LString(c))
		}
		v = t
	case "shared":
		if m := vars.SharedMap(s.host); m != nil {
			v = s.liveMap(m)
		}
	case "callouts":
		if m, ok := vars.SharedMap(s.host)["callouts"].(map[string]any); ok && m != nil {
			v = s.liveMap(m)
		}
	case "type":
		v = s.base.RawGetString("type")
	default:
		v = s.base.RawGetString(name)
	}
	s.tplCache[name] = v
	L.Push(v)
	return 1
}

var fmtWidth = regexp.MustCompile(`%[-+ #0]*(\d{3,}|\d*\.\d{3,})`)

// capStrings replaces the string functions that can build huge strings.
func (s *state) capStrings(str *glua.LTable) {
	max := s.sb.opts.MaxStringLen
	rep := str.RawGetString("rep").(*glua.LFunction).GFunction
	str.RawSetString("rep", s.L.NewFunction(func(L *glua.LState) int {
		src := L.CheckString(1)
		n := L.CheckInt(2)
		if n > 0 && int64(len(src))*int64(n) > int64(max) {
			L.RaiseError("string.rep: result too large (limit %d bytes)", max)
		}
		return rep(L)
	}))
	format := str.RawGetString("format").(*glua.LFunction).GFunction
	str.RawSetString("format", s.L.NewFunction(func(L *glua.LState) int {
		if fmtWidth.MatchString(L.CheckString(1)) {
			L.RaiseError("invalid format (width or precision too long)")
		}
		return format(L)
	}))
	// Pattern functions that the time limit can stop.
	str.RawSetString("find", s.L.NewFunction(s.strFind))
	str.RawSetString("match", s.L.NewFunction(s.strMatch))
	str.RawSetString("gmatch", s.L.NewFunction(s.strGmatch))
	str.RawSetString("gfind", s.L.NewFunction(s.strGmatch))
	str.RawSetString("gsub", s.L.NewFunction(s.strGsub))
}

// materialize replaces a live view at argument n with a plain copy, so
// library functions that read tables raw (concat, unpack) see its items.
func (s *state) materialize(L *glua.LState, n int) {
	if t, ok := L.Get(n).(*glua.LTable); ok {
		if p := s.proxies[t]; p != nil {
			L.Replace(n, s.toLuaCopy(p.value(), 0))
		}
	}
}

// liveList returns the proxy of a kong.ctx.shared list at argument 1, or
// nil for a plain table; a live object or a read-only table is refused.
func (s *state) liveList(L *glua.LState, fn string) *proxy {
	t := L.CheckTable(1)
	if _, ok := s.sealed[t]; ok {
		L.RaiseError("%s: attempt to modify a read-only table", fn)
	}
	p := s.proxies[t]
	if p != nil && p.m != nil {
		L.RaiseError("%s: not a list (a kong.ctx.shared object)", fn)
	}
	return p
}

func (s *state) capTables(tbl *glua.LTable) {
	max := s.sb.opts.MaxStringLen
	concat := tbl.RawGetString("concat").(*glua.LFunction).GFunction
	tbl.RawSetString("concat", s.L.NewFunction(func(L *glua.LState) int {
		s.materialize(L, 1)
		t := L.CheckTable(1)
		sep := len(L.OptString(2, ""))
		total := 0
		for i := 1; i <= t.Len(); i++ {
			if v, ok := t.RawGetInt(i).(glua.LString); ok {
				total += len(v) + sep
			} else {
				total += 24 + sep
			}
			if total > max {
				L.RaiseError("table.concat: result too large (limit %d bytes)", max)
			}
		}
		return concat(L)
	}))
	maxLen := s.sb.opts.MaxTableLen
	insert := tbl.RawGetString("insert").(*glua.LFunction).GFunction
	tbl.RawSetString("insert", s.L.NewFunction(func(L *glua.LState) int {
		if p := s.liveList(L, "table.insert"); p != nil {
			sl := p.getS()
			if len(sl) >= maxLen {
				L.RaiseError("table.insert: table too large (limit %d entries)", maxLen)
			}
			pos, val := len(sl)+1, L.Get(2)
			if L.GetTop() >= 3 {
				pos, val = L.CheckInt(2), L.Get(3)
			}
			if pos < 1 || pos > len(sl)+1 {
				L.RaiseError("table.insert: position out of bounds")
			}
			v := s.toGo(val, 0)
			sl = append(sl, nil)
			copy(sl[pos:], sl[pos-1:])
			sl[pos-1] = v
			p.setS(sl)
			return 0
		}
		if L.CheckTable(1).Len() >= maxLen {
			L.RaiseError("table.insert: table too large (limit %d entries)", maxLen)
		}
		return insert(L)
	}))
	remove := tbl.RawGetString("remove").(*glua.LFunction).GFunction
	tbl.RawSetString("remove", s.L.NewFunction(func(L *glua.LState) int {
		if p := s.liveList(L, "table.remove"); p != nil {
			sl := p.getS()
			if len(sl) == 0 {
				return 0
			}
			pos := L.OptInt(2, len(sl))
			if pos < 1 || pos > len(sl) {
				return 0
			}
			old := sl[pos-1]
			p.setS(append(sl[:pos-1:pos-1], sl[pos:]...))
			L.Push(s.toLuaCopy(old, 0))
			return 1
		}
		return remove(L)
	}))
	sortFn := tbl.RawGetString("sort").(*glua.LFunction).GFunction
	tbl.RawSetString("sort", s.L.NewFunction(func(L *glua.LState) int {
		if p := s.liveList(L, "table.sort"); p != nil {
			cp := s.toLuaCopy(p.getS(), 0)
			L.Replace(1, cp)
			sortFn(L)
			out, _ := s.toGo(cp, 0).([]any)
			p.setS(out)
			return 0
		}
		return sortFn(L)
	}))
}
