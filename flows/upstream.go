package flows

import (
	"net"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sidecall/sidecall/internal/urlsafe"
)

// Kong's upstream path and host for a matched route (Kong 3.x
// kong/router/atc.lua select, kong/router/utils.lua get_upstream_uri_v0;
// path_handling v1 as kong/router/traditional.lua), sent to Envoy as
// :path and :authority mutations:
//
//   - strip_path (default true) removes the part of the path the route's
//     path matched (the prefix, or what a regex path matched); the rest is
//     joined to the service path (default "/") by path_handling v0
//     (default) or v1, Kong's documented table. The query is kept.
//   - preserve_host false (default) sends the service's host, with its port
//     unless it is the scheme's default, as :authority; true keeps the
//     client's. A route without a service keeps the client's host: Envoy's
//     cluster is the upstream then, and there is no host to send.
//
// Where sidecall differs:
//   - Kong matches and joins a normalized path; sidecall matches the path
//     as Envoy sends it. The part joined below the service path has its
//     "." and ".." segments resolved within it (never above the service
//     path) and stray bytes escaped, as flow-callout does.
//   - path_handling v1 is what Kong's traditional router does; Kong 3's
//     default router ignores it (and deprecates it). A warning says so.
//   - A plugin's kong.service.request.set_path replaces the whole upstream
//     path, as in Kong; set_header("host", ...) wins over the service host.
//   - Envoy applies an :authority change only when the ext_proc filter's
//     mutation_rules has allow_all_routing: true; otherwise it keeps the
//     client's Host (what preserve_host: true does).

// routeUpstream is a route's compiled upstream settings.
type routeUpstream struct {
	strip bool
	v1    bool
	// base is the service path, escaped; "/" without one.
	base string
	// authority is the service's host[:port] for preserve_host false; ""
	// keeps the client's.
	authority string
}

// compileUpstream reads the route fields that shape the upstream request,
// warning about those sidecall does not honour.
func compileUpstream(b *Builder, rt *Route, at Path) *routeUpstream {
	rc := rt.Config
	up := &routeUpstream{strip: boolOr(rc.StripPath, true), base: "/"}
	switch rc.PathHandling {
	case "", "v0":
	case "v1":
		up.v1 = true
		b.Warnf("%s: path_handling v1 is deprecated in Kong 3 and ignored by its default router "+
			"(traditional_compatible, which sidecall's matching follows); sidecall applies v1 as Kong's traditional router does",
			at.Key("path_handling"))
	default:
		b.Errorf(at.Key("path_handling"), "expected one of: v0, v1, got %q", rc.PathHandling)
	}
	if len(rc.Protocols) > 0 && (!hasString(rc.Protocols, "http") || !hasString(rc.Protocols, "https")) {
		b.Warnf("%s: sidecall matches the route whatever the request's scheme: Kong's "+
			"https_redirect_status_code answer to a plain http request (or its refusal of https) is not given", at.Key("protocols"))
	}
	switch rc.HTTPSRedirectStatusCode {
	case 0, 426, 301, 302, 307, 308: // Kong's choices; the answer itself is not given (above)
	default:
		b.Errorf(at.Key("https_redirect_status_code"), "expected one of: 426, 301, 302, 307, 308, got %d", rc.HTTPSRedirectStatusCode)
	}
	if len(rc.SNIs) > 0 {
		b.Warnf("%s: ignored: sidecall does not match routes on the TLS SNI (Envoy's filter chains can)", at.Key("snis"))
	}
	for _, f := range []struct {
		name string
		v    []yaml.Node
	}{{"sources", rc.Sources}, {"destinations", rc.Destinations}} {
		if len(f.v) > 0 {
			b.Errorf(at.Key(f.name), "'%s' can only be set when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp': "+
				"Kong's stream routes, which sidecall does not serve", f.name)
		}
	}
	if rc.RequestBuffering != nil && !*rc.RequestBuffering {
		b.Warnf("%s: request_buffering: false is ignored: Envoy buffers the request body only when a plugin reads it",
			at.Key("request_buffering"))
	}
	if rc.ResponseBuffering != nil && !*rc.ResponseBuffering {
		b.Warnf("%s: response_buffering: false is ignored: Envoy buffers the response body only when a plugin reads it",
			at.Key("response_buffering"))
	}
	svc := rt.Service
	if svc == nil || svc.URL == nil {
		return up
	}
	if p := svc.URL.EscapedPath(); p != "" {
		up.base = p
	}
	if !boolOr(rc.PreserveHost, false) {
		up.authority = serviceAuthority(svc.URL.Scheme, svc.URL.Hostname(), svc.URL.Port())
	}
	return up
}

func hasString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// serviceAuthority is the Host Kong sends without preserve_host: the
// service host, with the port unless it is the scheme's default.
func serviceAuthority(scheme, host, port string) string {
	if host == "" {
		return ""
	}
	if port == "" || scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

// UpstreamPath is Kong's upstream path for a request path (escaped, no
// query): with strip, the first matched bytes (the route path's match;
// 0 when no path rule matched) are removed, and the rest is joined to the
// service path base by path_handling v0, or v1 when v1 is set.
func UpstreamPath(base, path string, matched int, strip, v1 bool) string {
	if base == "" {
		base = "/"
	}
	if !strings.HasPrefix(path, "/") {
		return path // "*" (OPTIONS) or a form Kong would not route
	}
	var post string
	if strip && matched > 0 && matched <= len(path) {
		post = cleanTail(path[matched:])
	} else {
		post = cleanTail(path[1:])
	}
	baseSlash := strings.HasSuffix(base, "/")
	if v1 {
		if !strip {
			return base + cleanTail(path)[1:]
		}
		if baseSlash && strings.HasPrefix(post, "/") {
			return base[:len(base)-1] + post
		}
		return base + post
	}
	if !strip {
		req := cleanTail(path)
		switch {
		case baseSlash:
			return base + req[1:]
		case req == "/":
			return base
		}
		return base + req
	}
	reqSlash := strings.HasSuffix(path, "/")
	switch {
	case post == "" && baseSlash:
		if base == "/" || reqSlash {
			return base
		}
		return base[:len(base)-1]
	case post == "":
		if len(path) > 1 && reqSlash {
			return base + "/"
		}
		return base
	case post[0] == '/' && baseSlash:
		return base[:len(base)-1] + post // no double slash
	case post[0] == '/':
		return base + post
	case baseSlash:
		return base + post
	}
	return base + "/" + post
}

// cleanTail is a path part to join below the service path: its dot
// segments resolved within it (Kong's sanitize_uri_postfix, and its
// normalization before matching) and the bytes a path cannot hold
// escaped. A leading slash is kept or left out as it was.
func cleanTail(s string) string {
	if s == "" || plainPath(s) {
		return s
	}
	if s[0] == '/' {
		return urlsafe.CleanPath(s)
	}
	return urlsafe.CleanPath("/" + s)[1:]
}

// plainPath tells whether s needs no cleaning: no dots, escapes or bytes
// a path cannot hold.
func plainPath(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("/-_~!$&'()*+,;=:@", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// SelectRoute makes r (nil: none) the request's route, with its uri
// captures, and prepares Kong's upstream path and host for it: sent with
// the request's changes unless a plugin sets the path or the host header.
func (s *Snapshot) SelectRoute(x *Exchange, r *Route, c Captures) {
	x.Route, x.Captures = r, c
	x.upPath, x.upAuthority, x.upSent = "", "", false
	if r == nil || s == nil || s.router == nil {
		return
	}
	up := s.router.up[r]
	if up == nil {
		return
	}
	matched := 0
	if up.strip {
		matched = s.router.matched(r, x.Request.Path)
	}
	if p := UpstreamPath(up.base, x.Request.Path, matched, up.strip, up.v1); p != x.Request.Path {
		x.upPath = p
	}
	if up.authority != "" && !strings.EqualFold(up.authority, x.Request.Authority) {
		x.upAuthority = up.authority
	}
}
