// Package transformer is Kong's request-transformer and
// response-transformer plugins (Kong OSS schemas and order of operations:
// remove, rename, replace, add, append).
//
// Choices where sidecall differs from Kong or Kong is silent:
//   - JSON bodies keep their key order and their numbers as written (Kong
//     re-encodes through cjson: random key order, 14 significant digits).
//     A JSON body that is not an object (an array, a scalar) is left as
//     it is.
//   - Form bodies and query strings are re-encoded with their keys sorted,
//     as kong.service.request.set_query does (Kong's form re-encoding uses
//     Lua table order).
//   - multipart/form-data bodies are parsed by Go's mime/multipart and
//     written back with their boundary: part headers keep their values,
//     not their order or spelling.
//   - Content-Length is left to the processor, which sets it (or lets
//     Envoy drop it) whenever a body changes.
package transformer

import (
	"regexp"
	"strings"

	"github.com/sidecall/sidecall/flows"
)

// Kong's priorities.
const (
	RequestPriority  = 801
	ResponsePriority = 800
)

// Register adds request-transformer and response-transformer to r.
func Register(r *flows.Registry) {
	r.Register("request-transformer", RequestPriority, newRequestTransformer)
	r.Register("response-transformer", ResponsePriority, newResponseTransformer)
}

// Operation indexes, in the order Kong applies them.
const (
	opRemove = iota
	opRename
	opReplace
	opAdd
	opAppend
	nOps
)

var opNames = [nOps]string{"remove", "rename", "replace", "add", "append"}

// splitEntry splits a config entry as Kong's iterators do
// (^([^:]+):*(.-)$): the name ends at the first colon, every colon after
// it is skipped, the rest is the value. ok is false when there is no name.
func splitEntry(s string) (name, value string, ok bool) {
	i := strings.IndexByte(s, ':')
	switch {
	case s == "" || i == 0:
		return "", "", false
	case i < 0:
		return s, "", true
	}
	return s[:i], strings.TrimLeft(s[i+1:], ":"), true
}

// kongHeaderName is Kong's validate_header_name, which the transformer
// schemas apply (stricter than RFC 9110 tokens).
var kongHeaderName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// hasColon is the schemas' match = "^[^:]+:.*$".
func hasColon(s string) bool {
	i := strings.IndexByte(s, ':')
	return i > 0
}

// truthy is Lua truthiness of a decoded JSON value: only absent and false
// are false (JSON null is cjson.null, a true value).
func truthy(v jsonValue, ok bool) bool { return ok && string(v) != "false" }

// appendValue is Kong's append_value on a query or form value: a string
// becomes a two-element list, a list grows, anything else (absent, a bare
// key) is replaced by a one-element list.
func appendValue(cur any, v any) any {
	switch c := cur.(type) {
	case string:
		return []any{c, v}
	case []any:
		return append(c, v)
	}
	return []any{v}
}

// sameValues compares header value lists.
func sameValues(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
