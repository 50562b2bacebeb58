package serverless

import (
	"context"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/flows"

	"gopkg.in/yaml.v3"
)

func buildServerless(t *testing.T, name, cfg string) (*serverless, *flows.Builder) {
	t.Helper()
	b := flows.NewBuilder("kong.yml")
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &n); err != nil {
		t.Fatal(err)
	}
	p, err := serverlessFactory(name, PreFunctionPriority)(b, n.Content[0], "plugins[0].config")
	if err != nil {
		t.Fatal(err)
	}
	return p.(*serverless), b
}

func newLuaExchange() *flows.Exchange {
	x := flows.NewExchange("req-1", flows.Request{Method: "POST", Path: "/users/42",
		Headers: flows.Headers{"content-type": {"application/json"}}, Body: []byte(`{"name":"ann"}`), HasBody: true}, nil)
	x.Phase = flows.PhaseAccess
	return x
}

func TestServerlessConfigErrors(t *testing.T) {
	cases := []struct {
		cfg, path, reason string
	}{
		{`{functions: ["return 1"]}`, "plugins[0].config.functions", "legacy functions field"},
		{`{access: ["local a = 1", "local = 2"]}`, "plugins[0].config.access[1]", "lua syntax error: line 1"},
		{`{header_filter: ["x("]}`, "plugins[0].config.header_filter[0]", "lua syntax error"},
		{`{access: "kong.log.err('x')"}`, "plugins[0].config.access", "must be a list"},
		{`{access: [{a: 1}]}`, "plugins[0].config.access[0]", "must be a string"},
		{`{acess: ["x = 1"]}`, "plugins[0].config.acess", "unknown field"},
		{`{}`, "plugins[0].config", "at least one of these fields must be non-empty"},
		{`{log: ["x("]}`, "plugins[0].config.log[0]", "lua syntax error"},
	}
	for _, c := range cases {
		_, b := buildServerless(t, "pre-function", c.cfg)
		found := false
		for _, p := range b.Problems() {
			if string(p.Path) == c.path && strings.Contains(p.Reason, c.reason) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: want %s: %s, got %v", c.cfg, c.path, c.reason, b.Problems())
		}
	}
}

func TestServerlessWarnsForPhasesThatDoNotRun(t *testing.T) {
	_, b := buildServerless(t, "pre-function", `{certificate: ["x = 1"], log: ["y = 2"], access: ["z = 3"]}`)
	if b.Failed() {
		t.Fatal(b.Problems())
	}
	if len(b.Warnings()) != 1 || !strings.Contains(b.Warnings()[0], "never run") { // log chunks run now
		t.Errorf("warnings: %v", b.Warnings())
	}
}

func TestServerlessNeeds(t *testing.T) {
	cases := []struct {
		cfg  string
		want flows.Needs
	}{
		{`{access: ["kong.service.request.set_header('a', 'b')"]}`, flows.Needs{}},
		{`{access: ["local b = kong.request.get_body()"]}`, flows.Needs{RequestBody: true}},
		{`{rewrite: ["local b = kong.request.get_raw_body()"]}`, flows.Needs{RequestBody: true}},
		{`{access: ["kong.service.request.set_raw_body('x')"]}`, flows.Needs{RequestBody: true}},
		{`{access: ["kong.service.request.set_body({a = 1})"]}`, flows.Needs{RequestBody: true}},
		{`{access: ["local r = kong.request; r.get_body()"]}`, flows.Needs{RequestBody: true}},
		{`{header_filter: ["kong.response.set_header('a', 'b')"]}`, flows.Needs{ResponseHeaders: true}},
		{`{body_filter: ["kong.response.set_raw_body('x')"]}`, flows.Needs{ResponseHeaders: true, ResponseBody: true}},
	}
	for _, c := range cases {
		p, b := buildServerless(t, "post-function", c.cfg)
		if b.Failed() {
			t.Fatalf("%s: %v", c.cfg, b.Problems())
		}
		if p.Needs() != c.want {
			t.Errorf("%s: needs %+v, want %+v", c.cfg, p.Needs(), c.want)
		}
	}
}

// goReader is a Go plugin between pre-function and post-function that
// reads and writes kong.ctx.shared.
type goReader struct{}

func (goReader) Name() string  { return "go-reader" }
func (goReader) Priority() int { return 500 }
func (goReader) Access(_ context.Context, x *flows.Exchange) error {
	v, _ := x.Shared["from_pre"].(string)
	x.SetHeader("x-go-saw", v)
	x.Shared["from_go"] = map[string]any{"n": 2}
	return nil
}

func serverlessRegistry() *flows.Registry {
	r := flows.NewRegistry()
	Register(r)
	r.Register("go-reader", 500, func(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) { return goReader{}, nil })
	return r
}

func TestServerlessThroughPipeline(t *testing.T) {
	s, err := flows.Load("kong.yml", []byte(`
_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: ["~/users/(?<id>\\d+)$"]
        plugins:
          - name: pre-function
            config:
              rewrite:
                - kong.ctx.shared.order = "rewrite"
              access:
                - |
                  kong.ctx.shared.order = kong.ctx.shared.order .. ",access"
                  if kong.request.get_header("x-block") then
                    return kong.response.exit(401, {message = "blocked"})
                  end
                  kong.ctx.shared.from_pre = "id-" .. ngx.var.uri
                  kong.service.request.set_header("X-Pre", "1")
                  kong.service.request.set_path("/v2" .. kong.request.get_path())
              header_filter:
                - kong.response.set_header("X-Status-Seen", kong.response.get_status())
          - name: go-reader
          - name: post-function
            config:
              access:
                - kong.service.request.set_header("X-Post", kong.ctx.shared.from_go.n + kong.ctx.shared.from_pre:len())
              body_filter:
                - kong.response.set_raw_body(kong.response.get_raw_body() .. "|" .. kong.ctx.shared.order)
`), flows.LoadOptions{Registry: serverlessRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rt, caps, ok := s.Match(flows.MatchInput{Method: "GET", Path: "/users/7", Headers: flows.Headers{}})
	if !ok {
		t.Fatal("no match")
	}
	if n := rt.Pipeline.Needs(); !n.ResponseBody || !n.ResponseHeaders || n.RequestBody {
		t.Errorf("needs: %+v", n)
	}
	ctx := context.Background()
	x := flows.NewExchange("r1", flows.Request{Method: "GET", Path: "/users/7", Headers: flows.Headers{}}, nil)
	x.Route, x.Captures = rt, caps
	if err := rt.Pipeline.Run(ctx, flows.PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	h := x.Request.Headers
	if h.Get("x-pre") != "1" || h.Get("x-go-saw") != "id-/users/7" || h.Get("x-post") != "13" || x.Request.Path != "/v2/users/7" {
		t.Errorf("access: headers %v path %s", h, x.Request.Path)
	}
	x.Response = flows.Response{Status: 200, Headers: flows.Headers{}}
	if err := rt.Pipeline.Run(ctx, flows.PhaseHeaderFilter, x, nil); err != nil {
		t.Fatal(err)
	}
	if x.Response.Headers.Get("x-status-seen") != "200" {
		t.Errorf("header_filter: %v", x.Response.Headers)
	}
	x.Response.Body, x.Response.HasBody = []byte("body"), true
	if err := rt.Pipeline.Run(ctx, flows.PhaseBodyFilter, x, nil); err != nil {
		t.Fatal(err)
	}
	if string(x.Response.Body) != "body|rewrite,access" {
		t.Errorf("body_filter: %s", x.Response.Body)
	}

	// exit stops the pipeline: go-reader and post-function do not run.
	x = flows.NewExchange("r2", flows.Request{Method: "GET", Path: "/users/7", Headers: flows.Headers{"x-block": {"1"}}}, nil)
	x.Route, x.Captures = rt, caps
	if err := rt.Pipeline.Run(ctx, flows.PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	if x.Reply == nil || x.Reply.Status != 401 || string(x.Reply.Body) != `{"message":"blocked"}` || x.Request.Headers.Has("x-go-saw") {
		t.Errorf("exit: %+v", x.Reply)
	}

}

func TestServerlessLuaErrorIs500(t *testing.T) {
	p, b := buildServerless(t, "pre-function", `{access: ["local x = nil; x.y = 1", "kong.ctx.shared.second = true"]}`)
	if b.Failed() {
		t.Fatal(b.Problems())
	}
	x := newLuaExchange()
	err := p.Access(context.Background(), x)
	he := flows.AsHTTPError(err)
	if err == nil || he.Status != 500 || !flows.IsLuaError(err) {
		t.Fatalf("err: %v", err)
	}
	if _, ok := x.Shared["second"]; ok {
		t.Error("second chunk ran after an error")
	}
}
