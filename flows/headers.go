package flows

import (
	"sort"
	"strings"
)

// Headers is a header map with lower-case keys and ordered values.
type Headers map[string][]string

// Get returns the first value of name, or "".
func (h Headers) Get(name string) string {
	if v := h[strings.ToLower(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Values returns every value of name.
func (h Headers) Values(name string) []string { return h[strings.ToLower(name)] }

// Has tells whether name is present.
func (h Headers) Has(name string) bool { _, ok := h[strings.ToLower(name)]; return ok }

// Set replaces name's values with v.
func (h Headers) Set(name, v string) { h[strings.ToLower(name)] = []string{v} }

// Add appends v to name's values.
func (h Headers) Add(name, v string) {
	k := strings.ToLower(name)
	h[k] = append(h[k], v)
}

// Del removes name.
func (h Headers) Del(name string) { delete(h, strings.ToLower(name)) }

// Clone returns a deep copy.
func (h Headers) Clone() Headers {
	out := make(Headers, len(h))
	for k, v := range h {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// Keys returns the names in sorted order.
func (h Headers) Keys() []string {
	ks := make([]string, 0, len(h))
	for k := range h {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
