package envoytest

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// Recorded is one request a Recorder received.
type Recorded struct {
	Method, Path, Query, Host string
	URI                       string // the request target as sent on the wire
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
	rec := newRecorder(answer)
	rec.Start()
	t.Cleanup(rec.Close)
	return rec
}

// RecordTLS is Record over https with cert, or with httptest's
// self-signed certificate for 127.0.0.1 (which no system root trusts) when
// cert is nil. Handshake errors are not logged: they are what such tests
// look for.
func RecordTLS(t testing.TB, cert *tls.Certificate, answer func(n int, w http.ResponseWriter, r *http.Request)) *Recorder {
	t.Helper()
	rec := newRecorder(answer)
	rec.Config.ErrorLog = log.New(io.Discard, "", 0)
	if cert != nil {
		rec.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	rec.StartTLS()
	t.Cleanup(rec.Close)
	return rec
}

func newRecorder(answer func(n int, w http.ResponseWriter, r *http.Request)) *Recorder {
	rec := &Recorder{}
	rec.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, Recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host,
			URI: r.RequestURI, Header: r.Header.Clone(), Body: string(b)})
		n := len(rec.reqs)
		rec.mu.Unlock()
		answer(n, w, r)
	}))
	return rec
}

// Reset forgets the requests so far.
func (rec *Recorder) Reset() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.reqs = nil
}

// Only returns the one request that arrived; the test fails unless
// exactly one did.
func (rec *Recorder) Only(t testing.TB) Recorded {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) != 1 {
		t.Fatalf("%d requests arrived, want 1", len(rec.reqs))
	}
	return rec.reqs[0]
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
