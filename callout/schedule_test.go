package callout

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sidecall/sidecall/flows"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// timeline records when each callout's request started and ended at the
// test servers.
type timeline struct {
	mu     sync.Mutex
	t0     time.Time
	start  map[string]time.Duration
	end    map[string]time.Duration
	order  []string
	cancel map[string]bool // the server saw the request's context end early
}

func newTimeline() *timeline {
	return &timeline{t0: time.Now(), start: map[string]time.Duration{}, end: map[string]time.Duration{},
		cancel: map[string]bool{}}
}

// server is a 127.0.0.1 server answering name's callout after d with
// {"id": name} and status.
func (tl *timeline) server(t *testing.T, name string, d time.Duration, status int) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tl.mu.Lock()
		tl.start[name] = time.Since(tl.t0)
		tl.order = append(tl.order, name)
		tl.mu.Unlock()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			tl.mu.Lock()
			tl.cancel[name] = true
			tl.mu.Unlock()
			return
		}
		tl.mu.Lock()
		tl.end[name] = time.Since(tl.t0)
		tl.mu.Unlock()
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, `{"id":%q,"x":%q}`, name, r.Header.Get("x-b"))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func (tl *timeline) get(f func()) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	f()
}

// a (400 ms) is independent; c (400 ms) reads b (5 ms): c starts when b
// ends, not when a does, and the request takes the critical path (~405
// ms), not the sum of the waves (~805 ms). The bound is a bug catcher with
// room for a loaded machine; the bench has the precise number.
func TestCriticalPathNotWaves(t *testing.T) {
	tl := newTimeline()
	a := tl.server(t, "a", 400*time.Millisecond, 200)
	b := tl.server(t, "b", 5*time.Millisecond, 200)
	c := tl.server(t, "c", 400*time.Millisecond, 200)
	p := build(t, fmt.Sprintf(`callouts: [
	  {name: a, request: {url: "%s/a"}},
	  {name: b, request: {url: "%s/b"}, response: {body: {decode: true}}},
	  {name: c, request: {url: "%s/c", headers: {custom: {x-b: "$(callouts.b.response.body.id)"}}}, response: {body: {decode: true}}}]`, a, b, c))
	if fmt.Sprint(p.callouts[2].deps) != "[1]" {
		t.Fatalf("c's deps = %v, want [1] (inferred from the template)", p.callouts[2].deps)
	}
	// Warm the connections, so the measure is the schedule's.
	x := newX("GET", "/", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	tl.get(func() { tl.t0, tl.order = time.Now(), nil })
	x = newX("GET", "/", "", nil, "")
	start := time.Now()
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	tl.get(func() {
		if tl.start["c"] < tl.end["b"] {
			t.Errorf("c started at %v, before b ended at %v", tl.start["c"], tl.end["b"])
		}
		if tl.start["c"] >= tl.end["a"] {
			t.Errorf("c started at %v, after a ended at %v: waited for a", tl.start["c"], tl.end["a"])
		}
	})
	if got := mapGet(x.Shared["callouts"].(map[string]any), "c", "response", "body", "x"); got != "b" {
		t.Errorf("c rendered x-b = %v, want b", got)
	}
	if took >= 650*time.Millisecond {
		t.Fatalf("took %v, want < 650 ms (critical path ~405 ms; waves would take ~805 ms)", took)
	}
	t.Logf("a/b/c took %v", took)
}

// concurrency: sequential keeps Kong's order for the same graph: one at a
// time, in the stable topological order, taking the sum.
func TestSequentialKeepsKongOrderOnGraph(t *testing.T) {
	tl := newTimeline()
	a := tl.server(t, "a", 50*time.Millisecond, 200)
	b := tl.server(t, "b", 5*time.Millisecond, 200)
	c := tl.server(t, "c", 50*time.Millisecond, 200)
	d := tl.server(t, "d", 5*time.Millisecond, 200)
	// Kong's order: the lowest index whose dependencies are done: b, c, a, d.
	p := build(t, fmt.Sprintf(`{concurrency: sequential, callouts: [
	  {name: a, depends_on: [c], request: {url: "%s/a"}},
	  {name: b, request: {url: "%s/b"}, response: {body: {decode: true}}},
	  {name: c, request: {url: "%s/c", headers: {custom: {x-b: "$(callouts.b.response.body.id)"}}}},
	  {name: d, request: {url: "%s/d"}}]}`, a, b, c, d))
	start := time.Now()
	if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	tl.get(func() {
		if got := strings.Join(tl.order, ","); got != "b,c,a,d" {
			t.Errorf("order = %s, want b,c,a,d", got)
		}
		for _, pair := range [][2]string{{"b", "c"}, {"c", "a"}, {"a", "d"}} {
			if tl.start[pair[1]] < tl.end[pair[0]] {
				t.Errorf("%s started before %s ended", pair[1], pair[0])
			}
		}
	})
	if took < 110*time.Millisecond {
		t.Fatalf("took %v: sequential callouts overlapped", took)
	}
}

// A failing callout (on_error fail) stops the run: the callouts in flight
// in other branches are canceled, its dependents never sent, and the
// request does not wait for the slow branch.
func TestFailCancelsOtherBranches(t *testing.T) {
	tl := newTimeline()
	slow := tl.server(t, "slow", 5*time.Second, 200)
	bad := tl.server(t, "bad", 20*time.Millisecond, 500)
	after := tl.server(t, "after", 5*time.Millisecond, 200)
	p := build(t, fmt.Sprintf(`callouts: [
	  {name: slow, request: {url: "%s/slow"}},
	  {name: bad, request: {url: "%s/bad", error: {on_error: fail, http_statuses: [500], error_response_code: 502}}},
	  {name: after, depends_on: [bad], request: {url: "%s/after"}}]`, slow, bad, after))
	start := time.Now()
	err := p.Access(context.Background(), newX("GET", "/", "", nil, ""))
	took := time.Since(start)
	var he *flows.HTTPError
	if !errors.As(err, &he) || he.Status != 502 {
		t.Fatalf("err = %v, want the failing callout's 502", err)
	}
	if took > time.Second {
		t.Fatalf("took %v: waited for the slow branch", took)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		var canceled bool
		tl.get(func() { canceled = tl.cancel["slow"] })
		if canceled || time.Now().After(deadline) {
			if !canceled {
				t.Error("the slow callout was not canceled")
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	tl.get(func() {
		if _, sent := tl.start["after"]; sent {
			t.Error("a dependent of the failed callout was sent")
		}
	})
}

// on_error continue: a failing branch does not stop the others, and its
// dependents run.
func TestContinueKeepsOtherBranches(t *testing.T) {
	tl := newTimeline()
	slow := tl.server(t, "slow", 50*time.Millisecond, 200)
	bad := tl.server(t, "bad", 5*time.Millisecond, 500)
	after := tl.server(t, "after", 5*time.Millisecond, 200)
	p := build(t, fmt.Sprintf(`callouts: [
	  {name: slow, request: {url: "%s/slow"}},
	  {name: bad, request: {url: "%s/bad", error: {on_error: continue, http_statuses: [500]}}},
	  {name: after, depends_on: [bad], request: {url: "%s/after"}}]`, slow, bad, after))
	x := newX("GET", "/", "", nil, "")
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	calls := x.Shared["callouts"].(map[string]any)
	for name, want := range map[string]int{"slow": 200, "bad": 500, "after": 200} {
		if got := mapGet(calls, name, "response", "status"); got != want {
			t.Errorf("%s status = %v, want %d", name, got, want)
		}
	}
}

// max_parallel: 1 runs one call at a time; the ready callout heading the
// longest chain goes first.
func TestMaxParallelOneSerialises(t *testing.T) {
	var inflight, most atomic.Int32
	var mu sync.Mutex
	var order []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(10 * time.Millisecond)
		mu.Lock()
		order = append(order, strings.TrimPrefix(r.URL.Path, "/"))
		mu.Unlock()
		inflight.Add(-1)
	}))
	defer srv.Close()
	p := build(t, fmt.Sprintf(`{max_parallel: 1, callouts: [
	  {name: x1, request: {url: "%[1]s/x1"}}, {name: x2, request: {url: "%[1]s/x2"}},
	  {name: c0, request: {url: "%[1]s/c0"}}, {name: c1, depends_on: [c0], request: {url: "%[1]s/c1"}}]}`, srv.URL))
	if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if most.Load() != 1 || strings.Join(order, ",") != "c0,x1,x2,c1" {
		t.Fatalf("max in flight %d, order %v; want 1, c0,x1,x2,c1", most.Load(), order)
	}
}

// max_parallel bounds the calls in flight across the whole graph, not per
// wave.
func TestMaxParallelBoundsGraph(t *testing.T) {
	var inflight, most atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(time.Duration(len(r.URL.Path)) * time.Millisecond)
		inflight.Add(-1)
	}))
	defer srv.Close()
	var cs []string
	for i := 0; i < 12; i++ {
		dep := ""
		if i%3 != 0 {
			dep = fmt.Sprintf("depends_on: [c%d], ", i-1)
		}
		cs = append(cs, fmt.Sprintf(`{name: c%d, %srequest: {url: "%s/%s"}}`, i, dep, srv.URL, strings.Repeat("p", 5+i)))
	}
	p := build(t, "{max_parallel: 3, callouts: ["+strings.Join(cs, ",")+"]}")
	if err := p.Access(context.Background(), newX("GET", "/", "", nil, "")); err != nil {
		t.Fatal(err)
	}
	if m := most.Load(); m > 3 || m < 2 {
		t.Fatalf("max in flight = %d, want 2..3", m)
	}
}

// The plugin's timeout ends the calls in flight: 504, and no worker
// outlives the request (goleak in TestMain).
func TestTimeoutStopsGraph(t *testing.T) {
	tl := newTimeline()
	s1 := tl.server(t, "s1", 5*time.Second, 200)
	s2 := tl.server(t, "s2", 5*time.Second, 200)
	p := build(t, fmt.Sprintf(`{timeout: 100, callouts: [{name: s1, request: {url: "%s/s1"}}, {name: s2, request: {url: "%s/s2"}}]}`, s1, s2))
	start := time.Now()
	err := p.Access(context.Background(), newX("GET", "/", "", nil, ""))
	var he *flows.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusGatewayTimeout {
		t.Fatalf("err = %v, want 504", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("took %v", took)
	}
}

// A response.by_lua answering the client stops the run; the other branch
// in flight is canceled.
func TestLuaExitStopsGraph(t *testing.T) {
	tl := newTimeline()
	slow := tl.server(t, "slow", 5*time.Second, 200)
	fast := tl.server(t, "fast", 5*time.Millisecond, 200)
	p := build(t, fmt.Sprintf(`callouts: [{name: slow, request: {url: "%s/slow"}},
	  {name: fast, request: {url: "%s/fast"}, response: {by_lua: "kong.response.exit(418, 'no')"}}]`, slow, fast))
	x := newX("GET", "/", "", nil, "")
	start := time.Now()
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if x.Reply == nil || x.Reply.Status != 418 {
		t.Fatalf("reply = %+v", x.Reply)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("took %v: waited for the slow branch", took)
	}
}

// The series carry the route of the plugin's scope.
func TestSeriesCarryRoute(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	m.newSeries("r1", "user").attempt(200)
	m.newSeries("r2", "user").attempt(200)
	m.refuse("", "user", "self")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "route" {
					got[mf.GetName()+"/"+l.GetValue()]++
				}
			}
		}
	}
	for _, k := range []string{"sidecall_callout_requests_total/r1", "sidecall_callout_requests_total/r2",
		"sidecall_callout_duration_seconds/r1", "sidecall_callout_retries_total/r2", "sidecall_callout_cache_total/r1",
		"sidecall_callout_refused_total/"} {
		if got[k] == 0 {
			t.Errorf("no series %s (have %v)", k, got)
		}
	}
}

// A failed callout logs one WARN line a second, with callout, route and
// reason, then how many lines it held back.
func TestFailureWarnIsRateLimited(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // connection refused from now on
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: "http://%s/a", error: {on_error: continue}}}]`, addr))
	core, logs := observer.New(zap.DebugLevel)
	for i := 0; i < 3; i++ {
		x := flows.NewExchange("", flows.Request{Method: "GET", Path: "/", Headers: flows.Headers{}}, zap.New(core))
		if err := p.Access(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	lines := logs.FilterMessage("request-callout: callout failed").All()
	if len(lines) != 1 || lines[0].Level != zap.WarnLevel {
		t.Fatalf("lines = %v, want one WARN", lines)
	}
	f := lines[0].ContextMap()
	if f["callout"] != "a" || f["route"] != "r1" || f["reason"] != "connection_refused" || f["request_id"] == "" {
		t.Fatalf("fields = %v", f)
	}
	p.callouts[0].warn.mu.Lock()
	p.callouts[0].warn.next = time.Time{} // a second later
	p.callouts[0].warn.mu.Unlock()
	x := flows.NewExchange("req-9", flows.Request{Method: "GET", Path: "/", Headers: flows.Headers{}}, zap.New(core))
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	lines = logs.FilterMessage("request-callout: callout failed").All()
	if len(lines) != 2 || lines[1].ContextMap()["suppressed"] != int64(2) {
		t.Fatalf("lines = %v, want a second one with suppressed=2", lines)
	}
}
