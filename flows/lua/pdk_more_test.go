package lua

import (
	"context"
	"strings"
	"testing"
)

// runOK runs src on h and fails the test on an error.
func runOK(t *testing.T, sb *Sandbox, src string, h Host) {
	t.Helper()
	if err := run(t, sb, src, h); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
}

func TestNgxRe(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	h := newHost()
	runOK(t, sb, `
local out = {}
local m = ngx.re.match("user-42/orders", [[(?<name>\w+)-(\d+)]], "jo")
out[#out+1] = m[0] .. "," .. m[1] .. "," .. m[2] .. "," .. m.name
local from, to = ngx.re.find("hello world", "wor", "jo")
out[#out+1] = from .. "-" .. to
local s, n = ngx.re.gsub("a1b22c333", [[\d+]], "<$0>")
out[#out+1] = s .. n
s, n = ngx.re.sub("Hello", "l", "L")
out[#out+1] = s .. n
s = ngx.re.gsub("k=v; x=y", [[(\w+)=(\w+)]], function(m) return m[2] .. ":" .. m[1] end)
out[#out+1] = s
local words = {}
for w in ngx.re.gmatch("a,bb,ccc", "[a-z]+") do words[#words+1] = w[0] end
out[#out+1] = table.concat(words, "|")
out[#out+1] = tostring(ngx.re.match("ABC", "abc", "i") ~= nil)
out[#out+1] = tostring(ngx.re.match("xabc", "abc", "a") == nil)
out[#out+1] = tostring(ngx.re.match("a b", "a\\ b # comment", "x") == nil)
local _, err = ngx.re.match("x", "x", "D")
out[#out+1] = tostring(err ~= nil and err:find("unknown flag") ~= nil)
local _, err2 = ngx.re.match("aa", [[(a)\1]])
out[#out+1] = tostring(err2 ~= nil)
local ctx = {}
ngx.re.match("a1a2", "a(\\d)", "jo", ctx)
local m2 = ngx.re.match("a1a2", "a(\\d)", "jo", ctx)
out[#out+1] = m2[1]
kong.ctx.shared.out = table.concat(out, ";")
`, h)
	want := "user-42,user,42,user;7-9;a<1>b<22>c<333>3;HeLlo1;v:k; y:x;a|bb|ccc;true;true;false;true;true;2"
	if got := h.shared["out"]; got != want {
		t.Errorf("got  %v\nwant %s", got, want)
	}
}

func TestReturnFunctionFormKeepsUpvaluesPerState(t *testing.T) {
	sb := New(Options{PoolSize: 1})
	defer sb.Close()
	c, err := Compile(`
local count = 0
return function()
	count = count + 1
	kong.ctx.shared.count = count
end`, "chunk")
	if err != nil {
		t.Fatal(err)
	}
	h := newHost()
	for i := 1; i <= 3; i++ {
		if err := sb.Run(context.Background(), c, h); err != nil {
			t.Fatal(err)
		}
		if got := h.shared["count"]; got != int64(i) {
			t.Fatalf("call %d: count %v", i, got)
		}
	}
}

func TestNgxSayAndExitInAccess(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	h := newHost()
	runOK(t, sb, `ngx.status = 201 ngx.say("hello ", "world") ngx.print({"a", "b"})`, h)
	if h.exitStatus != 201 || string(h.exitBody) != "hello world\nab" || h.exitH["content-type"][0] != "text/plain" {
		t.Errorf("exit %d %q %v", h.exitStatus, h.exitBody, h.exitH)
	}
	h = newHost()
	runOK(t, sb, `ngx.status = 403 ngx.say("Forbidden") ngx.exit(ngx.HTTP_OK)`, h)
	if h.exitStatus != 403 || string(h.exitBody) != "Forbidden\n" {
		t.Errorf("exit after say: %d %q", h.exitStatus, h.exitBody)
	}
	h = newHost()
	runOK(t, sb, `ngx.exit(403) kong.ctx.shared.after = true`, h)
	if h.exitStatus != 403 || !strings.Contains(string(h.exitBody), "Forbidden") || h.shared["after"] != nil {
		t.Errorf("exit %d %q %v", h.exitStatus, h.exitBody, h.shared)
	}
	h = newHost()
	runOK(t, sb, `ngx.exit(ngx.OK) kong.ctx.shared.after = true`, h)
	if h.exitStatus != 0 || h.shared["after"] != nil {
		t.Errorf("ngx.exit(0): exit %d, shared %v", h.exitStatus, h.shared)
	}
}

func TestKongCache(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	h := newHost()
	src := `
local calls = kong.ctx.shared.calls or 0
local v, err = kong.cache:get("test-cache-key", { ttl = 60 }, function(a)
	kong.ctx.shared.calls = calls + 1
	return { token = a }
end, "abc")
kong.ctx.shared.token = v.token
`
	runOK(t, sb, src, h)
	runOK(t, sb, src, h)
	if h.shared["calls"] != int64(1) || h.shared["token"] != "abc" {
		t.Errorf("shared %v", h.shared)
	}
	runOK(t, sb, `kong.cache:invalidate("test-cache-key") kong.ctx.shared.gone = kong.cache:probe("test-cache-key") == nil`, h)
	if h.shared["gone"] != true {
		t.Errorf("probe after invalidate: %v", h.shared["gone"])
	}
}

func TestOsAsKongSandbox(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	h := newHost()
	runOK(t, sb, `kong.ctx.shared.ok = type(os.time()) == "number" and os.date("!%Y-%m-%d", 0) == "1970-01-01"
		and type(os.clock()) == "number" and os.getenv == nil and os.execute == nil`, h)
	if h.shared["ok"] != true {
		t.Errorf("os: %v", h.shared)
	}
}

func TestHiddenRequestTablesStayOutOfShared(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	h := newHost()
	runOK(t, sb, `ngx.ctx.a = 1 kong.ctx.plugin.b = 2 kong.ctx.shared.c = 3
local n = 0 for k in pairs(kong.ctx.shared) do n = n + 1 end
kong.ctx.shared.out = cjson.encode(kong.ctx.shared) .. n`, h)
	if got := h.shared["out"]; got != `{"c":3}1` {
		t.Errorf("got %v", got)
	}
	runOK(t, sb, `kong.ctx.shared.again = ngx.ctx.a + kong.ctx.plugin.b`, h)
	if h.shared["again"] != int64(3) {
		t.Errorf("ngx.ctx/kong.ctx.plugin did not last: %v", h.shared)
	}
}

func TestKongLogIsCallable(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	runOK(t, sb, `kong.log("as ", "notice")`, newHost())
}

func TestKongConfiguration(t *testing.T) {
	sb := New(Options{Plugins: []string{"cors", "pre-function"}})
	defer sb.Close()
	h := newHost()
	if err := run(t, sb, `kong.ctx.shared.x = kong.configuration.plugins[2] .. "," .. kong.configuration.database .. "," .. tostring(kong.configuration.pg_host)`, h); err != nil {
		t.Fatal(err)
	}
	if got := h.shared["x"]; got != "pre-function,off,nil" {
		t.Fatalf("got %v", got)
	}
}
