// Package cors is Kong's cors plugin: a preflight OPTIONS request is
// answered 200 by sidecall itself (unless preflight_continue), and other
// responses get Access-Control-Allow-Origin, Vary and the rest in
// header_filter.
//
// Choices where sidecall differs from Kong or Kong is silent:
//   - origins regexes are Go RE2 (no look-around or backreferences); one
//     that does not compile is refused at load.
//   - Whether a request was a preflight is read again in header_filter
//     from the request (OPTIONS with Origin and
//     Access-Control-Request-Method) instead of a per-plugin flag.
package cors

import (
	"context"
	"regexp"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"

	"gopkg.in/yaml.v3"
)

// Priority is Kong's priority for cors.
const Priority = 2000

// Register adds cors to r.
func Register(r *flows.Registry) { r.Register("cors", Priority, newCORS) }

var allMethods = []string{"GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"}

type config struct {
	Origins           []string `yaml:"origins"`
	Headers           []string `yaml:"headers"`
	ExposedHeaders    []string `yaml:"exposed_headers"`
	Methods           []string `yaml:"methods"`
	MaxAge            *float64 `yaml:"max_age"`
	Credentials       bool     `yaml:"credentials"`
	PrivateNetwork    bool     `yaml:"private_network"`
	PreflightContinue bool     `yaml:"preflight_continue"`
	AllowOriginAbsent bool     `yaml:"allow_origin_absent"`
}

// origin is one compiled origins entry.
type origin struct {
	re     *regexp.Regexp // a regex entry, anchored as Kong anchors it
	domain string         // a plain entry, normalized
	byHost bool           // the entry has no ':': a regex matches the host only
}

type cors struct {
	compiled    []origin
	anyOrigin   bool   // "*" among several entries
	literal     string // a single plain entry, sent as it is
	allowAll    bool   // no entries, or just "*"
	headers     string // joined, "" when none
	exposed     string
	methods     string
	maxAge      string // "" when unset
	credentials bool
	privateNet  bool
	preflight   bool // preflight_continue
	originAbsnt bool // allow_origin_absent
}

// plainOrigin is what Kong takes for a plain origin rather than a regex.
var plainOrigin = regexp.MustCompile(`^[A-Za-z0-9.:/-]+$`)

func newCORS(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
	c := config{Methods: allMethods, AllowOriginAbsent: true}
	b.Decode(raw, at, &c)
	p := &cors{credentials: c.Credentials, privateNet: c.PrivateNetwork,
		preflight: c.PreflightContinue, originAbsnt: c.AllowOriginAbsent}
	for i, m := range c.Methods {
		ok := false
		for _, a := range allMethods {
			ok = ok || a == m
		}
		if !ok {
			b.Errorf(at.Key("methods").Index(i), "must be one of %s, got %q", strings.Join(allMethods, ", "), m)
		}
	}
	p.methods = strings.Join(c.Methods, ",")
	p.headers = strings.Join(c.Headers, ",")
	p.exposed = strings.Join(c.ExposedHeaders, ",")
	for _, f := range []struct {
		field string
		list  []string
	}{{"headers", c.Headers}, {"exposed_headers", c.ExposedHeaders}} {
		for i, s := range f.list {
			if strings.ContainsAny(s, "\r\n\x00") {
				b.Errorf(at.Key(f.field).Index(i), "must not contain CR, LF or NUL, got %q", s)
			}
		}
	}
	if c.MaxAge != nil {
		p.maxAge = lua.FormatNumber(*c.MaxAge)
	}
	n := len(c.Origins)
	p.allowAll = n == 0 || (n == 1 && c.Origins[0] == "*")
	if n == 1 && plainOrigin.MatchString(c.Origins[0]) {
		p.literal = c.Origins[0]
	}
	for i, o := range c.Origins {
		if o == "*" {
			p.anyOrigin = true
			continue
		}
		co, err := compileOrigin(o)
		if err != nil {
			b.Errorf(at.Key("origins").Index(i), "'%s' is not a valid regex: %v", o, err)
			continue
		}
		p.compiled = append(p.compiled, co)
	}
	return p, nil
}

// compileOrigin is Kong's origin cache entry: a regex (any character
// outside A-Za-z0-9.:/-) is anchored at both ends, else the entry is
// normalized like a request's Origin.
func compileOrigin(o string) (origin, error) {
	co := origin{byHost: !strings.Contains(o, ":")}
	if plainOrigin.MatchString(o) {
		co.domain, _ = normalize(o)
		return co, nil
	}
	e := o
	if !strings.HasSuffix(e, "$") {
		e += "$"
	}
	e = strings.TrimPrefix(e, "^")
	re, err := regexp.Compile(`^(?:` + e + `)`)
	if err != nil {
		return co, err
	}
	co.re = re
	return co, nil
}

// normalize is Kong's normalize_origin with LuaSocket's url.parse: for
// scheme://host[:port] the default port is dropped; anything without a
// host is kept as it is (domain and host both).
func normalize(s string) (domain, host string) {
	i := strings.IndexByte(s, ':')
	if i <= 0 || !validScheme(s[:i]) || !strings.HasPrefix(s[i+1:], "//") {
		return s, s
	}
	scheme := s[:i]
	rest := s[i+3:]
	if j := strings.IndexAny(rest, "/?#;"); j >= 0 {
		rest = rest[:j]
	}
	if j := strings.LastIndexByte(rest, '@'); j >= 0 {
		rest = rest[j+1:]
	}
	port := ""
	if j := strings.LastIndexByte(rest, ':'); j >= 0 && !strings.Contains(rest[j+1:], "]") {
		rest, port = rest[:j], rest[j+1:]
	}
	if strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]") && len(rest) > 2 {
		rest = rest[1 : len(rest)-1]
	}
	if rest == "" {
		return s, s
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	domain = scheme + "://" + rest
	if port != "" {
		domain += ":" + port
	}
	return domain, rest
}

func validScheme(s string) bool {
	for i, c := range s {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '+' && c != '-' && c != '.')) {
			return false
		}
	}
	return s != ""
}

func (p *cors) Name() string  { return "cors" }
func (p *cors) Priority() int { return Priority }

// Needs: header_filter always, no bodies.
func (p *cors) Needs() flows.Needs { return flows.Needs{ResponseHeaders: true} }

// preflight tells whether the request is one Kong answers in access.
func preflight(x *flows.Exchange) bool {
	return x.Request.Method == "OPTIONS" && x.Request.Headers.Get("origin") != "" &&
		x.Request.Headers.Has("access-control-request-method")
}

// headerSetter is where configureOrigin writes: the preflight reply's
// headers, or the response's.
type headerSetter struct {
	set, add func(name, value string)
	clear    func(name string)
}

// configureOrigin sets Access-Control-Allow-Origin and Vary; it tells
// whether every origin is allowed ("*").
func (p *cors) configureOrigin(h headerSetter, inFilter bool, reqOrigin string) bool {
	if p.allowAll {
		h.set("Access-Control-Allow-Origin", "*")
		return true
	}
	vary(h, inFilter)
	if p.literal != "" {
		h.set("Access-Control-Allow-Origin", p.literal)
		return false
	}
	if reqOrigin != "" {
		if p.anyOrigin {
			h.set("Access-Control-Allow-Origin", "*")
			return true
		}
		domain, host := normalize(reqOrigin)
		for _, o := range p.compiled {
			var found bool
			if o.re != nil {
				subject := domain
				if o.byHost {
					subject = host
				}
				found = o.re.MatchString(subject)
			} else {
				found = domain == o.domain
			}
			if found {
				h.set("Access-Control-Allow-Origin", domain)
				return false
			}
		}
	}
	h.clear("Access-Control-Allow-Origin")
	return false
}

// vary: Kong sets it on a preflight and adds to it on a response.
func vary(h headerSetter, inFilter bool) {
	if inFilter {
		h.add("Vary", "Origin")
	} else {
		h.set("Vary", "Origin")
	}
}

func (p *cors) configureCredentials(h headerSetter, allowAll, inFilter bool, reqOrigin string) {
	if !p.credentials {
		return
	}
	if !allowAll {
		h.set("Access-Control-Allow-Credentials", "true")
		return
	}
	// Credentials cannot go with "*": echo the origin instead.
	if reqOrigin != "" {
		vary(h, inFilter)
		h.set("Access-Control-Allow-Origin", reqOrigin)
		h.set("Access-Control-Allow-Credentials", "true")
	}
}

// Access answers a preflight with 200 and the CORS headers.
func (p *cors) Access(_ context.Context, x *flows.Exchange) error {
	if !preflight(x) || p.preflight {
		return nil
	}
	reqOrigin := x.Request.Headers.Get("origin")
	rh := flows.Headers{}
	h := headerSetter{set: rh.Set, add: rh.Add, clear: rh.Del}
	allowAll := p.configureOrigin(h, false, reqOrigin)
	p.configureCredentials(h, allowAll, false, reqOrigin)
	if p.headers != "" {
		rh.Set("Access-Control-Allow-Headers", p.headers)
	} else if x.Request.Headers.Has("access-control-request-headers") {
		rh.Set("Access-Control-Allow-Headers", x.Request.Headers.Get("access-control-request-headers"))
	}
	rh.Set("Access-Control-Allow-Methods", p.methods)
	if p.maxAge != "" {
		rh.Set("Access-Control-Max-Age", p.maxAge)
	}
	if p.privateNet && x.Request.Headers.Get("access-control-request-private-network") == "true" {
		rh.Set("Access-Control-Allow-Private-Network", "true")
	}
	x.Respond(200, rh, nil)
	return nil
}

// HeaderFilter adds the CORS headers to a response that is not a
// preflight's.
func (p *cors) HeaderFilter(_ context.Context, x *flows.Exchange) error {
	if preflight(x) {
		return nil // answered in access, or left to the upstream
	}
	reqOrigin := x.Request.Headers.Get("origin")
	if reqOrigin == "" && !p.originAbsnt {
		return nil
	}
	h := headerSetter{set: x.SetResponseHeader, add: x.AddResponseHeader, clear: x.ClearResponseHeader}
	allowAll := p.configureOrigin(h, true, reqOrigin)
	p.configureCredentials(h, allowAll, true, reqOrigin)
	if p.exposed != "" {
		x.SetResponseHeader("Access-Control-Expose-Headers", p.exposed)
	}
	return nil
}
