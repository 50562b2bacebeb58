package envoytest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// Recorded is one request a Recorder received.
type Recorded struct {
	Method, Path, Query, Host string
	Header                    http.Header
	Body                      string
}

// Recorder is an HTTP server on 127.0.0.1 (an upstream, a callout target,
// a shared flow) that records every request before answering it.
type Recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []Recorded
}

// Record starts a Recorder; answer writes the reply to the n-th request
// (from 1), whose body has been read already.
func Record(t testing.TB, answer func(n int, w http.ResponseWriter, r *http.Request)) *Recorder {
	t.Helper()
	rec := &Recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, Recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Header.Clone(), string(b)})
		n := len(rec.reqs)
		rec.mu.Unlock()
		answer(n, w, r)
	}))
	t.Cleanup(rec.Close)
	return rec
}

// Count is how many requests arrived.
func (rec *Recorder) Count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.reqs)
}

// All returns the requests in arrival order.
func (rec *Recorder) All() []Recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]Recorded(nil), rec.reqs...)
}

// Last returns the latest request; the test fails if none arrived.
func (rec *Recorder) Last(t testing.TB) Recorded {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		t.Fatal("no request arrived")
	}
	return rec.reqs[len(rec.reqs)-1]
}
