package main

import (
	"net/http"
	"testing"
)

// --admin-pprof mounts Go's profiles on the admin listener; off by default.
func TestAdminPprofIsOptIn(t *testing.T) {
	get := func(s *served) int {
		r, err := http.Get("http://" + s.admin + "/debug/pprof/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	cfg := writeConfig(t, echoConfig)
	if code := get(startServe(t, cfg)); code != http.StatusNotFound {
		t.Errorf("without --admin-pprof: %d, want 404", code)
	}
	if code := get(startServe(t, cfg, "--admin-pprof")); code != http.StatusOK {
		t.Errorf("with --admin-pprof: %d, want 200", code)
	}
}
