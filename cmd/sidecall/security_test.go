package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/envoy"
	"github.com/sidecall/sidecall/envoy/envoytest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func adminGet(t *testing.T, s *served, path string) (int, string) {
	t.Helper()
	r, err := http.Get("http://" + s.admin + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// checkConfigOff: /config answers 404 while the probes and metrics work.
func checkConfigOff(t *testing.T, s *served) {
	t.Helper()
	if code, body := adminGet(t, s, "/config"); code != http.StatusNotFound || strings.Contains(body, "correlation-id") {
		t.Errorf("/config %d %q; want 404 without the config", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _ := adminGet(t, s, p); code != http.StatusOK {
			t.Errorf("%s %d with /config off, want 200", p, code)
		}
	}
}

// TestAdminConfigFalseHidesOnlyConfig: --admin-config=false turns /config
// into a 404; /healthz, /readyz and /metrics keep answering.
func TestAdminConfigFalseHidesOnlyConfig(t *testing.T) {
	checkConfigOff(t, startServe(t, writeConfig(t, echoConfig), "--admin-config=false"))
}

// TestAdminConfigFalseFromEnv: SIDECALL_ADMIN_CONFIG=false does the same
// (the Helm chart's way).
func TestAdminConfigFalseFromEnv(t *testing.T) {
	t.Setenv("SIDECALL_ADMIN_CONFIG", "false")
	checkConfigOff(t, startServe(t, writeConfig(t, echoConfig)))
}

// TestConfigEndpointRedactsSecretsByName: by default /config serves the
// config, with the values of X-Api-Key and Api-Token headers, an api_key
// query parameter and a URL password redacted, and the rest as written.
func TestConfigEndpointRedactsSecretsByName(t *testing.T) {
	s := startServe(t, writeConfig(t, `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: c
                  request:
                    url: "http://127.0.0.1:1/lookup?api_key=key-in-url&x=1"
                    headers:
                      custom:
                        X-Api-Key: key-in-header
              upstream:
                headers:
                  custom:
                    Api-Token: token-in-header
`))
	code, body := adminGet(t, s, "/config")
	if code != http.StatusOK {
		t.Fatalf("/config %d, want 200 by default", code)
	}
	for _, secret := range []string{"key-in-url", "key-in-header", "token-in-header"} {
		if strings.Contains(body, secret) {
			t.Errorf("/config shows %q:\n%s", secret, body)
		}
	}
	for _, shown := range []string{`"http://127.0.0.1:1/lookup?api_key=<redacted>&x=1"`, `"X-Api-Key": "<redacted>"`, `"Api-Token": "<redacted>"`, `"request-callout"`} {
		if !strings.Contains(body, shown) {
			t.Errorf("/config lacks %s:\n%s", shown, body)
		}
	}
}

// TestTemplatedCalloutCannotReachOwnAdminPort: serve gives request-callout
// its own listen addresses; a host taken from the request that names the
// admin port is refused even when allowed_hosts lists its IP, and the
// admin endpoint is never called.
func TestTemplatedCalloutCannotReachOwnAdminPort(t *testing.T) {
	s := startServe(t, writeConfig(t, `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: tenant
                  request:
                    url: http://$(headers["x-tenant"])/config
                    allowed_hosts: ["127.0.0.1"]
`))
	up := envoytest.Record(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "upstream") })
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ec := envoy.Config{Upstream: up.URL, Conn: conn}
	envoy.SidecallDefaults(&ec)
	p, err := envoy.New(ec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	front := httptest.NewServer(p)
	defer front.Close()
	req, _ := http.NewRequest("GET", front.URL+"/", nil)
	req.Header.Set("X-Tenant", s.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || strings.Contains(string(body), "services") {
		t.Fatalf("the callout reached the admin port: %d %s", resp.StatusCode, body)
	}
	if up.Count() != 0 {
		t.Error("the upstream was called although the callout failed")
	}
	if !strings.Contains(s.stderr.String(), "tenant") {
		t.Errorf("no log names the refused callout:\n%s", s.stderr.String())
	}
}
