package processor

import (
	"bytes"
	"context"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/sidecall/sidecall/flows"
)

var fuzzSep = []byte("\xff\xfe|")

func seq(msgs ...*extprocv3.ProcessingRequest) []byte {
	var parts [][]byte
	for _, m := range msgs {
		b, _ := proto.Marshal(m)
		parts = append(parts, b)
	}
	return bytes.Join(parts, fuzzSep)
}

// FuzzProcess feeds random message sequences to one stream's state machine.
// Whatever arrives, handle must answer or report a protocol fault, and no
// panic may be recovered from sidecall's own code.
func FuzzProcess(f *testing.F) {
	body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("x"), EndOfStream: true}}}
	resp := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("201")}}}}}}
	respBody := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte("y"), EndOfStream: true}}}
	f.Add(seq(headers("GET", "/plain", true)))
	f.Add(seq(headers("GET", "/corr", true), resp))
	f.Add(seq(headers("POST", "/body", false, "content-length", "1"), body, resp, respBody))
	f.Add(seq(resp, respBody))
	f.Add(seq(body, headers("GET", "/corr?q=1", false)))
	f.Add([]byte{0x0a, 0x00})
	snap, err := flows.Load("kong.yml", []byte(testConfig), flows.LoadOptions{Registry: registry()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		srv := New(Options{})
		st := newStream(srv, snap, context.Background())
		for _, part := range bytes.Split(data, fuzzSep) {
			var m extprocv3.ProcessingRequest
			if proto.Unmarshal(part, &m) != nil {
				continue
			}
			if route := m.GetRequestHeaders(); route != nil && bytes.Contains(part, []byte("/boom")) {
				continue // the panicking test plugin is not what we fuzz
			}
			r, err := st.handle(&m)
			// A recovered panic ends the stream (finished), so look now.
			if n := testutil.ToFloat64(srv.metrics.panics); n != 0 {
				t.Fatalf("%v panics recovered handling %v", n, &m)
			}
			if err != nil {
				return
			}
			if r == nil || r.GetResponse() == nil {
				t.Fatalf("no reply to %v", &m)
			}
			if b, n := sizeBound(r), proto.Size(r); b < n {
				t.Fatalf("sizeBound %d below the size %d of %v", b, n, r)
			}
			if st.finished() {
				return
			}
		}
	})
}
