package transformer

import (
	"context"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/flows"
)

// respond runs the response phases on a response.
func respond(t *testing.T, s *flows.Snapshot, status int, h flows.Headers, body string) *flows.Exchange {
	t.Helper()
	x := flows.NewExchange("id", flows.Request{Method: "GET", Path: "/"}, nil)
	x.Response = flows.Response{Status: status, Headers: h, Body: []byte(body), HasBody: true}
	for _, ph := range []flows.Phase{flows.PhaseHeaderFilter, flows.PhaseBodyFilter} {
		if err := s.Global.Serve(context.Background(), ph, x, nil); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

func TestResponseHeadersInKongsOrder(t *testing.T) {
	s := load(t, "response-transformer", `{
      remove: {headers: [x-gone, x-old2]},
      rename: {headers: ["x-old:x-new", "x-old2:x-from-removed"]},
      replace: {headers: ["x-rep:R", "x-none:N", "x-gone:back"]},
      add: {headers: ["x-rep:no", "x-added:A", "x-gone:no"]},
      append: {headers: ["x-multi:2", "x-app:1"]}}`)
	if n := s.Global.Needs(); !n.ResponseHeaders || n.ResponseBody {
		t.Fatalf("needs %+v", n)
	}
	x := respond(t, s, 200, flows.Headers{"x-gone": {"g"}, "x-old": {"o1", "o2"}, "x-old2": {"p"}, "x-rep": {"r"},
		"x-multi": {"1"}, "x-keep": {"k"}}, "")
	want := map[string][]string{
		// Conditions read the headers as they came: a removed header
		// still counts as present for rename and replace, as in Kong.
		"x-gone": {"back"}, "x-old": nil, "x-new": {"o1", "o2"}, "x-old2": nil, "x-from-removed": {"p"},
		"x-rep": {"R"}, "x-none": nil, "x-added": {"A"}, "x-multi": {"1", "2"}, "x-app": {"1"}, "x-keep": {"k"},
	}
	for k, v := range want {
		if !sameValues(x.Response.Headers[k], v) {
			t.Errorf("%s = %q, want %q", k, x.Response.Headers[k], v)
		}
	}
}

func TestResponseJSONBody(t *testing.T) {
	s := load(t, "response-transformer", `{
      remove: {json: [gone]},
      rename: {json: ["old:new", "same:same"]},
      replace: {json: ["rep:R", "none:N", "off:no"]},
      add: {json: ["rep:no", "off:yes", "n:42", "b:true", "s:a\"b/c", "empty:", "bad:x"], json_types: [string, string, number, boolean, string, string, number]},
      append: {json: ["list:x", "str:y"]}}`)
	if !s.Global.Needs().ResponseBody {
		t.Fatal("json operations need the body")
	}
	body := `{"z":1,"gone":1,"old":null,"same":1,"rep":[1],"off":false,"list":[1],"str":"s"}`
	x := respond(t, s, 200, flows.Headers{"content-type": {"application/vnd.api+json"}}, body)
	want := `{"z":1,"rep":"R","off":"yes","list":[1,"x"],"str":["s","y"],"new":null,"n":42,"b":true,"s":"a\"b/c","empty":"null"}`
	if string(x.Response.Body) != want {
		t.Fatalf("body\n got %s\nwant %s", x.Response.Body, want)
	}
	// Not JSON, not an object, not valid: left as they are.
	for ct, b := range map[string]string{"text/plain": `{"gone":1}`, "application/json": `[1]`, "application/json; charset=utf-8": `{`} {
		x := respond(t, s, 200, flows.Headers{"content-type": {ct}}, b)
		if string(x.Response.Body) != b || x.Changes().ResponseBody {
			t.Errorf("%s %s: got %s", ct, b, x.Response.Body)
		}
	}
}

func TestKongJSONValue(t *testing.T) {
	for _, c := range []struct {
		value, typ, want string
		empty, ok        bool
	}{
		{"x", "", `"x"`, false, true},
		{`a\b`, "", `"a\\\\b"`, false, true}, // cjson's escape kept, as in Kong
		{"", "", `"null"`, true, true},
		{"1.50", "number", "1.5", false, true},
		{"0x10", "number", "16", false, true},
		{"nope", "number", "", false, false},
		{"true", "boolean", "true", false, true},
		{"yes", "boolean", "false", false, true},
	} {
		v, ok := kongJSONValue(c.value, c.empty, c.typ)
		if ok != c.ok || (ok && string(v) != c.want) {
			t.Errorf("%q %s: got %s %v, want %s %v", c.value, c.typ, v, ok, c.want, c.ok)
		}
	}
}

func TestResponseTransformerRefusals(t *testing.T) {
	for cfg, want := range map[string]string{
		`{add: {json_types: [int]}}`:            "plugins[0].config.add.json_types[0]: must be one of boolean, number, string",
		`{add: {json: [a]}}`:                    "plugins[0].config.add.json[0]: must be name:value",
		`{rename: {headers: ["a:b c"]}}`:        "plugins[0].config.rename.headers[0]: 'a:b c' is not a valid header",
		`{append: {headers: ["x-a:"]}}`:         "plugins[0].config.append.headers[0]: has no value",
		`{add: {headers: ["x y:1"]}}`:           "plugins[0].config.add.headers[0]: \"x y\" is not a valid header name",
		`{remove: {json_types: [string]}}`:      "plugins[0].config.remove.json_types: unknown field",
		`{rename: {json_types: [string]}}`:      "plugins[0].config.rename.json_types: unknown field",
		`{replace: {body: ["a:1"]}}`:            "plugins[0].config.replace.body: unknown field",
		`{add: {querystring: ["a:1"]}}`:         "plugins[0].config.add.querystring: unknown field",
		`{remove: {headers: [":x"], json: []}}`: "plugins[0].config.remove.headers[0]: must start with a name",
	} {
		if got := loadErr(t, "response-transformer", cfg); !strings.Contains(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", cfg, got, want)
		}
	}
}
