package transformer

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/flows"
)

func registry() *flows.Registry {
	r := flows.NewRegistry()
	Register(r)
	return r
}

// load loads one global plugin with config cfg (a YAML flow mapping).
func load(t *testing.T, name, cfg string) *flows.Snapshot {
	t.Helper()
	s, err := flows.Load("kong.yml", []byte("plugins:\n  - name: "+name+"\n    config: "+cfg+"\n"), flows.LoadOptions{Registry: registry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func loadErr(t *testing.T, name, cfg string) string {
	t.Helper()
	_, err := flows.Load("kong.yml", []byte("plugins:\n  - name: "+name+"\n    config: "+cfg+"\n"), flows.LoadOptions{Registry: registry()})
	var ce *flows.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("%s: want a ConfigError, got %v", cfg, err)
	}
	return ce.Error()
}

func access(t *testing.T, s *flows.Snapshot, r flows.Request) *flows.Exchange {
	t.Helper()
	if r.Method == "" {
		r.Method = "POST"
	}
	if r.Path == "" {
		r.Path = "/p"
	}
	x := flows.NewExchange("id", r, nil)
	if err := s.Global.Serve(context.Background(), flows.PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	if x.Reply != nil {
		t.Fatalf("reply %d %s", x.Reply.Status, x.Reply.Body)
	}
	return x
}

func TestSplitEntryIsKongsPattern(t *testing.T) {
	for in, want := range map[string][3]string{
		"a:b": {"a", "b", "t"}, "a::b:c": {"a", "b:c", "t"}, "a": {"a", "", "t"}, "a:": {"a", "", "t"},
		":b": {"", "", ""}, "": {"", "", ""},
	} {
		n, v, ok := splitEntry(in)
		if n != want[0] || v != want[1] || ok != (want[2] == "t") {
			t.Errorf("%q: got %q %q %v", in, n, v, ok)
		}
	}
}

func TestRequestHeadersInKongsOrder(t *testing.T) {
	s := load(t, "request-transformer", `{
      remove: {headers: [x-gone, x-re]},
      rename: {headers: ["x-old:x-new", "x-absent:x-nothing"]},
      replace: {headers: ["x-rep:replaced", "x-none:never", "x-new:renamed-then-replaced"]},
      add: {headers: ["x-rep:not-added", "x-re:added-after-remove", "x-fresh:v"]},
      append: {headers: ["x-multi:two", "x-app:only"]}}`)
	x := access(t, s, flows.Request{Headers: flows.Headers{
		"x-gone": {"1"}, "x-re": {"1"}, "x-old": {"o"}, "x-rep": {"r"}, "x-multi": {"one"}, "x-keep": {"k"}}})
	h := x.Request.Headers
	want := map[string][]string{
		"x-gone": nil, "x-re": {"added-after-remove"}, "x-old": nil, "x-new": {"renamed-then-replaced"},
		"x-nothing": nil, "x-rep": {"replaced"}, "x-none": nil, "x-fresh": {"v"},
		"x-multi": {"one", "two"}, "x-app": {"only"}, "x-keep": {"k"},
	}
	for k, v := range want {
		if !sameValues(h[k], v) {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}
	if c := x.Changes().RequestHeaders; strings.Contains(strings.Join(c, ","), "x-keep") {
		t.Errorf("an untouched header is sent as a change: %v", c)
	}
}

func TestRequestQuerystring(t *testing.T) {
	s := load(t, "request-transformer", `{
      remove: {querystring: [drop]},
      rename: {querystring: ["old:new"]},
      replace: {querystring: ["rep:R", "none:N"]},
      add: {querystring: ["rep:no", "added:A"]},
      append: {querystring: ["multi:2", "flag:x"]}}`)
	x := access(t, s, flows.Request{RawQuery: "drop=1&old=o&rep=r&multi=1&flag&keep=k%20k"})
	want := "added=A&flag=x&keep=k%20k&multi=1&multi=2&new=o&rep=R"
	if x.Request.RawQuery != want || !x.Changes().Path {
		t.Fatalf("query %q, want %q", x.Request.RawQuery, want)
	}
}

func TestRequestJSONBody(t *testing.T) {
	s := load(t, "request-transformer", `{
      remove: {body: [gone]},
      rename: {body: ["old:new", "f:g"]},
      replace: {body: ["rep:R", "none:N", "off:no"]},
      add: {body: ["rep:no", "off:yes", "added:A"]},
      append: {body: ["s:2", "l:3", "n:4", "fresh:5", "e:6"]}}`)
	body := `{"z":1,"gone":true,"old":"o","f":false,"rep":{"a":1},"off":false,"s":"1","l":[1,2],"n":12345678901234567890,"e":{}}`
	x := access(t, s, flows.Request{Headers: flows.Headers{"content-type": {"application/json; charset=utf-8"}},
		Body: []byte(body), HasBody: true})
	want := `{"z":1,"f":false,"rep":"R","off":"yes","s":["1","2"],"l":[1,2,"3"],"n":["4"],"e":["6"],"new":"o","added":"A","fresh":["5"]}`
	if string(x.Request.Body) != want {
		t.Fatalf("body\n got %s\nwant %s", x.Request.Body, want)
	}
}

func TestRequestJSONBodyEdgeCases(t *testing.T) {
	s := load(t, "request-transformer", `{remove: {body: [a]}, add: {body: ["b:1"]}}`)
	ct := flows.Headers{"content-type": {"application/json"}}
	for body, want := range map[string]string{
		"":            `{"b":"1"}`, // no body: only add and append apply
		"not json":    "not json",  // left alone
		`[1,2]`:       `[1,2]`,     // not an object
		`{"a":1}`:     `{"b":"1"}`,
		`{"b":"x/y"}`: `{"b":"x/y"}`,
	} {
		x := access(t, s, flows.Request{Headers: ct.Clone(), Body: []byte(body), HasBody: true})
		if string(x.Request.Body) != want {
			t.Errorf("%q: got %s, want %s", body, x.Request.Body, want)
		}
		if body == want && body[0] != '{' && x.BodyChanged() {
			t.Errorf("%q: changed", body)
		}
	}
	// Not a body type Kong transforms: untouched.
	x := access(t, s, flows.Request{Headers: flows.Headers{"content-type": {"text/plain"}}, Body: []byte(`{"a":1}`), HasBody: true})
	if x.BodyChanged() {
		t.Fatal("a text/plain body changed")
	}
}

func TestRequestFormBody(t *testing.T) {
	s := load(t, "request-transformer", `{
      remove: {body: [gone]}, rename: {body: ["old:new"]}, replace: {body: ["rep:R"]},
      add: {body: ["rep:no", "added:A B"]}, append: {body: ["multi:2"]}}`)
	x := access(t, s, flows.Request{Headers: flows.Headers{"content-type": {"application/x-www-form-urlencoded"}},
		Body: []byte("gone=1&old=o&rep=r&multi=1&keep=k"), HasBody: true})
	want := "added=A%20B&keep=k&multi=1&multi=2&new=o&rep=R"
	if string(x.Request.Body) != want {
		t.Fatalf("body %s, want %s", x.Request.Body, want)
	}
}

func TestRequestMultipartBody(t *testing.T) {
	s := load(t, "request-transformer", `{rename: {body: ["a:b"]}, remove: {body: [gone]}, replace: {body: ["f:F"]},
      add: {body: ["c:3", "b:no"]}, append: {body: ["z:1"]}}`)
	if !strings.Contains(strings.Join(s.Warnings, "\n"), "plugins[0].config.append.body: append.body does not change multipart/form-data bodies") {
		t.Fatalf("warnings %q", s.Warnings)
	}
	body := "--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n" +
		"--x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\nfile\r\n" +
		"--x\r\nContent-Disposition: form-data; name=\"gone\"\r\n\r\ng\r\n--x--\r\n"
	x := access(t, s, flows.Request{Headers: flows.Headers{"content-type": {`multipart/form-data; boundary="x"`}},
		Body: []byte(body), HasBody: true})
	// Kong's order: rename (appends b), remove, replace (moves f to the
	// end as a plain field), add.
	want := "--x\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n1\r\n" +
		"--x\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nF\r\n" +
		"--x\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\n3\r\n--x--\r\n"
	if string(x.Request.Body) != want {
		t.Fatalf("body\n got %q\nwant %q", x.Request.Body, want)
	}
	// No boundary, or a body that does not parse: left alone.
	for _, ct := range []string{"multipart/form-data", "multipart/form-data; boundary=y"} {
		x := access(t, s, flows.Request{Headers: flows.Headers{"content-type": {ct}}, Body: []byte(body), HasBody: true})
		if x.BodyChanged() {
			t.Errorf("%s: changed to %q", ct, x.Request.Body)
		}
	}
}

func TestRequestHTTPMethodMovesAFormBodyToTheQuery(t *testing.T) {
	s := load(t, "request-transformer", `{http_method: GET}`)
	if !s.Global.Needs().RequestBody {
		t.Fatal("http_method GET needs the body (its form fields go to the query)")
	}
	x := access(t, s, flows.Request{RawQuery: "a=1", Headers: flows.Headers{"content-type": {"application/x-www-form-urlencoded"}},
		Body: []byte("a=2&b=3"), HasBody: true})
	if x.Request.Method != "GET" || x.Request.RawQuery != "a=1&a=2&b=3" {
		t.Fatalf("%s ?%s", x.Request.Method, x.Request.RawQuery)
	}
	s = load(t, "request-transformer", `{http_method: PUT}`)
	if s.Global.Needs().RequestBody {
		t.Fatal("PUT needs no body")
	}
	x = access(t, s, flows.Request{RawQuery: "a=1"})
	if x.Request.Method != "PUT" || x.Request.RawQuery != "a=1" || !x.Changes().Method {
		t.Fatalf("%s ?%s", x.Request.Method, x.Request.RawQuery)
	}
}

func TestRequestReplaceURI(t *testing.T) {
	s := load(t, "request-transformer", `{replace: {uri: "/v2/$(uri_captures.id)/a b"}}`)
	x := flows.NewExchange("id", flows.Request{Method: "GET", Path: "/v1/7", RawQuery: "q=1"}, nil)
	x.Captures.Named = map[string]string{"id": "7"}
	if err := s.Global.Serve(context.Background(), flows.PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	if x.Request.Path != "/v2/7/a%20b" || x.Request.RawQuery != "q=1" {
		t.Fatalf("path %q ?%q", x.Request.Path, x.Request.RawQuery)
	}
	// A path that does not start with / fails the request, as in Kong.
	s = load(t, "request-transformer", `{replace: {uri: "$(headers.p)"}}`)
	x = flows.NewExchange("id", flows.Request{Method: "GET", Path: "/", Headers: flows.Headers{"p": {"rel"}}}, nil)
	_ = s.Global.Serve(context.Background(), flows.PhaseAccess, x, nil)
	if x.Reply == nil || x.Reply.Status != 500 {
		t.Fatalf("reply %+v", x.Reply)
	}
}

// Kong reads headers and query_params for templates once, at their first
// use: templates in the header step see the headers before the step's
// changes, a template first used in the body step sees them after.
func TestRequestTemplateEnvironmentIsKongs(t *testing.T) {
	s := load(t, "request-transformer", `{
      remove: {headers: [x-secret]},
      add: {headers: ["x-copy:$(headers['x-secret'])"], querystring: ["q2:$(query_params.q)"]}}`)
	x := access(t, s, flows.Request{RawQuery: "q=1", Headers: flows.Headers{"x-secret": {"s"}}})
	if x.Request.Headers.Get("x-copy") != "s" || x.Request.Headers.Has("x-secret") {
		t.Fatalf("headers %v", x.Request.Headers)
	}
	if x.Request.RawQuery != "q2=1&q=1" { // set_query sorts the encoded pairs

		t.Fatalf("query %q", x.Request.RawQuery)
	}
	s = load(t, "request-transformer", `{rename: {headers: ["x-a:x-b"]}, add: {body: ["b:$(headers['x-b'])"]}}`)
	x = access(t, s, flows.Request{Headers: flows.Headers{"x-a": {"A"}, "content-type": {"application/json"}},
		Body: []byte(`{}`), HasBody: true})
	if string(x.Request.Body) != `{"b":"A"}` {
		t.Fatalf("body %s", x.Request.Body)
	}
}

func TestRequestTemplateErrorIs500(t *testing.T) {
	s := load(t, "request-transformer", `{add: {headers: ["x:$(nil .. 1)"]}}`)
	x := flows.NewExchange("id", flows.Request{Method: "GET", Path: "/"}, nil)
	err := s.Global.Serve(context.Background(), flows.PhaseAccess, x, nil)
	if err == nil || x.Reply == nil || x.Reply.Status != 500 || !strings.Contains(err.Error(), "plugins[0].config.add.headers[0]") {
		t.Fatalf("err %v reply %+v", err, x.Reply)
	}
}

func TestRequestTransformerRefusals(t *testing.T) {
	for cfg, want := range map[string]string{
		`{http_method: get}`:                         "plugins[0].config.http_method: must be an upper-case HTTP method",
		`{http_method: FOO}`:                         "plugins[0].config.http_method: \"FOO\" is not a method Kong can set",
		`{add: {headers: [x-a]}}`:                    "plugins[0].config.add.headers[0]: must be name:value",
		`{add: {headers: ["x a:b"]}}`:                "plugins[0].config.add.headers[0]: \"x a\" is not a valid header name",
		`{remove: {headers: ["x.y"]}}`:               "plugins[0].config.remove.headers[0]: \"x.y\" is not a valid header name",
		`{rename: {headers: ["x-a:x b"]}}`:           "plugins[0].config.rename.headers[0]: \"x b\" is not a valid header name",
		`{add: {querystring: ["q:"]}}`:               "plugins[0].config.add.querystring[0]: key 'q' has no value",
		`{replace: {body: ["b"]}}`:                   "plugins[0].config.replace.body[0]: key 'b' has no value",
		`{remove: {body: [":x"]}}`:                   "plugins[0].config.remove.body[0]: must start with a name",
		`{add: {body: ["a:$(("]}}`:                   "plugins[0].config.add.body[0]:",
		`{replace: {uri: "/$(x"}}`:                   "plugins[0].config.replace.uri:",
		`{add: {body: ["a:1"], bogus: ["x"]}}`:       "plugins[0].config.add.bogus: unknown field",
		`{append: {headers: ["x:1"]}, allow: {}}`:    "plugins[0].config.allow: unknown field",
		`{remove: {uri: "/x"}}`:                      "plugins[0].config.remove.uri: unknown field",
		`{add: {headers: "x:1"}}`:                    "plugins[0].config.add.headers: must be a list",
		`{replace: {headers: ["host:example.com"]}}`: "",
	} {
		if want == "" {
			s := load(t, "request-transformer", cfg)
			if !strings.Contains(strings.Join(s.Warnings, "\n"), "plugins[0].config.replace.headers[0]: a host change") {
				t.Errorf("%s: warnings %q", cfg, s.Warnings)
			}
			continue
		}
		if got := loadErr(t, "request-transformer", cfg); !strings.Contains(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", cfg, got, want)
		}
	}
}

func TestRequestNeeds(t *testing.T) {
	if n := load(t, "request-transformer", `{add: {headers: ["a:1"]}}`).Global.Needs(); n.RequestBody || n.ResponseHeaders {
		t.Fatalf("headers only: %+v", n)
	}
	if n := load(t, "request-transformer", `{append: {body: ["a:1"]}}`).Global.Needs(); !n.RequestBody {
		t.Fatalf("body: %+v", n)
	}
}

func TestRequestTemplatesRefusedWithUntrustedLuaOff(t *testing.T) {
	_, err := flows.Load("kong.yml", []byte("plugins:\n  - name: request-transformer\n    config: {add: {headers: [\"x:$(headers.a)\", \"y:plain\"]}}\n"),
		flows.LoadOptions{Registry: registry(), UntrustedLua: "off"})
	var ce *flows.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(ce.Error(), "plugins[0].config.add.headers[0]:") || strings.Contains(ce.Error(), "headers[1]") {
		t.Fatalf("got %v", err)
	}
}
