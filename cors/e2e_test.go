package cors_test

import (
	"net/http"
	"testing"

	"github.com/sidecall/sidecall/envoy/envoytest"
)

// The api route's plugin is Kong's cors docs example as decK writes it;
// the open route allows every origin with credentials, in front of an
// upstream that sets its own Vary.
const corsConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: api
        paths: ["/api"]
        plugins:
          - name: cors
            config:
              origins:
                - http://mockbin.com
              methods:
                - GET
                - POST
              headers:
                - Accept
                - Accept-Version
                - Content-Length
                - Content-MD5
                - Content-Type
                - Date
                - X-Auth-Token
              exposed_headers:
                - X-Auth-Token
              credentials: true
              max_age: 3600
      - name: open
        paths: ["/open"]
        plugins:
          - name: cors
            config:
              origins: ["http://.*\\.example\\.com", "https://app.example.org"]
              credentials: true
              private_network: true
`

func TestCORSEndToEnd(t *testing.T) {
	up := envoytest.Record(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Accept-Encoding")
		_, _ = w.Write([]byte("ok"))
	})
	h := envoytest.Start(t, corsConfig, envoytest.Options{Upstream: up.URL})

	t.Run("preflight answered by sidecall", func(t *testing.T) {
		resp, body := h.Do(t, h.Request(t, "OPTIONS", "/api", "", "Origin", "http://mockbin.com",
			"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "X-Auth-Token"))
		if resp.StatusCode != 200 || len(body) != 0 {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		want := map[string]string{
			"Access-Control-Allow-Origin":      "http://mockbin.com",
			"Access-Control-Allow-Credentials": "true",
			"Access-Control-Allow-Methods":     "GET,POST",
			"Access-Control-Allow-Headers":     "Accept,Accept-Version,Content-Length,Content-MD5,Content-Type,Date,X-Auth-Token",
			"Access-Control-Max-Age":           "3600",
			"Vary":                             "Origin",
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		if up.Count() != 0 {
			t.Fatalf("the upstream saw the preflight (%d requests)", up.Count())
		}
	})

	t.Run("actual request", func(t *testing.T) {
		up.Reset()
		resp, body := h.Get(t, "/api", "Origin", "http://mockbin.com")
		if resp.StatusCode != 200 || string(body) != "ok" || up.Count() != 1 {
			t.Fatalf("status %d body %q upstream %d", resp.StatusCode, body, up.Count())
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "http://mockbin.com" ||
			resp.Header.Get("Access-Control-Allow-Credentials") != "true" ||
			resp.Header.Get("Access-Control-Expose-Headers") != "X-Auth-Token" ||
			resp.Header.Get("Access-Control-Allow-Methods") != "" {
			t.Errorf("headers %v", resp.Header)
		}
		if v := resp.Header.Values("Vary"); len(v) != 2 || v[0] != "Accept-Encoding" || v[1] != "Origin" {
			t.Errorf("vary %q", v)
		}
	})

	t.Run("regex origins", func(t *testing.T) {
		resp, _ := h.Do(t, h.Request(t, "OPTIONS", "/open", "", "Origin", "http://shop.example.com",
			"Access-Control-Request-Method", "PUT", "Access-Control-Request-Private-Network", "true"))
		if resp.Header.Get("Access-Control-Allow-Origin") != "http://shop.example.com" ||
			resp.Header.Get("Access-Control-Allow-Private-Network") != "true" ||
			resp.Header.Get("Access-Control-Allow-Methods") != "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT" {
			t.Errorf("preflight headers %v", resp.Header)
		}
		resp, _ = h.Get(t, "/open", "Origin", "https://evil.example.net")
		if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Errorf("a foreign origin: %v", resp.Header)
		}
	})
}
