package lua

import (
	"context"
	"reflect"
	"testing"
)

func TestCJSONRoundTrips(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	cases := map[string]string{
		`{"a":null}`:                      `{"a":null}`,
		`[]`:                              `[]`,
		`{}`:                              `{}`,
		`[1,2,3]`:                         `[1,2,3]`,
		`{"1":"x"}`:                       `{"1":"x"}`,
		`[null,1]`:                        `[null,1]`,
		`{"big":12345678901234567890123}`: `{"big":12345678901234567890123}`,
		`{"i":9007199254740993}`:          `{"i":9007199254740993}`,
		`{"neg":-9007199254740993}`:       `{"neg":-9007199254740993}`,
		`{"f":1.5,"e":1e300}`:             `{"e":1e+300,"f":1.5}`,
		`{"s":"\u00e9<>&"}`:               `{"s":"é<>&"}`,
		`{"nested":{"l":[{"x":[]}]}}`:     `{"nested":{"l":[{"x":[]}]}}`,
		`true`:                            `true`,
		`"str"`:                           `"str"`,
	}
	for in, want := range cases {
		h := newHost()
		h.shared["in"] = in
		if err := run(t, sb, `kong.ctx.shared.out = cjson.encode(cjson.decode(kong.ctx.shared["in"]))`, h); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if h.shared["out"] != want {
			t.Errorf("%s: got %v, want %s", in, h.shared["out"], want)
		}
	}
}

func TestCJSONFromLua(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	h := newHost()
	err := run(t, sb, `
local s = kong.ctx.shared
s.arr = cjson.encode({1, 2, "x"})
s.obj = cjson.encode({a = 1, b = {c = true}})
s.empty = cjson.encode({})
s.emptyarr = cjson.encode(setmetatable({}, cjson.array_mt))
s.sparse = cjson.encode({[1] = "a", [3] = "c"})
s.null = cjson.encode({a = cjson.null})
s.isnull = cjson.decode('{"a":null}').a == cjson.null
s.len = #cjson.decode('[1,2,3]')
s.bigcmp = tostring(cjson.decode('{"n":9007199254740993}').n)
s.bigadd = cjson.decode('{"n":9007199254740993}').n + 1 > 9007199254740000
local ok, err = pcall(cjson.decode, "{bad")
s.bad = ok
local safe = require "cjson.safe"
local v, e = safe.decode("{bad")
s.safe = v == nil and type(e) == "string"
s.float = cjson.encode({f = 0.1})
`, h)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"arr": `[1,2,"x"]`, "obj": `{"a":1,"b":{"c":true}}`, "empty": `{}`, "emptyarr": `[]`,
		"sparse": `{"1":"a","3":"c"}`, "null": `{"a":null}`, "isnull": true, "len": int64(3),
		"bigcmp": "9007199254740993", "bigadd": true, "bad": false, "safe": true, "float": `{"f":0.1}`,
	}
	for k, v := range want {
		if !reflect.DeepEqual(h.shared[k], v) {
			t.Errorf("%s = %#v, want %#v", k, h.shared[k], v)
		}
	}
}

func TestCJSONErrors(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	for _, src := range []string{
		`cjson.encode({f = function() end})`,
		`local t = {} t.t = t cjson.encode(t)`,
		`cjson.encode(0/0)`,
		`cjson.decode("[1,")`,
	} {
		if err := run(t, sb, src, newHost()); err == nil {
			t.Errorf("%s: want an error", src)
		}
	}
}

func TestRefs(t *testing.T) {
	cases := []struct {
		src      string
		callouts []string
		dyn      bool
		uses     string
		usesWant bool
	}{
		{`local b = kong.request.get_body()`, nil, false, "kong.request.get_body", true},
		{`local b = kong.request.get_header("x")`, nil, false, "kong.request.get_body", false},
		{`local r = kong.request; r.get_body()`, nil, false, "kong.request.get_body", true},
		{`local r = kong["request"]; r.get_body()`, nil, false, "kong.request.get_body", true},
		{`local k = kong.request[m]`, nil, false, "kong.request.get_body", true},
		{`kong.log.err(kong.ctx.shared.callouts.a.response.body.id)`, []string{"a"}, false, "kong.log.err", true},
		{`for k, v in pairs(kong.ctx.shared.callouts) do end`, nil, true, "", false},
		{`local x = kong.ctx.shared.callouts.b or kong.ctx.shared.callouts.a`, []string{"a", "b"}, false, "", false},
		{`local s = kong.ctx; s.shared.callouts.a = 1`, nil, true, "", false},
	}
	for _, c := range cases {
		ch, err := Compile(c.src, "t")
		if err != nil {
			t.Fatal(err)
		}
		r := ch.Refs()
		if !reflect.DeepEqual(r.Callouts, c.callouts) || r.DynamicCallouts != c.dyn {
			t.Errorf("%s: %+v", c.src, r)
		}
		if c.uses != "" && r.UsesKong(c.uses) != c.usesWant {
			t.Errorf("%s: UsesKong(%s) = %v", c.src, c.uses, !c.usesWant)
		}
	}
}

func BenchmarkPooledRun(b *testing.B) {
	sb := New(Options{})
	defer sb.Close()
	c, err := Compile(`kong.service.request.set_header("x-user", kong.request.get_header("x-id") or "anon")`, "b")
	if err != nil {
		b.Fatal(err)
	}
	h := newHost()
	h.headers["x-id"] = []string{"abc"}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := sb.Run(ctx, c, h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFreshState(b *testing.B) {
	c, err := Compile(`local x = 1`, "b")
	if err != nil {
		b.Fatal(err)
	}
	h := newHost()
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		sb := New(Options{})
		if err := sb.Run(ctx, c, h); err != nil {
			b.Fatal(err)
		}
		sb.Close()
	}
}
