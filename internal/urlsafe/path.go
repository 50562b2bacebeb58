package urlsafe

import "strings"

// JoinPath joins a service's escaped path and a request's raw (escaped)
// path the way Kong's path_handling v0 does ("/check" + "/orders" =
// "/check/orders"; a request path "/" or "" gives the service path), such
// that the request path stays below the service path: its "." and ".."
// segments (%2e%2e too) are resolved within the request path alone, never
// climbing above its root, and any byte that cannot stand in a path ('?',
// '#', space, control and non-ASCII bytes, a '%' not starting an escape)
// is percent-encoded. Escapes the client sent (%2F, %3F) are kept as they
// are. The result is an escaped path.
func JoinPath(service, request string) string {
	if service == "" {
		service = "/"
	}
	req := CleanPath(request)
	if req == "/" {
		return service
	}
	return strings.TrimSuffix(service, "/") + req
}

// CleanPath is an escaped absolute path with its dot segments resolved
// (clamped at the root) and the bytes a path cannot hold percent-encoded.
func CleanPath(p string) string {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, s := range segs {
		segs[i] = escapeRaw(s, false)
	}
	if strings.Contains(p, "%") || strings.Contains(p, "\\") {
		segs = splitEncodedSeparators(segs)
	}
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		last := i == len(segs)-1
		switch decodeOnce(s) {
		case ".":
			trailing = last
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
		default:
			out = append(out, s)
			trailing = false
		}
	}
	r := "/" + strings.Join(out, "/")
	if trailing && len(out) > 0 {
		r += "/"
	}
	return r
}

// splitEncodedSeparators splits the segments that hold a dot segment once
// their encoded slashes or backslashes (%2F, %5C) are decoded, as some
// servers do before resolving dot segments: "..%2F..%2Fadmin" is resolved
// as "../../admin", ".%2Fx" as "./x". Other segments, "a%2Fb" among them,
// are kept whole.
func splitEncodedSeparators(segs []string) []string {
	var out []string
	for _, s := range segs {
		if !hasDotPart(decodeOnce(s)) {
			out = append(out, s)
			continue
		}
		r := encodedSeparators.Replace(s)
		out = append(out, strings.Split(r, "/")...)
	}
	return out
}

// CleanQuery is a raw query string with the bytes a query cannot hold
// ('#', space, control and non-ASCII bytes, a '%' not starting an escape)
// percent-encoded: it stays one query, whatever the client sent.
func CleanQuery(q string) string { return escapeRaw(q, true) }

// escapeRaw percent-encodes the bytes of an already escaped path segment
// (or query) that are not unreserved, sub-delims, ':' or '@' (and '/',
// '?' in a query), and '%' not followed by two hex digits.
func escapeRaw(s string, query bool) string {
	const hex = "0123456789ABCDEF"
	ok := func(i int) bool {
		c := s[i]
		switch {
		case isAlnum(c), strings.IndexByte("-._~!$&'()*+,;=:@", c) >= 0:
			return true
		case c == '%':
			return i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2])
		case c == '/' || c == '?':
			return query
		}
		return false
	}
	i := 0
	for i < len(s) && ok(i) {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		if ok(i) {
			b.WriteByte(s[i])
			continue
		}
		c := s[i]
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func ishex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// hasDotPart tells whether v, split at '/' and '\\', has a "." or ".." part.
func hasDotPart(v string) bool {
	for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == '/' || r == '\\' }) {
		if p == "." || p == ".." {
			return true
		}
	}
	return false
}
