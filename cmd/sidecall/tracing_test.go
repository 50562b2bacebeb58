package main

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/sidecall/sidecall/internal/tracing/tracingtest"
)

// TestServeTracingFromEnv: the standard OTEL_* variables alone turn
// tracing on in serve; spans still batched are flushed when it stops.
func TestServeTracingFromEnv(t *testing.T) {
	rcv := tracingtest.HTTP(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.Endpoint)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000") // only the flush on exit exports
	s := startServe(t, writeConfig(t, echoConfig))
	if !strings.Contains(s.stderr.String(), `"tracing on"`) {
		t.Errorf("no tracing on line: %s", s.stderr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := extprocv3.NewExternalProcessorClient(dial(t, s.grpc)).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, m := range []*extprocv3.ProcessingRequest{reqHeaders("/", "traceparent", tp), respHeaders()} {
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	_ = st.CloseSend()
	if n := rcv.Requests(); n != 0 {
		t.Fatalf("exported before exit: %d", n)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	if code := s.wait(t); code != 0 {
		t.Fatalf("serve exited %d: %s", code, s.stderr.String())
	}
	spans := rcv.WaitFor(t, "stream span", func(sp []tracingtest.Span) bool { return len(tracingtest.Find(sp, "ext_proc r")) == 1 })
	sp := tracingtest.One(t, spans, "ext_proc r")
	if sp.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || sp.Service != "sidecall" || sp.Attrs["http.response.status_code"] != "200" {
		t.Errorf("span %+v", sp)
	}
}
