package lua

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// testHost is a plain in-memory Host.
type testHost struct {
	phase      string
	method     string
	path       string
	query      string
	headers    map[string][]string
	body       []byte
	hasBody    bool
	status     int
	respH      map[string][]string
	respBody   []byte
	shared     map[string]any
	exitStatus int
	exitBody   []byte
	exitH      map[string][]string
}

func newHost() *testHost {
	return &testHost{phase: "access", method: "GET", path: "/p", headers: map[string][]string{}, respH: map[string][]string{}, shared: map[string]any{}}
}

func (h *testHost) Phase() string                { return h.phase }
func (h *testHost) Method() string               { return h.method }
func (h *testHost) Scheme() string               { return "http" }
func (h *testHost) Host() string                 { return "example.test" }
func (h *testHost) Port() int                    { return 80 }
func (h *testHost) Path() string                 { return h.path }
func (h *testHost) RawQuery() string             { return h.query }
func (h *testHost) Headers() map[string][]string { return h.headers }
func (h *testHost) Body() ([]byte, bool)         { return h.body, h.hasBody }
func (h *testHost) SetHeader(n, v string)        { h.headers[strings.ToLower(n)] = []string{v} }
func (h *testHost) AddHeader(n, v string) {
	k := strings.ToLower(n)
	h.headers[k] = append(h.headers[k], v)
}
func (h *testHost) ClearHeader(n string)                 { delete(h.headers, strings.ToLower(n)) }
func (h *testHost) SetPath(p string)                     { h.path = p }
func (h *testHost) SetRawQuery(q string)                 { h.query = q }
func (h *testHost) SetMethod(m string)                   { h.method = m }
func (h *testHost) SetBody(b []byte)                     { h.body, h.hasBody = b, true }
func (h *testHost) Status() int                          { return h.status }
func (h *testHost) ResponseHeaders() map[string][]string { return h.respH }
func (h *testHost) SetResponseHeader(n, v string)        { h.respH[strings.ToLower(n)] = []string{v} }
func (h *testHost) AddResponseHeader(n, v string) {
	k := strings.ToLower(n)
	h.respH[k] = append(h.respH[k], v)
}
func (h *testHost) ClearResponseHeader(n string) { delete(h.respH, strings.ToLower(n)) }
func (h *testHost) SetStatus(c int)              { h.status = c }
func (h *testHost) ResponseBody() ([]byte, bool) { return h.respBody, h.respBody != nil }
func (h *testHost) SetResponseBody(b []byte)     { h.respBody = b }
func (h *testHost) Shared() map[string]any       { return h.shared }
func (h *testHost) Logger() *zap.Logger          { return zap.NewNop() }
func (h *testHost) Vault(ref string) (string, error) {
	if ref == "{vault://env/token}" {
		return "s3cret", nil
	}
	return "", errors.New("not found")
}
func (h *testHost) Var(name string) (string, bool) {
	if name == "request_method" {
		return h.method, true
	}
	return "", false
}
func (h *testHost) Exit(status int, body []byte, hdr map[string][]string) {
	h.exitStatus, h.exitBody, h.exitH = status, body, hdr
}

func run(t *testing.T, sb *Sandbox, src string, h Host) error {
	t.Helper()
	c, err := Compile(src, "test")
	var ue *UnknownNameError
	if errors.As(err, &ue) {
		// refused at load; the sandbox must refuse it at run time as well
		c, err = compileUnchecked(src, "test")
	}
	if err != nil {
		t.Fatalf("compile %q: %v", src, err)
	}
	return sb.Run(context.Background(), c, h)
}

// compileUnchecked compiles without the load-time name checks.
func compileUnchecked(src, name string) (*Chunk, error) {
	stmts, err := parseLua(src, name)
	if err != nil {
		return nil, err
	}
	return compile(stmts, src, name, false)
}

// What the sandbox lacks is refused at load, named with its line; reading
// an undefined global (nil) and dynamic requires stay allowed.
func TestMissingGlobalsAreLoadErrors(t *testing.T) {
	for src, want := range map[string]string{
		`io.open("/etc/passwd")`:                           "line 1: io is not provided",
		"local a = 1\nloadstring(\"return 1\")()":          "line 2: loadstring is not provided",
		`local x = require("resty.http")`:                  `line 1: require "resty.http" is not provided`,
		`local s = require "socket" return s.gettime()`:    `require "socket" is not provided`,
		`_G.string = nil`:                                  "_G is not provided",
		`ngx.ctx.balancer_data.connect_timeout = 100`:      "ngx.ctx.balancer_data is not provided",
		`coroutine.wrap(function() end)()`:                 "coroutine is not provided",
		`local t = {} function t:m() return self.x end`:    "",
		`function helper() end helper()`:                   "",
		`assert(x == nil and leak == nil)`:                 "",
		`local m = "cjson" local c = require(m)`:           "",
		`local c = require("cjson.safe") c.decode("1")`:    "",
		`for k, v in pairs({}) do v.x() end`:               "",
		`local ok = pcall(function(a, ...) a.b() end, {})`: "",
	} {
		_, err := Compile(src, "t")
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", src, err)
			}
			continue
		}
		var ue *UnknownNameError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want an UnknownNameError with %q, got %v", src, want, err)
		}
	}
}

func TestSyntaxErrorHasLine(t *testing.T) {
	_, err := Compile("local a = 1\nlocal b = = 2\n", "x")
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 2 {
		t.Fatalf("want syntax error on line 2, got %v", err)
	}
}

func TestSandboxEscapes(t *testing.T) {
	sb := New(Options{Timeout: 150 * time.Millisecond})
	defer sb.Close()
	cases := map[string]string{
		"os.execute":      `os.execute("touch /tmp/pwned")`,
		"io.open":         `io.open("/etc/passwd")`,
		"require os":      `require "os"`,
		"require io":      `local x = require("io")`,
		"load":            `load("return 1")()`,
		"loadstring":      `loadstring("return 1")()`,
		"dofile":          `dofile("/etc/passwd")`,
		"loadfile":        `loadfile("/etc/passwd")`,
		"debug":           `debug.getinfo(1)`,
		"package":         `package.loaded.os.execute("id")`,
		"coroutine":       `coroutine.create(function() end)`,
		"getfenv":         `getfenv(1).os = 1`,
		"collectgarbage":  `collectgarbage()`,
		"string.rep bomb": `local s = string.rep("x", 1e9)`,
		"method rep bomb": `local s = ("x"):rep(1e9)`,
		"format width":    `local s = string.format("%999999999d", 1)`,
		"gsub bomb":       `local s = string.gsub(string.rep("x", 1e6), "x", string.rep("y", 1e6))`,
		"concat bomb":     `local x = string.rep("x", 1e6) local t = {} for i = 1, 100 do t[i] = x end local s = table.concat(t)`,
		"recursion":       `local function f(n) return 1 + f(n + 1) end f(1)`,
		"modify string":   `string.rep = nil`,
		"rawset string":   `rawset(string, "rep", 1)`,
		"setmetatable ro": `setmetatable(kong, {})`,
		"string mt":       `getmetatable("").__index.rep = nil`,
		"string.dump":     `string.dump(function() end)`,
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			err := run(t, sb, src, newHost())
			// Refused (a Lua error), or a bomb stopped by the time limit
			// on a slow (race-instrumented) build.
			var re *RuntimeError
			var te *TimeoutError
			if !errors.As(err, &re) && !errors.As(err, &te) {
				t.Fatalf("want a runtime error, got %v", err)
			}
		})
	}
	// The sandbox still works, and string.rep was not replaced.
	h := newHost()
	if err := run(t, sb, `kong.ctx.shared.r = string.rep("ab", 3)`, h); err != nil || h.shared["r"] != "ababab" {
		t.Fatalf("after escapes: err=%v r=%v", err, h.shared["r"])
	}
}

func TestTimeouts(t *testing.T) {
	sb := New(Options{Timeout: 50 * time.Millisecond})
	defer sb.Close()
	for name, src := range map[string]string{
		"loop":       `while true do end`,
		"tail call":  `local function f() return f() end f()`,
		"pcall loop": `while true do pcall(function() while true do end end) end`,
		"table bomb": `local t = {} local i = 0 while true do i = i + 1 t[i] = {i} end`,
		"concat":     `local s = "x" while true do s = s .. "x" end`,
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := run(t, sb, src, newHost())
			var te *TimeoutError
			if !errors.As(err, &te) {
				t.Fatalf("want timeout, got %v", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("stopped after %s", d)
			}
		})
	}
	if err := run(t, sb, `local x = 1`, newHost()); err != nil {
		t.Fatalf("after timeouts: %v", err)
	}
}

func TestGlobalsDoNotLeakBetweenCalls(t *testing.T) {
	sb := New(Options{PoolSize: 1})
	defer sb.Close()
	h := newHost()
	if err := run(t, sb, `leak = "x"`, h); err != nil {
		t.Fatal(err)
	}
	if err := run(t, sb, `kong.ctx.shared.seen = leak`, h); err != nil {
		t.Fatal(err)
	}
	if v, ok := h.shared["seen"]; ok {
		t.Fatalf("global leaked: %v", v)
	}
}

func TestExitCannotBeSwallowed(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	h := newHost()
	err := run(t, sb, `pcall(kong.response.exit, 403, {message = "no"}) kong.ctx.shared.after = true`, h)
	if err != nil {
		t.Fatal(err)
	}
	if h.exitStatus != 403 || string(h.exitBody) != `{"message":"no"}` {
		t.Fatalf("exit = %d %s", h.exitStatus, h.exitBody)
	}
	if _, ok := h.shared["after"]; ok {
		t.Fatal("code after exit ran")
	}
	if ct := h.exitH["content-type"]; len(ct) != 1 || !strings.HasPrefix(ct[0], "application/json") {
		t.Fatalf("content-type = %v", ct)
	}
}

// logHost is a testHost whose Logger is log (nil: the sandbox's own).
type logHost struct {
	*testHost
	log *zap.Logger
}

func (h logHost) Logger() *zap.Logger { return h.log }

// oneEntry wants exactly one logged entry and returns it.
func oneEntry(t *testing.T, logs *observer.ObservedLogs) observer.LoggedEntry {
	t.Helper()
	all := logs.TakeAll()
	if len(all) != 1 {
		t.Fatalf("%d log entries, want 1: %+v", len(all), all)
	}
	return all[0]
}

// TestPrintGoesToLogger: print joins its arguments with tabs (as Lua's
// print does) and logs them at info with source "lua print", on the host's
// logger, or on Options.Log when the host has none.
func TestPrintGoesToLogger(t *testing.T) {
	sbCore, sbLogs := observer.New(zapcore.DebugLevel)
	sb := New(Options{Log: zap.New(sbCore)})
	defer sb.Close()
	core, logs := observer.New(zapcore.DebugLevel)
	if err := run(t, sb, `print("hello", 1, nil, true, 2.5)`, logHost{newHost(), zap.New(core)}); err != nil {
		t.Fatal(err)
	}
	e := oneEntry(t, logs)
	if e.Level != zapcore.InfoLevel || e.Message != "hello\t1\tnil\ttrue\t2.5" {
		t.Errorf("logged %s %q, want info %q", e.Level, e.Message, "hello\t1\tnil\ttrue\t2.5")
	}
	if got := e.ContextMap(); !reflect.DeepEqual(got, map[string]any{"source": "lua print"}) {
		t.Errorf("fields %v, want source=lua print", got)
	}
	if n := sbLogs.Len(); n != 0 {
		t.Errorf("%d entries on the sandbox logger while the host has one", n)
	}

	// No host logger: the sandbox's.
	if err := run(t, sb, `print("fallback")`, logHost{newHost(), nil}); err != nil {
		t.Fatal(err)
	}
	if e := oneEntry(t, sbLogs); e.Level != zapcore.InfoLevel || e.Message != "fallback" || e.ContextMap()["source"] != "lua print" {
		t.Errorf("sandbox logger got %s %q %v", e.Level, e.Message, e.ContextMap())
	}
}

// TestKongLogLevels: kong.log.<level> and ngx.log(ngx.<LEVEL>, ...) log the
// arguments concatenated without a separator (as ngx.log does) at the
// matching zap level with source "lua"; nginx levels above err (crit, alert,
// emerg) are zap errors that keep the nginx level in lua_level.
func TestKongLogLevels(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	cases := []struct {
		src    string
		level  zapcore.Level
		msg    string
		fields map[string]any
	}{
		{`kong.log.err("bad ", 42)`, zapcore.ErrorLevel, "bad 42", map[string]any{"source": "lua", "lua_level": "err"}},
		{`kong.log.warn("careful", "!")`, zapcore.WarnLevel, "careful!", map[string]any{"source": "lua"}},
		{`kong.log.notice("note")`, zapcore.InfoLevel, "note", map[string]any{"source": "lua"}},
		{`kong.log.info("info ", true)`, zapcore.InfoLevel, "info true", map[string]any{"source": "lua"}},
		{`kong.log.debug("dbg")`, zapcore.DebugLevel, "dbg", map[string]any{"source": "lua"}},
		{`kong.log.crit("c")`, zapcore.ErrorLevel, "c", map[string]any{"source": "lua", "lua_level": "crit"}},
		{`kong.log.alert("a")`, zapcore.ErrorLevel, "a", map[string]any{"source": "lua", "lua_level": "alert"}},
		{`kong.log.emerg("e")`, zapcore.ErrorLevel, "e", map[string]any{"source": "lua", "lua_level": "emerg"}},
		{`kong.log.inspect({a = 1}, "s")`, zapcore.InfoLevel, `{"a":1} "s"`, map[string]any{"source": "lua"}},
		{`ngx.log(ngx.ERR, "n", "err")`, zapcore.ErrorLevel, "nerr", map[string]any{"source": "lua", "lua_level": "err"}},
		{`ngx.log(ngx.WARN, "w")`, zapcore.WarnLevel, "w", map[string]any{"source": "lua"}},
		{`ngx.log(ngx.NOTICE, "n")`, zapcore.InfoLevel, "n", map[string]any{"source": "lua"}},
		{`ngx.log(ngx.INFO, "i")`, zapcore.InfoLevel, "i", map[string]any{"source": "lua"}},
		{`ngx.log(ngx.DEBUG, "d")`, zapcore.DebugLevel, "d", map[string]any{"source": "lua"}},
		{`ngx.log(ngx.CRIT, "c")`, zapcore.ErrorLevel, "c", map[string]any{"source": "lua", "lua_level": "crit"}},
	}
	for _, c := range cases {
		t.Run(c.src, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			if err := run(t, sb, c.src, logHost{newHost(), zap.New(core)}); err != nil {
				t.Fatal(err)
			}
			e := oneEntry(t, logs)
			if e.Level != c.level || e.Message != c.msg {
				t.Errorf("logged %s %q, want %s %q", e.Level, e.Message, c.level, c.msg)
			}
			if got := e.ContextMap(); !reflect.DeepEqual(got, c.fields) {
				t.Errorf("fields %v, want %v", got, c.fields)
			}
		})
	}
}

// TestKongLogKeepsLoggerFields: entries go to the host's logger as is, so
// the fields it carries (the processor's request_id) are on every Lua entry.
func TestKongLogKeepsLoggerFields(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core).With(zap.String("request_id", "req-9"))
	if err := run(t, sb, `kong.log.warn("w") print("p")`, logHost{newHost(), log}); err != nil {
		t.Fatal(err)
	}
	all := logs.TakeAll()
	if len(all) != 2 {
		t.Fatalf("%d entries, want 2", len(all))
	}
	for _, e := range all {
		if e.ContextMap()["request_id"] != "req-9" {
			t.Errorf("%q: fields %v lack request_id", e.Message, e.ContextMap())
		}
	}
}
