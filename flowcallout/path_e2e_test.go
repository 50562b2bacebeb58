package flowcallout_test

import (
	"net"
	"net/http"
	"testing"

	"github.com/sidecall/sidecall/envoy/envoytest"
)

// The flow service gets its own path plus the request path, never above
// it: ".." and "%2e%2e" resolve within the request path, and escapes the
// client sent stay escapes (an encoded '?' or '#' stays in the path).
func TestFlowCalloutE2EPathStaysBelowServicePath(t *testing.T) {
	flow := startFlowServer(t, 200, `{"user":"ann"}`)
	h := envoytest.Start(t, e2eSecurityFlowConfig(flow.URL, "", false, ""), envoytest.Options{})
	for _, c := range []struct{ path, want string }{
		{"/api/orders/../../../admin", "/check/admin"},
		{"/api/orders/%2e%2e/%2E%2e/%2e%2e/%2e%2e/admin?x=1", "/check/admin?x=1"},
		{"/api/orders/a%3Fb%23c", "/check/api/orders/a%3Fb%23c"},
		{"/api/orders/..%2F..%2F..%2Fadmin", "/check/admin"},
		{"/api/orders/a%2Fb", "/check/api/orders/a%2Fb"},
		{"/api/orders/./42", "/check/api/orders/42"},
	} {
		flow.Reset()
		resp, body := rawGet(t, h, c.path)
		wantStatus(t, resp, body, 200)
		if got := flow.Only(t).URI; got != c.want {
			t.Errorf("%s: the flow got %s, want %s", c.path, got, c.want)
		}
	}
}

// rawGet sends path to the stand-in as written (no client-side cleaning).
func rawGet(t *testing.T, h *envoytest.Harness, path string) (*http.Response, []byte) {
	t.Helper()
	req := h.Request(t, "GET", "/", "")
	req.URL.Opaque = "//" + req.URL.Host + path
	if _, _, err := net.SplitHostPort(req.URL.Host); err != nil {
		t.Fatal(err)
	}
	return h.Do(t, req)
}
