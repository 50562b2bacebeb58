package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sidecall/sidecall/internal/netport"
)

// readyzStatus is /readyz's status, or 0 while the admin API does not answer.
func readyzStatus(admin string) int {
	r, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return r.StatusCode
}

// TestReadyzWaitsForKafka: serve with a kafka-request-reply route whose
// broker is not up yet reports /readyz 503 (while /healthz is 200: alive,
// not ready); once a broker with the request and reply topics listens on the
// configured address, the reply consumer gets positioned and /readyz turns
// 200 without a restart or reload.
func TestReadyzWaitsForKafka(t *testing.T) {
	port := netport.Stable(t)
	cfg := writeConfig(t, fmt.Sprintf(`_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: rr
        paths: ["/rr"]
        plugins:
          - name: kafka-request-reply
            config:
              bootstrap_servers: [{host: 127.0.0.1, port: %d}]
              topic: requests
              reply_topic: replies
`, port))

	// The broker, once started, is closed after serve has stopped (cleanups
	// run last-registered first).
	var cluster *kfake.Cluster
	t.Cleanup(func() {
		if cluster != nil {
			cluster.Close()
		}
	})

	grpcAddr, admin := freePort(t), freePort(t)
	stderr := &syncBuf{}
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "-c", cfg, "--grpc-listen", grpcAddr, "--admin-listen", admin, "--drain-timeout", "5s"}, io.Discard, stderr)
	}()
	stopped := false
	stop := func() int {
		stopped = true
		if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case code := <-done:
			return code
		case <-time.After(30 * time.Second):
			t.Fatalf("serve did not stop on SIGTERM: %s", stderr.String())
			return -1
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})

	// Up, alive, not ready: no broker listens.
	deadline := time.Now().Add(10 * time.Second)
	status := 0
	for status = readyzStatus(admin); status == 0; status = readyzStatus(admin) {
		select {
		case code := <-done:
			stopped = true
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin API did not answer: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < 5; i++ {
		if i > 0 {
			time.Sleep(50 * time.Millisecond)
			status = readyzStatus(admin)
		}
		if status != http.StatusServiceUnavailable {
			t.Fatalf("/readyz %d with no broker listening, want 503", status)
		}
	}
	r, err := http.Get("http://" + admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("/healthz %d while waiting for Kafka, want 200", r.StatusCode)
	}

	// The broker comes up on the configured port.
	cluster, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(3, "requests", "replies"))
	if err != nil {
		t.Fatalf("broker on port %d: %v", port, err)
	}
	waitFor30s(t, "/readyz 200 once the broker is up", func() bool { return readyzStatus(admin) == http.StatusOK })

	if code := stop(); code != 0 {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}

// waitFor30s is waitFor with room for the Kafka client's reconnect backoff.
func waitFor30s(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
