package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"
	"gopkg.in/yaml.v3"

	"github.com/sidecall/sidecall/envoy"
	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/flows"
)

const e2eConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    plugins:
      - name: correlation-id
        config: {header_name: X-Service-Scope}
    routes:
      - name: plain
        paths: ["/plain"]
      - name: by-path
        paths: ["~/items/(?<id>[0-9]+)$"]
        plugins:
          - name: correlation-id
            config: {header_name: X-Route-Scope, generator: uuid}
      - name: named
        paths: ["/never-matched-by-path"]
        plugins:
          - name: correlation-id
            config: {header_name: X-Named, generator: uuid, echo_downstream: true}
  - name: bare
    url: http://127.0.0.1:1
    routes:
      - name: bare-route
        paths: ["/bare"]
      - name: both
        paths: ["/both"]
plugins:
  - name: correlation-id
    config: {header_name: X-Global}
  - name: correlation-id
    route: both
    service: bare
    config: {header_name: X-Route-And-Service}
`

func TestE2EPassThroughIsOneMessage(t *testing.T) {
	h := envoytest.Start(t, "services: [{name: app, url: 'http://127.0.0.1:1', routes: [{name: plain, paths: [/plain], strip_path: false}]}]\n", envoytest.Options{})
	resp, body, tr := h.DoTraced(t, h.Request(t, "POST", "/plain?x=1", "hello", "X-Client", "c"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	e := envoytest.DecodeEcho(t, body)
	if e.Method != "POST" || e.Path != "/plain" || e.Query != "x=1" || e.Body != "hello" || e.Header("X-Client") != "c" {
		t.Errorf("upstream got %+v", e)
	}
	if tr.SentCount() != 1 {
		t.Fatalf("want exactly one message on the stream, trace %+v", tr)
	}
}

func TestE2ERouteSelectionFourWays(t *testing.T) {
	cases := []struct {
		name  string
		path  string
		envoy func(*envoy.Config)
	}{
		{"xds.route_name attribute", "/plain", func(c *envoy.Config) {
			c.Route = func(*http.Request) envoy.RouteSettings { return envoy.RouteSettings{Name: "named"} }
		}},
		{"grpc initial metadata", "/plain", func(c *envoy.Config) {
			c.Route = func(*http.Request) envoy.RouteSettings {
				return envoy.RouteSettings{GRPCInitialMetadata: map[string]string{"x-sidecall-route": "named"}}
			}
		}},
		{"metadata_context", "/plain", func(c *envoy.Config) {
			c.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"sidecall": {Fields: map[string]*structpb.Value{"route": structpb.NewStringValue("named")}}}}
		}},
		{"kong matching", "/never-matched-by-path", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := envoytest.Start(t, e2eConfig, envoytest.Options{Envoy: c.envoy})
			resp, body := h.Get(t, c.path)
			e := envoytest.DecodeEcho(t, body)
			if e.Header("X-Named") == "" {
				t.Fatalf("route 'named' did not run: upstream headers %v", e.Headers)
			}
			if resp.Header.Get("X-Named") != e.Header("X-Named") {
				t.Errorf("echo downstream %q, upstream %q", resp.Header.Get("X-Named"), e.Header("X-Named"))
			}
		})
	}
}

func TestE2EPluginPrecedence(t *testing.T) {
	h := envoytest.Start(t, e2eConfig, envoytest.Options{})
	cases := map[string]string{
		"/items/42": "X-Route-Scope",       // route beats service and global
		"/plain":    "X-Service-Scope",     // service beats global
		"/bare":     "X-Global",            // only global
		"/both":     "X-Route-And-Service", // route+service beats all
		"/nowhere":  "X-Global",            // no route: global plugins only
	}
	all := []string{"X-Route-Scope", "X-Service-Scope", "X-Global", "X-Route-And-Service", "X-Named"}
	for path, want := range cases {
		_, body := h.Get(t, path)
		e := envoytest.DecodeEcho(t, body)
		for _, hd := range all {
			if got := e.Header(hd) != ""; got != (hd == want) {
				t.Errorf("%s: header %s present=%v, want only %s; headers %v", path, hd, got, want, e.Headers)
			}
		}
	}
}

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func corrConfig(gen string) string {
	return fmt.Sprintf(`services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: ["/"]
        plugins:
          - name: correlation-id
            config: {header_name: X-Correlation-ID, generator: %q, echo_downstream: true}
`, gen)
}

func TestE2ECorrelationIDGenerators(t *testing.T) {
	t.Run("uuid", func(t *testing.T) {
		h := envoytest.Start(t, corrConfig("uuid"), envoytest.Options{})
		seen := map[string]bool{}
		for i := 0; i < 5; i++ {
			resp, body := h.Get(t, "/a")
			v := envoytest.DecodeEcho(t, body).Header("X-Correlation-ID")
			if !uuidRe.MatchString(v) || seen[v] || resp.Header.Get("X-Correlation-ID") != v {
				t.Fatalf("value %q (echoed %q)", v, resp.Header.Get("X-Correlation-ID"))
			}
			seen[v] = true
		}
	})
	t.Run("uuid#counter", func(t *testing.T) {
		h := envoytest.Start(t, corrConfig("uuid#counter"), envoytest.Options{})
		var base string
		for i := 1; i <= 3; i++ {
			_, body := h.Get(t, "/a")
			v := envoytest.DecodeEcho(t, body).Header("X-Correlation-ID")
			b, n, ok := strings.Cut(v, "#")
			if !ok || !uuidRe.MatchString(b) || n != strconv.Itoa(i) || (base != "" && b != base) {
				t.Fatalf("request %d: %q", i, v)
			}
			base = b
		}
	})
	t.Run("tracker", func(t *testing.T) {
		h := envoytest.Start(t, corrConfig("tracker"), envoytest.Options{})
		_, body := h.Get(t, "/a")
		v := envoytest.DecodeEcho(t, body).Header("X-Correlation-ID")
		// server_addr-server_port-pid-conn_serial-conn_requests-epoch.ms
		if !regexp.MustCompile(`^127\.0\.0\.1-\d+-\d+-\d+-\d+-\d{10}\.\d{3}$`).MatchString(v) {
			t.Fatalf("tracker value %q", v)
		}
	})
}

func TestE2ECorrelationIDKeepsClientValue(t *testing.T) {
	h := envoytest.Start(t, corrConfig("uuid"), envoytest.Options{})
	resp, body := h.Get(t, "/a", "X-Correlation-ID", "client-chosen-1")
	if got := envoytest.DecodeEcho(t, body).Header("X-Correlation-ID"); got != "client-chosen-1" {
		t.Errorf("upstream got %q", got)
	}
	if got := resp.Header.Get("X-Correlation-ID"); got != "client-chosen-1" {
		t.Errorf("client got %q", got)
	}
	// An empty value counts as absent.
	_, body = h.Get(t, "/a", "X-Correlation-ID", "")
	if got := envoytest.DecodeEcho(t, body).Header("X-Correlation-ID"); !uuidRe.MatchString(got) {
		t.Errorf("empty client value not replaced: %q", got)
	}
}

func TestE2EEchoDownstreamOnlyAsksWhenNeeded(t *testing.T) {
	h := envoytest.Start(t, strings.Replace(corrConfig("uuid"), "echo_downstream: true", "echo_downstream: false", 1), envoytest.Options{})
	resp, _, tr := h.DoTraced(t, h.Request(t, "GET", "/a", ""))
	if resp.Header.Get("X-Correlation-ID") != "" {
		t.Errorf("echoed without echo_downstream")
	}
	if n := tr.SentCount(); n != 1 {
		t.Errorf("without echo_downstream the stream should carry 1 message, got %d", n)
	}
}

// blockingPlugin-free reload test: an upstream that holds a request while
// the config is swapped.
func TestE2EReloadKeepsLastGoodAndFinishesOpenStreams(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		envoytest.Echo().ServeHTTP(w, r)
	}))
	defer up.Close()
	cfg := func(header string) string {
		return fmt.Sprintf("services: [{name: a, url: 'http://127.0.0.1:1', routes: [{name: r, paths: [/], plugins: [{name: correlation-id, config: {header_name: %s, echo_downstream: true}}]}]}]\n", header)
	}
	h := envoytest.Start(t, cfg("X-Old"), envoytest.Options{Upstream: up.URL})

	var wg sync.WaitGroup
	var slowResp *http.Response
	wg.Add(1)
	go func() {
		defer wg.Done()
		r, err := http.Get(h.URL + "/slow")
		if err == nil {
			slowResp = r
			r.Body.Close()
		}
	}()
	<-arrived
	if err := h.Reload("services: [{name: a, url: x}]\n"); err == nil {
		t.Fatal("a broken config was accepted")
	}
	_, body := h.Get(t, "/after-bad")
	if envoytest.DecodeEcho(t, body).Header("X-Old") == "" {
		t.Fatal("the last good config stopped serving after a bad reload")
	}
	if err := h.Reload(cfg("X-New")); err != nil {
		t.Fatal(err)
	}
	_, body = h.Get(t, "/after-good")
	if e := envoytest.DecodeEcho(t, body); e.Header("X-New") == "" || e.Header("X-Old") != "" {
		t.Fatalf("the good config did not take effect: %v", e.Headers)
	}
	close(release)
	wg.Wait()
	if slowResp == nil || slowResp.StatusCode != 200 || slowResp.Header.Get("X-Old") == "" {
		t.Fatalf("the stream open during the swap did not finish on its config: %+v", slowResp)
	}
}

type panicPlugin struct{}

func (panicPlugin) Name() string                                  { return "panic" }
func (panicPlugin) Priority() int                                 { return 1 }
func (panicPlugin) Access(context.Context, *flows.Exchange) error { panic("plugin bug") }

type failPlugin struct{}

func (failPlugin) Name() string  { return "fail" }
func (failPlugin) Priority() int { return 1 }
func (failPlugin) Access(context.Context, *flows.Exchange) error {
	return errors.New("kaput")
}

// metricValue reads a counter or gauge sample from reg (0 if absent).
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func TestE2EPanicIs500JSONForThatRequestOnly(t *testing.T) {
	reg := flows.NewRegistry()
	reg.Register("panic", 1, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return panicPlugin{}, nil })
	reg.Register("fail", 1, func(*flows.Builder, *yaml.Node, flows.Path) (flows.Plugin, error) { return failPlugin{}, nil })
	h := envoytest.Start(t, `services: [{name: a, url: 'http://127.0.0.1:1', routes: [{name: boom, paths: [/boom], plugins: [{name: panic}]}, {name: ok, paths: [/ok]}, {name: bad, paths: [/bad], plugins: [{name: fail}]}]}]`, envoytest.Options{Registry: reg})
	resp, body := h.Get(t, "/boom", "X-Request-Id", "req-7")
	var e struct {
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != 500 || resp.Header.Get("content-type") != "application/json" || e.RequestID != "req-7" {
		t.Fatalf("status %d type %q body %s", resp.StatusCode, resp.Header.Get("content-type"), body)
	}
	resp, _ = h.Get(t, "/ok")
	if resp.StatusCode != 200 {
		t.Fatalf("the next request got %d", resp.StatusCode)
	}
	m := h.Metrics
	if v := metricValue(t, m, "sidecall_panics_total"); v != 1 {
		t.Errorf("sidecall_panics_total %v after one panicking request, want 1", v)
	}
	// The panicking run counts as a run and an error of that plugin.
	boom := []string{"route", "boom", "plugin", "panic", "phase", "access"}
	if r, e := metricValue(t, m, "sidecall_plugin_runs_total", boom...), metricValue(t, m, "sidecall_plugin_errors_total", boom...); r != 1 || e != 1 {
		t.Errorf("panic plugin: runs %v errors %v, want 1 and 1", r, e)
	}
	if v := metricValue(t, m, "sidecall_streams_total", "route", "boom"); v != 1 {
		t.Errorf("streams on route boom %v, want 1", v)
	}
	// A plugin error (500, no panic) counts as a run and an error.
	bad := []string{"route", "bad", "plugin", "fail", "phase", "access"}
	for i := 1; i <= 2; i++ {
		resp, _ = h.Get(t, "/bad")
		if resp.StatusCode != 500 {
			t.Fatalf("/bad got %d", resp.StatusCode)
		}
		if r, e := metricValue(t, m, "sidecall_plugin_runs_total", bad...), metricValue(t, m, "sidecall_plugin_errors_total", bad...); r != float64(i) || e != float64(i) {
			t.Errorf("after %d failing requests: runs %v errors %v", i, r, e)
		}
	}
	if v := metricValue(t, m, "sidecall_panics_total"); v != 1 {
		t.Errorf("a plugin error counted as a panic: %v", v)
	}
	if v := metricValue(t, m, "sidecall_streams_active"); v != 0 {
		t.Errorf("streams active %v after every request ended", v)
	}
}
