package urlsafe

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// tmpl compiles a template written with {} for each value.
func tmpl(t testing.TB, s string) *Template {
	t.Helper()
	tp, err := Compile(partsOf(s))
	if err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return tp
}

func partsOf(s string) []Part {
	var ps []Part
	for i, lit := range strings.Split(s, "{}") {
		if i > 0 {
			ps = append(ps, Part{Value: true})
		}
		ps = append(ps, Part{Text: lit})
	}
	return ps
}

func TestKinds(t *testing.T) {
	for src, want := range map[string][]Kind{
		"http://127.0.0.1:8081{}":   {PathTail},
		"http://h{}/x":              {PathTail},
		"http://[::1]{}":            {PathTail},
		"http://{}.svc.local/check": {Host},
		"http://api-{}/x":           {Host},
		"http://{}/":                {Authority},
		"http://u@{}":               {Authority},
		"http://{}:80/":             {WholeHost},
		"http://h:{}/":              {Port},
		"http://{}:{}@h/":           {Userinfo, Userinfo},
		"{}://h/":                   {Scheme},
		"HTTP{}://h/":               {Scheme},
		"{}/x/{}":                   {Base, Segment},
		"{}{}":                      {Base, PathTail},
		"{}?q={}":                   {Base, QueryValue},
		"http://h/items/{}/detail?user={}&{}=v&k={}#{}": {Segment, QueryValue, QueryKey, QueryValue, Fragment},
		"http://h/a{}b{}/c":                             {Segment, Segment},
		"http://h/?{}":                                  {QueryKey},
		"http://h/?a=b={}":                              {QueryValue},
		"http://h/#x?{}":                                {Fragment},
	} {
		if got := tmpl(t, src).Kinds(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: kinds %v, want %v", src, got, want)
		}
	}
	for _, src := range []string{"ftp://h/{}", "h/{}", "http:///{}", "/x/{}", "http:{}//h", "javascript:{}"} {
		if _, err := Compile(partsOf(src)); err == nil {
			t.Errorf("%s: compiled, want an error", src)
		}
	}
}

func render(t *testing.T, src string, pol *HostPolicy, vals ...string) (string, *Refusal) {
	t.Helper()
	tp := tmpl(t, src)
	s, r := tp.Render(vals)
	if r != nil {
		return "", r
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", refuse(InvalidURL, err.Error())
	}
	if r := tp.Check(u, pol); r != nil {
		return "", r
	}
	return s, nil
}

func TestRender(t *testing.T) {
	self := NewSelf([]string{"127.0.0.1:9901", ":7070"})
	loose, err := NewHostPolicy([]string{"*.svc.local", "127.0.0.1"}, self)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		src  string
		val  string
		want string // "" when refused with reason
		why  Reason
	}{
		// Today's reproductions.
		{"http://127.0.0.1:8081{}", "@127.0.0.1:9901/config", "", BadValue},
		{"http://127.0.0.1:8081{}", "/config", "http://127.0.0.1:8081/config", ""},
		{"http://127.0.0.1:8081{}", "/a b/..x/%2F", "http://127.0.0.1:8081/a%20b/..x/%252F", ""},
		{"http://127.0.0.1:8081{}", "/a/../b", "", BadValue},
		{"http://{}.svc.local/check", "127.0.0.1:9901/healthz?", "", BadValue},
		{"http://{}.svc.local/check", "tenant-1", "http://tenant-1.svc.local/check", ""},
		{"http://h/q?user={}", "bob&role=admin", "http://h/q?user=bob%26role%3Dadmin", ""},
		{"http://h/q?{}=1", "a=1&b", "http://h/q?a%3D1%26b=1", ""},
		{"http://h/items/{}/detail", "..?x=1#", "http://h/items/..%3Fx=1%23/detail", ""},
		{"http://h/items/{}/detail", "..%3F...%23", "http://h/items/..%253F...%2523/detail", ""},
		{"http://h/items/{}/detail", "../admin", "", BadValue},
		{"http://h/items/{}/detail", `..\\admin`, "", BadValue},
		{"http://h/items/{}/detail", "a/b\\c", "http://h/items/a%2Fb%5Cc/detail", ""},
		{"http://h{}", "/a/..\\b", "", BadValue},
		{"http://h/items/{}", "..", "", BadValue},
		{"http://h/items/{}", ".", "", BadValue},
		{"http://h/items/.{}/x", ".", "", BadValue},
		{"http://h/items/x.{}/x", ".", "http://h/items/x../x", ""},
		{"http://h/items/{}", "%2e%2e", "http://h/items/%252e%252e", ""},
		// Control characters are the client's.
		{"http://h/{}", "a\r\nb", "", BadClientValue},
		{"http://h/?q={}", "a\x00", "", BadClientValue},
		{"http://h/?q={}", "a\tb", "", BadClientValue},
		// Host, port, userinfo, scheme values.
		{"http://{}/", "api.svc.local", "http://api.svc.local/", ""},
		{"http://{}/", "api.svc.local:8443", "http://api.svc.local:8443/", ""},
		{"http://{}/", "evil.com", "", HostNotAllowed},
		{"http://{}/", "svc.local", "", HostNotAllowed},
		{"http://{}/", "u@x.svc.local", "", BadValue},
		{"http://{}/", "127.0.0.1:8080", "http://127.0.0.1:8080/", ""}, // listed exactly
		{"http://{}/", "127.1:8080", "http://127.1:8080/", ""},         // the same address
		{"http://{}/", "127.0.0.1:9901", "", SelfAddress},
		{"http://{}/", "localhost:7070", "", SelfAddress},
		{"http://{}/", "localhost:80", "", ForbiddenHost},
		{"http://{}:9901/", "127.0.0.1", "", SelfAddress},
		{"http://127.0.0.1:{}/", "9901", "", SelfAddress},
		{"http://127.0.0.1:{}/", "9902", "http://127.0.0.1:9902/", ""},
		{"http://127.0.0.1:{}/", "99/x", "", BadValue},
		{"http://{}:{}@h/", "a@b:c", "http://a%40b%3Ac:a%40b%3Ac@h/", ""},
		{"{}://h/", "https", "https://h/", ""},
		{"{}://h/", "file", "", InvalidURL},
		{"{}://h/", "http://evil/?", "", BadValue},
		// A base URL: every part dynamic.
		{"{}/x", "https://a.svc.local/v1", "https://a.svc.local/v1/x", ""},
		{"{}/x", "https://a.svc.local/v1/..", "", BadValue},
		{"{}/x", "https://evil.com", "", HostNotAllowed},
		{"{}/x", "http://a.svc.local?q", "", BadValue},
		{"{}/x", "ftp://a.svc.local", "", BadValue},
		{"{}/x", "http://[::1]:7070", "", SelfAddress},
	} {
		got, r := render(t, c.src, loose, repeat(c.val, strings.Count(c.src, "{}"))...)
		switch {
		case c.want != "" && r != nil:
			t.Errorf("%s with %q: refused (%v), want %s", c.src, c.val, r, c.want)
		case c.want != "" && got != c.want:
			t.Errorf("%s with %q: %s, want %s", c.src, c.val, got, c.want)
		case c.want == "" && (r == nil || r.Reason != c.why):
			t.Errorf("%s with %q: %q %v, want refused %s", c.src, c.val, got, r, c.why)
		}
		if r != nil && strings.Contains(r.Error(), c.val) && len(c.val) > 3 {
			t.Errorf("the refusal names the value: %v", r)
		}
	}
}

func repeat(v string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// Loopback, link-local, unspecified and metadata hosts from a value are
// refused in every spelling, even under a matching *.suffix, unless listed
// exactly; a written host is the operator's.
func TestForbiddenHosts(t *testing.T) {
	pol, err := NewHostPolicy([]string{"*.internal", "*.localhost", "*.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tp := tmpl(t, "http://{}/x")
	for _, h := range []string{"127.0.0.1", "127.1", "0x7f.1", "0X7F.0.0.1", "2130706433", "0177.0.0.1", "017700000001",
		"0x7f000001", "127.0.0.1.", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:0:0:1]", "localhost",
		"LOCALHOST.", "a.localhost", "localhost.localdomain", "ip6-localhost", "169.254.169.254", "169.254.1.1",
		"[fe80::1]", "[fd00:ec2::254]", "metadata.google.internal", "metadata", "0.0.0.0", "0", "[::]", "0.1.2.3",
		"[64:ff9b::7f00:1]", "[::127.0.0.1]", "[::ffff:169.254.169.254]", "2852039166"} {
		u, err := url.Parse("http://" + h + "/x")
		if err != nil {
			continue // never sent: Go cannot even parse it
		}
		if r := tp.Check(u, pol); r == nil || r.Reason != ForbiddenHost {
			t.Errorf("%s: %v, want %s", h, r, ForbiddenHost)
		}
	}
	u, _ := url.Parse("http://[fe80::1%25eth0]/x")
	if r := tp.Check(u, pol); r == nil || r.Reason != ForbiddenHost {
		t.Errorf("zoned link-local: %v", r)
	}
	exact, _ := NewHostPolicy([]string{"127.0.0.1", "metadata.google.internal", "::1"}, nil)
	for _, h := range []string{"127.0.0.1", "0x7f.1", "2130706433", "metadata.google.internal", "[::1]", "[::ffff:127.0.0.1]"} {
		u, _ := url.Parse("http://" + h + "/x")
		if r := tp.Check(u, exact); r != nil {
			t.Errorf("%s listed exactly: %v", h, r)
		}
	}
	static := tmpl(t, "http://127.0.0.1:9901/{}")
	u, _ = url.Parse("http://127.0.0.1:9901/x")
	if r := static.Check(u, nil); r != nil {
		t.Errorf("a written host is the operator's: %v", r)
	}
}

// ParseIP reads what resolvers read.
func TestParseIP(t *testing.T) {
	for in, want := range map[string]string{"127.1": "127.0.0.1", "0x7f.1": "127.0.0.1", "2130706433": "127.0.0.1",
		"0177.0.0.1": "127.0.0.1", "10.1.0x10": "10.1.0.16", "[::ffff:10.0.0.1]": "10.0.0.1", "1.2.3.4.": "1.2.3.4"} {
		a, ok := ParseIP(in)
		if !ok || a.String() != want {
			t.Errorf("%s: %v %v, want %s", in, a, ok, want)
		}
	}
	for _, in := range []string{"256.1.1.1", "1.2.3.4.5", "08.1.1.1", "0x", "4294967296", "a.b", "1..2", "example.com", ""} {
		if a, ok := ParseIP(in); ok {
			t.Errorf("%s: parsed as %v", in, a)
		}
	}
}

// A URL request.by_lua leaves keeps the written scheme, userinfo, host and
// port.
func TestCheckFixedParts(t *testing.T) {
	tp := tmpl(t, "http://svc.local:8080/a/{}")
	for raw, want := range map[string]Reason{
		"http://svc.local:8080/other?x=1": "",
		"HTTP://SVC.LOCAL:8080/":          "",
		"https://svc.local:8080/":         FixedPart,
		"http://evil:8080/":               FixedPart,
		"http://svc.local:9901/":          FixedPart,
		"http://svc.local/":               FixedPart,
		"http://u:p@svc.local:8080/":      FixedPart,
		"ftp://svc.local:8080/":           InvalidURL,
		"http:///x":                       InvalidURL,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		r := tp.Check(u, nil)
		if want == "" && r != nil || want != "" && (r == nil || r.Reason != want) {
			t.Errorf("%s: %v, want %q", raw, r, want)
		}
	}
}

func TestAllowedHostsValidation(t *testing.T) {
	for _, ok := range []string{"api.example.com", "*.example.com", "10.0.0.1", "::1", "[::1]", "Host_1.svc.", "metadata.google.internal"} {
		if err := ValidAllowedHost(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "*", "http://x", "x:80", "x/y", "*.", "a..b", "*x.com", "x y", "**.x"} {
		if err := ValidAllowedHost(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestJoinPath(t *testing.T) {
	for _, c := range [][3]string{
		{"/check", "/orders", "/check/orders"},
		{"/check/", "/orders", "/check/orders"},
		{"/check", "/", "/check"},
		{"/check", "", "/check"},
		{"", "/x", "/x"},
		{"/check", "/../admin", "/check/admin"},
		{"/check", "/a/../../../admin", "/check/admin"},
		{"/", ".%2F0", "/0"}, // a dot segment once %2F is decoded
		{"/check", "/x/.%5Cy", "/check/x/y"},
		{"/check", "/%2e%2e/admin", "/check/admin"},
		{"/check", "/%2E%2e/%2e/admin", "/check/admin"},
		{"/check", "/a/b/..", "/check/a/"},
		{"/check", "/a/.", "/check/a/"},
		{"/check", "/..", "/check"},
		{"/check", "/a%3Fb%23c", "/check/a%3Fb%23c"},
		{"/check", "/a?b#c", "/check/a%3Fb%23c"},
		{"/check", "/a b/%zz/\x00", "/check/a%20b/%25zz/%00"},
		{"/check", "/a%2Fb", "/check/a%2Fb"},
		{"/check", "/a%2F..%2Fb", "/check/b"},
		{"/check", "/x/..%2F..%2F..%2Fadmin", "/check/admin"},
		{"/check", "/x/..%5c..%5Cadmin", "/check/admin"},
		{"/check", "/x/..\\..\\admin", "/check/admin"},
		{"/check", "//x", "/check//x"},
	} {
		if got := JoinPath(c[0], c[1]); got != c[2] {
			t.Errorf("JoinPath(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
	if got := CleanQuery("a=1&b=x y#frag&c=%zz"); got != "a=1&b=x%20y%23frag&c=%25zz" {
		t.Errorf("CleanQuery: %s", got)
	}
}
