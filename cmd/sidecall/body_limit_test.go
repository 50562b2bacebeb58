package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// TestMaxBodySizeFlagChecked: --max-body-size (or SIDECALL_MAX_BODY_SIZE)
// must be above 0 and at most 1 GiB, for every command that runs sidecall.
func TestMaxBodySizeFlagChecked(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  string
	}{
		{[]string{"serve", "-c", "/nonexistent.yml", "--max-body-size", "0"}, ""},
		{[]string{"serve", "-c", "/nonexistent.yml"}, "1073741825"},
		{[]string{"try", "-c", "/nonexistent.yml", "--upstream", "http://127.0.0.1:1", "--max-body-size", "-1"}, ""},
		{[]string{"demo"}, "0"},
	} {
		t.Run(strings.Join(c.args, " ")+" "+c.env, func(t *testing.T) {
			if c.env != "" {
				t.Setenv("SIDECALL_MAX_BODY_SIZE", c.env)
			}
			var stdout, stderr syncBuf
			code := run(c.args, &stdout, &stderr)
			want := "sidecall " + c.args[0] + ": --max-body-size: want a size in bytes above 0 and at most 1073741824 (1 GiB), got "
			if code != 2 || !strings.HasPrefix(stderr.String(), want) {
				t.Errorf("exit %d, stderr %q; want exit 2, stderr %q...", code, stderr.String(), want)
			}
		})
	}
	var stderr syncBuf
	fs := newFlags("serve", &stderr)
	var f serveFlags
	f.register(fs)
	if err := parseFlags(fs, nil); err != nil || f.maxBody != 8<<20 {
		t.Errorf("default max-body-size %d (%v), want 8 MiB", f.maxBody, err)
	}
}

// TestServeMaxBodySize: SIDECALL_MAX_BODY_SIZE reaches the processor: a
// request body over it, across chunks, gets 413 and is counted.
func TestServeMaxBodySize(t *testing.T) {
	t.Setenv("SIDECALL_MAX_BODY_SIZE", "8")
	cfg := "services: [{name: a, url: 'http://127.0.0.1:1', routes: [{name: r, paths: [/], plugins: " +
		"[{name: pre-function, config: {access: [\"local b = kong.request.get_raw_body()\"]}}]}]}]\n"
	s := startServe(t, writeConfig(t, cfg))
	client := extprocv3.NewExternalProcessorClient(dial(t, s.grpc))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := reqHeaders("/a", "x-request-id", "rid-413")
	h.GetRequestHeaders().EndOfStream = false
	var last *extprocv3.ProcessingResponse
	for _, m := range []*extprocv3.ProcessingRequest{h,
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("12345")}}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("6789"), EndOfStream: true}}},
	} {
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
		if last, err = st.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	ir := last.GetImmediateResponse()
	var body map[string]string
	if ir.GetStatus().GetCode() != 413 || json.Unmarshal(ir.GetBody(), &body) != nil || body["request_id"] != "rid-413" {
		t.Fatalf("want a 413 JSON error, got %v", last)
	}
	if v := s.metric(t, `sidecall_stream_errors_total{reason="request_body_too_large"}`); v != 1 {
		t.Errorf("request_body_too_large %v, want 1", v)
	}
}
