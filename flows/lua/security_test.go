package lua

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// Tests that one chunk cannot change what another chunk sees on the same
// pooled state: every attack runs on a sandbox with a pool of one state,
// then a different, well-behaved chunk runs on that same state and must
// find the libraries as they were.

// healthyChunk is well-behaved code that checks the libraries, the string
// metatable, the metatables of the other types and the globals.
const healthyChunk = `
assert(string.upper("a") == "A", "string.upper")
assert(("a"):upper() == "A", "method upper")
assert(("ab"):rep(2) == "abab", "method rep")
assert(string.format("%s-%d", "a", 1) == "a-1", "string.format")
assert(string.find("abc", "b") == 2, "string.find")
assert(("").upper == string.upper, "string methods are the string library")
assert(("").__index == nil, "string __index reaches a table")
assert(string.__index == nil, "string.__index reaches a table")
assert(getmetatable("") == false, "getmetatable('') is not locked")
assert(not pcall(function() return "a" + 1 end), "string arithmetic")
assert(not pcall(function() return "a" < {} end), "string comparison")
assert(table.concat({"a", "b"}, ",") == "a,b", "table.concat")
local t = {} table.insert(t, "x") table.insert(t, "y") table.remove(t, 1)
assert(#t == 1 and t[1] == "y", "table.insert/remove")
assert(math.floor(1.5) == 1 and math.max(1, 2) == 2, "math")
assert(kong.request.get_header("x-id") == "abc", "kong.request.get_header")
assert(type(kong.response.exit) == "function", "kong.response.exit")
assert(ngx.var.request_method == "GET", "ngx.var")
assert(ngx.HTTP_OK == 200, "ngx.HTTP_OK")
assert(cjson.encode({a = 1}) == '{"a":1}', "cjson.encode")
assert(cjson.decode('{"a":[1]}').a[1] == 1, "cjson.decode")
assert(cjson.encode(setmetatable({}, cjson.array_mt)) == "[]", "cjson.array_mt")
assert(getmetatable(cjson.decode("[]")) == cjson.array_mt, "decoded arrays")
local a = setmetatable({}, cjson.array_mt) a.x = 1 assert(rawget(a, "x") == 1, "tables with array_mt")
assert(cjson.encode(cjson.empty_array) == "[]", "cjson.empty_array")
assert(getmetatable(cjson.empty_array) == nil, "cjson.empty_array metatable")
assert(tostring(cjson.null) == "null" and ngx.null == cjson.null, "cjson.null")
assert(require("cjson").encode({1}) == "[1]", "require cjson")
assert(require("cjson.safe").decode("x") == nil, "require cjson.safe")
assert(tostring(1) == "1" and tostring(true) == "true" and tostring(nil) == "nil", "tostring")
assert(not pcall(function() return (1).x end), "indexing a number")
assert(not pcall(function() return (true).x end), "indexing a boolean")
assert(not pcall(function() return print.x end), "indexing a function")
assert(not pcall(function() return (1)() end), "calling a number")
for name, lib in pairs({string = string, table = table, math = math, kong = kong, ngx = ngx, cjson = cjson,
	request = kong.request, response = kong.response, service = kong.service, service_request = kong.service.request,
	log = kong.log, vault = kong.vault, ctx = kong.ctx, var = ngx.var, array_mt = cjson.array_mt}) do
	assert(next(lib) == nil and rawget(lib, 1) == nil, "library view " .. name .. " has raw entries")
end
assert(x == nil and leak == nil and f == nil, "a global leaked")
kong.ctx.shared.healthy = true
`

// healthyExpr is a template expression with the same kind of checks.
const healthyExpr = `string.upper("a") .. ("b"):upper() .. tostring(x) .. tostring(getmetatable(""))`

func poolOf(t *testing.T, sb *Sandbox) *state {
	t.Helper()
	select {
	case st := <-sb.pool:
		sb.pool <- st
		return st
	default:
		t.Fatal("no pooled state")
		return nil
	}
}

func healthHost() *testHost {
	h := newHost()
	h.headers["x-id"] = []string{"abc"}
	return h
}

// checkHealthy runs healthyChunk and healthyExpr.
func checkHealthy(t *testing.T, sb *Sandbox) {
	t.Helper()
	h := healthHost()
	if err := run(t, sb, healthyChunk, h); err != nil {
		t.Errorf("well-behaved chunk: %v", err)
	} else if h.shared["healthy"] != true {
		t.Errorf("well-behaved chunk did not finish: shared = %v", h.shared)
	}
	c, err := CompileExpr(healthyExpr, "expr")
	if err != nil {
		t.Fatal(err)
	}
	v, err := sb.Eval(context.Background(), c, healthHost(), nil)
	if err != nil || v != "ABnilfalse" {
		t.Errorf("well-behaved template: %v %v", v, err)
	}
}

// attack is a chunk trying to change what later chunks see.
type attack struct {
	name    string
	src     string
	refused bool // it must raise a Lua error
	expr    bool // evaluate it as a template expression
}

func runAttacks(t *testing.T, attacks []attack) {
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			sb := New(Options{PoolSize: 1, Timeout: 5 * time.Second}) // room for a loaded machine
			defer sb.Close()
			checkHealthy(t, sb)
			st := poolOf(t, sb)
			before := st.fingerprint()

			var err error
			if a.expr {
				c, cerr := CompileExpr(a.src, "attack")
				if cerr != nil {
					t.Fatal(cerr)
				}
				_, err = sb.Eval(context.Background(), c, newHost(), nil)
			} else {
				err = run(t, sb, a.src, newHost())
			}
			var re *RuntimeError
			if a.refused && !errors.As(err, &re) {
				t.Errorf("attack not refused: err = %v", err)
			}
			if a.refused {
				t.Logf("refused: %v", err)
			}
			if poolOf(t, sb) != st {
				t.Fatal("the attack's state was not pooled again")
			}
			if d := diffLines(before, st.fingerprint()); d != "" {
				t.Errorf("the attack changed the pooled state:\n%s", d)
			}
			checkHealthy(t, sb)
			if poolOf(t, sb) != st {
				t.Fatal("the check ran on another state")
			}
		})
	}
}

const evil = `function() return "POISONED" end`

func TestStringLibraryCannotBeChanged(t *testing.T) {
	runAttacks(t, []attack{
		{name: "string.upper = f", src: `string.upper = ` + evil, refused: true},
		{name: "string.__index.upper = f", src: `string.__index.upper = ` + evil, refused: true},
		{name: `("").__index.upper = f`, src: `("").__index.upper = ` + evil, refused: true},
		{name: `("").upper = f`, src: `local s = "" s.upper = ` + evil, refused: true},
		{name: `getmetatable("").__index.upper = f`, src: `getmetatable("").__index.upper = ` + evil, refused: true},
		{name: `getmetatable("").__add = f`, src: `getmetatable("").__add = ` + evil, refused: true},
		{name: `getmetatable("").__index = {}`, src: `getmetatable("").__index = {}`, refused: true},
		{name: `rawset(string, "upper", f)`, src: `rawset(string, "upper", ` + evil + `)`, refused: true},
		{name: `rawset(getmetatable(""), "upper", f)`, src: `rawset(getmetatable(""), "upper", ` + evil + `)`, refused: true},
		{name: `rawset(("").__index, "upper", f)`, src: `rawset(("").__index, "upper", ` + evil + `)`, refused: true},
		{name: `rawset(string.__index, "upper", f)`, src: `rawset(string.__index, "upper", ` + evil + `)`, refused: true},
		{name: "setmetatable(string, {})", src: `setmetatable(string, {__index = function() return ` + evil + ` end})`, refused: true},
		{name: `setmetatable("", {})`, src: `setmetatable("", {__index = {upper = ` + evil + `}})`, refused: true},
		{name: "pairs(string) state", src: `local _, real = pairs(string) real.upper = ` + evil, refused: true},
		{name: "table.insert(string, f)", src: `table.insert(string, ` + evil + `)`, refused: true},
		{name: "table.sort(string)", src: `table.sort(string)`, refused: true},
		{name: "string = {...} global", src: `string = {upper = ` + evil + `}`},
		{name: "template string.upper = f", src: `(function() string.upper = ` + evil + ` end)()`, refused: true, expr: true},
		{name: "template rawset", src: `rawset(("").__index or string, "upper", ` + evil + `)`, refused: true, expr: true},
	})
}

func TestLibraryTablesCannotBeChanged(t *testing.T) {
	runAttacks(t, []attack{
		{name: "table.insert = f", src: `table.insert = ` + evil, refused: true},
		{name: "math.floor = f", src: `math.floor = ` + evil, refused: true},
		{name: "rawset(math, floor)", src: `rawset(math, "floor", ` + evil + `)`, refused: true},
		{name: "kong.request.get_header = f", src: `kong.request.get_header = ` + evil, refused: true},
		{name: "kong.response.exit = f", src: `kong.response.exit = ` + evil, refused: true},
		{name: "kong.service.request.set_header = f", src: `kong.service.request.set_header = ` + evil, refused: true},
		{name: "kong.log.err = f", src: `kong.log.err = ` + evil, refused: true},
		{name: "kong.vault.get = f", src: `kong.vault.get = ` + evil, refused: true},
		{name: "kong.request = {}", src: `kong.request = {}`, refused: true},
		{name: "kong.ctx = {}", src: `kong.ctx = {}`, refused: true},
		{name: "kong.ctx.plugin = {}", src: `kong.ctx.plugin = {}`, refused: true},
		{name: "rawset(kong.ctx, shared)", src: `rawset(kong.ctx, "shared", {})`, refused: true},
		{name: "rawset(kong.request, get_header)", src: `rawset(kong.request, "get_header", ` + evil + `)`, refused: true},
		{name: "setmetatable(kong, {})", src: `setmetatable(kong, {})`, refused: true},
		{name: "setmetatable(kong.request, {})", src: `setmetatable(kong.request, {})`, refused: true},
		{name: "pairs(kong.request) state", src: `local _, real = pairs(kong.request) real.get_header = ` + evil, refused: true},
		{name: "table.insert(kong.request, f)", src: `table.insert(kong.request, ` + evil + `)`, refused: true},
		{name: "ngx.var = {}", src: `ngx.var = {}`, refused: true},
		{name: "ngx.var.x = 1", src: `ngx.var.request_method = "POST"`, refused: true},
		{name: "rawset(ngx.var)", src: `rawset(ngx.var, "request_method", "POST")`, refused: true},
		{name: "ngx.HTTP_OK = 500", src: `ngx.HTTP_OK = 500`, refused: true},
		{name: "cjson.encode = f", src: `cjson.encode = ` + evil, refused: true},
		{name: "require(cjson).encode = f", src: `require("cjson").encode = ` + evil, refused: true},
		{name: "require(cjson.safe).decode = f", src: `require("cjson.safe").decode = ` + evil, refused: true},
		{name: "cjson.array_mt.__index = f", src: `cjson.array_mt.__newindex = ` + evil, refused: true},
		{name: "decoded array metatable", src: `getmetatable(cjson.decode("[]")).__index = ` + evil, refused: true},
		{name: "rawset(cjson.array_mt)", src: `rawset(cjson.array_mt, "__newindex", ` + evil + `)`, refused: true},
		{name: "table.insert(cjson.array_mt)", src: `table.insert(cjson.array_mt, 1)`, refused: true},
		{name: "setmetatable(cjson.array_mt)", src: `setmetatable(cjson.array_mt, {__index = {__newindex = ` + evil + `}})`, refused: true},
		{name: "setmetatable(cjson.empty_array)", src: `setmetatable(cjson.empty_array, {__tostring = ` + evil + `})`, refused: true},
		{name: "setmetatable(cjson.null)", src: `setmetatable(cjson.null, {__tostring = ` + evil + `})`, refused: true},
		{name: "setmetatable(kong.ctx.shared)", src: `setmetatable(kong.ctx.shared, {})`, refused: true},
		{name: "headers metatable", src: `getmetatable(kong.request.get_headers()).__index = ` + evil, refused: true},
	})
}

func TestMetatablesOfValuesCannotBeSet(t *testing.T) {
	runAttacks(t, []attack{
		{name: "number", src: `setmetatable(1, {__tostring = ` + evil + `, __index = {}})`, refused: true},
		{name: "boolean", src: `setmetatable(true, {__index = {x = 1}})`, refused: true},
		{name: "function", src: `setmetatable(print, {__index = {x = 1}})`, refused: true},
		{name: "nil", src: `setmetatable(nil, {__index = {x = 1}})`, refused: true},
	})
}

func TestGlobalsArePerCall(t *testing.T) {
	runAttacks(t, []attack{
		{name: `x = "global"`, src: `x = "global" leak = x function f() end`},
		{name: "_G.string = nil", src: `_G.string = nil`, refused: true},
		{name: "string = nil", src: `string = nil kong = nil`},
		{name: "tostring = f", src: `tostring = ` + evil},
		{name: "template global", src: `(function() x = 1 end)()`, refused: true, expr: true},
	})
}

func TestEscapeHatchesAreAbsent(t *testing.T) {
	names := []string{"debug", "getfenv", "setfenv", "load", "loadstring", "dofile", "loadfile", "module",
		"newproxy", "coroutine", "io", "package", "collectgarbage", "gcinfo", "_G", "_ENV", "rawlen",
		"os.execute", "os.exit", "os.getenv", "os.remove", "os.rename", "os.tmpname", "os.setlocale"}
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "assert(%s == nil, %q)\n", n, n)
	}
	b.WriteString(`assert(string.dump == nil, "string.dump")` + "\n")
	b.WriteString(`assert(math.randomseed == nil, "math.randomseed")` + "\n")
	sb := New(Options{PoolSize: 1, Timeout: 5 * time.Second}) // room for a loaded machine
	defer sb.Close()
	if err := run(t, sb, b.String(), newHost()); err != nil {
		t.Fatal(err)
	}
	var attacks []attack
	for _, src := range []string{
		`getfenv(string.upper).string = {}`, `setfenv(1, {})`, `debug.setmetatable(1, {})`,
		`load("string.upper = nil")()`, `loadstring("x = 1")()`,
		`coroutine.wrap(function() string.upper = nil end)()`, `os.exit(1)`, `string.dump(print)`,
	} {
		attacks = append(attacks, attack{name: src, src: src, refused: true})
	}
	runAttacks(t, attacks)
}

// TestEveryLibraryTableRefusesWrites walks every table reachable from the
// globals (through pairs) and tries each way of writing into it.
func TestEveryLibraryTableRefusesWrites(t *testing.T) {
	sb := New(Options{PoolSize: 1, Timeout: 5 * time.Second}) // room for a loaded machine
	defer sb.Close()
	h := newHost()
	err := run(t, sb, `
-- (counted in a table: gopher-lua detaches a number upvalue after a
-- caught error)
local seen, bad, count = {}, {}, {n = 0}
local function probe(path, t)
	if seen[t] or t == ngx.header then return end -- ngx.header: the response headers, writable as in Kong
	seen[t] = true
	count.n = count.n + 1
	if pcall(function() t.__probe = 1 end) then bad[#bad + 1] = path .. " (assignment)" end
	if pcall(rawset, t, "__probe", 1) then bad[#bad + 1] = path .. " (rawset)" end
	if pcall(table.insert, t, 1) then bad[#bad + 1] = path .. " (table.insert)" end
	if pcall(setmetatable, t, {}) then bad[#bad + 1] = path .. " (setmetatable)" end
	for k, v in pairs(t) do
		if type(v) == "table" then probe(path .. "." .. tostring(k), v) end
	end
end
for _, name in ipairs({"string", "table", "math", "kong", "ngx", "cjson"}) do
	probe(name, ({string = string, table = table, math = math, kong = kong, ngx = ngx, cjson = cjson})[name])
end
probe("kong.ctx", kong.ctx)
probe("ngx.var", ngx.var)
probe("cjson.array_mt", cjson.array_mt)
probe("require cjson", require("cjson"))
probe("require cjson.safe", require("cjson.safe"))
kong.ctx.shared.n = count.n
kong.ctx.shared.bad = table.concat(bad, ", ")
`, h)
	if err != nil {
		t.Fatal(err)
	}
	if h.shared["bad"] != "" {
		t.Errorf("writable library tables: %v", h.shared["bad"])
	}
	if n, _ := h.shared["n"].(int64); n < 15 {
		t.Errorf("probed only %v tables", h.shared["n"])
	}
	checkHealthy(t, sb)
}

// TestWellBehavedCodeKeepsWorking: what Kong code does with its own
// tables and kong.ctx.shared is unchanged.
func TestWellBehavedCodeKeepsWorking(t *testing.T) {
	sb := New(Options{PoolSize: 1, Timeout: 5 * time.Second}) // room for a loaded machine
	defer sb.Close()
	h := healthHost()
	err := run(t, sb, `
local mt = {__index = function(_, k) return k .. "!" end}
local own = setmetatable({}, mt)
assert(own.hi == "hi!" and getmetatable(own) == mt)
rawset(own, "hi", 1) assert(own.hi == 1)
local list = {3, 1, 2} table.sort(list) assert(table.concat(list) == "123")
function helper(s) return s:upper() end
counter = 0 counter = counter + 1
kong.ctx.shared.user = {name = helper("bob"), n = counter}
kong.ctx.shared.list = {}
table.insert(kong.ctx.shared.list, "a")
kong.ctx.shared.header = kong.request.get_header("x-id")
kong.service.request.set_header("x-up", string.format("%s-%d", ngx.var.request_method, #list))
`, h)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := h.shared["user"].(map[string]any)
	if u["name"] != "BOB" || u["n"] != int64(1) || h.shared["header"] != "abc" || fmt.Sprint(h.shared["list"]) != "[a]" {
		t.Errorf("shared = %v", h.shared)
	}
	if got := h.headers["x-up"]; len(got) != 1 || got[0] != "GET-3" {
		t.Errorf("x-up = %v", got)
	}
	checkHealthy(t, sb)
}

// fingerprint lists every value a pooled state shares between calls:
// each table, function and userdata reachable from the chunk and
// template environments (through read-only views, metatables and
// upvalues, but not gopher-lua's own original globals), with its raw
// entries and metatable, and the metatable of each basic type.
func (s *state) fingerprint() []string {
	var out []string
	seen := map[glua.LValue]bool{}
	id := func(v glua.LValue) string {
		switch v.(type) {
		case *glua.LTable, *glua.LFunction, *glua.LUserData, *glua.LState:
			return fmt.Sprintf("%s@%p", v.Type(), v)
		}
		return v.Type().String() + ":" + v.String()
	}
	var walk func(v glua.LValue)
	walk = func(v glua.LValue) {
		switch v.(type) {
		case *glua.LTable, *glua.LFunction, *glua.LUserData:
		default:
			return
		}
		if seen[v] {
			return
		}
		seen[v] = true
		switch x := v.(type) {
		case *glua.LTable:
			x.ForEach(func(k, val glua.LValue) {
				out = append(out, fmt.Sprintf("%s[%s] = %s", id(x), id(k), id(val)))
				walk(k)
				walk(val)
			})
			out = append(out, fmt.Sprintf("%s metatable %s", id(x), id(x.Metatable)))
			walk(x.Metatable)
		case *glua.LFunction:
			for i, uv := range x.Upvalues {
				out = append(out, fmt.Sprintf("%s upvalue %d = %s", id(x), i, id(uv.Value())))
				walk(uv.Value())
			}
		case *glua.LUserData:
			out = append(out, fmt.Sprintf("%s metatable %s", id(x), id(x.Metatable)))
			walk(x.Metatable)
		}
	}
	for _, v := range []glua.LValue{glua.LNil, glua.LTrue, glua.LNumber(1), glua.LString(""), s.keepErr, s.L} {
		mt := s.L.GetMetatable(v)
		out = append(out, fmt.Sprintf("metatable of %s = %s", v.Type(), id(mt)))
		walk(mt)
		for _, ev := range []string{"__index", "__newindex", "__call", "__tostring", "__concat", "__add", "__sub", "__mul", "__div",
			"__mod", "__pow", "__unm", "__eq", "__lt", "__le", "__len", "__pairs", "__metatable"} {
			f := s.L.GetMetaField(v, ev)
			out = append(out, fmt.Sprintf("%s of %s = %s", ev, v.Type(), id(f)))
			walk(f)
		}
	}
	for _, v := range []glua.LValue{s.base, s.tplEnv, s.chunkEnvMT, s.L.G.Global, s.arrayMT, s.null, s.emptyArray,
		s.exitVal, s.proxyMT, s.bignumMT, s.headersMT, s.keepErr} {
		walk(v)
	}
	sort.Strings(out)
	return out
}

func diffLines(a, b []string) string {
	in := func(xs []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var d []string
	for _, x := range a {
		if !mb[x] {
			d = append(d, "- "+x)
		}
	}
	for _, x := range b {
		if !ma[x] {
			d = append(d, "+ "+x)
		}
	}
	return strings.Join(d, "\n")
}
