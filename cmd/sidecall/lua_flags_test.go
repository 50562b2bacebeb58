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

// TestTryLuaTimeout: --lua-timeout sets the sandbox's time limit before
// the config loads (the start line says which); a pre-function looping
// forever answers 500, stopped by that limit or by the instruction budget,
// whichever a machine's speed makes come first.
func TestTryLuaTimeout(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "upstream") }))
	defer up.Close()
	cfg := filepath.Join(t.TempDir(), "kong.yml")
	if err := os.WriteFile(cfg, []byte("plugins: [{name: pre-function, config: {access: [\"while true do end\"]}}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := freePort(t)
	var stdout, stderr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"try", "-c", cfg, "--upstream", up.URL, "--listen", listen, "--lua-timeout", "20ms"}, &stdout, &stderr)
	}()
	waitFor(t, "try to answer 500", func() bool {
		r, err := http.Get("http://" + listen + "/x")
		if err != nil {
			return false
		}
		_, _ = io.ReadAll(r.Body)
		r.Body.Close()
		return r.StatusCode == 500
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
	if !strings.Contains(stderr.String(), `"lua_timeout": "20ms"`) {
		t.Errorf("the start line does not show the 20ms limit:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "stopped after 20ms time limit") && !strings.Contains(stderr.String(), "stopped after its budget") {
		t.Errorf("the log does not show the loop stopped:\n%s", stderr.String())
	}
}

// Bad --lua-timeout values (flag or SIDECALL_LUA_TIMEOUT) are usage errors.
func TestBadLuaTimeoutExits2(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "kong.yml")
	if err := os.WriteFile(cfg, []byte("plugins: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "-c", cfg, "--lua-timeout", "0"}, "--lua-timeout: want a duration above 0"},
		{[]string{"serve", "-c", cfg, "--lua-timeout", "-5ms"}, "--lua-timeout"},
		{[]string{"serve", "-c", cfg, "--lua-timeout", "11s"}, "at most 10s"},
		{[]string{"serve", "-c", cfg, "--lua-timeout", "soon"}, "invalid value"},
		{[]string{"try", "-c", cfg, "--upstream", "http://127.0.0.1:1", "--lua-timeout", "0s"}, "sidecall try: --lua-timeout"},
		{[]string{"demo", "--lua-timeout", "1h"}, "sidecall demo: --lua-timeout"},
	} {
		var stdout, stderr syncBuf
		if code := run(c.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q (want 2 and %q)", c.args, code, stderr.String(), c.want)
		}
	}
	for env, want := range map[string]string{"0": "--lua-timeout: want a duration above 0", "soon": "sidecall serve: SIDECALL_LUA_TIMEOUT=soon: invalid value for --lua-timeout"} {
		t.Setenv("SIDECALL_LUA_TIMEOUT", env)
		var stdout, stderr syncBuf
		if code := run([]string{"serve", "-c", cfg}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), want) {
			t.Errorf("SIDECALL_LUA_TIMEOUT=%s: exit %d, stderr %q", env, code, stderr.String())
		}
	}
}
