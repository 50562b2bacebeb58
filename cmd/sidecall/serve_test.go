package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestServeUnixSocketAdminAndDrain runs `sidecall serve` on a unix socket:
// gRPC health, the admin API with a redacted /config, then SIGTERM drains.
func TestServeUnixSocketAdminAndDrain(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kong.yml")
	src := "services: [{name: a, url: 'http://127.0.0.1:1', routes: [{name: r, paths: [/]}]}]\n" +
		"plugins: [{name: correlation-id, config: {header_name: '{vault://env/SIDECALL_TEST_HEADER}'}}]\n"
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SIDECALL_TEST_HEADER", "X-Secret-Header-Name")
	sock := filepath.Join(dir, "sidecall.sock")
	admin := freePort(t)
	t.Setenv("SIDECALL_ADMIN_LISTEN", admin) // flags fall back to the environment
	var stdout, stderr syncBuf
	done := make(chan int, 1)
	go func() { done <- run([]string{"serve", "-c", cfg, "--grpc-listen", "unix://" + sock}, &stdout, &stderr) }()
	waitFor(t, "the admin API", func() bool {
		r, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over unix socket: %v %v", hr, err)
	}
	r, err := http.Get("http://" + admin + "/config")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(body), "{vault://env/SIDECALL_TEST_HEADER}") || strings.Contains(string(body), "X-Secret-Header-Name") {
		t.Errorf("/config must show the reference, never the secret: %s", body)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not drain on SIGTERM")
	}
	if !strings.Contains(stderr.String(), "sidecall stopped") {
		t.Errorf("logs: %s", stderr.String())
	}
}

func TestVersionCommand(t *testing.T) {
	for _, arg := range []string{"version", "--version", "-v"} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{arg}, &stdout, &stderr); code != 0 {
			t.Fatalf("%s exited %d: %s", arg, code, stderr.String())
		}
		want := "sidecall " + version + " (commit "
		if out := stdout.String(); !strings.HasPrefix(out, want) || !strings.HasSuffix(out, ")\n") || strings.Count(out, "\n") != 1 {
			t.Errorf("%s printed %q, want one line starting %q", arg, out, want)
		}
		if stderr.Len() != 0 {
			t.Errorf("%s wrote to stderr: %s", arg, stderr.String())
		}
	}
	// -ldflags -X values show up as set.
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "1.2.3", "abc123"
	var stdout bytes.Buffer
	if code := run([]string{"version"}, &stdout, io.Discard); code != 0 || !strings.HasPrefix(stdout.String(), "sidecall 1.2.3 (commit abc123, go") {
		t.Fatalf("exit %d, printed %q", code, stdout.String())
	}
}
