package callout

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sidecall/sidecall/internal/httpx"
	"github.com/sidecall/sidecall/internal/netport"
)

// dripServer sends headers, then a byte every gap, n times.
func dripServer(t *testing.T, gap time.Duration, n int) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for range n {
			select {
			case <-time.After(gap):
			case <-r.Context().Done():
				return
			}
			_, _ = w.Write([]byte("x"))
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// retryErrs runs one request through a callout retried once on error and
// returns the error recorded for the first attempt.
func retryErrs(t *testing.T, url, timeouts string) (string, time.Duration) {
	t.Helper()
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, error: {on_error: retry, retries: 1}, http_opts: {timeouts: %s}}}]`, url, timeouts))
	x := newX("GET", "/", "", nil, "")
	start := time.Now()
	he := httpErr(t, p.Access(context.Background(), x))
	el := time.Since(start)
	if he.Status != 400 {
		t.Fatalf("status %d %q", he.Status, he.Message)
	}
	rs := ctxEntry(t, x, "a")["request"].(map[string]any)["retries"].([]any)
	if len(rs) != 1 {
		t.Fatalf("retries %v", rs)
	}
	return fmt.Sprint(rs[0].(map[string]any)["err"]), el
}

// Kong's read timeout is between reads: a target dripping a byte every
// 100 ms for 1 s is not cut by a 500 ms read timeout.
func TestReadTimeoutIsBetweenReads(t *testing.T) {
	srv := dripServer(t, 100*time.Millisecond, 10)
	p := build(t, fmt.Sprintf(`callouts: [{name: a, request: {url: %q, http_opts: {timeouts: {connect: 500, read: 500, write: 500}}}}]`, srv.URL))
	x := newX("GET", "/", "", nil, "")
	start := time.Now()
	if err := p.Access(context.Background(), x); err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("done after %v, before the drip ended", el)
	}
	resp := ctxEntry(t, x, "a")["response"].(map[string]any)
	if resp["body"] != "xxxxxxxxxx" {
		t.Fatalf("body %v", resp["body"])
	}
}

// A target silent for 600 ms after its headers fails a 300 ms read
// timeout, named as such.
func TestReadTimeoutSilentTarget(t *testing.T) {
	srv := dripServer(t, 600*time.Millisecond, 1)
	msg, el := retryErrs(t, srv.URL, `{connect: 1000, read: 300, write: 1000}`)
	if !strings.Contains(msg, "read timeout after 300ms") {
		t.Fatalf("err %q", msg)
	}
	if el < 600*time.Millisecond || el > 1500*time.Millisecond {
		t.Errorf("two attempts took %v", el)
	}
	if failReason(&httpx.TimeoutError{Phase: "read", Limit: time.Second}) != "timeout" {
		t.Error("a socket timeout is not logged as a timeout")
	}
}

// A silent target before the headers: the read timeout runs from the
// request written.
func TestReadTimeoutBeforeHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	msg, _ := retryErrs(t, srv.URL, `{connect: 1000, read: 200, write: 1000}`)
	if !strings.Contains(msg, "read timeout after 200ms") {
		t.Fatalf("err %q", msg)
	}
}

func TestConnectTimeout(t *testing.T) {
	url := netport.FullBacklog(t)
	msg, el := retryErrs(t, url, `{connect: 200, read: 5000, write: 5000}`)
	if !strings.Contains(msg, "connect timeout after 200ms") {
		t.Fatalf("err %q", msg)
	}
	if el < 400*time.Millisecond || el > 1500*time.Millisecond {
		t.Errorf("two attempts took %v", el)
	}
}

// The plugin timeout still bounds the whole, whatever the socket
// timeouts allow.
func TestPluginTimeoutBoundsSocketTimeouts(t *testing.T) {
	srv := dripServer(t, 100*time.Millisecond, 10)
	p := build(t, fmt.Sprintf(`{timeout: 300, callouts: [{name: a, request: {url: %q, error: {on_error: retry, retries: 3}, http_opts: {timeouts: {connect: 500, read: 500, write: 500}}}}]}`, srv.URL))
	start := time.Now()
	he := httpErr(t, p.Access(context.Background(), newX("GET", "/", "", nil, "")))
	if he.Status != 504 {
		t.Fatalf("status %d %q", he.Status, he.Message)
	}
	if el := time.Since(start); el > 800*time.Millisecond {
		t.Errorf("504 after %v", el)
	}
}
