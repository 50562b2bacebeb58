package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// served is a `sidecall serve` running in this process (signals go to
// the test binary, which serve's signal handlers catch while it runs).
type served struct {
	grpc, admin string
	stderr      *syncBuf
	done        chan int
}

// startServe runs `sidecall serve -c cfg` on free 127.0.0.1 ports and
// waits until /readyz answers 200 (serve's signal handlers are set by then).
// Cleanup stops it with SIGTERM if the test did not.
func startServe(t *testing.T, cfg string, extra ...string) *served {
	t.Helper()
	s := &served{grpc: freePort(t), admin: freePort(t), stderr: &syncBuf{}, done: make(chan int, 1)}
	args := append([]string{"serve", "-c", cfg, "--grpc-listen", s.grpc, "--admin-listen", s.admin}, extra...)
	exited := make(chan struct{})
	go func() {
		code := run(args, io.Discard, s.stderr)
		close(exited) // before the code: once wait has it, cleanup sees the exit
		s.done <- code
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case code := <-s.done:
			t.Fatalf("serve exited %d before it was ready: %s", code, s.stderr.String())
		default:
		}
		if r, err := http.Get("http://" + s.admin + "/readyz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready: %s", s.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop on SIGTERM at cleanup")
		}
	})
	return s
}

// wait returns serve's exit code, failing after a bounded wait.
func (s *served) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-s.done:
		return code
	case <-time.After(15 * time.Second):
		t.Fatalf("serve did not exit: %s", s.stderr.String())
		return -1
	}
}

// metric reads one sample (name with its labels, as /metrics prints it).
func (s *served) metric(t *testing.T, sample string) float64 {
	t.Helper()
	r, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", sample, err)
			}
			return f
		}
	}
	t.Fatalf("no sample %s in /metrics", sample)
	return 0
}

func (s *served) readyz(t *testing.T) int {
	t.Helper()
	r, err := http.Get("http://" + s.admin + "/readyz")
	if err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	r.Body.Close()
	return r.StatusCode
}

func writeConfig(t *testing.T, src string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "kong.yml")
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// echoConfig's route keeps the client's host (preserve_host): its one
// request mutation is the correlation id.
const echoConfig = "services: [{name: a, url: 'http://127.0.0.1:1', routes: [{name: r, paths: [/], preserve_host: true, plugins: [{name: correlation-id, config: {header_name: X-Correlation-ID, generator: uuid, echo_downstream: true}}]}]}]\n"

func reqHeaders(path string, extra ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte("GET")}, {Key: ":path", RawValue: []byte(path)},
		{Key: ":scheme", RawValue: []byte("http")}, {Key: ":authority", RawValue: []byte("example.com")},
	}}
	for i := 0; i+1 < len(extra); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: extra[i], RawValue: []byte(extra[i+1])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: true}}}
}

func respHeaders() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":status", RawValue: []byte("200")}}}, EndOfStream: true}}}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestServeDrainFinishesOpenStream: on SIGTERM, serve reports NOT_SERVING
// (gRPC health) and 503 (/readyz) while a stream is open, lets that stream
// finish, then exits 0.
func TestServeDrainFinishesOpenStream(t *testing.T) {
	s := startServe(t, writeConfig(t, echoConfig), "--drain-timeout", "30s")
	conn := dial(t, s.grpc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A Check during the drain may be refused outright (GOAWAY, listener
	// closed); a Watch opened before the signal sees the status flip.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(wctx, &healthpb.HealthCheckRequest{Service: extprocv3.ExternalProcessor_ServiceDesc.ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	if hr, err := watch.Recv(); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before SIGTERM: %v %v", hr, err)
	}

	st, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(reqHeaders("/a")); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil || r.GetModeOverride().GetResponseHeaderMode() != filterv3.ProcessingMode_SEND {
		t.Fatalf("request headers reply %v %v", r, err)
	}
	set := r.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()
	if len(set) != 1 {
		t.Fatalf("request mutation %v", set)
	}
	id := string(set[0].GetHeader().GetRawValue())

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		hr, err := watch.Recv()
		if err != nil {
			t.Fatalf("health watch ended before NOT_SERVING: %v", err)
		}
		if hr.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
	}
	waitFor(t, "/readyz 503 while draining", func() bool { return s.readyz(t) == http.StatusServiceUnavailable })
	wcancel() // the drain waits for every open RPC, the watch included

	select {
	case code := <-s.done:
		t.Fatalf("serve exited %d with a stream open: %s", code, s.stderr.String())
	default:
	}
	if s.readyz(t) != http.StatusServiceUnavailable {
		t.Fatal("/readyz went back to ready during the drain")
	}
	// The open stream still gets its reply.
	if err := st.Send(respHeaders()); err != nil {
		t.Fatalf("send on the open stream during the drain: %v", err)
	}
	r, err = st.Recv()
	if err != nil {
		t.Fatalf("the open stream lost its reply to the drain: %v", err)
	}
	echo := r.GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()
	if len(echo) != 1 || string(echo[0].GetHeader().GetRawValue()) != id {
		t.Fatalf("echo %v, want %q", echo, id)
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("the open stream ended with %v, want OK", err)
	}
	if code := s.wait(t); code != 0 {
		t.Fatalf("serve exited %d: %s", code, s.stderr.String())
	}
	if strings.Contains(s.stderr.String(), "drain timeout") || !strings.Contains(s.stderr.String(), "sidecall stopped") {
		t.Errorf("logs: %s", s.stderr.String())
	}
}

// TestServeDrainDelayAcceptsNewStreams: with --drain-delay, a stream opened
// after SIGTERM (Envoy still draining its own listeners) is still served,
// on a fresh connection too, while /readyz says 503; then serve exits 0.
func TestServeDrainDelayAcceptsNewStreams(t *testing.T) {
	s := startServe(t, writeConfig(t, echoConfig), "--drain-delay", "1500ms")
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.readyz(t) != 503 {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still 200 after SIGTERM")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A new connection and a new stream, both after the signal.
	conn := dial(t, s.grpc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(reqHeaders("/late")); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil || len(r.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()) != 1 {
		t.Fatalf("a stream opened during the drain delay: %v %v", r, err)
	}
	if err := st.Send(respHeaders()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("response headers during the drain delay: %v", err)
	}
	if code := s.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, s.stderr.String())
	}
	if !strings.Contains(s.stderr.String(), "draining: still accepting streams") {
		t.Errorf("no drain-delay log line: %s", s.stderr.String())
	}
}
