package plugins_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/flows/lua"
	"github.com/sidecall/sidecall/plugins"
)

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += metricValue(m)
			}
		}
	}
	return sum
}

func metricValue(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return float64(m.GetHistogram().GetSampleCount())
}

// TestTwoServersInOneProcess: two sidecalls with their own configs, Lua
// limits and metrics registries run side by side without sharing state.
func TestTwoServersInOneProcess(t *testing.T) {
	target := envoytest.Record(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"name":"ann"}`))
	})
	withCallout := `_format_version: "3.0"
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
                - name: user
                  request: {url: "` + target.URL + `/u"}
                  response: {body: {decode: true}}
              upstream:
                headers: {custom: {X-User: "$(callouts.user.response.body.name)"}}
          - name: pre-function
            config:
              access: ["if kong.request.get_header('x-spin') then while true do end end"]
`
	a := envoytest.Start(t, withCallout, envoytest.Options{Lua: lua.Options{Timeout: 20 * time.Millisecond}})
	b := envoytest.Start(t, withCallout, envoytest.Options{Lua: lua.Options{Timeout: 300 * time.Millisecond}})
	for i := 0; i < 3; i++ {
		resp, body := a.Get(t, "/x")
		if resp.StatusCode != 200 || envoytest.DecodeEcho(t, body).Header("X-User") != "ann" {
			t.Fatalf("a: %d %s", resp.StatusCode, body)
		}
	}
	resp, body := b.Get(t, "/x")
	if resp.StatusCode != 200 {
		t.Fatalf("b: %d %s", resp.StatusCode, body)
	}
	if got := counterValue(t, a.Metrics, "sidecall_callout_requests_total"); got != 3 {
		t.Errorf("a counted %v callouts, want 3", got)
	}
	if got := counterValue(t, b.Metrics, "sidecall_callout_requests_total"); got != 1 {
		t.Errorf("b counted %v callouts, want 1 (its own)", got)
	}
	// Each server's Lua limit is its own.
	if a.Lua.Sandbox.Options().Timeout == b.Lua.Sandbox.Options().Timeout {
		t.Fatal("the two servers share a Lua limit")
	}
	start := time.Now()
	resp, _ = a.Get(t, "/x", "X-Spin", "1")
	if resp.StatusCode != 500 {
		t.Fatalf("a spinning chunk: %d, want 500", resp.StatusCode)
	}
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Logf("a's 20ms limit took %s (a busy machine)", took)
	}
	if counterValue(t, a.Metrics, "sidecall_lua_timeouts_total") != 1 || counterValue(t, b.Metrics, "sidecall_lua_timeouts_total") != 0 {
		t.Error("a Lua timeout was counted on the wrong server")
	}
}

// TestPluginsListIsComplete: the set registers every plugin sidecall ships.
func TestPluginsListIsComplete(t *testing.T) {
	set := plugins.New(plugins.Options{})
	defer set.Close()
	want := []string{"correlation-id", "cors", "flow-callout", "kafka-request-reply", "kafka-upstream", "post-function",
		"pre-function", "request-callout", "request-transformer", "response-transformer"}
	got := set.Names()
	if len(got) != len(want) {
		t.Fatalf("registered %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("registered %v, want %v", got, want)
		}
	}
}
