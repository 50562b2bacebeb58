package callout

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sidecall/sidecall/flows"
)

func benchServer(b *testing.B) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"token":"t"}`))
	}))
	b.Cleanup(s.Close)
	return s
}

// One callout, no cache: every request makes the HTTP call.
func BenchmarkOneCalloutMiss(b *testing.B) {
	s := benchServer(b)
	p := build(b, fmt.Sprintf(`{callouts: [{name: a, request: {url: %q}, response: {body: {decode: true}}}], upstream: {headers: {custom: {Authorization: "Bearer $(callouts.a.response.body.token)"}}}}`, s.URL))
	b.ReportAllocs()
	for b.Loop() {
		x := flows.NewExchange("r", flows.Request{Method: "GET", Path: "/"}, nil)
		if err := p.Access(context.Background(), x); err != nil {
			b.Fatal(err)
		}
	}
}

// One callout answered from the memory cache.
func BenchmarkMemoryCacheHit(b *testing.B) {
	s := benchServer(b)
	p := build(b, fmt.Sprintf(`{callouts: [{name: a, request: {url: %q}, response: {body: {decode: true}}}], cache: {strategy: memory}, upstream: {headers: {custom: {Authorization: "Bearer $(callouts.a.response.body.token)"}}}}`, s.URL))
	b.ReportAllocs()
	for b.Loop() {
		x := flows.NewExchange("r", flows.Request{Method: "GET", Path: "/"}, nil)
		if err := p.Access(context.Background(), x); err != nil {
			b.Fatal(err)
		}
	}
}
