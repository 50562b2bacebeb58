package urlsafe

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// HostPolicy decides where a URL whose host comes from request data may go.
// It is immutable once made; Check is safe for concurrent use.
type HostPolicy struct {
	names    map[string]bool     // exact names: lower case, no trailing dot
	ips      map[netip.Addr]bool // exact IP literals (unmapped, no zone)
	suffixes []string            // ".example.com" for "*.example.com"
	self     *Self
}

// NewHostPolicy makes the policy of one allowed_hosts list; self are
// sidecall's own listeners (may be nil). An invalid entry is an error (see
// ValidAllowedHost).
func NewHostPolicy(allowed []string, self *Self) (*HostPolicy, error) {
	p := &HostPolicy{names: map[string]bool{}, ips: map[netip.Addr]bool{}, self: self}
	for _, a := range allowed {
		if err := ValidAllowedHost(a); err != nil {
			return nil, err
		}
		h := canonicalHost(a)
		if s, ok := strings.CutPrefix(h, "*."); ok {
			p.suffixes = append(p.suffixes, "."+s)
			continue
		}
		if ip, ok := ParseIP(h); ok {
			p.ips[ip] = true
			continue
		}
		p.names[h] = true
	}
	return p, nil
}

// ValidAllowedHost checks one allowed_hosts entry: a host name, an IP
// literal (IPv6 with or without brackets) or "*.suffix". No scheme, port or
// path; a bare "*" is refused (list the hosts).
func ValidAllowedHost(s string) error {
	h := canonicalHost(s)
	switch {
	case h == "":
		return fmt.Errorf("empty host")
	case h == "*":
		return fmt.Errorf("a bare * would allow every host; list the hosts or *.suffix")
	}
	if _, ok := ParseIP(h); ok {
		return nil
	}
	name, _ := strings.CutPrefix(h, "*.")
	if !validName(name) {
		return fmt.Errorf("%q is not a host name, IP literal or *.suffix (no scheme, port or path)", s)
	}
	return nil
}

// validName: dot-separated labels of letters, digits, '-' and '_'.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			if !isHostChar(l[i]) || l[i] == '.' {
				return false
			}
		}
	}
	return true
}

// Check decides whether host:port may be reached. hostDyn says the host
// came from request data (or a by_lua change of a templated host); a host
// the config wrote is the operator's choice and only the own-listener rule
// applies to it (its port may be dynamic). scheme gives the default port.
func (p *HostPolicy) Check(scheme, host, port string, hostDyn bool) *Refusal {
	h := canonicalHost(host)
	if h == "" {
		return refuse(InvalidURL, "no host")
	}
	ip, isIP := ParseIP(h)
	if p != nil && p.self.matches(h, ip, isIP, effectivePort(scheme, port)) {
		return refuse(SelfAddress, "the host is one of sidecall's own listeners")
	}
	if !hostDyn {
		return nil
	}
	if !isASCII(h) {
		return refuse(BadValue, "a host from a template must be ASCII (punycode)")
	}
	if p != nil && (isIP && p.ips[ip] || !isIP && p.names[h]) {
		return nil // listed exactly: the operator's choice, even loopback
	}
	if isIP && forbiddenIP(ip) || !isIP && forbiddenName(h) {
		return refuse(ForbiddenHost, "loopback, link-local, unspecified and metadata hosts need an exact allowed_hosts entry")
	}
	if p != nil && !isIP {
		for _, s := range p.suffixes {
			if strings.HasSuffix(h, s) {
				return nil
			}
		}
	}
	return refuse(HostNotAllowed, "the host is not in allowed_hosts")
}

// canonicalHost is host lower-cased, without brackets and one trailing
// dot: the form hosts are compared in.
func canonicalHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.TrimSuffix(h, ".")
}

func effectivePort(scheme, port string) int {
	if port == "" {
		if strings.EqualFold(scheme, "https") {
			return 443
		}
		return 80
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return -1
	}
	return n
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// ParseIP parses an IP literal in every form a resolver may accept: IPv6
// (with a zone, IPv4-mapped forms unmapped), dotted IPv4, and the inet_aton
// forms libc resolvers (Go's cgo resolver among them) turn into addresses:
// 1 to 4 parts, each decimal, 0x-hex or 0-octal, the last filling the
// remaining bytes (2130706433, 0x7f.1, 127.1, 0177.0.0.1). The zone is
// dropped.
func ParseIP(h string) (netip.Addr, bool) {
	h = canonicalHost(h)
	if a, err := netip.ParseAddr(h); err == nil {
		return a.WithZone("").Unmap(), true
	}
	return parseInetAton(h)
}

func parseInetAton(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		v, ok := atonPart(p)
		if !ok {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	last := len(vals) - 1
	for i := 0; i < last; i++ {
		if vals[i] > 0xff {
			return netip.Addr{}, false
		}
		n |= vals[i] << (8 * (3 - i))
	}
	if vals[last] >= 1<<(8*(4-last)) {
		return netip.Addr{}, false
	}
	n |= vals[last]
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

func atonPart(p string) (uint64, bool) {
	base := 10
	switch {
	case p == "":
		return 0, false
	case len(p) > 2 && (p[:2] == "0x" || p[:2] == "0X"):
		base, p = 16, p[2:]
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	}
	v, err := strconv.ParseUint(p, base, 32)
	return v, err == nil
}

var (
	ec2Metadata = netip.MustParseAddr("fd00:ec2::254")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	v4compat    = netip.MustParsePrefix("::/96")
	thisNet     = netip.MustParsePrefix("0.0.0.0/8")
)

// forbiddenIP: loopback, unspecified (0.0.0.0/8, ::), link-local
// (169.254.0.0/16 with 169.254.169.254, fe80::/10), link-local multicast,
// fd00:ec2::254, and IPv4 embedded in IPv4-compatible or NAT64 addresses.
func forbiddenIP(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a == ec2Metadata || a.Is4() && thisNet.Contains(a) {
		return true
	}
	if a.Is6() && (v4compat.Contains(a) || nat64.Contains(a)) {
		b := a.As16()
		return forbiddenIP(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	return false
}

// forbiddenName: names that mean this machine or a cloud metadata service
// without DNS (RFC 6761 localhost, the usual /etc/hosts aliases, GCE's).
func forbiddenName(h string) bool {
	switch h {
	case "metadata", "metadata.google.internal", "metadata.goog":
		return true
	}
	return localhostName(h)
}

// localhostName: RFC 6761 localhost and its usual /etc/hosts aliases.
func localhostName(h string) bool {
	switch h {
	case "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback":
		return true
	}
	return strings.HasSuffix(h, ".localhost")
}

// Self is sidecall's own listeners (the gRPC and admin listen addresses).
// A listener on an unspecified address (":9901", "0.0.0.0:9901") is
// reached through loopback, "localhost" and every local interface address.
type Self struct {
	addrs []selfAddr
	once  sync.Once
	local map[netip.Addr]bool
}

type selfAddr struct {
	name string     // a host name, "" for an IP
	ip   netip.Addr // valid for an IP
	any  bool       // unspecified: every local address
	port int
}

// NewSelf parses host:port listen addresses; others (unix sockets,
// addresses without a port) are skipped.
func NewSelf(addrs []string) *Self {
	s := &Self{}
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(a, "tcp://"), "http://"))
		if err != nil {
			continue
		}
		n, err := strconv.Atoi(port)
		if err != nil || n <= 0 || n > 65535 {
			continue
		}
		sa := selfAddr{port: n}
		h := canonicalHost(host)
		if ip, ok := ParseIP(h); ok {
			sa.ip, sa.any = ip, ip.IsUnspecified()
		} else if h == "" {
			sa.any = true
		} else {
			sa.name = h
		}
		s.addrs = append(s.addrs, sa)
	}
	return s
}

func (s *Self) matches(h string, ip netip.Addr, isIP bool, port int) bool {
	if s == nil {
		return false
	}
	for _, a := range s.addrs {
		if a.port != port {
			continue
		}
		switch {
		case a.any:
			if isIP && (ip.IsLoopback() || ip.IsUnspecified() || s.isLocal(ip)) || !isIP && localhostName(h) {
				return true
			}
		case a.name != "":
			if !isIP && h == a.name || localhostName(a.name) && (isIP && ip.IsLoopback() || !isIP && localhostName(h)) {
				return true
			}
		default:
			if isIP && ip == a.ip || a.ip.IsLoopback() && (!isIP && localhostName(h) || isIP && ip.IsUnspecified()) {
				return true
			}
		}
	}
	return false
}

// isLocal tells whether ip is one of this machine's interface addresses
// (read once, when a listener on an unspecified address needs them).
func (s *Self) isLocal(ip netip.Addr) bool {
	s.once.Do(func() {
		s.local = map[netip.Addr]bool{}
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ad, ok := netip.AddrFromSlice(n.IP); ok {
					s.local[ad.Unmap()] = true
				}
			}
		}
	})
	return s.local[ip]
}
