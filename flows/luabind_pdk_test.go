package flows

import (
	"slices"
	"testing"
)

func TestHostHeaderIsTheAuthority(t *testing.T) {
	x := newLuaExchange()
	if err := runLua(t, x, `
kong.service.request.set_header("x-h", kong.request.get_header("Host") .. "|" .. kong.request.get_headers().host .. "|" .. ngx.req.get_headers()["host"] .. "|" .. ngx.var.http_host)
`); err != nil {
		t.Fatal(err)
	}
	want := "api.example.test:8443|api.example.test:8443|api.example.test:8443|api.example.test:8443"
	if got := x.Request.Headers.Get("x-h"); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	x = newLuaExchange()
	if err := runLua(t, x, `kong.service.request.set_header("host", "upstream.internal")
kong.service.request.set_header("x-h", kong.request.get_header("host"))`); err != nil {
		t.Fatal(err)
	}
	// The processor sends a changed host header as :authority.
	if x.Request.Headers.Get("host") != "upstream.internal" || !slices.Contains(x.Changes().RequestHeaders, "host") ||
		x.Request.Headers.Get("x-h") != "upstream.internal" {
		t.Errorf("host: %v, changes %v", x.Request.Headers, x.Changes())
	}
}

func TestClientAddressFallbacks(t *testing.T) {
	cases := []struct {
		attrs   map[string]string
		headers Headers
		want    string
	}{
		{map[string]string{"source.address": "10.0.0.9:4242"}, Headers{"x-envoy-external-address": {"1.1.1.1"}}, "10.0.0.9|4242|10.0.0.9"},
		{nil, Headers{"x-envoy-external-address": {"1.1.1.1"}, "x-forwarded-for": {"2.2.2.2, 3.3.3.3"}}, "1.1.1.1|nil|2.2.2.2"},
		{nil, Headers{"x-forwarded-for": {"2.2.2.2, 3.3.3.3"}}, "2.2.2.2|nil|2.2.2.2"},
	}
	for _, c := range cases {
		x := newLuaExchange()
		x.Attributes = c.attrs
		for k, v := range c.headers {
			x.Request.Headers[k] = v
		}
		if err := runLua(t, x, `kong.service.request.set_header("x-c", kong.client.get_ip() .. "|" .. tostring(kong.client.get_port()) .. "|" .. kong.client.get_forwarded_ip())
assert(ngx.var.remote_addr == kong.client.get_ip())`); err != nil {
			t.Fatal(err)
		}
		if got := x.Request.Headers.Get("x-c"); got != c.want {
			t.Errorf("%v %v: got %q, want %q", c.attrs, c.headers, got, c.want)
		}
	}
	x := newLuaExchange()
	x.Attributes = map[string]string{"destination.address": "10.9.9.9:8080"}
	if err := runLua(t, x, `kong.service.request.set_header("x-s", ngx.var.server_addr)`); err != nil {
		t.Fatal(err)
	}
	if got := x.Request.Headers.Get("x-s"); got != "10.9.9.9" {
		t.Errorf("server_addr %q", got)
	}
}
