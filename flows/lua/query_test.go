package lua

import "testing"

// Kong's set_query and form set_body: ngx.encode_args per key (%20 for a
// space, a bare key for true, nothing for false), the per-key strings
// sorted (so "a-b=1" sorts before "a=x").
func TestEncodeQueryLikeKong(t *testing.T) {
	got := EncodeQuery(map[string]any{
		"a": "x", "a-b": "1", "k y": "v w+/", "f": false, "t": true, "e": "",
		"l": []any{"1", true, false, int64(2)}, "empty": []any{},
	})
	if want := "a-b=1&a=x&e=&k%20y=v%20w%2B%2F&l=1&l&l=2&t"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// Kong's documented example.
	got = EncodeQuery(map[string]any{"foo": "hello world", "bar": []any{"baz", "bla", true}, "zzz": true, "blo": ""})
	if want := "bar=baz&bar=bla&bar&blo=&foo=hello%20world&zzz"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
