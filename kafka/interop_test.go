package kafka

import (
	"bytes"
	"context"
	"fmt"
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
	for _, want := range []string{"key=kcat-42", "kafka_correlationId=kcat-42", "kafka_replyTopic=replies", `"correlation_id":"kcat-42"`, `"body_text":"ping"`, `"path":"/kcat"`} {
		if !strings.Contains(strings.ReplaceAll(s, " ", ""), want) {
			t.Errorf("kcat read %q, lacks %q", s, want)
		}
	}
	prod := exec.CommandContext(ctx, kcat, "-P", "-b", addr, "-t", "replies", "-H", "kafka_correlationId=kcat-42")
	prod.Stdin = bytes.NewBufferString(`{"status":202,"headers":[{"name":"x-from","value":"kcat"}],"body_text":"pong"}` + "\n")
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
			if Ready(bad) {
				t.Fatal("ready with a wrong password")
			}
			x = exchange("POST", "/", "", []byte("x"))
			if err := access(t, p, x); err != nil || x.Reply.Status != 502 {
				t.Fatalf("wrong password: got %v %+v", err, x.Reply)
			}
		})
	}
}
