package flows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/flows/lua"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func newLuaExchange() *Exchange {
	x := NewExchange("req-1", Request{
		Method: "POST", Scheme: "https", Authority: "api.example.test:8443", Path: "/users/42",
		RawQuery: "a=1&b=x&b=y&flag",
		Headers:  Headers{"content-type": {"application/json"}, "x-id": {"abc"}, "accept": {"a", "b"}},
		Body:     []byte(`{"name":"ann","n":12345678901234567,"tags":["t1"]}`), HasBody: true,
	}, nil)
	x.Captures = Captures{Named: map[string]string{"id": "42"}, Positional: []string{"42"}}
	x.Phase = PhaseAccess
	return x
}

func mustChunk(t *testing.T, src string) *LuaChunk {
	t.Helper()
	b := NewBuilder("kong.yml")
	c := b.Lua(src, "plugins[0].config.access[0]")
	if c == nil {
		t.Fatalf("compile: %v", b.Problems())
	}
	return c
}

func runLua(t *testing.T, x *Exchange, src string) error {
	t.Helper()
	return mustChunk(t, src).Run(context.Background(), x)
}

func TestPDKRequestReads(t *testing.T) {
	x := newLuaExchange()
	err := runLua(t, x, `
local s = kong.ctx.shared
s.method = kong.request.get_method()
s.path = kong.request.get_path()
s.pwq = kong.request.get_path_with_query()
s.scheme = kong.request.get_scheme()
s.host = kong.request.get_host()
s.port = kong.request.get_port()
s.xid = kong.request.get_header("X-ID")
s.accept = kong.request.get_headers()["Accept"]
s.missing = kong.request.get_header("nope") == nil
s.q = kong.request.get_query()
s.qa = kong.request.get_query_arg("b")
s.raw = kong.request.get_raw_query()
local body, err, mt = kong.request.get_body()
s.name = body.name
s.mt = mt
s.big = cjson.encode(body)
s.rawbody = kong.request.get_raw_body()
s.var = ngx.var.request_method .. " " .. ngx.var.request_uri .. " " .. ngx.var.http_x_id
`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"method": "POST", "path": "/users/42", "pwq": "/users/42?a=1&b=x&b=y&flag", "scheme": "https",
		"host": "api.example.test", "port": int64(8443), "xid": "abc", "accept": []any{"a", "b"}, "missing": true,
		"q": map[string]any{"a": "1", "b": []any{"x", "y"}, "flag": true}, "qa": "x", "raw": "a=1&b=x&b=y&flag",
		"name": "ann", "mt": "application/json",
		"big":     `{"n":12345678901234567,"name":"ann","tags":["t1"]}`,
		"rawbody": `{"name":"ann","n":12345678901234567,"tags":["t1"]}`,
		"var":     "POST /users/42?a=1&b=x&b=y&flag abc",
	}
	for k, v := range want {
		if !reflect.DeepEqual(x.Shared[k], v) {
			t.Errorf("%s = %#v, want %#v", k, x.Shared[k], v)
		}
	}
}

func TestPDKServiceRequestWrites(t *testing.T) {
	x := newLuaExchange()
	err := runLua(t, x, `
kong.service.request.set_header("X-New", "v1")
kong.service.request.add_header("X-Multi", "a")
kong.service.request.add_header("X-Multi", "b")
kong.service.request.clear_header("x-id")
kong.service.request.set_headers({["X-T"] = "t", ["X-L"] = {"1", "2"}})
kong.service.request.set_path("/v2/users")
kong.service.request.set_query({b = {"1", "2"}, a = "x y", f = true})
kong.service.request.set_method("put")
kong.service.request.set_body({ok = true, list = {1, 2}})
kong.ctx.shared.after = kong.request.get_header("x-new")
`)
	if err != nil {
		t.Fatal(err)
	}
	h := x.Request.Headers
	if h.Get("x-new") != "v1" || !reflect.DeepEqual(h.Values("x-multi"), []string{"a", "b"}) || h.Has("x-id") ||
		h.Get("x-t") != "t" || !reflect.DeepEqual(h.Values("x-l"), []string{"1", "2"}) {
		t.Errorf("headers: %v", h)
	}
	if x.Request.Path != "/v2/users" || x.Request.RawQuery != "a=x%20y&b=1&b=2&f" || x.Request.Method != "PUT" {
		t.Errorf("path/query/method: %s ? %s %s", x.Request.Path, x.Request.RawQuery, x.Request.Method)
	}
	if string(x.Request.Body) != `{"list":[1,2],"ok":true}` {
		t.Errorf("body: %s", x.Request.Body)
	}
	c := x.Changes()
	sort.Strings(c.RequestHeaders)
	if !reflect.DeepEqual(c.RequestHeaders, []string{"x-id", "x-l", "x-multi", "x-new", "x-t"}) || !c.Path || !c.Method || !c.Body {
		t.Errorf("changes: %+v", c)
	}
	if x.Shared["after"] != "v1" {
		t.Errorf("request view not updated: %v", x.Shared["after"])
	}
}

func TestSharedLiveView(t *testing.T) {
	x := newLuaExchange()
	x.Shared["callouts"] = map[string]any{
		"c1": map[string]any{"response": map[string]any{"status": 200, "body": map[string]any{"id": "u1", "list": []any{"a"}}}},
	}
	x.Shared["big"] = int64(1) << 60
	err := runLua(t, x, `
local c1 = kong.ctx.shared.callouts.c1
assert(c1.response.status == 200, "status")
assert(type(c1.response.body) == "table", "body type")
kong.ctx.shared.seen = c1.response.body.id
c1.response.body.id = "changed"
c1.response.body.list[2] = "b"
assert(#c1.response.body.list == 2, "len")
local t = {x = 1}
kong.ctx.shared.tbl = t
t.y = 2
kong.ctx.shared.tbl.z = 3
kong.ctx.shared.bigcopy = kong.ctx.shared.big
kong.ctx.shared.bigstr = tostring(kong.ctx.shared.big)
local keys = {}
for k in pairs(kong.ctx.shared.callouts) do keys[#keys + 1] = k end
kong.ctx.shared.keys = keys
local n = 0
for _, v in ipairs(c1.response.body.list) do n = n + 1 end
kong.ctx.shared.n = n
`)
	if err != nil {
		t.Fatal(err)
	}
	body := x.Shared["callouts"].(map[string]any)["c1"].(map[string]any)["response"].(map[string]any)["body"].(map[string]any)
	if x.Shared["seen"] != "u1" || body["id"] != "changed" || !reflect.DeepEqual(body["list"], []any{"a", "b"}) {
		t.Errorf("nested live view: seen=%v body=%v", x.Shared["seen"], body)
	}
	if !reflect.DeepEqual(x.Shared["tbl"], map[string]any{"x": int64(1), "y": int64(2), "z": int64(3)}) {
		t.Errorf("table stored then changed: %#v", x.Shared["tbl"])
	}
	if x.Shared["bigcopy"] != int64(1)<<60 || x.Shared["bigstr"] != "1152921504606846976" {
		t.Errorf("big integer: %#v %#v", x.Shared["bigcopy"], x.Shared["bigstr"])
	}
	if !reflect.DeepEqual(x.Shared["keys"], []any{"c1"}) || x.Shared["n"] != int64(2) {
		t.Errorf("iteration: %v %v", x.Shared["keys"], x.Shared["n"])
	}
	// Go changes are seen by the next chunk.
	x.Shared["fromgo"] = map[string]any{"k": "v"}
	if err := runLua(t, x, `kong.ctx.shared.echo = kong.ctx.shared.fromgo.k; kong.ctx.shared.fromgo = nil`); err != nil {
		t.Fatal(err)
	}
	if _, ok := x.Shared["fromgo"]; ok || x.Shared["echo"] != "v" {
		t.Errorf("go->lua: %v", x.Shared)
	}
	if err := runLua(t, x, `kong.ctx.shared.f = function() end`); err == nil {
		t.Error("storing a function should fail")
	}
}

func TestExitWithTableBody(t *testing.T) {
	x := newLuaExchange()
	err := runLua(t, x, `
if kong.request.get_header("x-id") == "abc" then
  return kong.response.exit(403, {message = "forbidden", list = {1, 2}}, {["X-Reason"] = "test"})
end
kong.ctx.shared.not_reached = true
`)
	if err != nil {
		t.Fatal(err)
	}
	if x.Reply == nil || x.Reply.Status != 403 {
		t.Fatalf("reply: %+v", x.Reply)
	}
	if string(x.Reply.Body) != `{"list":[1,2],"message":"forbidden"}` {
		t.Errorf("body: %s", x.Reply.Body)
	}
	if x.Reply.Headers.Get("content-type") != "application/json; charset=utf-8" || x.Reply.Headers.Get("x-reason") != "test" {
		t.Errorf("headers: %v", x.Reply.Headers)
	}
	if _, ok := x.Shared["not_reached"]; ok {
		t.Error("chunk went on after exit")
	}
	x = newLuaExchange()
	if err := runLua(t, x, `kong.response.exit(200, "plain", {["Content-Type"] = "text/plain"})`); err != nil {
		t.Fatal(err)
	}
	if string(x.Reply.Body) != "plain" || x.Reply.Headers.Get("content-type") != "text/plain" {
		t.Errorf("string exit: %+v", x.Reply)
	}
}

func TestPhaseRestrictions(t *testing.T) {
	cases := []struct {
		phase Phase
		src   string
		want  string
	}{
		{PhaseHeaderFilter, `kong.service.request.set_header("a", "b")`, "function cannot be called in header_filter phase"},
		{PhaseBodyFilter, `kong.service.request.set_path("/x")`, "function cannot be called in body_filter phase"},
		{PhaseAccess, `kong.response.get_status()`, "function cannot be called in access phase"},
		{PhaseAccess, `kong.response.get_raw_body()`, "function cannot be called in access phase"},
		{PhaseBodyFilter, `kong.response.exit(200)`, "function cannot be called in body_filter phase"},
		{PhaseHeaderFilter, `kong.request.get_body()`, "function cannot be called in header_filter phase"},
	}
	for _, c := range cases {
		x := newLuaExchange()
		x.Phase = c.phase
		x.Response = Response{Status: 200, Headers: Headers{}}
		err := runLua(t, x, c.src)
		var he *HTTPError
		if !errors.As(err, &he) || he.Status != 500 || !IsLuaError(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s in %s: %v", c.src, c.phase, err)
		}
	}
}

func TestResponsePhases(t *testing.T) {
	x := newLuaExchange()
	x.Phase = PhaseHeaderFilter
	x.Response = Response{Status: 201, Headers: Headers{"content-type": {"text/plain"}, "server": {"up"}}}
	err := runLua(t, x, `
kong.ctx.shared.st = kong.response.get_status()
kong.ctx.shared.ct = kong.response.get_header("Content-Type")
kong.response.set_header("X-Added", "1")
kong.response.clear_header("server")
`)
	if err != nil {
		t.Fatal(err)
	}
	if x.Shared["st"] != int64(201) || x.Shared["ct"] != "text/plain" || x.Response.Headers.Get("x-added") != "1" || x.Response.Headers.Has("server") {
		t.Errorf("header_filter: %v %v", x.Shared, x.Response.Headers)
	}
	if c := x.Changes(); len(c.ResponseHeaders) != 2 {
		t.Errorf("changes: %+v", c)
	}
	x.Phase = PhaseBodyFilter
	x.Response.Body, x.Response.HasBody = []byte("hello"), true
	if err := runLua(t, x, `kong.response.set_raw_body(kong.response.get_raw_body():upper() .. "!")`); err != nil {
		t.Fatal(err)
	}
	if string(x.Response.Body) != "HELLO!" || !x.Changes().ResponseBody {
		t.Errorf("body_filter: %s", x.Response.Body)
	}
}

func TestLuaErrorsAre500(t *testing.T) {
	x := newLuaExchange()
	err := runLua(t, x, `error("boom")`)
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != 500 || !IsLuaError(err) || IsLuaTimeout(err) {
		t.Fatalf("runtime error: %v", err)
	}
	err = runLua(t, x, `while true do end`)
	if !errors.As(err, &he) || he.Status != 500 || !IsLuaTimeout(err) {
		t.Fatalf("timeout: %v", err)
	}
	if err := runLua(t, x, `kong.ctx.shared.ok = 1`); err != nil || x.Shared["ok"] != int64(1) {
		t.Fatalf("next call: %v", err)
	}
}

func TestVaultAndNgx(t *testing.T) {
	b := NewBuilder("kong.yml")
	b.LookupEnv = func(k string) (string, bool) {
		if k == "MY_TOKEN" {
			return "tok", true
		}
		return "", false
	}
	c := b.Lua(`
kong.ctx.shared.tok = kong.vault.get("{vault://env/my-token}")
local v, err = kong.vault.get("{vault://env/" .. "my-token-2}")
kong.ctx.shared.err = err
kong.ctx.shared.b64 = ngx.encode_base64("hi?")
kong.ctx.shared.dec = ngx.decode_base64("aGk/")
kong.ctx.shared.md5 = ngx.md5("a")
kong.ctx.shared.time_ok = ngx.time() > 1600000000 and ngx.now() > 1600000000
kong.ctx.shared.null_same = ngx.null == cjson.null
`, "p")
	if c == nil {
		t.Fatal(b.Problems())
	}
	x := newLuaExchange()
	if err := c.Run(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	s := x.Shared
	if s["tok"] != "tok" || !strings.Contains(s["err"].(string), "only the references its config names") || s["b64"] != "aGk/" || s["dec"] != "hi?" ||
		s["md5"] != "0cc175b9c0f1b6a831c399e269772661" || s["time_ok"] != true || s["null_same"] != true {
		t.Errorf("shared: %v", s)
	}
	// A reference written in the code is resolved at load: a missing one
	// is a load error naming it.
	if b.Lua(`return kong.vault.get("{vault://env/missing}")`, "q") != nil {
		t.Fatal("want nil chunk")
	}
	if ps := b.Problems(); len(ps) != 1 || ps[0].String() != `kong.yml:0: q: vault reference "{vault://env/missing}": environment variable MISSING is not set` {
		t.Errorf("problems: %v", ps)
	}
}

func TestBuilderLuaAndTemplateErrors(t *testing.T) {
	b := NewBuilder("kong.yml")
	if b.Lua("local a = 1\nlocal = 2", "plugins[0].config.access[1]") != nil {
		t.Fatal("want nil chunk")
	}
	if b.Template("#1234", "plugins[0].config.callouts[0].request.url") != nil {
		t.Fatal("want nil template")
	}
	if b.Template("$(headers.x", "plugins[0].config.x") != nil {
		t.Fatal("want nil template")
	}
	ps := b.Problems()
	if len(ps) != 3 {
		t.Fatalf("problems: %v", ps)
	}
	if ps[0].Path != "plugins[0].config.access[1]" || !strings.HasPrefix(ps[0].Reason, "lua syntax error: line 2:") {
		t.Errorf("lua: %+v", ps[0])
	}
	if ps[1].Path != "plugins[0].config.callouts[0].request.url" || !strings.Contains(ps[1].Reason, `$("#...")`) {
		t.Errorf("hash: %+v", ps[1])
	}
	if !strings.Contains(ps[2].Reason, "unbalanced") {
		t.Errorf("parens: %+v", ps[2])
	}
}

func TestRenderOnExchange(t *testing.T) {
	x := newLuaExchange()
	x.Shared["callouts"] = map[string]any{"auth": map[string]any{"response": map[string]any{"body": map[string]any{"token": "T", "n": 7}}}}
	b := NewBuilder("kong.yml")
	cases := map[string]string{
		"Bearer $(callouts.auth.response.body.token)": "Bearer T",
		"$(headers['x-id'])/$(uri_captures.id)":       "abc/42",
		"$(query_params.b[2])":                        "y",
		"$(kong.request.get_header('X-ID'))":          "abc",
		"$(callouts.auth.response.body.n + 1)":        "8",
		"literal":                                     "literal",
	}
	for src, want := range cases {
		tpl := b.Template(src, "x")
		got, err := RenderString(context.Background(), tpl, x)
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", src, got, err, want)
		}
	}
	tpl := b.Template("$(callouts.auth.response.body)", "x")
	v, err := RenderValue(context.Background(), tpl, x)
	if err != nil {
		t.Fatal(err)
	}
	if enc, _ := json.Marshal(v); string(enc) != `{"n":7,"token":"T"}` {
		t.Errorf("value: %s", enc)
	}
	tpl = b.Template("$(callouts.missing.response)", "x")
	if _, err := RenderString(context.Background(), tpl, x); err == nil || !errors.As(err, new(*lua.RuntimeError)) {
		t.Errorf("missing callout: %v", err)
	}
}

func TestLuaChunkCallouts(t *testing.T) {
	cases := []struct {
		src     string
		names   []string
		dynamic bool
	}{
		{`local b = kong.ctx.shared.callouts.c1.response.body; kong.service.request.set_header("x", kong.ctx.shared.callouts.c2.response.status)`, []string{"c1", "c2"}, false},
		{`local s = kong.ctx.shared; s.x = 1`, nil, true},
		{`local c = kong.ctx.shared.callouts[name]`, nil, true},
		{`kong.ctx.shared.other = 1`, nil, false},
		{`local k = kong; k.log.err("x")`, nil, true},
		{`kong.log.err(kong.ctx.shared.callouts["c-3"].response.status)`, []string{"c-3"}, false},
	}
	for _, c := range cases {
		ch := mustChunk(t, c.src)
		if got := ch.Callouts(); !reflect.DeepEqual(got, c.names) {
			t.Errorf("%s: %v, want %v", c.src, got, c.names)
		}
		if got := ch.ReadsCalloutsDynamically(); got != c.dynamic {
			t.Errorf("%s: dynamic %v", c.src, got)
		}
	}
}

func BenchmarkLuaChunkRun(b *testing.B) {
	bld := NewBuilder("kong.yml")
	c := bld.Lua(`kong.service.request.set_header("x-user", kong.request.get_header("x-id") or "anon")`, "p")
	if c == nil {
		b.Fatal(bld.Problems())
	}
	x := newLuaExchange()
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := c.Run(ctx, x); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderFastPathOnExchange(b *testing.B) {
	x := newLuaExchange()
	x.Shared["callouts"] = map[string]any{"auth": map[string]any{"response": map[string]any{"body": map[string]any{"token": "T"}}}}
	tpl := NewBuilder("k").Template("Bearer $(callouts.auth.response.body.token)", "x")
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := RenderString(ctx, tpl, x); err != nil {
			b.Fatal(err)
		}
	}
}

// accessLua is a plugin whose only phase is access, running one chunk.
type accessLua struct{ c *LuaChunk }

func (accessLua) Name() string                                    { return "access-lua" }
func (accessLua) Priority() int                                   { return 1 }
func (p accessLua) Access(ctx context.Context, x *Exchange) error { return p.c.Run(ctx, x) }

func TestResponseHeadersSetInAccessReachTheResponse(t *testing.T) {
	c := mustChunk(t, "kong.response.set_header('X-Early', 'e'); kong.response.add_header('X-Early', 'f')")
	if !c.SetsResponseHeaders() {
		t.Error("the chunk sets response headers")
	}
	if mustChunk(t, "kong.service.request.set_header('X-Up', '1')").SetsResponseHeaders() {
		t.Error("a request header change is not a response header change")
	}
	// No plugin of the pipeline has a response phase: the walk applies them.
	pl := NewPipeline([]*Instance{{Plugin: accessLua{c}, Name: "access-lua"}})
	x := newLuaExchange()
	if err := pl.Serve(context.Background(), PhaseAccess, x, nil); err != nil || x.Reply != nil {
		t.Fatalf("access: %v, reply %v", err, x.Reply)
	}
	if err := runLua(t, x, `for k in pairs(kong.ctx.shared) do error("kong.ctx.shared has " .. k) end`); err != nil {
		t.Fatal(err)
	}
	x.Response = Response{Status: 200, Headers: Headers{"x-early": {"upstream"}}}
	if err := pl.Serve(context.Background(), PhaseHeaderFilter, x, nil); err != nil {
		t.Fatal(err)
	}
	if got := x.Response.Headers.Values("x-early"); !reflect.DeepEqual(got, []string{"e", "f"}) {
		t.Errorf("x-early = %v", got)
	}
	if c := x.Changes(); !reflect.DeepEqual(c.ResponseHeaders, []string{"x-early"}) {
		t.Errorf("changes = %v, want x-early sent to Envoy", c.ResponseHeaders)
	}
	// With exit, they go on the local reply, under exit's own headers.
	x = newLuaExchange()
	if err := runLua(t, x, `kong.response.set_header("X-A", "1"); kong.response.set_header("X-B", "1"); kong.response.exit(418, "tea", {["X-B"] = "2"})`); err != nil {
		t.Fatal(err)
	}
	if x.Reply.Headers.Get("x-a") != "1" || x.Reply.Headers.Get("x-b") != "2" {
		t.Errorf("reply headers: %v", x.Reply.Headers)
	}
}

func TestTableLibraryOnSharedLists(t *testing.T) {
	x := newLuaExchange()
	x.Shared["list"] = []any{"b", "a"}
	err := runLua(t, x, `
local l = kong.ctx.shared.list
table.insert(l, "c")
table.insert(l, 1, "z")
kong.ctx.shared.joined = table.concat(l, ",")
kong.ctx.shared.removed = table.remove(l, 1)
table.sort(l)
local a, b = unpack(l)
kong.ctx.shared.first = a .. b
`)
	if err != nil {
		t.Fatal(err)
	}
	if x.Shared["joined"] != "z,b,a,c" || x.Shared["removed"] != "z" || x.Shared["first"] != "ab" ||
		!reflect.DeepEqual(x.Shared["list"], []any{"a", "b", "c"}) {
		t.Errorf("shared: %v", x.Shared)
	}
	if err := runLua(t, x, `table.insert(kong.ctx.shared, 1)`); err == nil {
		t.Error("table.insert on the shared object should fail")
	}
}

// TestLuaLogsGoToExchangeLogger: print and kong.log in a config chunk log on
// the exchange's logger, so they carry what the processor put there (it adds
// request_id), at the level kong.log names; a failing chunk's error entry
// names the chunk's config path.
func TestLuaLogsGoToExchangeLogger(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	x := newLuaExchange()
	x.Log = zap.New(core).WithLazy(zap.String("request_id", x.ID)) // as processor/stream.go does
	err := runLua(t, x, `
print("p", 1)
kong.log.err("e ", kong.request.get_method())
kong.log.warn("w")
kong.log.notice("n")
kong.log.info("i")
kong.log.debug("d")
`)
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		level zapcore.Level
		msg   string
	}
	want := []entry{
		{zapcore.InfoLevel, "p\t1"}, {zapcore.ErrorLevel, "e POST"}, {zapcore.WarnLevel, "w"},
		{zapcore.InfoLevel, "n"}, {zapcore.InfoLevel, "i"}, {zapcore.DebugLevel, "d"},
	}
	all := logs.TakeAll()
	if len(all) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(all), len(want), all)
	}
	for i, e := range all {
		if e.Level != want[i].level || e.Message != want[i].msg {
			t.Errorf("entry %d: %s %q, want %s %q", i, e.Level, e.Message, want[i].level, want[i].msg)
		}
		if got := e.ContextMap()["request_id"]; got != "req-1" {
			t.Errorf("entry %d %q: request_id %v, want req-1", i, e.Message, got)
		}
		if got := e.ContextMap()["chunk"]; got != "plugins[0].config.access[0]" {
			t.Errorf("entry %d %q: chunk %v, want the chunk's config path", i, e.Message, got)
		}
	}

	c := mustChunk(t, `error("boom")`)
	if err := c.Run(context.Background(), x); err == nil {
		t.Fatal("want an error")
	}
	got := logs.TakeAll()
	if len(got) != 1 {
		t.Fatalf("%d entries for a failing chunk, want 1: %+v", len(got), got)
	}
	e := got[0]
	if e.Level != zapcore.ErrorLevel || e.Message != "lua chunk failed" {
		t.Errorf("failing chunk logged %s %q", e.Level, e.Message)
	}
	if f := e.ContextMap(); f["chunk"] != string(c.Path()) || c.Path() == "" || f["request_id"] != "req-1" || !strings.Contains(fmt.Sprint(f["error"]), "boom") {
		t.Errorf("failing chunk fields %v, want chunk %q, request_id req-1 and the error", f, c.Path())
	}
}
