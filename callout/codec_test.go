package callout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sidecall/sidecall/flows"
)

// jsonRoundTrip is what a cache hit gave before the binary form.
func jsonRoundTrip(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCodecMatchesJSONRoundTrip(t *testing.T) {
	cases := []struct {
		name   string
		v      map[string]any
		binary bool
	}{
		{"stored response", map[string]any{"status": 200, "headers": map[string]any{"content-type": "application/json",
			"set-cookie": []any{"a=1", "b=2"}}, "body": map[string]any{"token": "t", "n": 1.5, "ok": true, "nil": nil,
			"list": []any{int64(1), "x", false, map[string]any{}, []any{}}}}, true},
		{"raw body", map[string]any{"status": 204, "body": "not json \u00e9 \"quoted\"\n"}, true},
		{"empty", map[string]any{}, true},
		{"lua numbers", map[string]any{"status": int64(201), "i32": int32(-7), "u": uint64(1) << 60, "big": int64(1)<<62 + 1,
			"neg": -0.0, "tiny": math.SmallestNonzeroFloat64}, true},
		{"nil containers", map[string]any{"m": map[string]any(nil), "l": []any(nil)}, true},
		{"empty strings", map[string]any{"": "", "k": []any{""}}, true},
		{"invalid utf-8 value", map[string]any{"body": "a\xffb"}, false},
		{"invalid utf-8 key", map[string]any{"a\xff": 1}, false},
		{"float32", map[string]any{"f": float32(0.1)}, false},
		{"json.Number", map[string]any{"n": json.Number("12345678901234567890")}, false},
		{"[]string", map[string]any{"h": []string{"a", "b"}}, false},
		{"other map type", map[string]any{"h": map[string]string{"a": "b"}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc, ok := encodeResponse(c.v)
			if !ok {
				t.Fatal("not storable")
			}
			if got := enc[0] == codecBinary; got != c.binary {
				t.Fatalf("binary = %v, want %v (%q)", got, c.binary, enc)
			}
			got, ok := decodeResponse(enc)
			if !ok {
				t.Fatal("stored value does not decode")
			}
			if want := jsonRoundTrip(t, c.v); !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded %#v\nwant    %#v", got, want)
			}
		})
	}
}

func TestCodecDeepAndCyclic(t *testing.T) {
	deep := map[string]any{}
	cur := deep
	for i := 0; i < 3*maxCodecDepth; i++ {
		n := map[string]any{}
		cur["n"] = []any{n}
		cur = n
	}
	enc, ok := encodeResponse(deep)
	if !ok || enc[0] != '{' {
		t.Fatalf("deep value: ok=%v first byte %q, want the JSON form", ok, enc[:1])
	}
	if got, ok := decodeResponse(enc); !ok || !reflect.DeepEqual(got, jsonRoundTrip(t, deep)) {
		t.Fatal("deep value does not round-trip")
	}
	cyc := map[string]any{"status": 200}
	cyc["self"] = cyc
	if _, ok := encodeResponse(cyc); ok {
		t.Fatal("cyclic value stored")
	}
	for _, v := range []map[string]any{{"f": math.NaN()}, {"f": math.Inf(1)}, {"f": func() {}}} {
		if _, ok := encodeResponse(v); ok {
			t.Fatalf("%v stored; encoding/json rejects it", v)
		}
	}
}

// Old (JSON) entries still hit; anything malformed or unknown is a miss,
// never a panic.
func TestCodecMalformedIsMiss(t *testing.T) {
	if m, ok := decodeResponse([]byte(`{"status":200,"body":{"token":"t"}}`)); !ok || m["status"] != 200.0 {
		t.Fatalf("JSON entry: %v %v", m, ok)
	}
	for _, v := range [][]byte{nil, {}, {0x02}, {codecBinary}, {codecBinary, tagString, 0}, []byte(`{"a":`), []byte(`null`), []byte(`[1]`)} {
		if _, ok := decodeResponse(v); ok {
			t.Fatalf("%q decoded", v)
		}
	}
	enc, _ := encodeResponse(map[string]any{"status": 200, "headers": map[string]any{"a": []any{"x", "y"}},
		"body": map[string]any{"token": "t", "n": 3.0, "b": true, "z": nil}})
	for i := 0; i < len(enc); i++ {
		if _, ok := decodeResponse(append([]byte(nil), enc[:i]...)); ok {
			t.Fatalf("truncation to %d bytes decoded", i)
		}
		for _, x := range []byte{0x00, 0x7f, 0x80, 0xff} {
			b := append([]byte(nil), enc...)
			b[i] ^= x
			_, _ = decodeResponse(b) // must not panic
		}
	}
	if _, ok := decodeResponse(append(append([]byte(nil), enc...), 0)); ok {
		t.Fatal("trailing byte accepted")
	}
	huge := []byte{codecBinary, tagObject, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
	if _, ok := decodeResponse(huge); ok {
		t.Fatal("impossible count accepted")
	}
}

// oldCacheKey is the key as first written (fmt into the hash, URL
// re-parsed): the faster cacheKey must give the same digest, so entries
// already in Redis stay valid and the composition is unchanged.
func oldCacheKey(route, plugin, name string, s *sendReq) string {
	h := sha256.New()
	w := func(s string) { fmt.Fprintf(h, "%d:%s|", len(s), s) }
	w(route)
	w(plugin)
	w(name)
	w(s.method)
	u, _ := url.Parse(s.u.String())
	q := u.Query()
	u.RawQuery = ""
	w(u.String())
	w(q.Encode())
	keys := make([]string, 0, len(s.headers))
	for k := range s.headers {
		if k != "User-Agent" && k != "Traceparent" && k != "Tracestate" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		w(k)
		w(strings.Join(s.headers[k], ","))
	}
	w(string(s.body))
	return hex.EncodeToString(h.Sum(nil))
}

func TestCacheKeyComposition(t *testing.T) {
	p := &Plugin{scope: flows.Scope{Route: "r1", PluginID: "p1"}}
	x := flows.NewExchange("r", flows.Request{Method: "GET", Path: "/"}, nil)
	x.Request.Headers.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	base := func() map[string]any {
		return map[string]any{"url": "http://svc.local:8080/a%2Fb/c?z=1&y=2#frag", "method": "GET",
			"query":   map[string]any{"q": "v w", "m": []any{"2", "1"}},
			"headers": map[string]any{"x-b": "2", "X-A": []any{"1", "0"}, "user-agent": "ua", "host": "h"}}
	}
	key := func(params map[string]any, removed ...string) (string, *sendReq) {
		t.Helper()
		s, err := p.sendFromParams(x, &callout{url: &template{}}, map[string]any{"request": map[string]any{"params": params}}, removed)
		if err != nil {
			t.Fatal(err)
		}
		k := p.cacheKey(x, "c", s, map[string]any{})
		if want := oldCacheKey("r1", "p1", "c", s); k != want {
			t.Fatalf("key %s, the original formula gives %s (url %s)", k, want, s.u)
		}
		return k, s
	}
	k0, _ := key(base())
	seen := map[string]string{k0: "base"}
	differ := func(what string, edit func(m map[string]any)) {
		t.Helper()
		m := base()
		edit(m)
		k, _ := key(m)
		if prev, dup := seen[k]; dup {
			t.Fatalf("%s gives the same key as %s", what, prev)
		}
		seen[k] = what
	}
	differ("method", func(m map[string]any) { m["method"] = "POST" })
	differ("url", func(m map[string]any) { m["url"] = "http://svc.local:8080/other" })
	differ("query value", func(m map[string]any) { m["query"].(map[string]any)["q"] = "x" })
	differ("query string", func(m map[string]any) { m["query"] = "b=2&a=1" })
	differ("header", func(m map[string]any) { m["headers"].(map[string]any)["x-c"] = "3" })
	differ("header value", func(m map[string]any) { m["headers"].(map[string]any)["x-b"] = "3" })
	differ("body", func(m map[string]any) { m["body"] = map[string]any{"b": 1, "a": "x"} })
	differ("raw body", func(m map[string]any) { m["body"] = "a=1" })

	// Same request, other order or defaults excluded: same key.
	same := func(what string, edit func(m map[string]any)) {
		t.Helper()
		m := base()
		edit(m)
		if k, _ := key(m); k != k0 {
			t.Fatalf("%s changed the key", what)
		}
	}
	same("user-agent", func(m map[string]any) { m["headers"].(map[string]any)["user-agent"] = "other" })
	same("url query order", func(m map[string]any) {
		m["url"] = "http://svc.local:8080/a%2Fb/c?y=2&z=1#frag"
	})
	same("query moved to the url", func(m map[string]any) {
		m["url"] = "http://svc.local:8080/a%2Fb/c?z=1&y=2&q=v+w#frag"
		delete(m["query"].(map[string]any), "q")
	})

	// Other scopes, callout names and the query given as a string (by_lua).
	m := base()
	m["query"] = "z=1&y=2&q=v%20w&m=2&m=1"
	if _, s := key(m); s.canonQuery {
		t.Fatal("a string query is not canonical")
	}
	s, _ := p.sendFromParams(x, &callout{url: &template{}}, map[string]any{"request": map[string]any{"params": base()}}, nil)
	for _, q := range []*Plugin{{scope: flows.Scope{Route: "r2", PluginID: "p1"}}, {scope: flows.Scope{Route: "r1", PluginID: "p2"}}} {
		if q.cacheKey(x, "c", s, map[string]any{}) == k0 {
			t.Fatalf("scope %+v gives the same key", q.scope)
		}
	}
	if p.cacheKey(x, "d", s, map[string]any{}) == k0 {
		t.Fatal("callout name not in the key")
	}
	if k := p.cacheKey(x, "c", s, map[string]any{"caching": map[string]any{"cache_key": "mine"}}); k != "mine" {
		t.Fatalf("caching.cache_key ignored: %s", k)
	}
}

// A value the codec does not know (another format, garbage) is a miss:
// the callout is called and the request goes on; an old JSON entry hits.
func TestCacheForeignValue(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"token": "live"})
	p := build(t, fmt.Sprintf(`{callouts: [{name: a, request: {url: %q, by_lua: "kong.ctx.shared.callouts.a.caching.cache_key = 'k'"}}], cache: {strategy: memory}}`, srv.URL))
	ctx := context.Background()
	run := func() string {
		t.Helper()
		x := newX("GET", "/", "", nil, "")
		if err := p.Access(ctx, x); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(ctxEntry(t, x, "a")["response"].(map[string]any)["body"])
	}
	for _, v := range [][]byte{{0x02, 1, 2}, {codecBinary, tagObject, 5}, []byte("[]")} {
		if err := p.cache.Set(ctx, "k", v, time.Minute); err != nil {
			t.Fatal(err)
		}
		before := rec.calls.Load()
		if got := run(); !strings.Contains(got, "live") || rec.calls.Load() != before+1 {
			t.Fatalf("value %q: body %s, calls %d->%d; want a call-through", v, got, before, rec.calls.Load())
		}
	}
	if err := p.cache.Set(ctx, "k", []byte(`{"status":200,"body":"{\"token\":\"old\"}"}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	before := rec.calls.Load()
	if got := run(); !strings.Contains(got, "old") || rec.calls.Load() != before {
		t.Fatalf("old JSON entry: body %s, calls %d->%d; want a hit", got, before, rec.calls.Load())
	}
}

// The literal url is parsed once; each request works on its own copy.
func TestParsedURLNotShared(t *testing.T) {
	rec := &recorder{}
	srv := jsonServer(t, rec, 200, map[string]string{"token": "t"})
	p := build(t, fmt.Sprintf(`{callouts: [{name: a, request: {url: "%s/p?a=1", query: {forward: true}}}]}`, srv.URL))
	for _, c := range []struct{ in, want string }{{"x=1", "a=1&x=1"}, {"y=2", "a=1&y=2"}, {"", "a=1"}} {
		if err := p.Access(context.Background(), newX("GET", "/", c.in, nil, "")); err != nil {
			t.Fatal(err)
		}
		if got := rec.last(t).Query; got != c.want {
			t.Fatalf("query %q: callout got %q, want %q", c.in, got, c.want)
		}
	}
}
