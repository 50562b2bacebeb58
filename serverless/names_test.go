package serverless

import (
	"context"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/flows"
)

// A chunk calling a kong.*/ngx.* name sidecall lacks is a load error at
// its line in the file.
func TestUnknownLuaNameIsALoadErrorAtItsFileLine(t *testing.T) {
	_, err := flows.Load("kong.yml", []byte(`_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: ["/"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local uri = ngx.var.uri
                  local res = ngx.location.capture("/auth" .. uri)
                - kong.client.get_ipp()
`), flows.LoadOptions{Registry: serverlessRegistry()})
	if err == nil {
		t.Fatal("loaded")
	}
	msg := err.Error()
	for _, want := range []string{
		"kong.yml:14: services[0].routes[0].plugins[0].config.access[0]: ngx.location.capture is not provided by sidecall",
		"kong.yml:15: services[0].routes[0].plugins[0].config.access[1]: kong.client.get_ipp is not provided by sidecall",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("want %q in:\n%s", want, msg)
		}
	}
}

func TestLogPhaseRunsOnACopyAfterTheResponse(t *testing.T) {
	p, b := buildServerless(t, "post-function", `{log: ["kong.ctx.shared.seen = kong.response.get_status(); kong.log.notice('logged ', ngx.var.status)"], header_filter: ["kong.ctx.shared.hf = 1"]}`)
	if b.Failed() || len(b.Warnings()) != 0 {
		t.Fatal(b.Problems(), b.Warnings())
	}
	if !p.Needs().ResponseHeaders {
		t.Error("log chunks need the response headers")
	}
	x, logs := corpusExchange(t)
	x.Phase = flows.PhaseHeaderFilter
	x.Response = flows.Response{Status: 503, Headers: flows.Headers{}}
	if err := p.HeaderFilter(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	logRuns.Wait()
	if logs.FilterMessage("logged 503").Len() != 1 {
		t.Errorf("logs: %v", logs.All())
	}
	if _, ok := x.Shared["seen"]; ok || x.Shared["hf"] != int64(1) {
		t.Errorf("the log chunk wrote the request's own shared map: %v", x.Shared)
	}
}
