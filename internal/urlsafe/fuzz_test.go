package urlsafe

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzRenderURL: for any template (values written {}) and any values, a
// rendered URL that parses never changes a scheme, userinfo, host or port
// the written text fixes, never adds a path segment or a "."/".." segment
// the written path does not have, and never adds a query pair or a
// fragment. Check is not consulted: this is the encoding alone.
func FuzzRenderURL(f *testing.F) {
	for _, s := range [][4]string{
		{"http://127.0.0.1:8081{}", "@127.0.0.1:9901/config", "", ""},
		{"http://{}.svc.local/check", "127.0.0.1:9901/healthz?", "", ""},
		{"http://h/q?user={}&x={}", "bob%26role%3Dadmin", "bob&role=admin", ""},
		{"http://h/items/{}/detail#{}", "..%3F...%23", "..?x#", ""},
		{"http://u:{}@h:{}/a/.{}/b?{}={}", "p@ss", "80", "."},
		{"{}/v1/{}?k={}", "https://x.svc/p", "../..", "&a=b"},
		{"https://{}:{}/{}", "[::1]", "99", "%2e%2e"},
		{"http://{}/", "h:1@evil", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, src, v0, v1, v2 string) {
		tp, err := Compile(partsOf(src))
		if err != nil {
			return
		}
		vals := make([]string, len(tp.kinds))
		for i := range vals {
			vals[i] = []string{v0, v1, v2}[i%3]
		}
		s, r := tp.Render(vals)
		if r != nil {
			return
		}
		u, err := url.Parse(s)
		if err != nil {
			return // refused as invalid_url by the caller
		}
		probe, _ := tp.render(func(k Kind, _ int) (string, *Refusal) { return standIn[k], nil })
		pu := tp.fixed
		sd, ud, hd, pd := tp.Dynamic()
		if !sd && !strings.EqualFold(u.Scheme, pu.Scheme) {
			t.Fatalf("%s: scheme %q, written %q", s, u.Scheme, pu.Scheme)
		}
		if !ud && userString(u) != userString(pu) {
			t.Fatalf("%s: userinfo %q, written %q", s, userString(u), userString(pu))
		}
		if !hd && !strings.EqualFold(u.Hostname(), pu.Hostname()) {
			t.Fatalf("%s: host %q, written %q", s, u.Hostname(), pu.Hostname())
		}
		if !pd && u.Port() != pu.Port() {
			t.Fatalf("%s: port %q, written %q", s, u.Port(), pu.Port())
		}
		base, tail := false, false
		for _, k := range tp.kinds {
			base = base || k == Base
			tail = tail || k == PathTail
		}
		gp, pp := pathOf(s), pathOf(probe)
		if dotSegments(gp) > dotSegments(pp) || climbSegments(gp) > climbSegments(pp) {
			t.Fatalf("%s: a value added a dot segment (written path %s)", s, pp)
		}
		if !base && !tail && strings.Count(gp, "/") != strings.Count(pp, "/") {
			t.Fatalf("%s: a value changed the path's segments (written path %s)", s, pp)
		}
		if pre := tp.writtenPathPrefix(); !base && !tail && !strings.HasPrefix(gp, pre) {
			t.Fatalf("%s: path %s left the written prefix %s", s, gp, pre)
		}
		// The query keeps its pairs; the fragment stays the written one's.
		if strings.Count(u.RawQuery, "&") != strings.Count(tp.fixed.RawQuery, "&") ||
			strings.Count(u.RawQuery, "=") != strings.Count(tp.fixed.RawQuery, "=") {
			t.Fatalf("%s: query %q, written %q", s, u.RawQuery, tp.fixed.RawQuery)
		}
		if (u.Fragment != "" || u.RawFragment != "") != strings.Contains(probe, "#") && !strings.Contains(probe, "#") {
			t.Fatalf("%s: a value added a fragment", s)
		}
	})
}

// writtenPathPrefix is the written path up to the first path value.
func (t *Template) writtenPathPrefix() string {
	s, _ := t.render(func(k Kind, _ int) (string, *Refusal) {
		if k == Segment || k == PathTail {
			return "\x01", nil
		}
		return standIn[k], nil
	})
	p, _, _ := strings.Cut(pathOf(s), "\x01")
	return p
}

// climbSegments counts the ".." segments of an escaped path as a server
// that decodes %2F and %5C before resolving dot segments sees them.
func climbSegments(p string) int {
	r := strings.NewReplacer("%2F", "/", "%2f", "/", "%5C", "/", "%5c", "/", "\\", "/").Replace(p)
	n := 0
	for _, s := range strings.Split(r, "/") {
		if decodeOnce(s) == ".." {
			n++
		}
	}
	return n
}

// FuzzJoinPath: whatever the request path, the joined path starts with the
// service path, holds no '?', '#' or byte a path cannot hold, and has no
// "." or ".." segment, even to a server decoding %2F and %5C first.
func FuzzJoinPath(f *testing.F) {
	for _, s := range []string{"/../admin", "/%2e%2e/x", "/a%2F..%2F..%2Fb", "/a?b#c", "/x/..\\..\\y", "//", "/%", "/.%2e/", ".%2F0", "/x/.%5Cy"} {
		f.Add("/check", s)
	}
	f.Fuzz(func(t *testing.T, svc, req string) {
		if !strings.HasPrefix(svc, "/") || strings.ContainsAny(svc, "?#%\\") || dotSegments(svc) > 0 || HasCTL(svc, false) {
			return // the service path is the operator's, escaped
		}
		got := JoinPath(svc, req)
		if !strings.HasPrefix(got, strings.TrimSuffix(svc, "/")) {
			t.Fatalf("JoinPath(%q, %q) = %q: left the service path", svc, req, got)
		}
		rest := strings.TrimPrefix(got, strings.TrimSuffix(svc, "/"))
		if dotSegments(rest) > 0 || climbSegments(rest) > 0 {
			t.Fatalf("JoinPath(%q, %q) = %q: a dot segment", svc, req, got)
		}
		for i := 0; i < len(rest); i++ {
			if c := rest[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("?#\\\"<>[]^`{|}", c) >= 0 {
				t.Fatalf("JoinPath(%q, %q) = %q: byte %q in the path", svc, req, got, c)
			}
		}
		if _, err := url.Parse("http://h" + got); err != nil {
			t.Fatalf("JoinPath(%q, %q) = %q: %v", svc, req, got, err)
		}
	})
}
