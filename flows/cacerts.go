package flows

// Kong's ca_certificates entities and the service fields that use them:
// ca_certificates (ids) and tls_verify_depth.
//
// Choices (Kong's schema and runloop, where it says):
//   - An entity holds exactly one PEM certificate, not expired, with the
//     CA basic constraint (Kong's ca_certificates entity check). Its id is
//     a UUID; an entity without an id cannot be referred to (a warning).
//     Two entities with the same certificate are an error (Kong's
//     cert_digest is unique); a cert_digest that does not match the
//     certificate is recomputed, as Kong does on write, with a warning.
//   - A service's ca_certificates build its trust store: the certificate is
//     verified against those CAs ONLY, not the system roots (Kong's
//     set_upstream_ssl_trusted_store). Without ca_certificates the system
//     roots are used. They need protocol https (Kong's service check).
//   - tls_verify_depth (0..64) is OpenSSL's verify depth: the most
//     intermediate CA certificates between the server's certificate and a
//     trusted CA. 0: the server certificate is signed by a listed CA
//     directly. Unset: no limit (Go's chain building).
//   - tls_verify: false skips verification, so both are then unused.

import (
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// CACertificateConfig is Kong's ca_certificates entity (decK).
type CACertificateConfig struct {
	EntityMeta `yaml:",inline"`
	ID         string   `yaml:"id"`
	Cert       string   `yaml:"cert"` // PEM, or a {vault://...} reference
	CertDigest string   `yaml:"cert_digest"`
	Tags       []string `yaml:"tags"`
}

// ServiceTLS is how a service's upstream certificate is checked.
type ServiceTLS struct {
	// Verify is tls_verify; unset is true (sidecall fails closed).
	Verify bool
	// Roots are the service's ca_certificates; nil means the system roots.
	Roots *x509.CertPool
	// CAIDs are the ca_certificates ids as the service lists them.
	CAIDs []string
	// Depth is tls_verify_depth: the most intermediate CA certificates
	// allowed between the server's certificate and a trusted CA; -1: no
	// limit.
	Depth int
	// Client is the client_certificate's certificates entity, presented
	// when sidecall calls the service; nil: none.
	Client *tls.Certificate

	key string // the setting's identity (CA digests, depth, verify, client)
}

// Key identifies the setting: services with equal keys verify alike and
// can share one transport.
func (t ServiceTLS) Key() string {
	if t.key == "" {
		return serviceTLSKey(t.Verify, t.Depth, nil, "")
	}
	return t.key
}

// ClientConfig is a tls.Config that verifies as the service says.
func (t ServiceTLS) ClientConfig() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.Client != nil {
		c.Certificates = []tls.Certificate{*t.Client}
	}
	if !t.Verify {
		c.InsecureSkipVerify = true //nolint:gosec // the service's tls_verify: false
		return c
	}
	c.RootCAs = t.Roots
	if depth := t.Depth; depth >= 0 {
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			return checkVerifyDepth(cs.VerifiedChains, depth)
		}
	}
	return c
}

// checkVerifyDepth accepts when one verified chain (leaf ... trusted CA)
// has at most depth intermediates.
func checkVerifyDepth(chains [][]*x509.Certificate, depth int) error {
	if len(chains) == 0 {
		return errors.New("tls_verify_depth: no verified certificate chain")
	}
	least := -1
	for _, ch := range chains {
		n := max(len(ch)-2, 0) // neither the leaf nor the trust anchor counts
		if n <= depth {
			return nil
		}
		if least < 0 || n < least {
			least = n
		}
	}
	return fmt.Errorf("certificate chain has %d intermediate CA certificates, more than tls_verify_depth %d", least, depth)
}

// TLS is the service's upstream TLS setting, resolved at load.
func (s *Service) TLS() ServiceTLS {
	if s == nil || s.Config == nil {
		return ServiceTLS{Verify: true, Depth: -1}
	}
	if s.Config.tls != nil {
		return *s.Config.tls
	}
	return ServiceTLS{Verify: boolOr(s.Config.TLSVerify, true), Depth: -1}
}

// caCert is a loaded ca_certificates entity.
type caCert struct {
	cert   *x509.Certificate
	digest string // sha256 of the DER, hex (Kong's cert_digest)
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// loadCACertificates checks the ca_certificates entities and returns them
// by id.
func loadCACertificates(b *Builder, list []CACertificateConfig) map[string]*caCert {
	byID := map[string]*caCert{}
	digestAt := map[string]Path{}
	now := time.Now()
	for i := range list {
		c := &list[i]
		at := Path("ca_certificates").Index(i)
		idOK := true
		switch {
		case c.ID == "":
			idOK = false
			if b.present(at) { // an entry, not a null
				b.Warnf("ca_certificates[%d] has no id: no service can use it", i)
			}
		case !uuidRE.MatchString(c.ID):
			b.Errorf(at.Key("id"), "must be a UUID, got %q", c.ID)
			idOK = false
		case byID[strings.ToLower(c.ID)] != nil:
			b.Errorf(at.Key("id"), "duplicate ca_certificates id %q", c.ID)
			idOK = false
		}
		if c.Cert == "" {
			b.Errorf(at.Key("cert"), "required field missing")
			continue
		}
		cert, err := parseCACert(c.Cert, now)
		if err != nil {
			b.Errorf(at.Key("cert"), "%v", err)
			continue
		}
		sum := sha256.Sum256(cert.Raw)
		cc := &caCert{cert: cert, digest: hex.EncodeToString(sum[:])}
		if prev, dup := digestAt[cc.digest]; dup {
			b.Errorf(at.Key("cert"), "the same certificate as %s (Kong's cert_digest is unique)", prev)
			continue
		}
		digestAt[cc.digest] = at
		if c.CertDigest != "" && !strings.EqualFold(c.CertDigest, cc.digest) {
			b.Warnf("ca_certificates[%d].cert_digest does not match the certificate; using %s", i, cc.digest)
		}
		if idOK {
			byID[strings.ToLower(c.ID)] = cc
		}
	}
	return byID
}

// parseCACert is Kong's ca_certificates check: one PEM certificate, not
// expired, with the CA basic constraint.
func parseCACert(s string, now time.Time) (*x509.Certificate, error) {
	rest := []byte(s)
	var der []byte
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("must hold PEM certificates only, found a %q block", blk.Type)
		}
		if der != nil {
			return nil, errors.New("holds more than one certificate: one CA certificate per entity (as in Kong)")
		}
		der = blk.Bytes
	}
	if der == nil {
		if strings.Contains(s, "-----BEGIN") {
			return nil, errors.New("the PEM block does not decode (check the base64 and the BEGIN/END lines)")
		}
		return nil, errors.New("not a PEM certificate (want -----BEGIN CERTIFICATE-----)")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("text after the PEM certificate")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("invalid certificate: %v", err)
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("certificate expired, \"Not After\" time (%s) is in the past", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, errors.New("certificate does not appear to be a CA because it is missing the \"CA\" basic constraint")
	}
	return cert, nil
}

// resolveServiceTLS checks a service's tls_verify_depth and
// ca_certificates and keeps the result on sc (see Service.TLS).
func resolveServiceTLS(b *Builder, sc *ServiceConfig, at Path, u *url.URL, cas map[string]*caCert) {
	t := &ServiceTLS{Verify: boolOr(sc.TLSVerify, true), Depth: -1}
	if sc.TLSVerifyDepth != nil {
		if d := *sc.TLSVerifyDepth; d < 0 || d > 64 {
			b.Errorf(at.Key("tls_verify_depth"), "must be between 0 and 64, got %d", d)
		} else {
			t.Depth = d
		}
	}
	var digests []string
	if len(sc.CACertificates) > 0 {
		if u != nil && u.Scheme != "https" {
			b.Errorf(at.Key("ca_certificates"), "only for a service with protocol https, got %s", u.Scheme)
		}
		pool := x509.NewCertPool()
		seen := map[string]bool{}
		for j, id := range sc.CACertificates {
			jat := at.Key("ca_certificates").Index(j)
			if !uuidRE.MatchString(id) {
				b.Errorf(jat, "must be the UUID of a ca_certificates entity, got %q", id)
				continue
			}
			c := cas[strings.ToLower(id)]
			if c == nil {
				b.Errorf(jat, "no ca_certificates entity with id %q", id)
				continue
			}
			if seen[c.digest] {
				continue
			}
			seen[c.digest] = true
			pool.AddCert(c.cert)
			digests = append(digests, c.digest)
		}
		t.Roots = pool
		t.CAIDs = append([]string(nil), sc.CACertificates...)
	}
	client := ""
	if sc.TLSSANs != nil && sc.TLSSANs.Tag != "!!null" {
		b.WarnAt(at.Key("tls_sans"), "Envoy's cluster checks these names (validation_context match_typed_subject_alt_names); sidecall's own calls to this service (flow-callout) accept the host name only")
	}
	if ref := sc.ClientCertificate; ref != nil && cmp.Or(ref.ID, ref.Name) != "" {
		if u != nil && u.Scheme != "https" {
			b.Errorf(at.Key("client_certificate"), "only for a service with protocol https, got %s", u.Scheme)
		}
		t.Client, client = clientCertificate(b, cmp.Or(ref.ID, ref.Name))
	}
	t.key = serviceTLSKey(t.Verify, t.Depth, digests, client)
	if !t.Verify { // nothing else matters
		t.key = serviceTLSKey(false, -1, nil, client)
	}
	sc.tls = t
}

// certificateKeyPair is what a client_certificate uses of Kong's
// certificates entity (its cert_alt, key_alt and snis are for serving).
type certificateKeyPair struct {
	Cert string `yaml:"cert"` // PEM, or a {vault://...} reference
	Key  string `yaml:"key"`
}

// clientCertificate loads the certificates entity with that id, and its
// digest; nil when there is none (checked after the plugins, see
// warnClientCertificates) or offline with a vault reference.
func clientCertificate(b *Builder, id string) (*tls.Certificate, string) {
	n := b.certificates
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil, ""
	}
	for i, e := range n.Content {
		if e.Kind != yaml.MappingNode || !strings.EqualFold(mapValue(e, "id"), id) {
			continue
		}
		at := Path("certificates").Index(i)
		pair := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: e.Line}
		for j := 0; j+1 < len(e.Content); j += 2 {
			if k := e.Content[j].Value; k == "cert" || k == "key" {
				pair.Content = append(pair.Content, e.Content[j], e.Content[j+1])
			}
		}
		var c certificateKeyPair
		b.Decode(pair, at, &c)
		if b.offlineRefs[at.Key("cert")] || b.offlineRefs[at.Key("key")] {
			return nil, ""
		}
		kp, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key))
		if err != nil {
			b.Errorf(at, "client certificate: %v", err)
			return nil, ""
		}
		sum := sha256.Sum256(kp.Certificate[0])
		return &kp, hex.EncodeToString(sum[:])
	}
	return nil, ""
}

// certificateIDs are the ids of the certificates section's entries.
func certificateIDs(n *yaml.Node) map[string]bool {
	ids := map[string]bool{}
	if n == nil || n.Kind != yaml.SequenceNode {
		return ids
	}
	for _, e := range n.Content {
		if e.Kind == yaml.MappingNode {
			ids[strings.ToLower(mapValue(e, "id"))] = true
		}
	}
	return ids
}

func mapValue(m *yaml.Node, key string) string {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key && m.Content[i+1].Kind == yaml.ScalarNode {
			return m.Content[i+1].Value
		}
	}
	return ""
}

// warnClientCertificates runs once the plugins are built: sidecall
// presents a service's client certificate only when it calls the service
// itself (a shared flow); for the rest Envoy's cluster must.
func warnClientCertificates(b *Builder, cfg *Config) {
	flows := map[string]bool{}
	for _, es := range b.flowEdges {
		for _, e := range es {
			flows[e.to] = true
		}
	}
	ids := certificateIDs(b.certificates)
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		ref := sc.ClientCertificate
		if ref == nil || cmp.Or(ref.ID, ref.Name) == "" {
			continue
		}
		at := Path("services").Index(i).Key("client_certificate")
		id := cmp.Or(ref.ID, ref.Name)
		switch {
		case !ids[strings.ToLower(id)]:
			b.WarnAt(at, "no certificates entity with id %q: sidecall calls this service without a client certificate; for the traffic Envoy proxies, set tls_certificates in the cluster's UpstreamTlsContext", id)
		case !flows[sc.Name]:
			b.WarnAt(at, "Envoy presents the client certificate for the traffic it proxies: set tls_certificates in the cluster's UpstreamTlsContext (sidecall presents it only when it calls this service as a shared flow)")
		}
	}
}

func serviceTLSKey(verify bool, depth int, digests []string, client string) string {
	if client != "" {
		client = "|client=" + client
	}
	if !verify {
		return "verify=false" + client
	}
	d := append([]string(nil), digests...)
	sort.Strings(d)
	cas := "system"
	if len(d) > 0 {
		cas = strings.Join(d, ",")
	}
	return fmt.Sprintf("verify=true|depth=%d|cas=%s", depth, cas) + client
}
