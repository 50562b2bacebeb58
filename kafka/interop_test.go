package kafka

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// TestKcatInterop uses Debian's kcat (librdkafka) as an independent client:
// it reads the request record sidecall produced and produces the reply by
// hand; the client gets that reply.
func TestKcatInterop(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat not installed; CI must run this test (apt-get install kcat)")
		}
		t.Skip("kcat not installed (apt-get install kcat); .ci/run installs it")
	}
	_, addr := newCluster(t)
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", rrConfig(addr, "reply_timeout: 15000\ncorrelation_id_header: x-cid"))
	waitReady(t, res)
	done := make(chan error, 1)
	x := exchange("POST", "/kcat", "z=1", []byte("ping"), "x-cid", "kcat-42")
	go func() { done <- access(t, p, x) }()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-C", "-b", addr, "-t", "requests", "-o", "beginning", "-c", "1", "-e",
		"-f", "key=%k\nheaders=%h\nvalue=%s\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat -C: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"key=kcat-42", "kafka_correlationId=kcat-42", "kafka_replyTopic=replies", `"correlation_id":"kcat-42"`, `"body":"ping"`, `"path":"/kcat"`} {
		if !strings.Contains(strings.ReplaceAll(s, " ", ""), want) {
			t.Errorf("kcat read %q, lacks %q", s, want)
		}
	}
	prod := exec.CommandContext(ctx, kcat, "-P", "-b", addr, "-t", "replies", "-H", "kafka_correlationId=kcat-42")
	prod.Stdin = bytes.NewBufferString(`{"status":202,"headers":[{"name":"x-from","value":"kcat"}],"body":"pong"}` + "\n")
	if out, err := prod.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no reply")
	}
	if x.Reply.Status != 202 || string(x.Reply.Body) != "pong" || x.Reply.Headers.Get("x-from") != "kcat" {
		t.Fatalf("reply %d %v %q", x.Reply.Status, x.Reply.Headers, x.Reply.Body)
	}
}

func TestSASL(t *testing.T) {
	_, addr := newCluster(t, kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "alice", "s3cret"),
		kfake.Superuser("SCRAM-SHA-256", "alice", "s3cret"),
		kfake.Superuser("SCRAM-SHA-512", "alice", "s3cret"))
	base := rrConfig(addr, "producer_async: false\ntimeout: 2000\n")
	base = strings.Replace(base, "reply_topic: replies\n", "", 1)
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			res := newResources(t)
			p := build(t, res, "kafka-upstream", base+fmt.Sprintf("authentication: {strategy: sasl, mechanism: %s, user: alice, password: s3cret}", mech))
			waitReady(t, res)
			x := exchange("POST", "/", "", []byte("x"))
			if err := access(t, p, x); err != nil || x.Reply.Status != 200 {
				t.Fatalf("got %v %+v", err, x.Reply)
			}
			bad := newResources(t)
			p = build(t, bad, "kafka-upstream", base+fmt.Sprintf("authentication: {strategy: sasl, mechanism: %s, user: alice, password: wrong}", mech))
			time.Sleep(300 * time.Millisecond)
			if ready(bad) {
				t.Fatal("ready with a wrong password")
			}
			x = exchange("POST", "/", "", []byte("x"))
			if err := access(t, p, x); err != nil || x.Reply.Status != 502 {
				t.Fatalf("wrong password: got %v %+v", err, x.Reply)
			}
			saslRequestReply(t, addr, mech)
		})
	}
}

// saslRequestReply: the request-reply producer and reply consumer
// authenticate with mech and get a reply; a wrong password is not ready (503).
func saslRequestReply(t *testing.T, addr, mech string) {
	t.Run("request-reply", func(t *testing.T) {
		auth := &Authentication{Strategy: "sasl", Mechanism: mech, User: "alice", Password: "s3cret"}
		startResponderConn(t, addr, FormatJSON, echo, &conn{Timeout: 5000, Authentication: auth})
		res := newResources(t)
		p := build(t, res, "kafka-request-reply", rrConfig(addr, fmt.Sprintf("timeout: 2000\nauthentication: {strategy: sasl, mechanism: %s, user: alice, password: s3cret}", mech)))
		waitReady(t, res)
		x := exchange("POST", "/sasl", "", []byte("over "+mech))
		if err := access(t, p, x); err != nil || x.Reply.Status != 201 || string(x.Reply.Body) != "over "+mech {
			t.Fatalf("got %v %+v", err, x.Reply)
		}
		bad := newResources(t)
		p = build(t, bad, "kafka-request-reply", rrConfig(addr, fmt.Sprintf("timeout: 2000\nauthentication: {strategy: sasl, mechanism: %s, user: alice, password: wrong}", mech)))
		time.Sleep(300 * time.Millisecond)
		if ready(bad) {
			t.Fatal("ready with a wrong password")
		}
		if st := httpStatus(t, access(t, p, exchange("POST", "/", "", []byte("x")))); st != 503 {
			t.Fatalf("wrong password: status %d, want 503", st)
		}
	})
}

// selfSigned returns a TLS server config with a fresh self-signed
// certificate for 127.0.0.1.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "kfake test broker"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

// TestTLS: with security.ssl the broker certificate is verified by default,
// so a self-signed broker is refused: not ready, 503 for
// kafka-request-reply and 502 for kafka-upstream. ssl_verify: false works
// end to end.
func TestTLS(t *testing.T) {
	_, addr := newCluster(t, kfake.TLS(selfSigned(t)))
	h, port := hostPort(t, addr)
	plain := fmt.Sprintf("bootstrap_servers: [{host: %s, port: %s}]\ntopic: requests\ntimeout: 2000\n", h, port)

	// The default client config verifies, and the certificate is the reason.
	cfg := saramaConfig(&conn{Timeout: 2000, Security: &Security{SSL: true}})
	if !cfg.Net.TLS.Enable || cfg.Net.TLS.Config.InsecureSkipVerify {
		t.Errorf("ssl without ssl_verify must verify: tls %v, InsecureSkipVerify %v", cfg.Net.TLS.Enable, cfg.Net.TLS.Config.InsecureSkipVerify)
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: cfg.Net.TLS.Config}
	if c, err := d.DialContext(context.Background(), "tcp", addr); err == nil {
		c.Close()
		t.Error("TLS handshake with a self-signed broker succeeded with verification on")
	} else if !errors.As(err, new(x509.UnknownAuthorityError)) {
		t.Errorf("handshake error %v, want an unknown authority", err)
	}

	t.Run("ssl_verify false", func(t *testing.T) {
		startResponderConn(t, addr, FormatJSON, echo, &conn{Timeout: 5000, Security: &Security{SSL: true, SSLVerify: new(false)}})
		res := newResources(t)
		rr := build(t, res, "kafka-request-reply", plain+"reply_topic: replies\nsecurity: {ssl: true, ssl_verify: false}")
		up := build(t, res, "kafka-upstream", plain+"producer_async: false\nsecurity: {ssl: true, ssl_verify: false}")
		waitReady(t, res)
		x := exchange("POST", "/tls", "", []byte("secret"))
		if err := access(t, rr, x); err != nil || x.Reply.Status != 201 || string(x.Reply.Body) != "secret" {
			t.Fatalf("request-reply: %v %+v", err, x.Reply)
		}
		x = exchange("POST", "/tls", "", []byte("event"))
		if err := access(t, up, x); err != nil || x.Reply.Status != 200 {
			t.Fatalf("upstream: %v %+v", err, x.Reply)
		}
	})

	for _, sec := range []string{"{ssl: true}", "{ssl: true, ssl_verify: true}"} {
		t.Run(sec, func(t *testing.T) {
			res := newResources(t)
			rr := build(t, res, "kafka-request-reply", plain+"reply_topic: replies\nsecurity: "+sec)
			up := build(t, res, "kafka-upstream", plain+"producer_async: false\nsecurity: "+sec)
			time.Sleep(500 * time.Millisecond)
			if ready(res) {
				t.Fatal("ready with an untrusted broker certificate")
			}
			if st := httpStatus(t, access(t, rr, exchange("POST", "/", "", []byte("x")))); st != 503 {
				t.Errorf("request-reply: status %d, want 503", st)
			}
			x := exchange("POST", "/", "", []byte("x"))
			if err := access(t, up, x); err != nil || x.Reply.Status != 502 {
				t.Errorf("upstream: %v %+v, want 502", err, x.Reply)
			}
		})
	}
}
