package expr

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sidecall/sidecall/flows/lua"
)

var sb = lua.New(lua.Options{})

func testVars() *lua.Vars {
	return &lua.Vars{
		Headers: map[string][]string{
			"x-id":         {"abc"},
			"accept":       {"a", "b"},
			"content-type": {"application/json"},
		},
		RawQuery:   "user=bob&tags=a&tags=b&flag&empty=",
		Named:      map[string]string{"id": "42"},
		Positional: []string{"42", "x"},
		Shared: map[string]any{
			"key":    "v",
			"n":      5,
			"f":      1.5,
			"whole":  3.0,
			"big":    int64(1) << 60,
			"t":      true,
			"fls":    false,
			"nilv":   nil,
			"nested": map[string]any{"a": map[string]any{"b": "deep"}},
			"list":   []any{"x", "y"},
			"callouts": map[string]any{
				"c1": map[string]any{"response": map[string]any{
					"status": 200,
					"body":   map[string]any{"id": "u1", "n": float64(3)},
				}},
			},
		},
	}
}

// lua path: the same template with every placeholder forced through Lua.
func luaOnly(t *Template) *Template {
	c := *t
	c.parts = nil
	for _, p := range t.parts {
		if p.ph != nil {
			ph := *p.ph
			ph.fast = nil
			p.ph = &ph
		}
		c.parts = append(c.parts, p)
	}
	return &c
}

func TestRender(t *testing.T) {
	cases := []struct {
		src, want string
		fast      bool // every placeholder is a fast path
		wantErr   string
	}{
		{src: "plain", want: "plain", fast: true},
		{src: "", want: "", fast: true},
		{src: "$(headers['x-id'])", want: "abc", fast: true},
		{src: `$(headers["X-ID"])`, want: "abc", fast: true},
		{src: "$(headers.x_id)", want: "abc", fast: true},
		{src: "$(headers.missing)", want: "", fast: true},
		{src: "$(headers.accept)", want: `["a","b"]`, fast: true},
		{src: "$(headers.accept[2])", want: "b", fast: true},
		{src: "$(headers[1])", want: "", fast: true},
		{src: "$(query_params.user)", want: "bob", fast: true},
		{src: "$(query_params.tags[1])", want: "a", fast: true},
		{src: "$(query_params.flag)", want: "true", fast: true},
		{src: "$(query_params.empty)", want: "", fast: true},
		{src: "$(uri_captures.id)", want: "42", fast: true},
		{src: "$(uri_captures[2])", want: "x", fast: true},
		{src: "$(uri_captures[3])", want: "", fast: true},
		{src: "$(shared.key)", want: "v", fast: true},
		{src: "$(shared.n)", want: "5", fast: true},
		{src: "$(shared.f)", want: "1.5", fast: true},
		{src: "$(shared.whole)", want: "3", fast: true},
		{src: "$(shared.big)", want: "1152921504606846976", fast: true},
		{src: "$(shared.t)", want: "true", fast: true},
		{src: "$(shared.fls)", want: "", fast: true},
		{src: "$(shared.nilv)", want: "", fast: true},
		{src: "$(shared.nested.a.b)", want: "deep", fast: true},
		{src: "$(shared.nested)", want: `{"a":{"b":"deep"}}`, fast: true},
		{src: "$(shared.list)", want: `["x","y"]`, fast: true},
		{src: "$(shared.list[2])", want: "y", fast: true},
		{src: "$(shared[1])", want: "", fast: true},
		{src: "$(shared.key.foo)", want: "", fast: true},
		{src: "$(callouts.c1.response.status)", want: "200", fast: true},
		{src: "$(callouts.c1.response.body.id)", want: "u1", fast: true},
		{src: `$(callouts.c1.response.body["id"])`, want: "u1", fast: true},
		{src: "$(callouts.c1.response.body.n)", want: "3", fast: true},
		{src: "$(callouts.c2.response.body.id)", fast: true, wantErr: "attempt to index"},
		{src: "$(shared.missing.deeper)", fast: true, wantErr: "attempt to index"},
		{src: "Bearer $(shared.key)", want: "Bearer v", fast: true},
		{src: "$(shared.key)-$(headers['x-id'])!", want: "v-abc!", fast: true},
		{src: "x$(shared.key)y$(shared.n)z", want: "xvy5z", fast: true},
		{src: "a\n$(shared.key)\n", want: "a\nv\n", fast: true},
		{src: "$(headers.missing or 'dflt')", want: "dflt"},
		{src: `$(uri_captures["user-id"] or query_params["user"] or "unknown")`, want: "bob"},
		{src: `$("a" .. "b")`, want: "ab"},
		{src: `$((function() return "lam" end)())`, want: "lam"},
		{src: `$(type(headers.accept))`, want: "table"},
		{src: `$(type(headers["x-id"]))`, want: "string"},
		{src: `$(")")`, want: ")"},
		{src: `$('$(literal)')`, want: "$(literal)"},
		{src: `$([[a)b]])`, want: "a)b"},
		{src: "$(1 + 2)", want: "3"},
		{src: "$(10 / 4)", want: "2.5"},
		{src: "$(nil)", want: ""},
		{src: "$(false)", want: ""},
		{src: "$(undefined_global)", want: ""},
		{src: "$(string.upper(shared.key))", want: "V"},
		{src: "$(shared.key:upper())", want: "V"},
		{src: "$(#shared.list)", want: "2"},
		{src: "$(shared.big .. '')", want: "1152921504606846976"},
		{src: "$((function() headers = 1 end)())", wantErr: "This environment is read-only"},
		{src: "$(shared.key.upper)", fast: true, wantErr: "cannot convert"},
		{src: "$(error('boom'))", wantErr: "boom"},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.src, func(t *testing.T) {
			tpl, err := Parse(c.src)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := tpl.FastPathOnly(); got != c.fast {
				t.Errorf("FastPathOnly = %v, want %v", got, c.fast)
			}
			for _, variant := range []struct {
				name string
				t    *Template
			}{{"as parsed", tpl}, {"lua only", luaOnly(tpl)}} {
				got, err := variant.t.Render(ctx, sb, nil, testVars())
				if c.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), c.wantErr) {
						t.Errorf("%s: err = %v, want %q", variant.name, err, c.wantErr)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", variant.name, err)
					continue
				}
				if got != c.want {
					t.Errorf("%s: got %q, want %q", variant.name, got, c.want)
				}
			}
		})
	}
}

func TestValueKeepsType(t *testing.T) {
	ctx := context.Background()
	cases := map[string]string{
		"$(shared.nested)":               `{"a":{"b":"deep"}}`,
		"$(shared.list)":                 `["x","y"]`,
		"$(shared.n)":                    `5`,
		"$(shared.t)":                    `true`,
		"$(shared.fls)":                  `false`,
		"$(shared.nilv)":                 `null`,
		"$(callouts.c1.response.status)": `200`,
		"$(headers.accept)":              `["a","b"]`,
		"n=$(shared.n)":                  `"n=5"`,
		"$(shared.n + 1)":                `6`,
		"$({a = 1, b = {true}})":         `{"a":1,"b":[true]}`,
	}
	for src, want := range cases {
		tpl, err := Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []*Template{tpl, luaOnly(tpl)} {
			v, err := tt.Value(ctx, sb, nil, testVars())
			if err != nil {
				t.Fatalf("%s: %v", src, err)
			}
			b, _ := json.Marshal(v)
			if string(b) != want {
				t.Errorf("%s: got %s, want %s", src, b, want)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"$(":               "unbalanced",
		"$(a":              "unbalanced",
		"x $(f(a)":         "unbalanced",
		"$(a) $(":          "unbalanced",
		"#1234":            `write $("#...")`,
		"  #x":             `write $("#...")`,
		"ok\n#line":        `write $("#...")`,
		"$()":              "empty",
		"$(  )":            "empty",
		"$(a b)":           "lua syntax error",
		"$(a, b)":          "lua syntax error",
		`$("unterminated)`: "unterminated string",
		"$([[x)":           "unterminated long string",
		"$(x --[[ ) )":     "unterminated comment",
	}
	for src, want := range cases {
		_, err := Parse(src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", src, err, want)
		}
	}
	if _, err := Parse(`$("#1234")`); err != nil {
		t.Errorf("escaped hash refused: %v", err)
	}
}

func TestCallouts(t *testing.T) {
	cases := []struct {
		src     string
		names   []string
		dynamic bool
	}{
		{"$(callouts.c1.response.body.id)", []string{"c1"}, false},
		{"$(callouts.b.x) $(callouts.a.y) $(callouts.b.z)", []string{"a", "b"}, false},
		{"$(callouts['c-2'].response)", []string{"c-2"}, false},
		{"$(callouts[x])", nil, true},
		{"$(callouts)", nil, true},
		{"$(shared.callouts.c3.r)", []string{"c3"}, false},
		{"$(kong.ctx.shared.callouts.c4)", []string{"c4"}, false},
		{"$(shared[k])", nil, true},
		{"$(shared.other)", nil, false},
		{"$(headers.x)", nil, false},
		{"literal", nil, false},
		{"$((function() local c = callouts; return c.c1 end)())", nil, true},
		{"$(kong.request.get_header('x'))", nil, false},
		{"$(callouts.a.b[callouts.c.d])", []string{"a", "c"}, false},
	}
	for _, c := range cases {
		tpl, err := Parse(c.src)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		if got := tpl.Callouts(); !reflect.DeepEqual(got, c.names) {
			t.Errorf("%s: callouts %v, want %v", c.src, got, c.names)
		}
		if got := tpl.ReadsCalloutsDynamically(); got != c.dynamic {
			t.Errorf("%s: dynamic %v, want %v", c.src, got, c.dynamic)
		}
	}
}

func TestLiteralAndSource(t *testing.T) {
	tpl, err := Parse("just text")
	if err != nil || !tpl.IsLiteral() || tpl.Source() != "just text" {
		t.Fatalf("literal: %v %v", err, tpl)
	}
	tpl, err = Parse("a $(shared.key)")
	if err != nil || tpl.IsLiteral() {
		t.Fatalf("not literal: %v", err)
	}
}

func BenchmarkRenderFastPath(b *testing.B) {
	tpl, err := Parse("Bearer $(callouts.c1.response.body.id)")
	if err != nil {
		b.Fatal(err)
	}
	v := testVars()
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := tpl.Render(ctx, sb, nil, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderLuaPath(b *testing.B) {
	tpl, err := Parse("Bearer $(callouts.c1.response.body.id or 'none')")
	if err != nil {
		b.Fatal(err)
	}
	v := testVars()
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := tpl.Render(ctx, sb, nil, v); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"plain", "$(headers.x)", "a $(shared.key) b", "$(\")\")", "$(", "#x", "$([[)]])", "$(callouts.c1.response.body.id)", "$((function() return 1 end)())"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tpl, err := Parse(src)
		if err != nil {
			return
		}
		if tpl.Source() != src {
			t.Fatalf("source changed")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = tpl.Render(ctx, sb, nil, testVars())
		if tpl.IsLiteral() {
			got, err := tpl.Render(ctx, sb, nil, testVars())
			if err != nil || got != src {
				t.Fatalf("literal %q rendered %q, %v", src, got, err)
			}
		}
	})
}
