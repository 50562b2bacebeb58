package flows

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// rc is a short way to write a route for router tests.
type rc struct {
	name     string
	methods  []string
	hosts    []string
	paths    []string
	headers  map[string][]string
	priority int
}

func buildRouter(t testing.TB, specs []rc) (*Router, *Builder) {
	t.Helper()
	b := NewBuilder("kong.yml")
	routes := make([]*Route, len(specs))
	paths := make([]Path, len(specs))
	for i, s := range specs {
		routes[i] = &Route{Name: s.name, Index: i, Config: &RouteConfig{
			Name: s.name, Methods: s.methods, Hosts: s.hosts, Paths: s.paths,
			Headers: s.headers, RegexPriority: s.priority,
		}}
		paths[i] = Path("routes").Index(i)
	}
	return NewRouter(b, routes, paths), b
}

func req(method, host, path string, hdrs ...string) MatchInput {
	h := Headers{}
	for i := 0; i+1 < len(hdrs); i += 2 {
		h.Add(hdrs[i], hdrs[i+1])
	}
	return MatchInput{Method: method, Host: host, Path: path, Headers: h}
}

func TestRouterMatch(t *testing.T) {
	type probe struct {
		in   MatchInput
		want string // route name, "" for no match
		caps Captures
	}
	cases := []struct {
		name   string
		routes []rc
		probes []probe
	}{
		{
			name:   "plain prefix is a string prefix, not a segment prefix",
			routes: []rc{{name: "orders", paths: []string{"/orders"}}},
			probes: []probe{
				{in: req("GET", "", "/orders"), want: "orders"},
				{in: req("GET", "", "/orders/1"), want: "orders"},
				{in: req("GET", "", "/orders-x"), want: "orders"},
				{in: req("GET", "", "/order"), want: ""},
				{in: req("GET", "", "/Orders"), want: ""}, // paths are case-sensitive
				{in: req("GET", "", ""), want: ""},
			},
		},
		{
			name: "longest prefix wins whatever the file order",
			routes: []rc{
				{name: "root", paths: []string{"/"}},
				{name: "api", paths: []string{"/api"}},
				{name: "api-v1", paths: []string{"/api/v1"}},
			},
			probes: []probe{
				{in: req("GET", "", "/api/v1/x"), want: "api-v1"},
				{in: req("GET", "", "/api/v2"), want: "api"},
				{in: req("GET", "", "/other"), want: "root"},
			},
		},
		{
			name: "regex paths go before plain prefixes",
			routes: []rc{
				{name: "plain", paths: []string{"/api/account"}},
				{name: "regex", paths: []string{`~/api/.*`}},
			},
			probes: []probe{
				{in: req("GET", "", "/api/account/all"), want: "regex"},
			},
		},
		{
			name: "regex_priority orders regex routes, then file order",
			routes: []rc{
				{name: "low", paths: []string{`~/items/\d+`}},
				{name: "high", paths: []string{`~/items/.*`}, priority: 10},
				{name: "low-later", paths: []string{`~/items/[0-9]+`}},
			},
			probes: []probe{
				{in: req("GET", "", "/items/42"), want: "high"},
				{in: req("GET", "", "/items/x"), want: "high"},
			},
		},
		{
			name: "equal regex_priority: file order",
			routes: []rc{
				{name: "first", paths: []string{`~/items/\d+`}},
				{name: "second", paths: []string{`~/items/.*`}},
			},
			probes: []probe{
				{in: req("GET", "", "/items/42"), want: "first"},
				{in: req("GET", "", "/items/x"), want: "second"},
			},
		},
		{
			// Kong issue 7687: regex_priority must not reorder plain prefixes.
			name: "regex_priority is ignored for plain paths",
			routes: []rc{
				{name: "root", hosts: []string{"foo.com"}, paths: []string{"/"}, priority: 1},
				{name: "v1", hosts: []string{"foo.com"}, paths: []string{"/v1"}},
				{name: "bar", hosts: []string{"bar.com"}, paths: []string{"~/.*"}},
			},
			probes: []probe{
				{in: req("GET", "foo.com", "/v1/x"), want: "v1"},
				{in: req("GET", "foo.com", "/x"), want: "root"},
				{in: req("GET", "bar.com", "/v1/x"), want: "bar"},
			},
		},
		{
			name: "more fields set wins over a longer path",
			routes: []rc{
				{name: "long-path", paths: []string{"/orders/special"}},
				{name: "path-method", methods: []string{"GET"}, paths: []string{"/orders"}},
				{name: "regex-only", paths: []string{`~/orders/.*`}, priority: 100},
			},
			probes: []probe{
				{in: req("GET", "", "/orders/special"), want: "path-method"},
				{in: req("POST", "", "/orders/special"), want: "regex-only"},
				{in: req("POST", "", "/orders"), want: ""},
			},
		},
		{
			name: "plain hosts beat wildcard hosts",
			routes: []rc{
				{name: "wild", hosts: []string{"*.example.com"}, paths: []string{"/a/long/path"}},
				{name: "plain", hosts: []string{"api.example.com"}, paths: []string{"/"}},
			},
			probes: []probe{
				{in: req("GET", "api.example.com", "/a/long/path"), want: "plain"},
				{in: req("GET", "www.example.com", "/a/long/path"), want: "wild"},
			},
		},
		{
			name: "wildcard hosts",
			routes: []rc{
				{name: "suffix", hosts: []string{"*.example.com"}},
				{name: "prefix", hosts: []string{"example.*"}},
			},
			probes: []probe{
				{in: req("GET", "a.example.com", "/"), want: "suffix"},
				{in: req("GET", "a.b.example.com", "/"), want: "suffix"},
				{in: req("GET", "A.EXAMPLE.COM", "/"), want: "suffix"},
				{in: req("GET", "example.com", "/"), want: "prefix"},
				{in: req("GET", "example.org", "/"), want: "prefix"},
				{in: req("GET", "notexample.com", "/"), want: ""},
				{in: req("GET", "example", "/"), want: ""},
			},
		},
		{
			name: "exact hosts are case-insensitive; a route port is ignored",
			routes: []rc{
				{name: "h", hosts: []string{"Api.Example.com", "other.test:8080"}},
			},
			probes: []probe{
				{in: req("GET", "api.example.COM", "/"), want: "h"},
				{in: req("GET", "other.test", "/"), want: "h"},
				{in: req("GET", "api.example.com.evil", "/"), want: ""},
				{in: req("GET", "", "/"), want: ""},
			},
		},
		{
			name: "methods are case-insensitive and any one matches",
			routes: []rc{
				{name: "rw", methods: []string{"GET", "POST"}, paths: []string{"/"}},
			},
			probes: []probe{
				{in: req("get", "", "/x"), want: "rw"},
				{in: req("POST", "", "/x"), want: "rw"},
				{in: req("DELETE", "", "/x"), want: ""},
				{in: req("", "", "/x"), want: ""},
			},
		},
		{
			name: "headers: every name, any value, case-insensitive, ~* regex",
			routes: []rc{
				{name: "two", paths: []string{"/"}, headers: map[string][]string{
					"X-Version": {"v1", "v2"}, "X-Tenant": {"~*^acme-\\d+$"}}},
				{name: "one", paths: []string{"/"}, headers: map[string][]string{"x-version": {"V3"}}},
				{name: "none", paths: []string{"/"}},
			},
			probes: []probe{
				{in: req("GET", "", "/", "x-version", "V2", "x-tenant", "ACME-7"), want: "two"},
				{in: req("GET", "", "/", "x-version", "v1", "x-tenant", "other"), want: "none"},
				{in: req("GET", "", "/", "x-version", "v3"), want: "one"},
				{in: req("GET", "", "/", "x-version", "v9", "x-version", "v3"), want: "one"},
				{in: req("GET", "", "/", "x-tenant", "acme-1"), want: "none"},
			},
		},
		{
			name: "more header names win at equal field count",
			routes: []rc{
				{name: "one", paths: []string{"/long/path"}, headers: map[string][]string{"a": {"1"}}},
				{name: "two", paths: []string{"/"}, headers: map[string][]string{"a": {"1"}, "b": {"2"}}},
			},
			probes: []probe{
				{in: req("GET", "", "/long/path", "a", "1", "b", "2"), want: "two"},
				{in: req("GET", "", "/long/path", "a", "1"), want: "one"},
			},
		},
		{
			name: "header count outranks regex paths",
			routes: []rc{
				{name: "regex", paths: []string{`~/x`}, headers: map[string][]string{"a": {"1"}}, priority: 50},
				{name: "plain", paths: []string{"/x"}, headers: map[string][]string{"a": {"1"}, "b": {"2"}}},
			},
			probes: []probe{
				{in: req("GET", "", "/x", "a", "1", "b", "2"), want: "plain"},
			},
		},
		{
			name: "a route's paths are ranked per group, like compat.lua's split",
			routes: []rc{
				{name: "multi", paths: []string{"/a", "/abcdef"}},
				{name: "mid", paths: []string{"/abc"}},
			},
			probes: []probe{
				{in: req("GET", "", "/abcdefg"), want: "multi"},
				{in: req("GET", "", "/abcx"), want: "mid"},
				{in: req("GET", "", "/ax"), want: "multi"},
			},
		},
		{
			name: "regex is anchored at the start, not the end",
			routes: []rc{
				{name: "ver", paths: []string{`~/v\d+/x`}},
				{name: "alt", paths: []string{`~/a|/b`}},
			},
			probes: []probe{
				{in: req("GET", "", "/v1/x/more"), want: "ver"},
				{in: req("GET", "", "/x/v1/x"), want: ""},
				{in: req("GET", "", "/b/1"), want: "alt"},
				{in: req("GET", "", "/x/b"), want: ""},
			},
		},
		{
			name: "captures: positional for every group, named also by name",
			routes: []rc{
				{name: "caps", paths: []string{`~/orders/(?<id>\d+)(/(\w+))?$`}},
				{name: "nocaps", paths: []string{`~/plain/\d+$`}},
			},
			probes: []probe{
				{in: req("GET", "", "/orders/42/items"), want: "caps", caps: Captures{
					Named: map[string]string{"id": "42"}, Positional: []string{"42", "/items", "items"}}},
				{in: req("GET", "", "/orders/42"), want: "caps", caps: Captures{
					Named: map[string]string{"id": "42"}, Positional: []string{"42", "", ""}}},
				{in: req("GET", "", "/plain/7"), want: "nocaps"},
				{in: req("GET", "", "/orders/x"), want: ""},
			},
		},
		{
			name: "the query is not part of the path",
			routes: []rc{
				{name: "end", paths: []string{`~/search$`}},
			},
			probes: []probe{
				{in: req("GET", "", "/search?q=1"), want: "end"},
			},
		},
		{
			name: "routes without a path match any path",
			routes: []rc{
				{name: "host-only", hosts: []string{"a.test"}},
				{name: "method-only", methods: []string{"PUT"}},
			},
			probes: []probe{
				{in: req("GET", "a.test", "/anything"), want: "host-only"},
				{in: req("PUT", "a.test", "/anything"), want: "host-only"},
				{in: req("PUT", "b.test", "/anything"), want: "method-only"},
				{in: req("GET", "b.test", "/anything"), want: ""},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, b := buildRouter(t, tc.routes)
			if b.Failed() {
				t.Fatalf("unexpected problems: %v", b.Problems())
			}
			for _, p := range tc.probes {
				route, caps, ok := r.Match(p.in)
				got := ""
				if ok {
					got = route.Name
				}
				if got != p.want {
					t.Errorf("%s %s%s %v: got route %q, want %q", p.in.Method, p.in.Host, p.in.Path, p.in.Headers, got, p.want)
					continue
				}
				if !reflect.DeepEqual(caps, p.caps) {
					t.Errorf("%s: captures %+v, want %+v", p.in.Path, caps, p.caps)
				}
			}
		})
	}
}

func TestRouterCompileProblems(t *testing.T) {
	cases := []struct {
		name  string
		route rc
		want  []string // "path: reason" prefixes, in order
	}{
		{
			name:  "no matching field at all",
			route: rc{},
			want:  []string{"routes[0]: must set one of 'methods', 'hosts', 'headers', 'paths'"},
		},
		{
			name:  "bad path regex",
			route: rc{paths: []string{"/ok", `~/orders/(?<id>[0-9+)$`}},
			want:  []string{`routes[0].paths[1]: invalid regex "/orders/(?<id>[0-9+)$"`},
		},
		{
			name:  "path not starting with / or ~",
			route: rc{paths: []string{"orders"}},
			want:  []string{`routes[0].paths[0]: must begin with '/' (a prefix) or '~' (a regex), got "orders"`},
		},
		{
			name:  "bad hosts",
			route: rc{hosts: []string{"a.*.com", "*.a.*", "exa mple.com", "a.com:99999", "a..com", "good.com"}},
			want: []string{
				`routes[0].hosts[0]: invalid wildcard: must be placed at leftmost or rightmost label, got "a.*.com"`,
				`routes[0].hosts[1]: invalid wildcard: must have at most one wildcard, got "*.a.*"`,
				`routes[0].hosts[2]: invalid hostname, got "exa mple.com"`,
				`routes[0].hosts[3]: invalid port, got "a.com:99999"`,
				`routes[0].hosts[4]: invalid hostname, got "a..com"`,
			},
		},
		{
			name:  "bad headers",
			route: rc{headers: map[string][]string{"Host": {"a"}, "x-empty": {}, "x-re": {"ok", "~*("}, "bad name": {"v"}}},
			want: []string{
				`routes[0].headers.Host: cannot contain 'host' header`,
				`routes[0].headers.bad name: must be a valid header name`,
				`routes[0].headers.x-empty: must have at least one value`,
				`routes[0].headers.x-re[1]: invalid regex "("`,
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.route.name = "bad"
			// A valid catch-all route shows the bad one is left out, not
			// half-compiled.
			r, b := buildRouter(t, []rc{tc.route, {name: "fallback", paths: []string{"/"}}})
			probs := b.Problems()
			if len(probs) != len(tc.want) {
				t.Fatalf("got %d problems %v, want %d", len(probs), probs, len(tc.want))
			}
			for i, p := range probs {
				got := string(p.Path) + ": " + p.Reason
				if !strings.HasPrefix(got, tc.want[i]) {
					t.Errorf("problem %d: got %q, want prefix %q", i, got, tc.want[i])
				}
			}
			for _, in := range []MatchInput{req("GET", "good.com", "/ok"), req("GET", "", "/orders/1", "x-re", "ok")} {
				if route, _, ok := r.Match(in); !ok || route.Name != "fallback" {
					t.Errorf("%s: got %v, want fallback", in.Path, route)
				}
			}
		})
	}
}

func TestRouterMatchHostPortWarning(t *testing.T) {
	_, b := buildRouter(t, []rc{{name: "p", hosts: []string{"a.test:8080", "[::1]:9000", "b.test"}}})
	if b.Failed() {
		t.Fatalf("problems: %v", b.Problems())
	}
	if len(b.warnings) != 2 || !strings.Contains(b.warnings[0], "routes[0].hosts[0]") {
		t.Errorf("warnings = %q, want one per host with a port", b.warnings)
	}
}

func TestRouterMatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector; make bench and go test without -race check them")
	}
	r, _ := buildRouter(t, benchRoutes())
	cases := []struct {
		name string
		in   MatchInput
	}{
		{"prefix", req("GET", "svc7.example.com", "/svc7/orders/1")},
		{"header", req("POST", "svc9.example.com", "/svc9/x", "x-tenant", "acme")},
		{"regex without groups", req("GET", "", "/static/app.js")},
		{"no match", req("GET", "nowhere.test", "/nothing")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, func() { r.Match(tc.in) }); n != 0 {
				t.Errorf("%v allocs per Match, want 0", n)
			}
		})
	}
}

// benchRoutes is ~50 routes of the usual kinds: host+path, methods,
// headers, regexes with captures, a catch-all.
func benchRoutes() []rc {
	var rs []rc
	for i := 0; i < 20; i++ {
		rs = append(rs, rc{name: fmt.Sprintf("svc%d", i), hosts: []string{fmt.Sprintf("svc%d.example.com", i)},
			paths: []string{fmt.Sprintf("/svc%d", i)}})
		rs = append(rs, rc{name: fmt.Sprintf("svc%d-write", i), hosts: []string{fmt.Sprintf("svc%d.example.com", i)},
			methods: []string{"POST", "PUT"}, paths: []string{fmt.Sprintf("/svc%d", i)},
			headers: map[string][]string{"x-tenant": {"acme", "~*^beta-"}}})
	}
	for i := 0; i < 8; i++ {
		rs = append(rs, rc{name: fmt.Sprintf("re%d", i), paths: []string{fmt.Sprintf(`~/api/v%d/orders/(?<id>\d+)$`, i)}, priority: i})
	}
	rs = append(rs,
		rc{name: "static", paths: []string{`~/static/.*\.(?:js|css)$`}},
		rc{name: "wild", hosts: []string{"*.example.com"}},
		rc{name: "root", paths: []string{"/"}},
	)
	return rs
}

func BenchmarkRouterMatch(b *testing.B) {
	r, bld := buildRouter(b, benchRoutes())
	if bld.Failed() {
		b.Fatal(bld.Problems())
	}
	for _, bc := range []struct {
		name string
		in   MatchInput
	}{
		{"prefix", req("GET", "svc13.example.com", "/svc13/orders/1")},
		{"header", req("PUT", "svc17.example.com", "/svc17/x", "x-tenant", "beta-9")},
		{"regex-captures", req("GET", "api.test", "/api/v3/orders/42")},
		{"fallback", req("GET", "other.test", "/nothing")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, ok := r.Match(bc.in); !ok {
					b.Fatal("no match")
				}
			}
		})
	}
}
