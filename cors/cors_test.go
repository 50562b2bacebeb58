package cors

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/flows"
)

func load(t *testing.T, cfg string) *flows.Snapshot {
	t.Helper()
	r := flows.NewRegistry()
	Register(r)
	s, err := flows.Load("kong.yml", []byte("plugins:\n  - name: cors\n    config: "+cfg+"\n"), flows.LoadOptions{Registry: r})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// run sends a request through access and, unless the plugin answered,
// the response phases on a 200 with upstream headers h.
func run(t *testing.T, s *flows.Snapshot, method string, req, h flows.Headers) (*flows.Exchange, flows.Headers, int) {
	t.Helper()
	ctx := context.Background()
	x := flows.NewExchange("id", flows.Request{Method: method, Path: "/", Headers: req}, nil)
	if err := s.Global.Serve(ctx, flows.PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	if x.Reply != nil {
		return x, x.Reply.Headers, x.Reply.Status
	}
	if h == nil {
		h = flows.Headers{}
	}
	x.Response = flows.Response{Status: 200, Headers: h}
	if err := s.Global.Serve(ctx, flows.PhaseHeaderFilter, x, nil); err != nil {
		t.Fatal(err)
	}
	return x, x.Response.Headers, x.Response.Status
}

func check(t *testing.T, what string, got flows.Headers, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if v == "-" {
			if got.Has(k) {
				t.Errorf("%s: %s = %q, want none", what, k, got.Values(k))
			}
			continue
		}
		if g := strings.Join(got.Values(k), ", "); g != v {
			t.Errorf("%s: %s = %q, want %q", what, k, g, v)
		}
	}
}

// The configuration of Kong's cors docs example.
const docsExample = `{origins: ["http://mockbin.com"], methods: [GET, POST], headers: [Accept, Accept-Version, Content-Length, Content-MD5, Content-Type, Date, X-Auth-Token], exposed_headers: [X-Auth-Token], credentials: true, max_age: 3600}`

func TestPreflightIsAnsweredWithKongsHeaders(t *testing.T) {
	s := load(t, docsExample)
	_, h, status := run(t, s, "OPTIONS", flows.Headers{"origin": {"http://mockbin.com"}, "access-control-request-method": {"POST"}}, nil)
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	check(t, "preflight", h, map[string]string{
		"access-control-allow-origin":      "http://mockbin.com",
		"access-control-allow-credentials": "true",
		"access-control-allow-headers":     "Accept,Accept-Version,Content-Length,Content-MD5,Content-Type,Date,X-Auth-Token",
		"access-control-allow-methods":     "GET,POST",
		"access-control-max-age":           "3600",
		"vary":                             "Origin",
		"access-control-expose-headers":    "-",
	})
}

func TestActualRequestGetsCORSHeaders(t *testing.T) {
	s := load(t, docsExample)
	_, h, _ := run(t, s, "GET", flows.Headers{"origin": {"http://mockbin.com"}}, flows.Headers{"vary": {"Accept-Encoding"}})
	check(t, "actual", h, map[string]string{
		"access-control-allow-origin":      "http://mockbin.com",
		"access-control-allow-credentials": "true",
		"access-control-expose-headers":    "X-Auth-Token",
		"vary":                             "Accept-Encoding, Origin",
		"access-control-allow-methods":     "-",
	})
	// An OPTIONS without Access-Control-Request-Method is no preflight.
	_, _, status := run(t, s, "OPTIONS", flows.Headers{"origin": {"http://mockbin.com"}}, nil)
	if status != 200 {
		t.Fatalf("status %d", status)
	}
}

func TestAllOriginsAndCredentials(t *testing.T) {
	s := load(t, `{}`)
	_, h, _ := run(t, s, "GET", flows.Headers{"origin": {"http://a.test"}}, nil)
	check(t, "no origins", h, map[string]string{"access-control-allow-origin": "*", "vary": "-"})
	_, h, _ = run(t, s, "GET", nil, nil)
	check(t, "no Origin, allow_origin_absent", h, map[string]string{"access-control-allow-origin": "*"})
	_, h, _ = run(t, s, "OPTIONS", flows.Headers{"origin": {"http://a.test"}, "access-control-request-method": {"GET"},
		"access-control-request-headers": {"X-A"}}, nil)
	check(t, "echoed request headers", h, map[string]string{"access-control-allow-headers": "X-A",
		"access-control-allow-methods": "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT", "access-control-max-age": "-"})

	s = load(t, `{origins: ["*"], credentials: true}`)
	_, h, _ = run(t, s, "GET", flows.Headers{"origin": {"http://a.test"}}, nil)
	check(t, "* with credentials", h, map[string]string{"access-control-allow-origin": "http://a.test",
		"access-control-allow-credentials": "true", "vary": "Origin"})

	s = load(t, `{origins: ["http://x.test"], allow_origin_absent: false}`)
	_, h, _ = run(t, s, "GET", nil, nil)
	check(t, "no Origin", h, map[string]string{"access-control-allow-origin": "-", "vary": "-"})
}

func TestOriginMatching(t *testing.T) {
	s := load(t, `{origins: ["https://a.test:443", "http://.*\\.b\\.test", "^c\\.test$", "(d|e)\\.test"]}`)
	for origin, want := range map[string]string{
		"https://a.test":           "https://a.test",
		"https://a.test:443":       "https://a.test",
		"http://x.b.test":          "http://x.b.test",
		"http://x.b.test:80":       "http://x.b.test",
		"https://x.b.test":         "-", // the regex names the scheme: matched against the whole origin
		"http://c.test:8080":       "http://c.test:8080",
		"https://d.test":           "https://d.test",
		"http://xd.test":           "-", // anchored at the start
		"http://evil.test/c.test":  "-",
		"https://a.test.evil.test": "-",
		"null":                     "-",
	} {
		_, h, _ := run(t, s, "GET", flows.Headers{"origin": {origin}},
			flows.Headers{"access-control-allow-origin": {"*"}}) // the upstream's own is cleared on no match
		check(t, origin, h, map[string]string{"access-control-allow-origin": want, "vary": "Origin"})
	}
	s = load(t, `{origins: ["http://a.test", "*"]}`)
	_, h, _ := run(t, s, "GET", flows.Headers{"origin": {"http://z.test"}}, nil)
	check(t, "* among others", h, map[string]string{"access-control-allow-origin": "*", "vary": "Origin"})
}

func TestPreflightContinueAndPrivateNetwork(t *testing.T) {
	pre := flows.Headers{"origin": {"http://a.test"}, "access-control-request-method": {"GET"},
		"access-control-request-private-network": {"true"}}
	s := load(t, `{preflight_continue: true}`)
	x, h, _ := run(t, s, "OPTIONS", pre.Clone(), flows.Headers{"x-up": {"1"}})
	if x.Reply != nil || h.Has("access-control-allow-origin") {
		t.Fatalf("preflight_continue: reply %v, headers %v", x.Reply, h)
	}
	s = load(t, `{private_network: true, max_age: 1.5}`)
	_, h, _ = run(t, s, "OPTIONS", pre.Clone(), nil)
	check(t, "private network", h, map[string]string{"access-control-allow-private-network": "true", "access-control-max-age": "1.5"})
}

func TestNormalizeIsLuaSocketsParse(t *testing.T) {
	for in, want := range map[string][2]string{
		"http://a.test:80":       {"http://a.test", "a.test"},
		"https://a.test:8443/x?": {"https://a.test:8443", "a.test"},
		"http://u@[::1]:80":      {"http://::1", "::1"},
		"a.test":                 {"a.test", "a.test"},
		"a.test:8080":            {"a.test:8080", "a.test:8080"},
		"null":                   {"null", "null"},
	} {
		d, h := normalize(in)
		if d != want[0] || h != want[1] {
			t.Errorf("%q: got %q %q, want %q", in, d, h, want)
		}
	}
}

func TestRefusals(t *testing.T) {
	for cfg, want := range map[string]string{
		`{origins: ["(a"]}`:          "plugins[0].config.origins[0]: '(a' is not a valid regex",
		`{origins: ["(?=a)b"]}`:      "plugins[0].config.origins[0]:",
		`{methods: [GET, FETCH]}`:    "plugins[0].config.methods[1]: must be one of GET, HEAD",
		`{max_age: "1h"}`:            "plugins[0].config.max_age: must be a number",
		`{credentials: "yes"}`:       "plugins[0].config.credentials: must be a boolean",
		`{allow_origins: ["x"]}`:     "plugins[0].config.allow_origins: unknown field",
		`{headers: ["a\nb"]}`:        "plugins[0].config.headers[0]: must not contain CR, LF or NUL",
		`{exposed_headers: "X-A"}`:   "plugins[0].config.exposed_headers: must be a list",
		`{preflight_continue: null}`: "",
	} {
		r := flows.NewRegistry()
		Register(r)
		_, err := flows.Load("kong.yml", []byte("plugins:\n  - name: cors\n    config: "+cfg+"\n"), flows.LoadOptions{Registry: r})
		var ce *flows.ConfigError
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", cfg, err)
			}
			continue
		}
		if !errors.As(err, &ce) || !strings.Contains(ce.Error(), want) {
			t.Errorf("%s:\n got %v\nwant %s", cfg, err, want)
		}
	}
}
