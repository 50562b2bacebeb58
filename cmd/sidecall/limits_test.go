package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestServeMaxRecvMsgSize: --max-recv-msg-size reaches the gRPC server: a
// larger message ends its stream with ResourceExhausted, and the next
// stream on the same connection is served.
func TestServeMaxRecvMsgSize(t *testing.T) {
	s := startServe(t, writeConfig(t, echoConfig), "--max-recv-msg-size", "4096")
	client := extprocv3.NewExternalProcessorClient(dial(t, s.grpc))
	one := func(m *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := client.Process(ctx)
		if err != nil {
			return nil, err
		}
		if err := st.Send(m); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return st.Recv()
	}
	_, err := one(reqHeaders("/a", "x-big", strings.Repeat("a", 8192)))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("an 8 KiB message with a 4 KiB limit: want ResourceExhausted, got %v", err)
	}
	r, err := one(reqHeaders("/a", "x-small", strings.Repeat("a", 2048)))
	if err != nil || len(r.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()) != 1 {
		t.Fatalf("a normal stream after the oversized one: %v %v", r, err)
	}
	if v := s.metric(t, `sidecall_stream_errors_total{reason="recv"}`); v != 1 {
		t.Errorf("recv stream errors %v, want 1 (the oversized message)", v)
	}
}
