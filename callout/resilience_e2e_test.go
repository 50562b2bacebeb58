package callout_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sidecall/sidecall/envoy/envoytest"
)

// End-to-end tests of the resilient callouts (docs/resilience.md): a
// circuit breaker per target, the partial-result marker and hedged
// requests, through the envoy stand-in with real servers on 127.0.0.1.

// flakyServer answers 503 while failing is set, else 200 {"ok":true}.
func flakyServer(t *testing.T, failing *atomic.Bool) *envoytest.Recorder {
	return startRecServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if failing.Load() {
			answerJSON(503, `{"down":true}`)(w, r, n)
			return
		}
		answerJSON(200, `{"ok":true}`)(w, r, n)
	})
}

// Two routes call one target with the same breaker settings: continue on
// one, fail on the other.
const breakerConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: soft
        paths: ["/soft"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: quote
                  request:
                    url: "{{CS}}/quote"
                    error: {on_error: continue, http_statuses: [503]}
                    circuit_breaker: {failures: 3, open_ms: {{OPEN}}}
              upstream:
                by_lua: |
                  local f = kong.ctx.shared.callouts_failed
                  if f then kong.service.request.set_header("X-Failed", table.concat(f, ",")) end
      - name: hard
        paths: ["/hard"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: quote
                  request:
                    url: "{{CS}}/quote"
                    error: {on_error: fail, http_statuses: [503], error_response_code: 502, error_response_msg: "quote down"}
                    circuit_breaker: {failures: 3, open_ms: {{OPEN}}}
`

// metricValue is the value of name's series with labels (a counter's or a
// gauge's).
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return -1
}

func gauge(t *testing.T, g prometheus.Gatherer, name, target string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "target" && lp.GetValue() == target {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func TestBreakerE2EOpensSkipsNetworkAndRecovers(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	cs := flakyServer(t, &failing)
	up := startEchoUpstream(t)
	h := startBehind(t, fill(breakerConfig, "CS", cs.URL, "OPEN", "1500"), up)
	target := cs.URL // http://127.0.0.1:port

	for i := 0; i < 3; i++ {
		resp, body := h.Get(t, "/soft")
		wantStatus(t, resp, body, 200)
		if e := envoytest.DecodeEcho(t, body); e.Header("X-Failed") != "quote" {
			t.Fatalf("upstream X-Failed %q, want quote", e.Header("X-Failed"))
		}
	}
	if n := cs.Count(); n != 3 {
		t.Fatalf("callout server hits %d, want 3", n)
	}
	if v, _ := gauge(t, h.Metrics, "sidecall_callout_breaker_state", target); v != 1 {
		t.Fatalf("breaker state %v, want 1 (open)", v)
	}

	// Open: both routes fail at once through their on_error, no hit.
	failing.Store(false)
	start := time.Now()
	resp, body := h.Get(t, "/soft")
	wantStatus(t, resp, body, 200)
	if got := resp.Header.Get("X-Sidecall-Completed"); got != "false" {
		t.Errorf("X-Sidecall-Completed %q while open, want false", got)
	}
	resp, body = h.Get(t, "/hard")
	wantStatus(t, resp, body, 502)
	if !strings.Contains(string(body), "quote down") {
		t.Errorf("body %s, want the error_response_msg", body)
	}
	if n := cs.Count(); n != 3 {
		t.Fatalf("callout server hits %d while open, want still 3", n)
	}
	// A fast failure is no HTTP attempt: it counts as refused, not as an
	// attempt's error or latency.
	for _, route := range []string{"soft", "hard"} {
		if v := metricValue(t, h.Metrics, "sidecall_callout_refused_total", map[string]string{"route": route, "callout": "quote", "reason": "breaker_open"}); v != 1 {
			t.Errorf("%s: refused breaker_open %v, want 1", route, v)
		}
		if v := metricValue(t, h.Metrics, "sidecall_callout_requests_total", map[string]string{"route": route, "callout": "quote", "status_class": "error"}); v != -1 {
			t.Errorf("%s: %v attempts counted as transport errors, want none", route, v)
		}
	}
	if d := time.Since(start); d > time.Second { // well inside open_ms (1.5 s) on a loaded machine
		t.Fatalf("fast-fail took %v", d)
	}

	// After open_ms one trial call closes it again.
	time.Sleep(1600 * time.Millisecond)
	resp, body = h.Get(t, "/hard")
	wantStatus(t, resp, body, 200)
	resp, body = h.Get(t, "/soft")
	wantStatus(t, resp, body, 200)
	if resp.Header.Get("X-Sidecall-Completed") != "" {
		t.Error("X-Sidecall-Completed set although every callout succeeded")
	}
	if n := cs.Count(); n != 5 {
		t.Fatalf("callout server hits %d after recovery, want 5", n)
	}
	if v, _ := gauge(t, h.Metrics, "sidecall_callout_breaker_state", target); v != 0 {
		t.Fatalf("breaker state %v, want 0 (closed)", v)
	}
	if v := metricValue(t, h.Metrics, "sidecall_callout_breaker_transitions_total", map[string]string{"target": target, "to": "closed"}); v != 1 {
		t.Fatalf("transitions to closed %v, want 1", v)
	}
}

// A reload with the same breaker settings keeps the breaker (open stays
// open); new settings start a new, closed one and release the old.
func TestBreakerE2EStateSurvivesReload(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	cs := flakyServer(t, &failing)
	up := startEchoUpstream(t)
	cfg := fill(breakerConfig, "CS", cs.URL, "OPEN", "60000")
	h := startBehind(t, cfg, up)
	for i := 0; i < 3; i++ {
		h.Get(t, "/hard")
	}
	failing.Store(false)
	if err := h.Reload(cfg + "      - name: extra\n        paths: [\"/extra\"]\n"); err != nil {
		t.Fatal(err)
	}
	resp, body := h.Get(t, "/hard")
	wantStatus(t, resp, body, 502)
	if n := cs.Count(); n != 3 {
		t.Fatalf("callout server hits %d after a reload, want 3 (still open)", n)
	}
	if err := h.Reload(fill(breakerConfig, "CS", cs.URL, "OPEN", "60001")); err != nil {
		t.Fatal(err)
	}
	resp, body = h.Get(t, "/hard")
	wantStatus(t, resp, body, 200)
	if n := cs.Count(); n != 4 {
		t.Fatalf("callout server hits %d with new settings, want 4", n)
	}
	// The old snapshot closes once its last stream ended.
	held := func() bool {
		old := false
		h.Resources.Each(func(k string, _ io.Closer) { old = old || strings.HasPrefix(k, "callout-breaker|3|60000|") })
		return old
	}
	for deadline := time.Now().Add(2 * time.Second); held() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if held() {
		t.Error("the old breaker is still held")
	}
}

const partialConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: partial
        paths: ["/partial"]
        plugins:
          - name: request-callout
            config:
              {{OPT}}
              callouts:
                - name: good
                  request: {url: "{{CS}}/good"}
                - name: bad
                  request:
                    url: "{{CS}}/bad"
                    error: {on_error: continue, http_statuses: [500]}
              upstream:
                by_lua: |
                  local f = kong.ctx.shared.callouts_failed
                  kong.service.request.set_header("X-Failed", f and table.concat(f, ",") or "none")
`

func TestPartialE2EMarkerOnlyWhenACalloutFailed(t *testing.T) {
	var failing atomic.Bool
	cs := startRecServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Path == "/bad" && failing.Load() {
			answerJSON(500, `{}`)(w, r, n)
			return
		}
		answerJSON(200, `{"ok":true}`)(w, r, n)
	})
	up := startEchoUpstream(t)
	h := startBehind(t, fill(partialConfig, "CS", cs.URL, "OPT", ""), up)

	// Every callout succeeded: no marker, and Envoy is not asked for the
	// response headers.
	resp, body, tr := h.DoTraced(t, h.Request(t, "GET", "/partial", ""))
	wantStatus(t, resp, body, 200)
	if resp.Header.Get("X-Sidecall-Completed") != "" {
		t.Error("marker set although every callout succeeded")
	}
	if e := envoytest.DecodeEcho(t, body); e.Header("X-Failed") != "none" {
		t.Errorf("X-Failed %q, want none", e.Header("X-Failed"))
	}
	for _, k := range tr.SentKinds() {
		if k == "response_headers" {
			t.Errorf("Envoy sent the response headers on a complete request: %v", tr.SentKinds())
		}
	}

	failing.Store(true)
	resp, body, tr = h.DoTraced(t, h.Request(t, "GET", "/partial", ""))
	wantStatus(t, resp, body, 200)
	if got := resp.Header.Get("X-Sidecall-Completed"); got != "false" {
		t.Errorf("X-Sidecall-Completed %q, want false", got)
	}
	if e := envoytest.DecodeEcho(t, body); e.Header("X-Failed") != "bad" || e.Header("X-Sidecall-Completed") != "" {
		t.Errorf("upstream X-Failed %q (want bad), X-Sidecall-Completed %q (want none)", e.Header("X-Failed"), e.Header("X-Sidecall-Completed"))
	}
	if !strings.Contains(strings.Join(tr.SentKinds(), ","), "response_headers") {
		t.Errorf("Envoy was not asked for the response headers: %v", tr.SentKinds())
	}

	// Another name, and off.
	if err := h.Reload(fill(partialConfig, "CS", cs.URL, "OPT", "partial_header: X-Partial")); err != nil {
		t.Fatal(err)
	}
	resp, _ = h.Get(t, "/partial")
	if resp.Header.Get("X-Partial") != "false" || resp.Header.Get("X-Sidecall-Completed") != "" {
		t.Errorf("X-Partial %q, X-Sidecall-Completed %q", resp.Header.Get("X-Partial"), resp.Header.Get("X-Sidecall-Completed"))
	}
	if err := h.Reload(fill(partialConfig, "CS", cs.URL, "OPT", `partial_header: ""`)); err != nil {
		t.Fatal(err)
	}
	resp, body = h.Get(t, "/partial")
	if resp.Header.Get("X-Sidecall-Completed") != "" {
		t.Error("marker set although partial_header is empty")
	}
	if e := envoytest.DecodeEcho(t, body); e.Header("X-Failed") != "bad" {
		t.Errorf("X-Failed %q with the header off, want bad", e.Header("X-Failed"))
	}
}

// A POST body read by the plugin: access runs on the request body, when it
// is too late to ask Envoy per request; the marker still arrives.
func TestPartialE2EMarkerWithBufferedBody(t *testing.T) {
	cs := startRecServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Path == "/bad" {
			answerJSON(500, `{}`)(w, r, n)
			return
		}
		answerJSON(200, `{"ok":true}`)(w, r, n)
	})
	up := startEchoUpstream(t)
	cfg := strings.Replace(fill(partialConfig, "CS", cs.URL, "OPT", ""), `request: {url: "`+cs.URL+`/good"}`,
		`request: {url: "`+cs.URL+`/good", method: POST, body: {forward: true}, error: {on_error: continue}}`, 1)
	h := startBehind(t, cfg, up)
	resp, body := h.Do(t, h.Request(t, "POST", "/partial", `{"a":1}`, "content-type", "application/json"))
	wantStatus(t, resp, body, 200)
	if got := resp.Header.Get("X-Sidecall-Completed"); got != "false" {
		t.Errorf("X-Sidecall-Completed %q, want false", got)
	}
	if e := envoytest.DecodeEcho(t, body); e.Header("X-Failed") != "bad" {
		t.Errorf("X-Failed %q, want bad", e.Header("X-Failed"))
	}
	if len(cs.All()) != 2 || cs.All()[0].Body == "" && cs.All()[1].Body == "" {
		t.Errorf("the body was not forwarded: %+v", cs.All())
	}
}

const hedgeConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: hedged
        paths: ["/hedged"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: slow
                  request:
                    url: "{{CS}}/slow"
                    method: {{METHOD}}
                    hedge_after_ms: 50
                    {{UNSAFE}}
                  response: {body: {decode: true}}
              upstream:
                by_lua: kong.service.request.set_header("X-N", tostring(kong.ctx.shared.callouts.slow.response.body.n))
`

// slowThenFast answers its first request after 2 s, later ones at once;
// it counts the requests and the ones canceled by the client.
func slowThenFast(t *testing.T, canceled *atomic.Int32) *envoytest.Recorder {
	return startRecServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			select {
			case <-r.Context().Done():
				canceled.Add(1)
				return
			case <-time.After(5 * time.Second):
			}
		}
		answerJSON(200, `{"n":`+string(rune('0'+n))+`}`)(w, r, n)
	})
}

func TestHedgeE2EFirstAnswerWinsOtherCanceled(t *testing.T) {
	var canceled atomic.Int32
	cs := slowThenFast(t, &canceled)
	up := startEchoUpstream(t)
	h := startBehind(t, fill(hedgeConfig, "CS", cs.URL, "METHOD", "GET", "UNSAFE", ""), up)
	start := time.Now()
	resp, body := h.Get(t, "/hedged")
	wantStatus(t, resp, body, 200)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("hedged call took %v, want the fast answer", d)
	}
	if e := envoytest.DecodeEcho(t, body); e.Header("X-N") != "2" {
		t.Fatalf("X-N %q, want the second request's answer", e.Header("X-N"))
	}
	if n := cs.Count(); n != 2 {
		t.Fatalf("callout server got %d requests, want 2", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for canceled.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if canceled.Load() != 1 {
		t.Fatal("the slow request was not canceled")
	}
	if v := metricValue(t, h.Metrics, "sidecall_callout_hedges_total", map[string]string{"route": "hedged", "callout": "slow"}); v != 1 {
		t.Fatalf("hedges counted %v, want 1", v)
	}
}

// POST is not hedged unless hedge_unsafe (the load warns).
func TestHedgeE2EUnsafeMethodNeedsOptIn(t *testing.T) {
	var canceled atomic.Int32
	cs := slowThenFast(t, &canceled)
	up := startEchoUpstream(t)
	h := startBehind(t, fill(hedgeConfig, "CS", cs.URL, "METHOD", "POST", "UNSAFE", ""), up)
	resp, body := h.Get(t, "/hedged")
	wantStatus(t, resp, body, 200)
	if n := cs.Count(); n != 1 {
		t.Fatalf("callout server got %d POSTs, want 1 (no hedge)", n)
	}
	cs.Reset()
	if err := h.Reload(fill(hedgeConfig, "CS", cs.URL, "METHOD", "POST", "UNSAFE", "hedge_unsafe: true")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, body = h.Get(t, "/hedged")
	wantStatus(t, resp, body, 200)
	if d := time.Since(start); d > 3*time.Second || cs.Count() != 2 {
		t.Fatalf("hedge_unsafe POST: %v, %d requests; want fast, 2", d, cs.Count())
	}
}
