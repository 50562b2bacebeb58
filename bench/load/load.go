// Package load is the benchmark load client: it plays Envoy's lock-step
// ext_proc exchange (send, wait for the reply, send the next) per stream.
package load

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
)

// Scenario is one kind of stream.
type Scenario struct {
	Name     string
	Route    string // sent as the xds.route_name attribute
	Path     string
	Response bool     // also send response headers (echo_downstream)
	Headers  []string // extra request headers: name, value pairs
}

// Result of one run.
type Result struct {
	Streams  int
	Elapsed  time.Duration
	P50, P99 time.Duration
	Errors   int
}

// PerSecond is the stream rate.
func (r Result) PerSecond() float64 { return float64(r.Streams) / r.Elapsed.Seconds() }

func requestHeaders(s Scenario) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte("GET")}, {Key: ":path", RawValue: []byte(s.Path)},
		{Key: ":scheme", RawValue: []byte("http")}, {Key: ":authority", RawValue: []byte("bench.local")},
		{Key: "user-agent", RawValue: []byte("curl/8.5.0")}, {Key: "accept", RawValue: []byte("*/*")},
		{Key: "x-forwarded-proto", RawValue: []byte("http")}, {Key: "x-request-id", RawValue: []byte("5f0c8c1e-6d1b-4a8e-9a57-1f8f3c2b9d10")},
	}}
	for i := 0; i+1 < len(s.Headers); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: s.Headers[i], RawValue: []byte(s.Headers[i+1])})
	}
	return &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: true}},
		Attributes: map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
			"xds.route_name": structpb.NewStringValue(s.Route),
			"source.address": structpb.NewStringValue("10.0.0.7:51544"),
		}}},
		MetadataContext: &corev3.Metadata{},
	}
}

var responseHeaders = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
	Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}, {Key: "content-type", RawValue: []byte("application/json")}}}, EndOfStream: true}}}

// one runs a stream the way Envoy does: the request headers, then the
// response headers only if the processor asked for them, then closes.
func one(ctx context.Context, c extprocv3.ExternalProcessorClient, s Scenario) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // Envoy resets the stream once done
	st, err := c.Process(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(requestHeaders(s)); err != nil {
		return err
	}
	r, err := RecvReply(st)
	if err != nil {
		return err
	}
	wantResp := s.Response
	if mo := r.GetModeOverride(); mo != nil {
		wantResp = mo.GetResponseHeaderMode() == 1 // SEND
	}
	if wantResp {
		if err := st.Send(responseHeaders); err != nil {
			return err
		}
		if _, err := RecvReply(st); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	return st.CloseSend()
}

// RecvReply reads the next reply, skipping override_message_timeout
// messages as Envoy does (they only extend its timer).
func RecvReply(st extprocv3.ExternalProcessor_ProcessClient) (*extprocv3.ProcessingResponse, error) {
	for {
		r, err := st.Recv()
		if err != nil || r.GetOverrideMessageTimeout() == nil || r.GetResponse() != nil {
			return r, err
		}
	}
}

// Run drives n streams with the given concurrency over conn.
func Run(ctx context.Context, conn *grpc.ClientConn, s Scenario, concurrency, n int) Result {
	c := extprocv3.NewExternalProcessorClient(conn)
	lat := make([]time.Duration, n)
	var next, errs int
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				err := one(ctx, c, s)
				lat[i] = time.Since(t)
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return Result{Streams: n, Elapsed: el, P50: lat[n/2], P99: lat[n*99/100], Errors: errs}
}
