package main

// The flow-callout-response section: a response-phase shared flow with
// apply_flow_response (the upstream response's body is POSTed to the flow,
// whose answer replaces it) against the same flow in the access phase
// (the request body is sent to the flow), on 1 KiB and 64 KiB bodies, on
// one in-process sidecall processor driven as Envoy does.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sidecall/sidecall/bench/load"
	"google.golang.org/protobuf/types/known/structpb"
)

func init() {
	sections = append(sections, section{name: "flow-callout-response", run: runFlowCalloutResponse})
}

var fcrRuns = []struct{ c, n int }{{1, 1500}, {16, 3000}}

func fcrBenchConfig(server string) string {
	return `_format_version: "3.0"
services:
  - name: bench-flow
    url: ` + server + `/flow
    connect_timeout: 1000
    write_timeout: 1000
    read_timeout: 2000
  - name: bench
    url: http://127.0.0.1:1
    routes:
      - name: access
        paths: ["/access"]
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: bench-flow
              store_flow_response_in_shared_context_key: flow
      - name: response
        paths: ["/response"]
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: bench-flow
              phase: response
              apply_flow_response: true
              store_flow_response_in_shared_context_key: flow
`
}

func fcrHeaders(method, path string, size int) *corev3.HeaderMap {
	hs := []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte(method)}, {Key: ":path", RawValue: []byte(path)},
		{Key: ":scheme", RawValue: []byte("http")}, {Key: ":authority", RawValue: []byte("bench.local")},
		{Key: "user-agent", RawValue: []byte("curl/8.5.0")}, {Key: "accept", RawValue: []byte("*/*")},
		{Key: "x-request-id", RawValue: []byte("5f0c8c1e-6d1b-4a8e-9a57-1f8f3c2b9d10")},
	}
	if size >= 0 {
		hs = append(hs, &corev3.HeaderValue{Key: "content-type", RawValue: []byte("application/json")},
			&corev3.HeaderValue{Key: "content-length", RawValue: []byte(strconv.Itoa(size))})
	}
	return &corev3.HeaderMap{Headers: hs}
}

// fcrStream runs one stream. Access phase: POST with body (request headers,
// then the BUFFERED body). Response phase: GET without body, then the
// response headers and the BUFFERED response body; the body mutation must
// be the flow's answer (the same size, the server echoes).
func fcrStream(ctx context.Context, c extprocv3.ExternalProcessorClient, route string, body []byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.Process(ctx)
	if err != nil {
		return err
	}
	resp := route == "response"
	method, size := "POST", len(body)
	if resp {
		method, size = "GET", -1
	}
	if err := st.Send(&extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: fcrHeaders(method, "/"+route+"?id=7", size), EndOfStream: resp}},
		Attributes: map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
			"xds.route_name": structpb.NewStringValue(route),
		}}},
	}); err != nil {
		return err
	}
	r, err := load.RecvReply(st)
	if err != nil {
		return err
	}
	if r.GetImmediateResponse() != nil {
		return fmt.Errorf("local reply %d at request headers", r.GetImmediateResponse().GetStatus().GetCode())
	}
	mo := r.GetModeOverride()
	if !resp {
		if mo.GetRequestBodyMode() != filterv3.ProcessingMode_BUFFERED || mo.GetResponseHeaderMode() == filterv3.ProcessingMode_SEND {
			return errors.New("access-phase flow: unexpected processing mode")
		}
		if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}}); err != nil {
			return err
		}
		if r, err = load.RecvReply(st); err != nil {
			return err
		}
		if ir := r.GetImmediateResponse(); ir != nil {
			return fmt.Errorf("local reply %d: %s", ir.GetStatus().GetCode(), ir.GetBody())
		}
		return st.CloseSend()
	}
	if mo.GetResponseBodyMode() != filterv3.ProcessingMode_BUFFERED || mo.GetRequestBodyMode() == filterv3.ProcessingMode_BUFFERED {
		return errors.New("response-phase flow: unexpected processing mode")
	}
	rh := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")},
		{Key: "content-type", RawValue: []byte("application/json")},
		{Key: "content-length", RawValue: []byte(strconv.Itoa(len(body)))}}}
	if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: rh}}}); err != nil {
		return err
	}
	if _, err := load.RecvReply(st); err != nil {
		return err
	}
	if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}}); err != nil {
		return err
	}
	if r, err = load.RecvReply(st); err != nil {
		return err
	}
	if ir := r.GetImmediateResponse(); ir != nil {
		return fmt.Errorf("local reply %d: %s", ir.GetStatus().GetCode(), ir.GetBody())
	}
	if got := r.GetResponseBody().GetResponse().GetBodyMutation().GetBody(); !bytes.Equal(got, body) {
		return fmt.Errorf("response body mutation of %d bytes, want the flow's %d", len(got), len(body))
	}
	return st.CloseSend()
}

func fcrBody(n int) []byte {
	b := []byte(`{"order":42,"note":"`)
	b = append(b, strings.Repeat("x", n-len(b)-2)...)
	return append(b, `"}`...)
}

func runFlowCalloutResponse() (string, error) {
	// The flow: echoes the body it gets (same content-type, same size).
	var hits, bodyBytes atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		bodyBytes.Add(int64(len(b)))
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write(b)
	}), ReadHeaderTimeout: 5 * time.Second}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = srv.Serve(hl) }()
	defer srv.Close()
	reg := prometheus.NewRegistry()
	conn, stop, err := inProcessWith(fcrBenchConfig("http://"+hl.Addr().String()), reg)
	if err != nil {
		return "", err
	}
	defer stop()
	cl := extprocv3.NewExternalProcessorClient(conn)

	type scen struct {
		label, route string
		body         []byte
	}
	var scens []scen
	for _, n := range []int{1 << 10, 64 << 10} {
		kib := fmt.Sprintf("%d KiB", n>>10)
		scens = append(scens,
			scen{"access phase, POST " + kib + " request body to the flow", "access", fcrBody(n)},
			scen{"response phase + apply_flow_response, " + kib + " response body", "response", fcrBody(n)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type key struct{ s, c int }
	got := map[key][]fcMeasure{}
	for ci, r := range fcrRuns {
		for _, s := range scens {
			w := drive(ctx, r.c, r.n/5, func(ctx context.Context) error { return fcrStream(ctx, cl, s.route, s.body) })
			if w.Errors > 0 {
				return "", fmt.Errorf("%s warm-up: %d stream errors", s.label, w.Errors)
			}
		}
		for round := 0; round < fcRounds; round++ {
			for si, s := range scens {
				before, beforeBytes := hits.Load(), bodyBytes.Load()
				c0 := fcProcessCPU()
				res := drive(ctx, r.c, r.n, func(ctx context.Context) error { return fcrStream(ctx, cl, s.route, s.body) })
				used := fcProcessCPU() - c0
				if res.Errors > 0 {
					return "", fmt.Errorf("%s c=%d: %d stream errors", s.label, r.c, res.Errors)
				}
				if n := hits.Load() - before; n != int64(r.n) {
					return "", fmt.Errorf("%s c=%d: flow got %d requests for %d streams", s.label, r.c, n, r.n)
				}
				if n, want := bodyBytes.Load()-beforeBytes, int64(r.n*len(s.body)); n != want {
					return "", fmt.Errorf("%s c=%d: flow got %d body bytes, want %d", s.label, r.c, n, want)
				}
				got[key{si, ci}] = append(got[key{si, ci}], fcMeasure{res: res, cpuPer: used / time.Duration(r.n)})
			}
		}
	}
	if n := counter(reg, "sidecall_flow_runs_total", nil) - counter(reg, "sidecall_flow_runs_total", map[string]string{"result": "ok"}); n > 0 {
		return "", fmt.Errorf("%.0f shared flow runs failed", n)
	}
	med := func(ms []fcMeasure) fcMeasure {
		sort.Slice(ms, func(i, j int) bool { return ms[i].res.P50 < ms[j].res.P50 })
		m := ms[len(ms)/2]
		cpus := make([]time.Duration, len(ms))
		for i, x := range ms {
			cpus[i] = x.cpuPer
		}
		sort.Slice(cpus, func(i, j int) bool { return cpus[i] < cpus[j] })
		m.cpuPer = cpus[len(cpus)/2]
		return m
	}
	us := func(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }
	var b strings.Builder
	fmt.Fprintf(&b, "\n## flow-callout in the response phase (apply_flow_response) vs the access phase\n\n")
	fmt.Fprintf(&b, "| scenario | c | streams/s | p50 | p99 | process CPU/stream | CPU vs access phase | p50 vs access phase |\n|---|---|---|---|---|---|---|---|\n")
	for ci, r := range fcrRuns {
		for si, s := range scens {
			m := med(got[key{si, ci}])
			base := med(got[key{si &^ 1, ci}]) // the access-phase row of the same size
			vsCPU, vsP50 := "1.00x (base)", "1.00x (base)"
			if si&1 == 1 {
				vsCPU = fmt.Sprintf("%.2fx", float64(m.cpuPer)/float64(base.cpuPer))
				vsP50 = fmt.Sprintf("%.2fx", float64(m.res.P50)/float64(base.res.P50))
			}
			fmt.Fprintf(&b, "| %s | %d | %.0f | %v | %v | %s | %s | %s |\n", s.label, r.c, m.res.PerSecond(),
				m.res.P50.Round(time.Microsecond), m.res.P99.Round(time.Microsecond), us(m.cpuPer), vsCPU, vsP50)
		}
	}
	fmt.Fprintf(&b, "\nMethod: one in-process sidecall processor driven by the ext_proc client; one shared-flow service on 127.0.0.1 (keep-alive) "+
		"that echoes the body it receives. Access phase: POST, request headers then the BUFFERED body, sent to the flow (result stored). "+
		"Response phase: GET without body, then the response headers and the BUFFERED response body; the flow gets a POST with it and its "+
		"answer (same size) replaces the response (the body mutation is checked). %d alternating rounds after a warm-up, medians; "+
		"CPU is getrusage of the whole process (processor, client and flow server).\n", fcRounds)
	return b.String(), nil
}
