package flows

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/sidecall/sidecall/internal/testca"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const (
	caIDA = "7b1f0c3e-5a6d-4e2f-9a1b-0c2d3e4f5a6b"
	caIDB = "8c2a1d4f-6b7e-4f30-8b2c-1d3e4f5a6b7c"
)

func TestParseCACert(t *testing.T) {
	root := testca.New(t, "root", nil)
	leafDER := root.ServerCert(t).Certificate[0]
	leafPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}))
	now := time.Now()
	if c, err := parseCACert(root.PEM(), now); err != nil || !c.Equal(root.Cert) {
		t.Fatalf("root: %v", err)
	}
	for _, c := range []struct{ name, pem, want string }{
		{"garbage", "hello", "not a PEM certificate"},
		{"empty block", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "invalid certificate"},
		{"key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", `found a "PRIVATE KEY" block`},
		{"two", root.PEM() + root.PEM(), "more than one certificate"},
		{"trailing", root.PEM() + "junk", "text after"},
		{"leaf", leafPEM, `missing the "CA" basic constraint`},
	} {
		if _, err := parseCACert(c.pem, now); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := parseCACert(root.PEM(), now.Add(48*time.Hour)); err == nil || !strings.Contains(err.Error(), "certificate expired") {
		t.Errorf("expired: %v", err)
	}
}

// Depth is OpenSSL's: intermediates between the leaf and the trust anchor.
func TestCheckVerifyDepth(t *testing.T) {
	c := func(n int) []*x509.Certificate { return make([]*x509.Certificate, n) }
	for _, tc := range []struct {
		chains [][]*x509.Certificate
		depth  int
		ok     bool
	}{
		{[][]*x509.Certificate{c(2)}, 0, true},  // leaf, root
		{[][]*x509.Certificate{c(3)}, 0, false}, // leaf, intermediate, root
		{[][]*x509.Certificate{c(3)}, 1, true},
		{[][]*x509.Certificate{c(4)}, 1, false},
		{[][]*x509.Certificate{c(4), c(3)}, 1, true}, // one short enough chain
		{[][]*x509.Certificate{c(1)}, 0, true},       // the leaf is trusted itself
		{nil, 5, false},
	} {
		err := checkVerifyDepth(tc.chains, tc.depth)
		if (err == nil) != tc.ok {
			t.Errorf("chains %d..., depth %d: err %v, want ok=%v", len(tc.chains), tc.depth, err, tc.ok)
		}
	}
}

func caConfig(svcExtra, cas string) string {
	return `_format_version: "3.0"
services:
  - name: flow
    url: https://127.0.0.1:1/check
` + svcExtra + `
ca_certificates:
` + cas
}

func TestServiceTLSResolved(t *testing.T) {
	a, b := testca.New(t, "a", nil), testca.New(t, "b", nil)
	s := mustLoad(t, caConfig("    ca_certificates: ["+caIDA+"]\n    tls_verify_depth: 2\n", a.Entity(caIDA)+b.Entity(caIDB)))
	st := s.Services["flow"].TLS()
	want := x509.NewCertPool()
	want.AddCert(a.Cert)
	if !st.Verify || st.Depth != 2 || st.Roots == nil || !st.Roots.Equal(want) || len(st.CAIDs) != 1 || st.CAIDs[0] != caIDA {
		t.Fatalf("TLS() = %+v", st)
	}
	cc := st.ClientConfig()
	if cc.InsecureSkipVerify || cc.RootCAs != st.Roots || cc.VerifyConnection == nil {
		t.Errorf("client config %+v", cc)
	}
	sum := sha256.Sum256(a.Cert.Raw)
	if !strings.Contains(st.Key(), hex.EncodeToString(sum[:])) || !strings.Contains(st.Key(), "depth=2") {
		t.Errorf("key %q", st.Key())
	}

	// Without ca_certificates: system roots (nil), no depth limit.
	s = mustLoad(t, caConfig("", a.Entity(caIDA)))
	st = s.Services["flow"].TLS()
	if !st.Verify || st.Roots != nil || st.Depth != -1 || st.ClientConfig().VerifyConnection != nil {
		t.Errorf("plain service TLS() = %+v", st)
	}
	// tls_verify false: nothing is checked.
	s = mustLoad(t, caConfig("    tls_verify: false\n    ca_certificates: ["+caIDA+"]\n", a.Entity(caIDA)))
	if cc := s.Services["flow"].TLS().ClientConfig(); !cc.InsecureSkipVerify || s.Services["flow"].TLS().Key() != "verify=false" {
		t.Errorf("tls_verify false: %+v", cc)
	}
}

// The section is decoded and checked, no longer ignored; problems have
// their path (the goldens in testdata/bad pin lines).
func TestCACertificatesProblems(t *testing.T) {
	a := testca.New(t, "a", nil)
	for _, c := range []struct{ name, svc, cas, want string }{
		{"unknown id", "    ca_certificates: [" + caIDB + "]\n", a.Entity(caIDA), `services[0].ca_certificates[0]: no ca_certificates entity with id "` + caIDB + `"`},
		{"not a uuid", "    ca_certificates: [my-ca]\n", a.Entity(caIDA), `services[0].ca_certificates[0]: must be the UUID`},
		{"duplicate id", "", a.Entity(caIDA) + testca.New(t, "b", nil).Entity(caIDA), `ca_certificates[1].id: duplicate ca_certificates id`},
		{"same cert twice", "", a.Entity(caIDA) + a.Entity(caIDB), `ca_certificates[1].cert: the same certificate as ca_certificates[0]`},
		{"entity id not a uuid", "", a.Entity("ca-1"), `ca_certificates[0].id: must be a UUID`},
		{"no cert", "", "  - id: " + caIDA + "\n", `ca_certificates[0].cert: required field missing`},
		{"unknown key", "", a.Entity(caIDA) + "    key: x\n", `ca_certificates[0].key: unknown field`},
		{"depth too big", "    tls_verify_depth: 65\n", a.Entity(caIDA), `services[0].tls_verify_depth: must be between 0 and 64, got 65`},
		{"depth negative", "    tls_verify_depth: -1\n", a.Entity(caIDA), `services[0].tls_verify_depth: must be between 0 and 64, got -1`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load("kong.yml", []byte(caConfig(c.svc, c.cas)), LoadOptions{Registry: testRegistry()})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
	// http services cannot have ca_certificates (Kong's service check).
	src := strings.Replace(caConfig("    ca_certificates: ["+caIDA+"]\n", a.Entity(caIDA)), "https://", "http://", 1)
	if _, err := Load("kong.yml", []byte(src), LoadOptions{Registry: testRegistry()}); err == nil ||
		!strings.Contains(err.Error(), "services[0].ca_certificates: only for a service with protocol https, got http") {
		t.Errorf("http service: %v", err)
	}
}

// The section is no longer "ignored"; a cert from a vault works; a stale
// cert_digest warns; an entity without id warns.
func TestCACertificatesVaultAndWarnings(t *testing.T) {
	a := testca.New(t, "a", nil)
	core, logs := observer.New(zap.WarnLevel)
	src := caConfig("    ca_certificates: ["+caIDA+"]\n",
		"  - id: "+caIDA+"\n    cert: \"{vault://env/flow-ca}\"\n    cert_digest: abc\n    tags: [x]\n"+
			"  - cert: |\n      "+strings.ReplaceAll(strings.TrimSpace(testca.New(t, "c", nil).PEM()), "\n", "\n      ")+"\n")
	s, err := Load("kong.yml", []byte(src), LoadOptions{Registry: testRegistry(), Log: zap.New(core),
		LookupEnv: func(k string) (string, bool) {
			if k == "FLOW_CA" {
				return a.PEM(), true
			}
			return "", false
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := x509.NewCertPool()
	want.AddCert(a.Cert)
	if r := s.Services["flow"].TLS().Roots; r == nil || !r.Equal(want) {
		t.Errorf("roots from the vault cert differ")
	}
	if logs.FilterMessageSnippet(`section "ca_certificates" is ignored`).Len() != 0 {
		t.Error("ca_certificates still reported as ignored")
	}
	if logs.FilterMessageSnippet("ca_certificates[0].cert_digest does not match").Len() != 1 {
		t.Errorf("no cert_digest warning: %v", logs.All())
	}
	if logs.FilterMessageSnippet("ca_certificates[1] has no id").Len() != 1 {
		t.Errorf("no missing-id warning: %v", logs.All())
	}
}
