package flows

import (
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/sidecall/sidecall/internal/httpx"
)

// Router matches requests to routes the way Kong 3.x does with its default
// router_flavor = traditional_compatible (kong/router/compat.lua and
// kong/router/transform.lua get_expression/get_priority; docs "Routing in
// Kong Gateway", "priority of a route").
//
// A request matches a route when it satisfies every field the route sets,
// each field by any one of its values:
//
//   - methods: the request method, case-insensitively.
//   - hosts: "example.com" exactly; "*.example.com" any host ending in
//     ".example.com" (several labels allowed, like Kong); "example.*" any
//     host starting with "example.". Case-insensitive. A port in the route
//     ("example.com:8080") is accepted with a warning and ignored: Kong also
//     checks the port, but MatchInput.Host carries none.
//   - paths: a plain path is a plain string prefix ("/orders" matches
//     "/orders-x", as in Kong); "~re" is a regex anchored at the start only
//     (Kong prefixes "^"; we anchor the whole expression, so "~/a|/b"
//     anchors both branches). Regex groups give the Captures.
//   - headers: name → values; any request value equals any route value
//     case-insensitively, or matches a "~*re" value (unanchored,
//     case-insensitive: Kong lower-cases both sides, we compile with (?i)).
//
// Precedence, highest first (compat.lua get_priority's bit layout):
//
//  1. the number of fields set among methods, hosts, headers, paths;
//  2. hosts set and none of them a wildcard;
//  3. the number of header names;
//  4. the path is a regex (regex paths go before plain prefixes);
//  5. regex_priority, for regex paths only;
//  6. the plain prefix's length (longest first);
//  7. file order (Route.Index). Kong leaves equal priorities undefined (the
//     traditional router used created_at); file order is what a decK user
//     would guess.
//
// Like compat.lua's split_routes_and_services_by_path, a route with several
// paths is ranked per path: all its regex paths together, and its plain
// paths grouped by length, each group with its own priority.
//
// Not done: Kong's path normalization (percent-decoding, dot segments)
// before matching; the caller passes the path as Envoy sends it. snis,
// sources and destinations do not exist here. What a route does to the
// upstream path and host (strip_path, path_handling, preserve_host) is in
// upstream.go.
type Router struct {
	entries []routeEntry
	// captured lists, per route with capture groups, its regex entries:
	// a route Envoy names still gets Kong's uri_captures.
	captured map[*Route][]int
	// withPaths lists, per route with paths, its entries in match order:
	// what its path matched, for strip_path, whoever chose the route.
	withPaths map[*Route][]int
	// up is each route's upstream path and host settings (upstream.go).
	up map[*Route]*routeUpstream
}

// routeEntry is one route with one group of its paths: the unit Kong ranks.
type routeEntry struct {
	route *Route

	// methods are upper-case; empty means any.
	methods []string
	hosts   hostMatcher
	headers []headerMatcher
	// Either prefixes (all the same length) or regexes, or neither.
	prefixes []string
	regexes  []pathRegex

	// rank, compared field by field.
	weight        int
	plainHostOnly bool
	headerCount   int
	regex         bool
	regexPriority int
	prefixLen     int
}

type hostMatcher struct {
	set      bool
	exact    []string // lower-case
	suffixes []string // "*.example.com" → ".example.com"
	prefixes []string // "example.*" → "example."
}

type headerMatcher struct {
	name    string   // lower-case, as Headers keys are
	values  []string // compared with EqualFold
	regexes []*regexp.Regexp
}

type pathRegex struct {
	re *regexp.Regexp
	// literal is a prefix every match starts with: a cheap reject before
	// running the regex.
	literal string
	groups  bool
}

// NewRouter compiles the routes' matching rules. Problems are reported to b
// at the route's path (paths[i]) and the route is left out of matching.
func NewRouter(b *Builder, routes []*Route, paths []Path) *Router {
	r := &Router{up: map[*Route]*routeUpstream{}}
	for i, rt := range routes {
		if rt == nil || rt.Config == nil {
			continue
		}
		var at Path
		if i < len(paths) {
			at = paths[i]
		}
		r.entries = append(r.entries, compileRoute(b, rt, at)...)
		r.up[rt] = compileUpstream(b, rt, at)
	}
	sort.SliceStable(r.entries, func(i, j int) bool { return r.entries[i].before(&r.entries[j]) })
	for i := range r.entries {
		e := &r.entries[i]
		if len(e.prefixes) > 0 || len(e.regexes) > 0 {
			if r.withPaths == nil {
				r.withPaths = map[*Route][]int{}
			}
			r.withPaths[e.route] = append(r.withPaths[e.route], i)
		}
		for _, pr := range e.regexes {
			if pr.groups {
				if r.captured == nil {
					r.captured = map[*Route][]int{}
				}
				r.captured[e.route] = append(r.captured[e.route], i)
				break
			}
		}
	}
	return r
}

// Captures returns route's uri_captures for path when the route was chosen
// by name (Envoy's route name or metadata) rather than by Match.
func (r *Router) Captures(route *Route, path string) Captures {
	if r == nil {
		return Captures{}
	}
	for _, i := range r.captured[route] {
		if c, ok := r.entries[i].matchRegex(path); ok {
			return c
		}
	}
	return Captures{}
}

// matched returns how many bytes of path the route's path rules matched
// (Kong's matched_path: the prefix, or a regex's whole match), trying them
// in match order; 0 when none matches (a route Envoy chose by name).
func (r *Router) matched(route *Route, path string) int {
	for _, i := range r.withPaths[route] {
		e := &r.entries[i]
		for _, p := range e.prefixes {
			if strings.HasPrefix(path, p) {
				return len(p)
			}
		}
		if path == "" {
			continue
		}
		for j := range e.regexes {
			pr := &e.regexes[j]
			if !strings.HasPrefix(path, pr.literal) {
				continue
			}
			if loc := pr.re.FindStringIndex(path); loc != nil {
				return loc[1]
			}
		}
	}
	return 0
}

func (e *routeEntry) before(o *routeEntry) bool {
	if e.weight != o.weight {
		return e.weight > o.weight
	}
	if e.plainHostOnly != o.plainHostOnly {
		return e.plainHostOnly
	}
	if e.headerCount != o.headerCount {
		return e.headerCount > o.headerCount
	}
	if e.regex != o.regex {
		return e.regex
	}
	if e.regexPriority != o.regexPriority {
		return e.regexPriority > o.regexPriority
	}
	if e.prefixLen != o.prefixLen {
		return e.prefixLen > o.prefixLen
	}
	return e.route.Index < o.route.Index
}

// compileRoute returns the route's entries, or none when it has a problem.
func compileRoute(b *Builder, rt *Route, at Path) []routeEntry {
	rc := rt.Config
	if len(rc.Methods) == 0 && len(rc.Hosts) == 0 && len(rc.Paths) == 0 && len(rc.Headers) == 0 {
		// Kong's schema rejects such a route for http(s); so do we, even
		// though Envoy could still select it by name.
		b.Errorf(at, "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'")
		return nil
	}
	ok := true
	base := routeEntry{route: rt}

	for _, m := range rc.Methods {
		base.methods = append(base.methods, strings.ToUpper(m))
	}

	if len(rc.Hosts) > 0 {
		base.hosts.set = true
		base.plainHostOnly = true
	}
	for j, h := range rc.Hosts {
		hat := at.Key("hosts").Index(j)
		host, port, err := splitRouteHost(h)
		if err != "" {
			b.Errorf(hat, "%s, got %q", err, h)
			ok = false
			continue
		}
		if port != "" {
			b.Warnf("%s: host %q: the port is ignored (sidecall matches the host without its port)", hat, h)
		}
		host = strings.ToLower(host)
		switch {
		case strings.HasPrefix(host, "*"):
			base.hosts.suffixes = append(base.hosts.suffixes, host[1:])
			base.plainHostOnly = false
		case strings.HasSuffix(host, "*"):
			base.hosts.prefixes = append(base.hosts.prefixes, host[:len(host)-1])
			base.plainHostOnly = false
		default:
			base.hosts.exact = append(base.hosts.exact, host)
		}
	}

	// Sorted names: deterministic errors and evaluation order.
	names := make([]string, 0, len(rc.Headers))
	for name := range rc.Headers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		hat := at.Key("headers").Key(name)
		vals := rc.Headers[name]
		switch {
		case !httpx.ValidHeaderName(name):
			b.Errorf(hat, "must be a valid header name, got %q", name)
			ok = false
			continue
		case strings.EqualFold(name, "host"):
			b.Errorf(hat, "cannot contain 'host' header, which must be specified in the 'hosts' attribute")
			ok = false
			continue
		case len(vals) == 0:
			b.Errorf(hat, "must have at least one value")
			ok = false
			continue
		}
		hm := headerMatcher{name: strings.ToLower(name)}
		for k, v := range vals {
			if pat, isRe := strings.CutPrefix(v, "~*"); isRe {
				re, err := regexp.Compile("(?i)" + pat)
				if err != nil {
					b.Errorf(hat.Index(k), "invalid regex %q: %v", pat, err)
					ok = false
					continue
				}
				hm.regexes = append(hm.regexes, re)
				continue
			}
			hm.values = append(hm.values, v)
		}
		base.headers = append(base.headers, hm)
	}
	base.headerCount = min(len(base.headers), 255) // Kong caps it at 255

	var regexes []pathRegex
	byLen := map[int][]string{}
	for j, p := range rc.Paths {
		pat := at.Key("paths").Index(j)
		switch {
		case strings.HasPrefix(p, "~"):
			pr, err := compilePathRegex(p[1:])
			if err != nil {
				b.Errorf(pat, "invalid regex %q: %v", p[1:], err)
				ok = false
				continue
			}
			regexes = append(regexes, pr)
		case strings.HasPrefix(p, "/"):
			byLen[len(p)] = append(byLen[len(p)], p)
		default:
			b.Errorf(pat, "must begin with '/' (a prefix) or '~' (a regex), got %q", p)
			ok = false
		}
	}
	if !ok {
		return nil
	}

	for _, set := range []bool{len(base.methods) > 0, base.hosts.set, len(base.headers) > 0, len(rc.Paths) > 0} {
		if set {
			base.weight++
		}
	}

	if len(rc.Paths) == 0 {
		return []routeEntry{base}
	}
	var out []routeEntry
	if len(regexes) > 0 {
		e := base
		e.regexes = regexes
		e.regex = true
		e.regexPriority = rc.RegexPriority
		out = append(out, e)
	}
	lens := make([]int, 0, len(byLen))
	for n := range byLen {
		lens = append(lens, n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(lens)))
	for _, n := range lens {
		e := base
		e.prefixes = byLen[n]
		e.prefixLen = n
		out = append(out, e)
	}
	return out
}

func compilePathRegex(expr string) (pathRegex, error) {
	// Parse it unanchored first: that reports errors against what the user
	// wrote and gives the literal prefix for the cheap reject.
	raw, err := regexp.Compile(expr)
	if err != nil {
		return pathRegex{}, err
	}
	re, err := regexp.Compile("^(?:" + expr + ")")
	if err != nil {
		return pathRegex{}, err
	}
	lit, _ := raw.LiteralPrefix()
	return pathRegex{re: re, literal: lit, groups: re.NumSubexp() > 0}, nil
}

// splitRouteHost validates a Kong route host (optionally "*." or ".*"
// wildcard, optionally ":port") and splits off the port. err is a reason.
func splitRouteHost(h string) (host, port, err string) {
	host = h
	if strings.HasPrefix(h, "[") {
		// IPv6 literal, "[::1]" or "[::1]:8080".
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", "", "invalid hostname"
		}
		host, port = h[:end+1], strings.TrimPrefix(h[end+1:], ":")
		if h[end+1:] != "" && (!strings.HasPrefix(h[end+1:], ":") || !validPort(port)) {
			return "", "", "invalid port"
		}
		for _, c := range host[1:end] {
			if !(c == ':' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return "", "", "invalid hostname"
			}
		}
		return host, port, ""
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
		if !validPort(port) {
			return "", "", "invalid port"
		}
	}
	if host == "" {
		return "", "", "invalid hostname"
	}
	if n := strings.Count(host, "*"); n > 1 {
		return "", "", "invalid wildcard: must have at most one wildcard"
	} else if n == 1 && !strings.HasPrefix(host, "*.") && !strings.HasSuffix(host, ".*") {
		return "", "", "invalid wildcard: must be placed at leftmost or rightmost label"
	}
	label := 0
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c == '.':
			if label == 0 {
				return "", "", "invalid hostname"
			}
			label = 0
		case c == '*' || c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
			label++
		default:
			return "", "", "invalid hostname"
		}
	}
	if label == 0 {
		return "", "", "invalid hostname"
	}
	return host, port, ""
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n <= 65535 && p[0] != '+'
}

// Match returns the best route for in, its uri captures, and whether one
// matched. It allocates only for the captures of a regex path with groups.
func (r *Router) Match(in MatchInput) (*Route, Captures, bool) {
	if r == nil {
		return nil, Captures{}, false
	}
	path := in.Path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i] // the caller should have done it; be safe
	}
	for i := range r.entries {
		e := &r.entries[i]
		if !e.matchMethod(in.Method) || !e.hosts.match(in.Host) || !e.matchHeaders(in.Headers) {
			continue
		}
		if len(e.prefixes) > 0 {
			if !e.matchPrefix(path) {
				continue
			}
			return e.route, Captures{}, true
		}
		if len(e.regexes) > 0 {
			caps, ok := e.matchRegex(path)
			if !ok {
				continue
			}
			return e.route, caps, true
		}
		return e.route, Captures{}, true
	}
	return nil, Captures{}, false
}

func (e *routeEntry) matchMethod(m string) bool {
	if len(e.methods) == 0 {
		return true
	}
	for _, want := range e.methods {
		if strings.EqualFold(want, m) {
			return true
		}
	}
	return false
}

func (h *hostMatcher) match(host string) bool {
	if !h.set {
		return true
	}
	for _, want := range h.exact {
		if strings.EqualFold(want, host) {
			return true
		}
	}
	for _, s := range h.suffixes {
		if len(host) > len(s) && strings.EqualFold(host[len(host)-len(s):], s) {
			return true
		}
	}
	for _, p := range h.prefixes {
		if len(host) > len(p) && strings.EqualFold(host[:len(p)], p) {
			return true
		}
	}
	return false
}

func (e *routeEntry) matchHeaders(hs Headers) bool {
	for i := range e.headers {
		hm := &e.headers[i]
		if !hm.match(hs[hm.name]) {
			return false
		}
	}
	return true
}

func (hm *headerMatcher) match(got []string) bool {
	for _, v := range got {
		for _, want := range hm.values {
			if strings.EqualFold(want, v) {
				return true
			}
		}
		for _, re := range hm.regexes {
			if re.MatchString(v) {
				return true
			}
		}
	}
	return false
}

func (e *routeEntry) matchPrefix(path string) bool {
	for _, p := range e.prefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

func (e *routeEntry) matchRegex(path string) (Captures, bool) {
	if path == "" {
		return Captures{}, false // Kong: an empty path matches no path rule
	}
	for i := range e.regexes {
		pr := &e.regexes[i]
		if !strings.HasPrefix(path, pr.literal) {
			continue
		}
		if !pr.groups {
			if pr.re.MatchString(path) {
				return Captures{}, true
			}
			continue
		}
		loc := pr.re.FindStringSubmatchIndex(path)
		if loc == nil {
			continue
		}
		return captures(pr.re, path, loc), true
	}
	return Captures{}, false
}

// captures builds Kong's uri_captures: every group by number, named groups
// also by name. A group that took no part in the match is "".
func captures(re *regexp.Regexp, path string, loc []int) Captures {
	n := re.NumSubexp()
	c := Captures{Positional: make([]string, n)}
	for g := 1; g <= n; g++ {
		if s, e := loc[2*g], loc[2*g+1]; s >= 0 {
			c.Positional[g-1] = path[s:e]
		}
	}
	for g, name := range re.SubexpNames() {
		if name == "" {
			continue
		}
		if c.Named == nil {
			c.Named = make(map[string]string)
		}
		c.Named[name] = c.Positional[g-1]
	}
	return c
}

// UsesHeaders tells whether any route matches on request headers, so the
// processor can skip building the header map for requests that need none.
func (r *Router) UsesHeaders() bool {
	if r == nil {
		return false
	}
	for i := range r.entries {
		if len(r.entries[i].headers) > 0 {
			return true
		}
	}
	return false
}
