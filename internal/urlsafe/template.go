package urlsafe

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// Kind is the part of a URL a template value stands in, found at load from
// the template's written text. It says how the value is encoded or checked.
type Kind uint8

const (
	// Scheme: in the scheme; letters, digits, '+', '-', '.' only.
	Scheme Kind = iota + 1
	// Base: the template starts with the value and its text has no
	// "scheme://": the value is the base URL (http(s)://authority[/path],
	// no query or fragment); scheme, userinfo, host and port are all
	// dynamic.
	Base
	// Userinfo: in the userinfo; everything but unreserved characters is
	// percent-encoded (a value cannot add ':' or '@').
	Userinfo
	// Host: in a host name; letters, digits, '-', '_', '.' only.
	Host
	// WholeHost: the whole host (a port is written); a name as for Host or
	// a [IPv6] literal.
	WholeHost
	// Authority: the whole host[:port] (nothing else written between
	// "://" or '@' and the path).
	Authority
	// Port: in the port; digits only.
	Port
	// PathTail: right after a written host or port, with no '/' written in
	// between: an absolute path ("" or starting with '/'); '/' is kept and
	// each segment percent-encoded (url.PathEscape).
	PathTail
	// Segment: in a path segment; url.PathEscape ('/', '?', '#', '%' and
	// the rest encoded).
	Segment
	// QueryKey: in a query key; url.QueryEscape ('&', '=', '+', '#'... encoded).
	QueryKey
	// QueryValue: in a query value; url.QueryEscape.
	QueryValue
	// Fragment: in the fragment; url.PathEscape.
	Fragment
)

var kindNames = [...]string{"", "scheme", "base url", "userinfo", "host", "whole host", "authority", "port",
	"path after the authority", "path segment", "query key", "query value", "fragment"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Part is one piece of a URL template: written text, or a value (a
// $(...) placeholder) when Value is set.
type Part struct {
	Text  string
	Value bool
}

// Template is a URL template split by its written text: which part of the
// URL each value stands in, and the scheme, userinfo, host and port the
// text fixes.
type Template struct {
	parts []Part
	kinds []Kind // one per value, in order
	// fixed is the URL rendered with a harmless stand-in for each value:
	// its fixed parts are the template's.
	fixed                                *url.URL
	schemeDyn, userDyn, hostDyn, portDyn bool
	pathValues                           bool // a value may touch the path
	dots                                 int  // "." and ".." segments the written path has
}

// unit is one written byte (v < 0) or one value (v = its index).
type unit struct {
	c byte
	v int
}

// Compile splits a URL template. The error text is a config problem: the
// template's written text must make an absolute http or https URL (or start
// with a value giving the base URL).
func Compile(parts []Part) (*Template, error) {
	t := &Template{}
	var us []unit
	for _, p := range parts {
		if p.Value {
			us = append(us, unit{v: len(t.kinds)})
			t.kinds = append(t.kinds, 0)
			t.parts = append(t.parts, p)
			continue
		}
		if p.Text == "" {
			continue
		}
		for i := 0; i < len(p.Text); i++ {
			us = append(us, unit{c: p.Text[i], v: -1})
		}
		if n := len(t.parts); n > 0 && !t.parts[n-1].Value {
			t.parts[n-1].Text += p.Text
		} else {
			t.parts = append(t.parts, p)
		}
	}
	static := func(i int, c byte) bool { return i < len(us) && us[i].v < 0 && us[i].c == c }
	set := func(from, to int, k Kind) bool {
		any := false
		for i := from; i < to; i++ {
			if us[i].v >= 0 {
				t.kinds[us[i].v] = k
				any = true
			}
		}
		return any
	}

	// Scheme: written scheme characters and values up to "://".
	sep := -1
	for i := 0; i < len(us); i++ {
		if us[i].v >= 0 || isSchemeChar(us[i].c) {
			continue
		}
		if static(i, ':') && static(i+1, '/') && static(i+2, '/') {
			sep = i
		}
		break
	}
	pathFrom := 0 // where the path starts
	switch {
	case sep >= 0:
		t.schemeDyn = set(0, sep, Scheme)
		if !t.schemeDyn {
			s := string(bytesOf(us[:sep]))
			if !strings.EqualFold(s, "http") && !strings.EqualFold(s, "https") {
				return nil, errors.New("must be an http or https URL")
			}
		}
		pathFrom = t.authority(us, sep+3)
	case len(us) > 0 && us[0].v >= 0:
		t.kinds[0] = Base
		t.schemeDyn, t.userDyn, t.hostDyn, t.portDyn = true, true, true, true
		pathFrom = 1
	default:
		return nil, errors.New("must be an http or https URL, or start with a $(...) giving the base URL")
	}

	// Path: up to the first written '?' or '#'.
	qFrom := pathFrom
	for qFrom < len(us) && !static(qFrom, '?') && !static(qFrom, '#') {
		if us[qFrom].v >= 0 {
			if qFrom == pathFrom {
				t.kinds[us[qFrom].v] = PathTail
			} else {
				t.kinds[us[qFrom].v] = Segment
			}
		}
		qFrom++
	}
	// Query: keys after '?' and '&', values after the first '=' of a pair.
	i := qFrom
	if static(i, '?') {
		key := true
		for i++; i < len(us) && !static(i, '#'); i++ {
			switch {
			case us[i].v >= 0 && key:
				t.kinds[us[i].v] = QueryKey
			case us[i].v >= 0:
				t.kinds[us[i].v] = QueryValue
			case us[i].c == '&':
				key = true
			case us[i].c == '=':
				key = false
			}
		}
	}
	set(i, len(us), Fragment)

	for _, k := range t.kinds {
		t.pathValues = t.pathValues || k == Base || k == PathTail || k == Segment
	}
	// The stand-in rendering: fixed parts, and a check of the written text.
	probe, _ := t.render(func(k Kind, _ int) (string, *Refusal) { return standIn[k], nil })
	u, err := url.Parse(probe)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("not a valid URL: %v", err)
	}
	if u.Opaque != "" || u.Hostname() == "" && !t.hostDyn {
		return nil, errors.New("must be an http or https URL with a host")
	}
	t.fixed = u
	t.dots = dotSegments(pathOf(probe))
	return t, nil
}

// standIn are harmless values for each kind: the rendering with them shows
// the parts the written text fixes.
var standIn = [...]string{Scheme: "http", Base: "http://base.invalid", Userinfo: "u", Host: "h", WholeHost: "h",
	Authority: "h", Port: "1", PathTail: "/p", Segment: "p", QueryKey: "k", QueryValue: "v", Fragment: "f"}

// authority classifies the values from "://" (at from) to the path and
// returns where the path starts.
func (t *Template) authority(us []unit, from int) int {
	end := from
	for end < len(us) && (us[end].v >= 0 || us[end].c != '/' && us[end].c != '?' && us[end].c != '#') {
		end++
	}
	hs := from
	for i := end - 1; i >= from; i-- {
		if us[i].v < 0 && us[i].c == '@' {
			for j := from; j < i; j++ {
				if us[j].v >= 0 {
					t.kinds[us[j].v] = Userinfo
					t.userDyn = true
				}
			}
			hs = i + 1
			break
		}
	}
	// Values after a complete written host or port, with nothing written
	// after them before the path, start the path (http://h:8081$(path)).
	last := -1
	for i := end - 1; i >= hs; i-- {
		if us[i].v < 0 {
			last = i
			break
		}
	}
	if last >= 0 && last < end-1 {
		if c := us[last].c; isAlnum(c) || c == ']' {
			end = last + 1
		}
	}
	pc := -1
	inBracket := false
	for i := hs; i < end && pc < 0; i++ {
		switch {
		case us[i].v >= 0:
		case us[i].c == '[':
			inBracket = true
		case us[i].c == ']':
			inBracket = false
		case us[i].c == ':' && !inBracket:
			pc = i
		}
	}
	hostEnd := end
	if pc >= 0 {
		hostEnd = pc
	}
	switch {
	case hostEnd-hs == 1 && us[hs].v >= 0 && pc < 0:
		t.kinds[us[hs].v] = Authority
		t.hostDyn, t.portDyn = true, true
	case hostEnd-hs == 1 && us[hs].v >= 0:
		t.kinds[us[hs].v] = WholeHost
		t.hostDyn = true
	default:
		for i := hs; i < hostEnd; i++ {
			if us[i].v >= 0 {
				t.kinds[us[i].v] = Host
				t.hostDyn = true
			}
		}
	}
	for i := hostEnd + 1; i < end; i++ {
		if us[i].v >= 0 {
			t.kinds[us[i].v] = Port
			t.portDyn = true
		}
	}
	return end
}

func bytesOf(us []unit) []byte {
	b := make([]byte, 0, len(us))
	for _, u := range us {
		b = append(b, u.c)
	}
	return b
}

// Kinds are the parts of the URL the template's values stand in, in order.
func (t *Template) Kinds() []Kind { return append([]Kind(nil), t.kinds...) }

// HostDynamic tells whether the host comes from a value.
func (t *Template) HostDynamic() bool { return t.hostDyn }

// Dynamic tells which of scheme, userinfo, host and port come from values.
func (t *Template) Dynamic() (scheme, user, host, port bool) {
	return t.schemeDyn, t.userDyn, t.hostDyn, t.portDyn
}

// Render substitutes values (one per placeholder, in order), each encoded
// for its part of the URL. A value with a control character, a value that
// cannot stand in its part, or a path that gains a "." or ".." segment is
// refused. The result still needs Check once parsed.
func (t *Template) Render(values []string) (string, *Refusal) {
	if len(values) != len(t.kinds) {
		return "", refuse(InvalidURL, "wrong number of values")
	}
	s, r := t.render(func(k Kind, i int) (string, *Refusal) {
		v := values[i]
		if HasCTL(v, false) {
			return "", refuse(BadClientValue, "a "+k.String()+" value holds a control character")
		}
		return encode(k, v)
	})
	if r != nil {
		return "", r
	}
	if t.pathValues && dotSegments(pathOf(s)) > t.dots {
		return "", refuse(BadValue, "a value makes a . or .. path segment")
	}
	return s, nil
}

func (t *Template) render(value func(k Kind, i int) (string, *Refusal)) (string, *Refusal) {
	var b strings.Builder
	i := 0
	for _, p := range t.parts {
		if !p.Value {
			b.WriteString(p.Text)
			continue
		}
		v, r := value(t.kinds[i], i)
		if r != nil {
			return "", r
		}
		b.WriteString(v)
		i++
	}
	return b.String(), nil
}

// encode encodes or checks one value for its kind.
func encode(k Kind, v string) (string, *Refusal) {
	switch k {
	case Scheme:
		for i := 0; i < len(v); i++ {
			if !isSchemeChar(v[i]) {
				return "", refuse(BadValue, "a scheme value holds a character a scheme cannot")
			}
		}
		return v, nil
	case Base:
		lv := strings.ToLower(v)
		if !strings.HasPrefix(lv, "http://") && !strings.HasPrefix(lv, "https://") {
			return "", refuse(BadValue, "a base URL value must start with http:// or https://")
		}
		if strings.ContainsAny(v, "?# \\") {
			return "", refuse(BadValue, "a base URL value cannot hold a query, a fragment, a space or a backslash")
		}
		return v, nil
	case Userinfo:
		return escapeStrict(v), nil
	case Host:
		if !hostChars(v) {
			return "", refuse(BadValue, "a host value holds a character a host name cannot")
		}
		return v, nil
	case WholeHost:
		if !wholeHost(v) {
			return "", refuse(BadValue, "a host value is not a host name or [IPv6] literal")
		}
		return v, nil
	case Authority:
		h, port := v, ""
		if strings.HasPrefix(v, "[") {
			if j := strings.IndexByte(v, ']'); j > 0 {
				h, port = v[:j+1], v[j+1:]
			}
		} else if j := strings.IndexByte(v, ':'); j >= 0 {
			h, port = v[:j], v[j:]
		}
		if !wholeHost(h) || port != "" && (port[0] != ':' || !digits(port[1:])) {
			return "", refuse(BadValue, "an authority value is not host[:port]")
		}
		return v, nil
	case Port:
		if !digits(v) || len(v) > 5 {
			return "", refuse(BadValue, "a port value is not a number")
		}
		return v, nil
	case PathTail:
		if v == "" {
			return "", nil
		}
		if v[0] != '/' {
			return "", refuse(BadValue, "a path value after the host must start with /")
		}
		if climbs(v) {
			return "", refuse(BadValue, "a path value holds a .. segment")
		}
		segs := strings.Split(v[1:], "/")
		for i, s := range segs {
			segs[i] = url.PathEscape(s)
		}
		return "/" + strings.Join(segs, "/"), nil
	case Segment:
		// Its '/' and '\' are encoded, yet some servers decode them before
		// resolving dot segments: a ".." between them is refused too.
		if climbs(v) {
			return "", refuse(BadValue, "a path value holds a .. segment")
		}
		return url.PathEscape(v), nil
	case Fragment:
		return url.PathEscape(v), nil
	case QueryKey, QueryValue:
		return url.QueryEscape(v), nil
	}
	return "", refuse(InvalidURL, "a value of unknown kind")
}

// Check decides whether u, a rendered URL or the one request.by_lua left,
// may be sent: http or https with a host; the scheme, userinfo, host and
// port the template's text fixes unchanged; a host from a value allowed by
// pol; never one of sidecall's own listeners.
func (t *Template) Check(u *url.URL, pol *HostPolicy) *Refusal {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" || u.Opaque != "" {
		return refuse(InvalidURL, "not an http or https URL")
	}
	host := u.Hostname()
	if host == "" {
		return refuse(InvalidURL, "no host")
	}
	f := t.fixed
	switch {
	case !t.schemeDyn && !strings.EqualFold(scheme, f.Scheme):
		return refuse(FixedPart, "the scheme differs from the configured one")
	case !t.userDyn && userString(u) != userString(f):
		return refuse(FixedPart, "the userinfo differs from the configured one")
	case !t.hostDyn && canonicalHost(host) != canonicalHost(f.Hostname()):
		return refuse(FixedPart, "the host differs from the configured one")
	case !t.portDyn && u.Port() != f.Port():
		return refuse(FixedPart, "the port differs from the configured one")
	}
	if !t.hostDyn && !t.portDyn {
		return nil // the operator's host and port: Self is theirs to reach
	}
	return pol.Check(scheme, host, u.Port(), t.hostDyn)
}

func userString(u *url.URL) string {
	if u.User == nil {
		return ""
	}
	return u.User.String() + "@"
}

// pathOf is the path of a URL string: after "scheme://authority", up to
// '?' or '#'.
func pathOf(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return ""
	}
	s = s[i+3:]
	j := strings.IndexAny(s, "/?#")
	if j < 0 || s[j] != '/' {
		return ""
	}
	s = s[j:]
	if k := strings.IndexAny(s, "?#"); k >= 0 {
		s = s[:k]
	}
	return s
}

// dotSegments counts the "." and ".." segments of an escaped path, after
// one percent-decoding (%2e%2e counts), and taking %2F and %5C for
// separators as some servers do before resolving dot segments.
func dotSegments(p string) int {
	if strings.Contains(p, "%") {
		p = encodedSeparators.Replace(p)
	}
	n := 0
	for _, s := range strings.Split(p, "/") {
		if isDot(s) {
			n++
		}
	}
	return n
}

var encodedSeparators = strings.NewReplacer("%2F", "/", "%2f", "/", "%5C", "/", "%5c", "/")

func isDot(seg string) bool {
	d := decodeOnce(seg)
	return d == "." || d == ".."
}

// decodeOnce is seg percent-decoded once (as it is when not valid).
func decodeOnce(seg string) string {
	if strings.Contains(seg, "%") {
		if d, err := url.PathUnescape(seg); err == nil {
			return d
		}
	}
	return seg
}

// climbs tells whether v has a ".." part between '/' or '\\' separators.
func climbs(v string) bool {
	for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == '/' || r == '\\' }) {
		if p == ".." {
			return true
		}
	}
	return false
}

// escapeStrict percent-encodes everything but unreserved characters.
func escapeStrict(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func wholeHost(v string) bool {
	if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
		a, err := netip.ParseAddr(v[1 : len(v)-1])
		return err == nil && a.Is6() && a.Zone() == ""
	}
	return hostChars(v)
}

func hostChars(v string) bool {
	for i := 0; i < len(v); i++ {
		if !isHostChar(v[i]) {
			return false
		}
	}
	return true
}

func digits(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isHostChar(c byte) bool { return isAlnum(c) || c == '-' || c == '_' || c == '.' }

func isSchemeChar(c byte) bool { return isAlnum(c) || c == '+' || c == '-' || c == '.' }
