package flows

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestPluginProtocols(t *testing.T) {
	cfg := `
_format_version: "3.0"
services:
  - name: s
    url: http://svc.test
    routes:
      - name: r
        paths: ["/"]
        plugins:
          - name: top-plugin
            protocols: [grpc, grpcs]
          - name: test-plugin
            protocols: [https]
          - name: low-plugin
            protocols: [grpc, grpcs, http, https]
`
	s, err := Load("kong.yml", []byte(cfg), LoadOptions{Registry: testRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := s.RouteByName("r")
	cases := []struct {
		scheme, contentType string
		want                string // the plugins that ran
	}{
		{"http", "", "low-plugin"},
		{"https", "text/plain", "test-plugin,low-plugin"},
		{"http", "application/grpc", "top-plugin,low-plugin"},
		{"https", "application/grpc+proto", "top-plugin,low-plugin"},
		{"https", "Application/GRPC-Web", "top-plugin,low-plugin"},
	}
	for _, tc := range cases {
		h := Headers{}
		if tc.contentType != "" {
			h.Set("content-type", tc.contentType)
		}
		x := NewExchange("", Request{Method: "POST", Scheme: tc.scheme, Path: "/", Headers: h}, nil)
		if err := r.Pipeline.Run(context.Background(), PhaseAccess, x, nil); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(x.Request.Headers.Values("x-ran"), ","); got != tc.want {
			t.Errorf("%s %q: ran %q, want %q", tc.scheme, tc.contentType, got, tc.want)
		}
	}
}

func TestPluginProtocolsChecked(t *testing.T) {
	load := func(protocols string) (*Snapshot, error) {
		return Load("kong.yml", []byte(fmt.Sprintf(`
_format_version: "3.0"
plugins:
  - name: test-plugin
    protocols: %s
`, protocols)), LoadOptions{Registry: testRegistry()})
	}
	_, err := load("[http, gopher]")
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Path != "plugins[0].protocols[1]" ||
		!strings.Contains(ce.Problems[0].Reason, `got "gopher"`) {
		t.Errorf("unknown protocol: %v", err)
	}

	s, err := load("[tcp, tls]")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if w := strings.Join(s.Warnings, "\n"); !strings.Contains(w, "plugins[0].protocols: the plugin never runs") {
		t.Errorf("warnings %q", w)
	}
	x := NewExchange("", Request{Scheme: "http", Path: "/"}, nil)
	if err := s.Global.Run(context.Background(), PhaseAccess, x, nil); err != nil || x.Request.Headers.Get("x-ran") != "" {
		t.Errorf("a tcp-only plugin ran on an http request: %v %v", err, x.Request.Headers)
	}
}
