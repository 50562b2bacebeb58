package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sidecall/sidecall/internal/tracing/tracingtest"
)

// TestTryFrontsAnUpstream runs `sidecall try` in front of a real upstream.
func TestTryFrontsAnUpstream(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "upstream saw "+r.Header.Get("X-Correlation-ID"))
	}))
	defer up.Close()
	cfg := filepath.Join(t.TempDir(), "kong.yml")
	if err := os.WriteFile(cfg, []byte("plugins: [{name: correlation-id, config: {header_name: X-Correlation-ID, generator: uuid}}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := freePort(t)
	var stdout, stderr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"try", "-c", cfg, "--upstream", up.URL, "--listen", listen}, &stdout, &stderr)
	}()
	var body string
	waitFor(t, "try to answer", func() bool {
		r, err := http.Get("http://" + listen + "/x")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		body = string(b)
		return r.StatusCode == 200
	})
	if !strings.HasPrefix(body, "upstream saw ") || len(body) != len("upstream saw ")+36 {
		t.Errorf("upstream did not get a generated correlation id: %q", body)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("try exited %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("try did not stop on SIGTERM")
	}
	if code := run([]string{"try", "-c", cfg}, &stdout, &stderr); code != 2 {
		t.Errorf("try without --upstream exited %d, want 2", code)
	}
}

// TestTryTracingFromEnv: try reads the OTEL_* variables as serve does; the
// upstream gets the stream span as its parent, and spans are flushed when
// try stops.
func TestTryTracingFromEnv(t *testing.T) {
	rcv := tracingtest.HTTP(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.Endpoint)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000") // only the flush on exit exports
	var parent syncBuf
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = parent.Write([]byte(r.Header.Get("traceparent")))
	}))
	defer up.Close()
	cfg := filepath.Join(t.TempDir(), "kong.yml")
	if err := os.WriteFile(cfg, []byte("plugins: [{name: correlation-id, config: {header_name: X-Correlation-ID}}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := freePort(t)
	var stdout, stderr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"try", "-c", cfg, "--upstream", up.URL, "--listen", listen}, &stdout, &stderr)
	}()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	waitFor(t, "try to answer", func() bool {
		req, _ := http.NewRequest("GET", "http://"+listen+"/x", nil)
		req.Header.Set("traceparent", tp)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("try exited %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("try did not stop on SIGTERM")
	}
	got := parent.String()
	if !strings.HasPrefix(got, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || strings.Contains(got, "00f067aa0ba902b7") {
		t.Errorf("upstream traceparent %q, want the client's trace with sidecall's span as parent", got)
	}
	spans := rcv.WaitFor(t, "stream span", func(sp []tracingtest.Span) bool { return len(tracingtest.Find(sp, "ext_proc*")) > 0 })
	if st := tracingtest.Find(spans, "ext_proc*"); st[0].TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || st[0].Attrs["http.response.status_code"] != "200" {
		t.Errorf("stream span %+v", st[0])
	}
}
