package flows

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// upstreamFor runs the router and SelectRoute for one route and request,
// as the processor does, and returns what the upstream gets.
func upstreamFor(t *testing.T, svcURL string, rcfg RouteConfig, path, authority string) (uri, auth string, b *Builder) {
	t.Helper()
	b = NewBuilder("kong.yml")
	var svc *Service
	if svcURL != "" {
		u, err := url.Parse(svcURL)
		if err != nil {
			t.Fatal(err)
		}
		svc = &Service{Name: "s", URL: u}
	}
	if rcfg.Name == "" {
		rcfg.Name = "r"
	}
	rt := &Route{Name: rcfg.Name, Service: svc, Config: &rcfg}
	s := &Snapshot{router: NewRouter(b, []*Route{rt}, []Path{Path("routes").Index(0)})}
	p, q, _ := strings.Cut(path, "?")
	x := NewExchange("", Request{Method: "GET", Path: p, RawQuery: q, Authority: authority}, nil)
	host, _, _ := strings.Cut(authority, ":")
	got, caps, ok := s.Match(MatchInput{Method: "GET", Host: host, Path: p})
	if !ok || got != rt {
		t.Fatalf("%s does not match route %+v", path, rcfg)
	}
	s.SelectRoute(x, got, caps)
	c := x.Changes()
	uri = path
	if c.RoutePath {
		uri = x.UpstreamURI()
	}
	return uri, c.Authority, b
}

// TestUpstreamPathKongTable is Kong's documented combinations of
// strip_path, path_handling, service path and request path (Admin API
// "Path handling algorithms" table, and the rows of Kong's
// spec/fixtures/router_path_handling_tests.lua). Three fixture rows are
// left out: v0 with strip_path, a request path ending in "/" that the
// route consumes whole and a service path ending in "/" (or a request "/"
// and a host route), where the fixture drops the trailing slash but
// get_upstream_uri_v0, which sidecall follows, keeps it.
func TestUpstreamPathKongTable(t *testing.T) {
	both := []string{"v0", "v1"}
	v0, v1 := []string{"v0"}, []string{"v1"}
	bools := []bool{false, true}
	no, yes := []bool{false}, []bool{true}
	cases := []struct {
		svc, route string // route "" matches by host
		strip      []bool
		handling   []string
		req, want  string
	}{
		// The Admin API reference's table.
		{"/s", "/fv0", no, v0, "/fv0req", "/s/fv0req"},
		{"/s", "/fv1", no, v1, "/fv1req", "/sfv1req"},
		{"/s", "/tv0", yes, v0, "/tv0req", "/s/req"},
		{"/s", "/tv1", yes, v1, "/tv1req", "/sreq"},
		{"/s", "/fv0/", no, v0, "/fv0/req", "/s/fv0/req"},
		{"/s", "/fv1/", no, v1, "/fv1/req", "/sfv1/req"},
		{"/s", "/tv0/", yes, v0, "/tv0/req", "/s/req"},
		{"/s", "/tv1/", yes, v1, "/tv1/req", "/sreq"},
		// Kong's router fixture.
		{"/", "/", bools, both, "/", "/"},
		{"/", "/", bools, both, "/route", "/route"},
		{"/", "/", bools, both, "/route/", "/route/"},
		{"/", "/", bools, both, "/route/req", "/route/req"},
		{"/", "/route", no, both, "/routereq", "/routereq"},
		{"/", "/route", yes, both, "/route", "/"},
		{"/", "/route", yes, both, "/route/", "/"},
		{"/", "/route", yes, both, "/routereq", "/req"},
		{"/", "/route/", no, both, "/route/req", "/route/req"},
		{"/", "/route/", yes, both, "/route/", "/"},
		{"/", "/route/", yes, both, "/route/req", "/req"},
		{"/srv", "/rou", no, v0, "/roureq", "/srv/roureq"},
		{"/srv", "/rou", no, v1, "/roureq", "/srvroureq"},
		{"/srv", "/rou", yes, v0, "/roureq", "/srv/req"},
		{"/srv", "/rou", yes, v1, "/roureq", "/srvreq"},
		{"/srv/", "/rou", no, both, "/rou", "/srv/rou"},
		{"/srv/", "/rou", yes, v0, "/rou", "/srv"},
		{"/srv/", "/rou", yes, v1, "/rou", "/srv/"},
		{"/service", "/", bools, both, "/", "/service"},
		{"/service", "/", bools, v0, "/route/", "/service/route/"},
		{"/service", "/", bools, v1, "/route/", "/serviceroute/"},
		{"/service", "/", bools, v0, "/route/req", "/service/route/req"},
		{"/service", "/", bools, v1, "/route/req", "/serviceroute/req"},
		{"/service", "/route", no, v0, "/route/", "/service/route/"},
		{"/service", "/route", no, v1, "/routereq", "/serviceroutereq"},
		{"/service", "/route", yes, both, "/route", "/service"},
		{"/service", "/route", yes, both, "/route/", "/service/"},
		{"/service", "/route", yes, v0, "/routereq", "/service/req"},
		{"/service", "/route", yes, v1, "/routereq", "/servicereq"},
		{"/service", "/route/", no, v0, "/route/req", "/service/route/req"},
		{"/service", "/route/", yes, v0, "/route/req", "/service/req"},
		{"/service", "/route/", yes, v1, "/route/req", "/servicereq"},
		{"/service/", "/", no, both, "/", "/service/"},
		{"/service/", "/", bools, both, "/route/", "/service/route/"},
		{"/service/", "/", bools, both, "/routereq", "/service/routereq"},
		{"/service/", "/route", no, both, "/route/", "/service/route/"},
		{"/service/", "/route", yes, v0, "/route", "/service"},
		{"/service/", "/route", yes, v1, "/route", "/service/"},
		{"/service/", "/route", yes, both, "/route/", "/service/"},
		{"/service/", "/route", yes, both, "/routereq", "/service/req"},
		{"/service/", "/route/", yes, both, "/route/req", "/service/req"},
		// Routes matched by host: nothing to strip.
		{"/", "", bools, both, "/route/", "/route/"},
		{"/service", "", bools, v0, "/route", "/service/route"},
		{"/service", "", bools, v1, "/route", "/serviceroute"},
		{"/service/", "", no, both, "/", "/service/"},
		{"/service/", "", yes, v1, "/", "/service/"},
		{"/service/", "", bools, both, "/route/", "/service/route/"},
	}
	for _, tc := range cases {
		for _, strip := range tc.strip {
			for _, h := range tc.handling {
				rcfg := RouteConfig{StripPath: &strip, PathHandling: h}
				if tc.route == "" {
					rcfg.Hosts = []string{"api.test"}
				} else {
					rcfg.Paths = []string{tc.route}
				}
				got, _, _ := upstreamFor(t, "http://svc.test"+tc.svc, rcfg, tc.req, "api.test")
				if got != tc.want {
					t.Errorf("service %q route %q strip_path %v %s: %s -> %q, want %q", tc.svc, tc.route, strip, h, tc.req, got, tc.want)
				}
			}
		}
	}
}

func TestUpstreamPathAndHost(t *testing.T) {
	f, tr := false, true
	cases := []struct {
		name      string
		svc       string
		route     RouteConfig
		req       string
		want      string // the :path sent
		authority string // the :authority sent, "" for none
	}{
		{name: "strip_path defaults to true; the query stays",
			svc: "http://orders.internal:8080", route: RouteConfig{Paths: []string{"/orders"}},
			req: "/orders/42?x=1&y", want: "/42?x=1&y", authority: "orders.internal:8080"},
		{name: "a regex path strips what it matched",
			svc: "http://svc.test/v1", route: RouteConfig{Paths: []string{`~/orders/(?<id>\d+)`}},
			req: "/orders/12/items", want: "/v1/items", authority: "svc.test"},
		{name: "the longest matching prefix of the route is stripped",
			svc: "http://svc.test", route: RouteConfig{Paths: []string{"/a", "/a/b"}},
			req: "/a/b/c", want: "/c", authority: "svc.test"},
		{name: "dot segments stay below the service path",
			svc: "http://svc.test/internal", route: RouteConfig{Paths: []string{"/api"}},
			req: "/api/../../admin", want: "/internal/admin", authority: "svc.test"},
		{name: "an escaped slash is kept as sent",
			svc: "http://svc.test", route: RouteConfig{Paths: []string{"/api"}, StripPath: &f},
			req: "/api/a%2Fb", want: "/api/a%2Fb", authority: "svc.test"},
		{name: "preserve_host keeps the client's host",
			svc: "https://svc.test:443", route: RouteConfig{Paths: []string{"/x"}, PreserveHost: &tr, StripPath: &f},
			req: "/x", want: "/x"},
		{name: "the scheme's default port is left out",
			svc: "https://svc.test:443", route: RouteConfig{Paths: []string{"/x"}, StripPath: &f},
			req: "/x", want: "/x", authority: "svc.test"},
		{name: "an IPv6 service host",
			svc: "http://[::1]:9000", route: RouteConfig{Paths: []string{"/x"}, StripPath: &f},
			req: "/x", want: "/x", authority: "[::1]:9000"},
		{name: "a route without a service keeps the host and strips",
			route: RouteConfig{Paths: []string{"/x"}},
			req:   "/x/y", want: "/y"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			uri, auth, b := upstreamFor(t, tc.svc, tc.route, tc.req, "client.test:8000")
			if b.Failed() {
				t.Fatalf("problems: %v", b.Problems())
			}
			if uri != tc.want || auth != tc.authority {
				t.Errorf("sent :path %q :authority %q, want %q %q", uri, auth, tc.want, tc.authority)
			}
		})
	}
}

func TestUpstreamPluginPathWins(t *testing.T) {
	b := NewBuilder("kong.yml")
	u, _ := url.Parse("http://svc.test/base")
	rt := &Route{Name: "r", Service: &Service{Name: "s", URL: u}, Config: &RouteConfig{Paths: []string{"/api"}}}
	s := &Snapshot{router: NewRouter(b, []*Route{rt}, []Path{"routes[0]"})}

	x := NewExchange("", Request{Path: "/api/x", RawQuery: "a=1"}, nil)
	s.SelectRoute(x, rt, Captures{})
	x.SetRawQuery("b=2") // a query change keeps the route's path
	if c := x.Changes(); !c.Path || x.UpstreamURI() != "/base/x?b=2" {
		t.Errorf("after set_query: %+v %q", c, x.UpstreamURI())
	}
	x.SetPath("/other") // Kong's set_path replaces the upstream path
	if c := x.Changes(); c.RoutePath || x.UpstreamURI() != "/other?b=2" {
		t.Errorf("after set_path: %+v %q", c, x.UpstreamURI())
	}

	x = NewExchange("", Request{Path: "/api/x"}, nil)
	s.SelectRoute(x, rt, Captures{})
	if c := x.Changes(); !c.RoutePath || c.Path || c.Authority != "svc.test" {
		t.Fatalf("route changes %+v", c)
	}
	x.ResetChanges() // sent with the headers reply
	if c := x.Changes(); c.RoutePath || c.Authority != "" {
		t.Errorf("sent twice: %+v", c)
	}
	x.SetRawQuery("q=1") // a later query change still goes below the route's path
	if x.UpstreamURI() != "/base/x?q=1" {
		t.Errorf("later query change: %q", x.UpstreamURI())
	}
}

func TestUpstreamRouteFieldWarnings(t *testing.T) {
	f := false
	cases := []struct {
		route RouteConfig
		want  string // in a warning or, with "error:", in a problem
	}{
		{RouteConfig{Paths: []string{"/x"}, PathHandling: "v1"}, "routes[0].path_handling: path_handling v1 is deprecated"},
		{RouteConfig{Paths: []string{"/x"}, PathHandling: "v2"}, `error:routes[0].path_handling: expected one of: v0, v1, got "v2"`},
		{RouteConfig{Paths: []string{"/x"}, Protocols: []string{"https"}}, "routes[0].protocols: sidecall matches the route whatever the request's scheme"},
		{RouteConfig{Paths: []string{"/x"}, RequestBuffering: &f}, "routes[0].request_buffering: request_buffering: false is ignored"},
		{RouteConfig{Paths: []string{"/x"}, ResponseBuffering: &f}, "routes[0].response_buffering: response_buffering: false is ignored"},
		{RouteConfig{Paths: []string{"/x"}, HTTPSRedirectStatusCode: 303}, "error:routes[0].https_redirect_status_code: expected one of: 426, 301, 302, 307, 308, got 303"},
		{RouteConfig{Paths: []string{"/x"}, SNIs: []string{"a.test"}}, "routes[0].snis: ignored: sidecall does not match routes on the TLS SNI"},
		{RouteConfig{Paths: []string{"/x"}, Sources: make([]yaml.Node, 1)}, "error:routes[0].sources: 'sources' can only be set when 'protocols' is 'tcp'"},
	}
	for _, tc := range cases {
		b := NewBuilder("kong.yml")
		rc := tc.route
		rc.Name = "r"
		NewRouter(b, []*Route{{Name: "r", Config: &rc}}, []Path{"routes[0]"})
		var got []string
		if want, isErr := strings.CutPrefix(tc.want, "error:"); isErr {
			for _, p := range b.Problems() {
				got = append(got, string(p.Path)+": "+p.Reason)
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], want) {
				t.Errorf("problems %q, want %q", got, want)
			}
			continue
		}
		for _, w := range b.warnings {
			got = append(got, fmt.Sprint(w))
		}
		if b.Failed() || len(got) != 1 || !strings.Contains(got[0], tc.want) {
			t.Errorf("warnings %q (problems %v), want %q", got, b.Problems(), tc.want)
		}
	}
}
