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
