// Package httpx holds the HTTP rules every plugin applies the same way:
// which header names and methods are valid, and which headers belong to
// one connection and are never forwarded.
package httpx

// ValidHeaderName tells whether s is an RFC 9110 field name (a token).
func ValidHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tchar[s[i]] {
			return false
		}
	}
	return true
}

var tchar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = true
	}
	return t
}()

// ValidMethod tells whether m is an upper-case method name, as Kong's
// schemas require (^[A-Z]+$).
func ValidMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

// HopByHop tells whether the lower-case name is a connection-specific header
// (RFC 9110 section 7.6.1, plus the common proxy-connection) that a proxy
// never forwards.
func HopByHop(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
		"te", "trailer", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// NotForwarded tells whether a sub-request sidecall makes (a callout, a
// shared flow) must leave the lower-case header out: hop-by-hop headers,
// and host and content-length, which belong to the new request.
func NotForwarded(name string) bool {
	return name == "host" || name == "content-length" || HopByHop(name)
}
