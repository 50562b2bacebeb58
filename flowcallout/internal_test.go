package flowcallout

import (
	"encoding/json"
	"testing"

	"github.com/sidecall/sidecall/flows"
)

func TestFlowCalloutPathJoin(t *testing.T) {
	for _, c := range []struct{ svc, req, want string }{
		{"/check", "/api/orders", "/check/api/orders"},
		{"/check/", "/api", "/check/api"},
		{"/check", "/", "/check"},
		{"", "/a", "/a"},
		{"", "", "/"},
		{"/", "/a/", "/a/"},
		{"/check", "a", "/check/a"},
		// The request path never climbs above the service path, and cannot
		// add a query or a fragment.
		{"/check", "/../admin", "/check/admin"},
		{"/check", "/a/../../%2e%2e/admin", "/check/admin"},
		{"/check", "/a?b#c", "/check/a%3Fb%23c"},
		{"/check", "/a%3Fb", "/check/a%3Fb"},
		{"/check", "/..", "/check"},
	} {
		if got := upstreamPath(c.svc, c.req); got != c.want {
			t.Errorf("upstreamPath(%q, %q) = %q, want %q", c.svc, c.req, got, c.want)
		}
	}
}

func TestFlowCalloutErrorBodyJSON(t *testing.T) {
	for in, want := range map[string]string{
		`42`:          `{"message":"42","request_id":"req-1"}`,
		`[1,2]`:       `[1,2]`,
		` {"a": 1} `:  ` {"a": 1} `, // as written, spaces included
		`{broken`:     `{"message":"{broken","request_id":"req-1"}`,
		`say "hi" <>`: `{"message":"say \"hi\" \u003c\u003e","request_id":"req-1"}`,
		``:            `{"message":"","request_id":"req-1"}`,
	} {
		p := &flowCallout{errBody: userErrorBody(in), errMsg: in}
		x := flows.NewExchange("req-1", flows.Request{}, nil)
		if got := string(p.errorReply(x)); got != want {
			t.Errorf("on_flow_error_body %q: body %s, want %s", in, got, want)
		}
	}

	// No request id from Envoy: one is generated, as the processor's own
	// errors do, and kept for the rest of the request.
	p := &flowCallout{errMsg: "nope"}
	x := flows.NewExchange("", flows.Request{}, nil)
	var m map[string]string
	if err := json.Unmarshal(p.errorReply(x), &m); err != nil || m["message"] != "nope" || len(m["request_id"]) != 36 || m["request_id"] != x.ID {
		t.Errorf("body %v (err %v), exchange id %q: want a generated request_id kept on the exchange", m, err, x.ID)
	}
}
