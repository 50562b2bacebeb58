package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFileChangeReload: a broken file is rejected and counted while the
// last good config keeps serving; a good one takes effect.
func TestFileChangeReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "kong.yml")
	good := func(route string) []byte {
		return []byte("services: [{name: a, url: 'http://127.0.0.1:1', routes: [{name: " + route + ", paths: [/]}]}]\n")
	}
	if err := os.WriteFile(file, good("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := newApp(appOptions{config: file})
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.watch(ctx); err != nil {
		t.Fatal(err)
	}
	first := a.holder.Current()
	if err := os.WriteFile(file, []byte("services: [{name: a, url: nope}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a failed reload", func() bool { return testutil.ToFloat64(a.reloads.WithLabelValues("failed")) == 1 })
	if a.holder.Current() != first || a.holder.Current().RouteByName("first") == nil {
		t.Fatal("a bad file replaced the serving config")
	}
	if !a.isReady() {
		t.Error("a bad reload made sidecall unready; the last good config still serves")
	}
	// Kubernetes swaps a symlinked file: write elsewhere and rename over it.
	tmp := filepath.Join(dir, "kong.yml.new")
	if err := os.WriteFile(tmp, good("second"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the good reload", func() bool { return a.holder.Current().RouteByName("second") != nil })
	if testutil.ToFloat64(a.lastOK) != 1 {
		t.Error("last reload success gauge not reset")
	}
	// SIGHUP's path: reload() reports success.
	if !a.reload("test") {
		t.Error("reload of a good file failed")
	}
}

// TestServeSIGHUPReloads: SIGHUP reloads an unchanged file (no file event
// for the watcher to catch), counted once as ok and logged as SIGHUP.
func TestServeSIGHUPReloads(t *testing.T) {
	cfg := writeConfig(t, echoConfig)
	s := startServe(t, cfg)
	const ok, failed = `sidecall_config_reloads_total{result="ok"}`, `sidecall_config_reloads_total{result="failed"}`
	if v := s.metric(t, ok); v != 1 {
		t.Fatalf("ok reloads at start %v, want 1 (the initial load)", v)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the SIGHUP reload", func() bool { return s.metric(t, ok) >= 2 })
	if !strings.Contains(s.stderr.String(), `"trigger":"SIGHUP"`) {
		t.Errorf("no SIGHUP reload logged: %s", s.stderr.String())
	}
	if v, f := s.metric(t, ok), s.metric(t, failed); v != 2 || f != 0 {
		t.Fatalf("after one SIGHUP: ok %v failed %v, want 2 and 0", v, f)
	}
	if s.metric(t, "sidecall_config_last_reload_success") != 1 || s.readyz(t) != 200 {
		t.Fatal("not ready after a good reload")
	}
}
