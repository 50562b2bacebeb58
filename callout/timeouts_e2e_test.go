package callout_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sidecall/sidecall/envoy/envoytest"
)

// TestE2ESlowCalloutOutlastsEnvoyMessageTimeout: behind the stand-in set up
// like the shipped Envoy (message_timeout 2s, max_message_timeout 10s), a
// request-callout whose plugin timeout is 3s calls a server that answers
// after 2.5s. sidecall sends override_message_timeout (3s + 500ms) before
// its first reply, so Envoy waits and the client gets the callout's result,
// not Envoy's bare 504.
func TestE2ESlowCalloutOutlastsEnvoyMessageTimeout(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2500 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"v":"slow-ok"}`))
	}))
	t.Cleanup(slow.Close)
	cfg := `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: slow
        paths: ["/slow"]
        plugins:
          - name: request-callout
            config:
              timeout: 3000
              callouts:
                - name: a
                  request: {url: "` + slow.URL + `/v"}
                  response: {body: {decode: true}}
              upstream:
                headers:
                  custom:
                    X-V: $(callouts.a.response.body.v)
`
	h := envoytest.Start(t, cfg, envoytest.Options{})
	start := time.Now()
	resp, body, tr := h.DoTraced(t, h.Request(t, "GET", "/slow", ""))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d (%s), details %q; want 200 from the upstream", resp.StatusCode, body, tr.Details)
	}
	if el := time.Since(start); el < 2500*time.Millisecond {
		t.Errorf("answered after %v, before the callout", el)
	}
	if got := envoytest.DecodeEcho(t, body).Header("x-v"); got != "slow-ok" {
		t.Errorf("upstream got X-V %q, want the callout's slow-ok", got)
	}
	// The override is the first message Envoy receives, ahead of the
	// request_headers reply.
	var first []string
	for _, m := range tr.Messages {
		if m.Received == nil {
			continue
		}
		switch {
		case m.Received.GetOverrideMessageTimeout() != nil:
			if d := m.Received.GetOverrideMessageTimeout().AsDuration(); d != 3500*time.Millisecond {
				t.Errorf("override_message_timeout %v, want the 3s budget + 500ms", d)
			}
			first = append(first, "override")
		case m.Received.GetRequestHeaders() != nil:
			first = append(first, "request_headers")
		}
	}
	if len(first) < 2 || first[0] != "override" || first[1] != "request_headers" {
		t.Errorf("Envoy received %v, want an override then the request_headers reply", first)
	}
	s := h.Proxy.Stats().Snapshot()
	if s["override_message_timeout_received"] != 1 || s["message_timeouts"] != 0 {
		t.Errorf("stats %v", s)
	}
}

// TestE2EFastRouteSendsNoOverride: a route whose budget is under Envoy's
// message timeout costs no extra message.
func TestE2EFastRouteSendsNoOverride(t *testing.T) {
	h := envoytest.Start(t, `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: ["/r"]
        plugins:
          - name: correlation-id
`, envoytest.Options{})
	resp, _, tr := h.DoTraced(t, h.Request(t, "GET", "/r", ""))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, m := range tr.Messages {
		if m.Received.GetOverrideMessageTimeout() != nil {
			t.Errorf("override sent on a fast route")
		}
	}
}
