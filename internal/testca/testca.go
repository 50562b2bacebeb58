// Package testca makes certificate authorities and TLS servers for tests:
// roots, intermediates and 127.0.0.1 server certificates signed by them.
package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority made for a test (root, or intermediate
// under Parent).
type CA struct {
	Cert   *x509.Certificate
	Key    *ecdsa.PrivateKey
	Parent *CA
}

var testSerial atomic.Int64

// New makes a CA certificate valid for a day; parent nil makes a
// self-signed root, else an intermediate signed by parent.
func New(t testing.TB, cn string, parent *CA) *CA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(testSerial.Add(1)),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return signTestCert(t, tmpl, parent)
}

func signTestCert(t testing.TB, tmpl *x509.Certificate, parent *CA) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, Parent: parent}
}

// PEM is the CA certificate in PEM.
func (ca *CA) PEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}))
}

// Entity is a ca_certificates entry (YAML, at the top level) for ca.
func (ca *CA) Entity(id string) string {
	return "  - id: " + id + "\n    cert: |\n      " +
		strings.ReplaceAll(strings.TrimSpace(ca.PEM()), "\n", "\n      ") + "\n"
}

// ServerCert is a certificate for 127.0.0.1 signed by ca, sent with the
// chain of intermediates up to (not including) the root.
func (ca *CA) ServerCert(t testing.TB) tls.Certificate {
	t.Helper()
	leaf := signTestCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(testSerial.Add(1)),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}, ca)
	c := tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}
	for p := ca; p != nil && p.Parent != nil; p = p.Parent {
		c.Certificate = append(c.Certificate, p.Cert.Raw)
	}
	return c
}

// StartTLSServer serves h over https on 127.0.0.1 with cert.
func StartTLSServer(t testing.TB, cert tls.Certificate, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake errors are the point
	s.StartTLS()
	t.Cleanup(s.Close)
	if !strings.HasPrefix(s.URL, "https://127.0.0.1:") {
		t.Fatalf("server URL %q", s.URL)
	}
	return s
}
