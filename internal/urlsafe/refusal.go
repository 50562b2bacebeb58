// Package urlsafe keeps request data substituted into a URL inside the part
// of the URL it stands in, and decides which hosts a URL built from request
// data may reach. request-callout (templated callout URLs) and flow-callout
// (service path + request path) share it.
//
// The rules:
//   - A URL template is split at load by its written text into scheme,
//     userinfo, host, port, path, query and fragment; each $(...) value is
//     encoded for the part it stands in (see Kind).
//   - A value never changes a scheme, userinfo, host or port the written
//     text fixes: Check compares the URL actually sent with those parts.
//   - A host that comes from a value must pass a HostPolicy: listed in
//     allowed_hosts (exact or *.suffix), never loopback, link-local,
//     unspecified, cloud metadata or sidecall's own listeners unless listed
//     exactly (own listeners: never). Hosts are compared as written (no
//     DNS); IP literals are parsed in every form a resolver accepts
//     (0x7f.1, 2130706433, 127.1, 0177.0.0.1, [::ffff:127.0.0.1]).
//   - Control characters (CR, LF, NUL, ...) in a value are the client's
//     fault (BadClientValue), never encoded away.
package urlsafe

// Reason is why a URL was refused; it is a metric label, so the set is
// small and fixed.
type Reason string

// The reasons a URL is refused.
const (
	// BadClientValue: a value holds a control character (CR, LF, NUL, ...).
	BadClientValue Reason = "bad_client_value"
	// BadValue: a value cannot stand in its part of the URL (a '/' in a
	// host, a letter in a port, a "." or ".." path segment, ...).
	BadValue Reason = "url_component"
	// FixedPart: the URL changes a scheme, userinfo, host or port the
	// template's written text fixes.
	FixedPart Reason = "fixed_part"
	// HostNotAllowed: a host from a value is not in allowed_hosts.
	HostNotAllowed Reason = "host_not_allowed"
	// ForbiddenHost: a host from a value is loopback, link-local,
	// unspecified or cloud metadata, and not listed exactly.
	ForbiddenHost Reason = "forbidden_host"
	// SelfAddress: the URL reaches one of sidecall's own listeners.
	SelfAddress Reason = "self"
	// InvalidURL: the URL does not parse, is not http(s) or has no host.
	InvalidURL Reason = "invalid_url"
)

// Refusal is a refused URL. Its text names the rule, never the value (which
// may be hostile, or secret).
type Refusal struct {
	Reason Reason
	Why    string
}

func (r *Refusal) Error() string { return "url refused (" + string(r.Reason) + "): " + r.Why }

func refuse(r Reason, why string) *Refusal { return &Refusal{Reason: r, Why: why} }

// HasCTL tells whether s holds an ASCII control character (0x00-0x1f,
// 0x7f); allowTab lets HTAB through (legal in header values).
func HasCTL(s string, allowTab bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && !(allowTab && c == '\t') || c == 0x7f {
			return true
		}
	}
	return false
}
