package callout_test

// End-to-end reproductions of the callout URL and client-error problems:
// a real client → the envoy stand-in → a sidecall processor whose
// request-callout knows a fake "admin" listener as its own (SelfAddrs) →
// callout servers and the Echo upstream, all on 127.0.0.1.

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidecall/sidecall/callout"
	"github.com/sidecall/sidecall/envoy/envoytest"
	"github.com/sidecall/sidecall/flows"
)

// secHarness is a harness whose only plugin is request-callout with self as
// its own listeners, its metrics in reg and its logs observed.
type secHarness struct {
	*envoytest.Harness
	reg  *prometheus.Registry
	logs *observer.ObservedLogs
	ups  interface{ Load() int32 }
}

func startSec(t *testing.T, callouts string, self ...string) *secHarness {
	t.Helper()
	up, hits := upstream(t)
	reg := prometheus.NewRegistry()
	r := flows.NewRegistry()
	callout.Register(r, callout.Options{Metrics: reg, Version: "test", SelfAddrs: self})
	core, logs := observer.New(zap.DebugLevel)
	cfg := `_format_version: "3.0"
services:
  - name: s
    url: ` + up + `
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: request-callout
            config:
              callouts:
` + callouts
	h := envoytest.Start(t, cfg, envoytest.Options{Upstream: up, Registry: r, Log: zap.New(core)})
	return &secHarness{Harness: h, reg: reg, logs: logs, ups: hits}
}

// metric is the value of the series of name with labels (0 if none).
func (h *secHarness) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

func (h *secHarness) refused(t *testing.T, reason string) float64 {
	return h.metric(t, "sidecall_callout_refused_total", map[string]string{"callout": "a", "reason": reason})
}

// errorLogs are the entries at error level or above.
func (h *secHarness) errorLogs() []observer.LoggedEntry {
	return h.logs.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zapcore.ErrorLevel }).All()
}

func hostPort(rec *envoytest.Recorder) string { return strings.TrimPrefix(rec.URL, "http://") }

// wantJSONError checks sidecall's {"message","request_id"} answer.
func wantJSONError(t *testing.T, resp *http.Response, body []byte, status int, message string) {
	t.Helper()
	var e map[string]string
	if resp.StatusCode != status || json.Unmarshal(body, &e) != nil || e["message"] != message || e["request_id"] == "" || len(e) != 2 {
		t.Fatalf("status %d body %s: want %d {message: %q, request_id}", resp.StatusCode, body, status, message)
	}
}

// Reproduction 1: url http://127.0.0.1:PORT$(headers["x-path"]) with
// x-path "@127.0.0.1:ADMIN/config" reached the admin listener's /config.
func TestE2EPathValueCannotReachAdmin(t *testing.T) {
	admin := envoytest.Record(t, func(int, http.ResponseWriter, *http.Request) {})
	cs := startRecServer(t, nil)
	h := startSec(t, `                - name: a
                  request:
                    url: 'http://`+hostPort(cs)+`$(headers["x-path"])'
`, hostPort(admin))
	resp, body := h.Get(t, "/", "x-path", "@"+hostPort(admin)+"/config")
	wantJSONError(t, resp, body, 400, "service callout error")
	if admin.Count() != 0 || cs.Count() != 0 || h.ups.Load() != 0 {
		t.Fatalf("admin %d, callout server %d, upstream %d requests", admin.Count(), cs.Count(), h.ups.Load())
	}
	if h.refused(t, "url_component") != 1 {
		t.Fatal("refusal not counted")
	}
	for _, e := range h.logs.FilterMessageSnippet("url refused").All() {
		if strings.Contains(e.Message, hostPort(admin)) || strings.Contains(fmtFields(e), hostPort(admin)) {
			t.Fatalf("the log names the value: %v", e)
		}
	}
	resp, body = h.Get(t, "/", "x-path", "/users/42")
	decodeEcho(t, resp, body)
	if got := cs.Only(t); got.URI != "/users/42" {
		t.Fatalf("callout server got %s", got.URI)
	}
}

func fmtFields(e observer.LoggedEntry) string {
	var b strings.Builder
	for k, v := range e.ContextMap() {
		b.WriteString(k + "=" + strings.TrimSpace(strings.ReplaceAll(toString(v), "\n", " ")) + " ")
	}
	return b.String()
}

func toString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Reproduction 2: http://$(headers["x-tenant"]).svc.local/check with a
// tenant of "127.0.0.1:ADMIN/healthz?" reached the admin listener; and
// the loopback and own-listener rules for a host from a template.
func TestE2EHostValueCannotReachAdmin(t *testing.T) {
	admin := envoytest.Record(t, func(int, http.ResponseWriter, *http.Request) {})
	cs := startRecServer(t, nil)
	_, csPort, _ := strings.Cut(hostPort(cs), ":")
	_, adminPort, _ := strings.Cut(hostPort(admin), ":")
	h := startSec(t, `                - name: a
                  request:
                    url: 'http://$(headers["x-tenant"]).svc.local/check'
`, hostPort(admin))
	resp, body := h.Get(t, "/", "x-tenant", hostPort(admin)+"/healthz?")
	wantJSONError(t, resp, body, 400, "service callout error")
	if admin.Count() != 0 || h.refused(t, "url_component") != 1 {
		t.Fatalf("admin %d requests, url_component %v", admin.Count(), h.refused(t, "url_component"))
	}

	// A host from a template: loopback only when listed exactly; the own
	// listeners never, in any spelling.
	h = startSec(t, `                - name: a
                  request:
                    url: 'http://$(headers["x-host"])/check'
                    allowed_hosts: ["127.0.0.1", "*.svc.local"]
`, hostPort(admin))
	resp, body = h.Get(t, "/", "x-host", "127.0.0.1:"+csPort)
	decodeEcho(t, resp, body)
	if got := cs.Only(t); got.URI != "/check" {
		t.Fatalf("callout server got %s", got.URI)
	}
	for _, host := range []string{"127.0.0.1", "0x7f.1", "2130706433", "[::ffff:127.0.0.1]", "127.1", "localhost"} {
		resp, body = h.Get(t, "/", "x-host", host+":"+adminPort)
		wantJSONError(t, resp, body, 400, "service callout error")
	}
	if h.refused(t, "self") != 6 {
		t.Fatalf("self refusals %v", h.refused(t, "self"))
	}
	h = startSec(t, `                - name: a
                  request:
                    url: 'http://$(headers["x-host"])/check'
                    allowed_hosts: ["*.svc.local"]
`, hostPort(admin))
	for _, host := range []string{"127.0.0.1", "0x7f.1", "2130706433", "[::ffff:127.0.0.1]", "127.1", "localhost", "169.254.169.254", "[::1]"} {
		resp, body = h.Get(t, "/", "x-host", host+":"+csPort)
		wantJSONError(t, resp, body, 400, "service callout error")
	}
	if h.refused(t, "forbidden_host") != 8 || admin.Count() != 0 || cs.Count() != 1 {
		t.Fatalf("forbidden %v, admin %d, callout server %d", h.refused(t, "forbidden_host"), admin.Count(), cs.Count())
	}
}

// A query value stays one value (?user=bob%26role%3Dadmin used to become
// user=bob&role=admin); a path value stays one segment ("..%3F...%23",
// decoded "..?...#", used to cut the path at "..").
func TestE2EQueryAndPathValuesStayInPlace(t *testing.T) {
	cs := startRecServer(t, nil)
	h := startSec(t, `                - name: a
                  request:
                    url: '`+cs.URL+`/items/$(query_params.id)/detail?user=$(query_params.user)'
`)
	resp, body := h.Get(t, "/?user=bob%26role%3Dadmin&id=..%3F...%23")
	decodeEcho(t, resp, body)
	got := cs.Only(t)
	if got.URI != "/items/..%3F...%23/detail?user=bob%26role%3Dadmin" || got.Path != "/items/..?...#/detail" {
		t.Fatalf("callout server got %s (path %q)", got.URI, got.Path)
	}
	q := strings.Split(got.Query, "&")
	if len(q) != 1 || q[0] != "user=bob%26role%3Dadmin" {
		t.Fatalf("query %q: want one value", got.Query)
	}
	for _, id := range []string{"..", "."} {
		resp, body = h.Get(t, "/?user=u&id="+id)
		wantJSONError(t, resp, body, 400, "service callout error")
	}
	if cs.Count() != 1 || h.refused(t, "url_component") != 2 {
		t.Fatalf("callout server %d requests, refused %v", cs.Count(), h.refused(t, "url_component"))
	}
}

// CR/LF/NUL from the client in a templated header, url or query value:
// 400 JSON, nothing sent, no error log.
func TestE2EControlCharactersAre400(t *testing.T) {
	cs := startRecServer(t, nil)
	h := startSec(t, `                - name: a
                  request:
                    url: '`+cs.URL+`/x/$(query_params.p)'
                    headers: {custom: {X-V: '$(query_params.v)'}}
                    query: {custom: {q: '$(query_params.q)'}}
`)
	for _, q := range []string{"v=a%0D%0AX-Injected:%201", "v=a%00b", "p=a%0Ab", "q=a%0D"} {
		resp, body := h.Get(t, "/?"+q)
		wantJSONError(t, resp, body, 400, "invalid character in the request")
	}
	if cs.Count() != 0 || h.ups.Load() != 0 || h.refused(t, "bad_client_value") != 4 {
		t.Fatalf("callout server %d, upstream %d, counted %v", cs.Count(), h.ups.Load(), h.refused(t, "bad_client_value"))
	}
	if e := h.errorLogs(); len(e) != 0 {
		t.Fatalf("error logs: %v", e)
	}
	if n := h.logs.FilterMessageSnippet("control character").FilterLevelExact(zapcore.InfoLevel).Len(); n != 4 {
		t.Fatalf("%d info logs", n)
	}
}

// A client that goes away during a callout is canceled: no error log, no
// 504, the attempt counted as canceled.
func TestE2EClientCancelIsCanceled(t *testing.T) {
	got := make(chan struct{}, 1)
	cs := envoytest.Record(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		<-r.Context().Done()
	})
	h := startSec(t, `                - name: a
                  request:
                    url: '`+cs.URL+`/slow'
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-got:
		case <-time.After(10 * time.Second):
		}
		cancel()
	}()
	req := h.Request(t, "GET", "/", "")
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("the request was answered: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.metric(t, "sidecall_callout_requests_total", map[string]string{"callout": "a", "status_class": "canceled"}) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no canceled attempt counted; logs %v", h.logs.All())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the stream finish logging
	if e := h.errorLogs(); len(e) != 0 {
		t.Fatalf("error logs: %v", e)
	}
	if n := h.metric(t, "sidecall_callout_requests_total", map[string]string{"callout": "a", "status_class": "error"}); n != 0 {
		t.Fatalf("%v attempts counted as errors", n)
	}
	if h.ups.Load() != 0 {
		t.Fatal("the upstream was called")
	}
}
