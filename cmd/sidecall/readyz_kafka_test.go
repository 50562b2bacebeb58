package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
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

// readyzBody is /readyz's JSON.
type readyzBody struct {
	Status       string `json:"status"`
	Reason       string `json:"reason"`
	Dependencies []struct {
		Kind  string    `json:"kind"`
		Name  string    `json:"name"`
		Gates bool      `json:"gates"`
		Ready bool      `json:"ready"`
		Since time.Time `json:"since"`
	} `json:"dependencies"`
}

// readyz returns /readyz's status code and decoded body.
func (s *served) readyzJSON(t *testing.T) (int, readyzBody) {
	t.Helper()
	r, err := http.Get("http://" + s.admin + "/readyz")
	if err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	defer r.Body.Close()
	var b readyzBody
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		t.Fatalf("/readyz body: %v", err)
	}
	return r.StatusCode, b
}

// within polls cond every 50 ms for at most d and returns how long it took.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// TestReadyzFollowsTheKafkaBroker: with a kafka-request-reply route,
// /readyz is 200 and lists the producer and reply consumer (gating, ready);
// once the broker dies it turns 503 within 10 s, with the reason and the
// dependencies down (and sidecall_dependency_up 0); a broker back on the
// same port makes it 200 again within 10 s, without a reload.
func TestReadyzFollowsTheKafkaBroker(t *testing.T) {
	port := netport.Stable(t)
	seed := kfake.SeedTopics(3, "requests", "replies")
	c1, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), seed)
	if err != nil {
		t.Fatal(err)
	}
	var c2 *kfake.Cluster
	t.Cleanup(func() { // after serve stopped (cleanups run last-registered first)
		c1.Close()
		if c2 != nil {
			c2.Close()
		}
	})
	s := startServe(t, writeConfig(t, fmt.Sprintf(`_format_version: "3.0"
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
`, port)))
	brokers := fmt.Sprintf("127.0.0.1:%d", port)
	code, b := s.readyzJSON(t)
	if code != 200 || b.Status != "ready" || len(b.Dependencies) != 2 {
		t.Fatalf("/readyz %d %+v; want 200, ready, two dependencies", code, b)
	}
	for _, d := range b.Dependencies {
		if !d.Gates || !d.Ready || d.Since.IsZero() || !strings.HasPrefix(d.Name, brokers) {
			t.Errorf("dependency %+v: want gating, ready, named by its brokers", d)
		}
	}
	up := fmt.Sprintf(`sidecall_dependency_up{kind="kafka-producer",name=%q}`, brokers)
	if v := s.metric(t, up); v != 1 {
		t.Errorf("%s = %v with the broker up", up, v)
	}

	c1.Close()
	took := within(t, 10*time.Second, "/readyz 503 after the broker died", func() bool { return s.readyz(t) == http.StatusServiceUnavailable })
	t.Logf("503 %s after the broker died", took.Round(time.Millisecond))
	code, b = s.readyzJSON(t)
	if code != 503 || b.Status != "not ready" || b.Reason == "" {
		t.Errorf("/readyz %d %+v; want 503, not ready, a reason", code, b)
	}
	if v := s.metric(t, up); v != 0 {
		t.Errorf("%s = %v with no broker", up, v)
	}
	r, err := http.Get("http://" + s.admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("/healthz %d while Kafka is down, want 200 (alive, not ready)", r.StatusCode)
	}

	c2, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), seed)
	if err != nil {
		t.Fatalf("broker again on port %d: %v", port, err)
	}
	took = within(t, 10*time.Second, "/readyz 200 once the broker is back", func() bool { return s.readyz(t) == http.StatusOK })
	t.Logf("200 %s after the broker came back", took.Round(time.Millisecond))
}

// TestReadyzIgnoresUnreachableKafkaUpstream: a kafka-upstream route whose
// broker cannot be reached leaves /readyz 200; the producer is listed, not
// gating and not ready, and counted by sidecall_dependency_up.
func TestReadyzIgnoresUnreachableKafkaUpstream(t *testing.T) {
	port := netport.Stable(t) // nothing listens there
	s := startServe(t, writeConfig(t, fmt.Sprintf(`_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: events
        paths: ["/events"]
        plugins:
          - name: kafka-upstream
            config:
              bootstrap_servers: [{host: 127.0.0.1, port: %d}]
              topic: events
`, port)))
	for i := 0; i < 5; i++ {
		code, b := s.readyzJSON(t)
		if code != 200 || b.Status != "ready" {
			t.Fatalf("/readyz %d %+v with only an unreachable kafka-upstream; want 200", code, b)
		}
		if len(b.Dependencies) != 1 || b.Dependencies[0].Kind != "kafka-producer" || b.Dependencies[0].Gates || b.Dependencies[0].Ready {
			t.Fatalf("dependencies %+v; want one kafka-producer, not gating, not ready", b.Dependencies)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := s.metric(t, fmt.Sprintf(`sidecall_dependency_up{kind="kafka-producer",name="127.0.0.1:%d"}`, port)); v != 0 {
		t.Errorf("sidecall_dependency_up = %v for an unreachable producer", v)
	}
}
