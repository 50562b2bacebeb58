package processor

import (
	"context"
	"testing"

	"github.com/sidecall/sidecall/flows"
)

// BenchmarkHandlePassThrough is sidecall's own work for a pass-through
// stream (no gRPC): what it adds over a bare CONTINUE server.
func BenchmarkHandlePassThrough(b *testing.B) {
	snap, err := flows.Load("kong.yml", []byte(testConfig), flows.LoadOptions{Registry: registry()})
	if err != nil {
		b.Fatal(err)
	}
	srv := New(Options{})
	msg := headers("GET", "/plain", true, "user-agent", "curl/8", "accept", "*/*", "x-request-id", "abc")
	b.ReportAllocs()
	for b.Loop() {
		st := newStream(srv, snap, context.Background())
		if _, err := st.handle(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandleCorrelationID(b *testing.B) {
	snap, err := flows.Load("kong.yml", []byte(testConfig), flows.LoadOptions{Registry: registry()})
	if err != nil {
		b.Fatal(err)
	}
	srv := New(Options{})
	msg := headers("GET", "/corr", true, "user-agent", "curl/8", "accept", "*/*", "x-request-id", "abc")
	b.ReportAllocs()
	for b.Loop() {
		st := newStream(srv, snap, context.Background())
		if _, err := st.handle(msg); err != nil {
			b.Fatal(err)
		}
	}
}
