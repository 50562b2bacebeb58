package main

// The flow-callout section: a flow-callout to a local HTTP server against a
// request-callout to the same server doing the same HTTP work (forward the
// request's headers and query, decode the JSON answer, store it in
// kong.ctx.shared), and both against the pass-through route, all on one
// in-process sidecall processor driven by the ext_proc load client. The
// POST rows send a 1 KiB JSON body the way Envoy does once the processor
// asks for it (request headers, then the BUFFERED body): flow-callout
// always buffers the body and forwards it, so it is compared with a
// request-callout that forwards the same body.

import (
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
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sidecall/sidecall/bench/load"
)

func init() {
	sections = append(sections, section{name: "flow-callout", run: runFlowCallout})
}

// fcRuns: concurrency and streams per measurement; fcRounds alternating
// measurements per scenario, the median is reported (the machine is shared).
// Five scenarios: sized to keep the section near 30 s on the shared machine.
var fcRuns = []struct{ c, n int }{{1, 3000}, {16, 6000}, {64, 6000}}

const fcRounds = 3

func fcBenchConfig(server string) string {
	return `_format_version: "3.0"
services:
  - name: bench-flow
    url: ` + server + `/check
    connect_timeout: 1000
    write_timeout: 1000
    read_timeout: 2000
  - name: bench
    url: http://127.0.0.1:1
    routes:
      - name: pass
        paths: ["/pass"]
      - name: flow
        paths: ["/flow"]
        plugins:
          - name: flow-callout
            config:
              shared_flow_service_name: bench-flow
              store_flow_response_in_shared_context_key: check
              on_flow_error_status: 403
      - name: callout
        paths: ["/callout"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: check
                  request:
                    url: ` + server + `/check
                    method: GET
                    headers: {forward: true}
                    query: {forward: true}
                    http_opts:
                      timeouts: {connect: 1000, write: 1000, read: 2000}
                  response:
                    body: {decode: true}
      - name: callout-post
        paths: ["/callout-post"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: check
                  request:
                    url: ` + server + `/check
                    method: POST
                    headers: {forward: true}
                    query: {forward: true}
                    body: {forward: true}
                    http_opts:
                      timeouts: {connect: 1000, write: 1000, read: 2000}
                  response:
                    body: {decode: true}
`
}

// fcPostBody is the POST rows' body: 1 KiB of JSON.
var fcPostBody = func() []byte {
	b := []byte(`{"order":42,"note":"`)
	b = append(b, strings.Repeat("x", 1024-len(b)-2)...)
	return append(b, `"}`...)
}()

// fcPost runs one POST stream as Envoy does with the shipped config
// (allow_mode_override): request headers, then the buffered body if the
// processor asked for it, then the response headers if it asked for them.
// A local reply (a failed flow or callout) is an error.
func fcPost(ctx context.Context, c extprocv3.ExternalProcessorClient, route, path string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // Envoy resets the stream once done
	st, err := c.Process(ctx)
	if err != nil {
		return err
	}
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte("POST")}, {Key: ":path", RawValue: []byte(path)},
		{Key: ":scheme", RawValue: []byte("http")}, {Key: ":authority", RawValue: []byte("bench.local")},
		{Key: "user-agent", RawValue: []byte("curl/8.5.0")}, {Key: "accept", RawValue: []byte("*/*")},
		{Key: "content-type", RawValue: []byte("application/json")},
		{Key: "content-length", RawValue: []byte(strconv.Itoa(len(fcPostBody)))},
		{Key: "x-forwarded-proto", RawValue: []byte("http")}, {Key: "x-request-id", RawValue: []byte("5f0c8c1e-6d1b-4a8e-9a57-1f8f3c2b9d10")},
	}}
	if err := st.Send(&extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm}},
		Attributes: map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
			"xds.route_name": structpb.NewStringValue(route),
			"source.address": structpb.NewStringValue("10.0.0.7:51544"),
		}}},
		MetadataContext: &corev3.Metadata{},
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
	if mo.GetRequestBodyMode() != filterv3.ProcessingMode_BUFFERED {
		return errors.New("processor did not ask for the request body")
	}
	if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: fcPostBody, EndOfStream: true}}}); err != nil {
		return err
	}
	if r, err = load.RecvReply(st); err != nil {
		return err
	}
	if ir := r.GetImmediateResponse(); ir != nil {
		return fmt.Errorf("local reply %d: %s", ir.GetStatus().GetCode(), ir.GetBody())
	}
	if mo.GetResponseHeaderMode() == filterv3.ProcessingMode_SEND {
		if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}}}, EndOfStream: true}}}); err != nil {
			return err
		}
		if _, err := load.RecvReply(st); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	return st.CloseSend()
}

// fcProcessCPU is this process's user+system CPU time.
func fcProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type fcMeasure struct {
	res    load.Result
	cpuPer time.Duration
}

type fcScenario struct {
	label string
	sc    load.Scenario
	hits  bool // the scenario calls the server once per stream
	post  bool // POST with fcPostBody (fcPost), forwarded to the server
}

// run drives n streams of s with concurrency c.
func (s fcScenario) run(ctx context.Context, conn *grpc.ClientConn, c, n int) load.Result {
	if !s.post {
		return load.Run(ctx, conn, s.sc, c, n)
	}
	cl := extprocv3.NewExternalProcessorClient(conn)
	return drive(ctx, c, n, func(ctx context.Context) error { return fcPost(ctx, cl, s.sc.Route, s.sc.Path) })
}

func runFlowCallout() (string, error) {
	// The local server: what a security flow answers, small JSON.
	var hits, bodyBytes atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		n, _ := io.Copy(io.Discard, r.Body)
		bodyBytes.Add(n)
		w.Header().Set("content-type", "application/json")
		_, _ = io.WriteString(w, `{"allowed":true,"user":"ann"}`)
	}), ReadHeaderTimeout: 5 * time.Second}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = srv.Serve(hl) }()
	defer srv.Close()

	reg := prometheus.NewRegistry()
	conn, stop, err := inProcessWith(fcBenchConfig("http://"+hl.Addr().String()), reg)
	if err != nil {
		return "", err
	}
	defer stop()

	scenarios := []fcScenario{
		{"pass-through route", load.Scenario{Name: "fc-pass", Route: "pass", Path: "/pass"}, false, false},
		{"request-callout to the local server", load.Scenario{Name: "fc-callout", Route: "callout", Path: "/callout?id=7"}, true, false},
		{"flow-callout to the local server", load.Scenario{Name: "fc-flow", Route: "flow", Path: "/flow?id=7"}, true, false},
		{"request-callout, POST 1 KiB JSON, body forwarded", load.Scenario{Name: "fc-callout-post", Route: "callout-post", Path: "/callout-post?id=7"}, true, true},
		{"flow-callout, POST 1 KiB JSON", load.Scenario{Name: "fc-flow-post", Route: "flow", Path: "/flow?id=7"}, true, true},
	}
	// Row indexes: GET request-callout and flow-callout, POST ones.
	const fcGetCallout, fcGetFlow, fcPostCallout, fcPostFlow = 1, 2, 3, 4
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	type key struct{ s, c int }
	got := map[key][]fcMeasure{}
	for ci, r := range fcRuns {
		for _, s := range scenarios {
			before := hits.Load()
			w := s.run(ctx, conn, r.c, r.n/5) // warm up
			if w.Errors > 0 {
				return "", fmt.Errorf("%s warm-up: %d stream errors", s.label, w.Errors)
			}
			if want := int64(r.n / 5); s.hits && hits.Load()-before != want {
				return "", fmt.Errorf("%s: server got %d requests for %d streams", s.label, hits.Load()-before, want)
			}
		}
		for round := 0; round < fcRounds; round++ {
			for si, s := range scenarios {
				before, beforeBytes := hits.Load(), bodyBytes.Load()
				c0 := fcProcessCPU()
				res := s.run(ctx, conn, r.c, r.n)
				used := fcProcessCPU() - c0
				if res.Errors > 0 {
					return "", fmt.Errorf("%s c=%d: %d stream errors", s.label, r.c, res.Errors)
				}
				if n := hits.Load() - before; s.hits && n != int64(r.n) {
					return "", fmt.Errorf("%s c=%d: server got %d requests for %d streams", s.label, r.c, n, r.n)
				}
				if n, want := bodyBytes.Load()-beforeBytes, int64(r.n*len(fcPostBody)); s.post && n != want {
					return "", fmt.Errorf("%s c=%d: server got %d body bytes, want %d (the body forwarded each time)", s.label, r.c, n, want)
				}
				got[key{si, ci}] = append(got[key{si, ci}], fcMeasure{res: res, cpuPer: used / time.Duration(r.n)})
			}
		}
	}
	if n := int(counter(reg, "sidecall_flow_runs_total", nil) - counter(reg, "sidecall_flow_runs_total", map[string]string{"result": "ok"})); n > 0 {
		return "", fmt.Errorf("%d shared flow runs failed", n)
	}
	if counter(reg, "sidecall_flow_runs_total", map[string]string{"result": "ok"}) == 0 {
		return "", fmt.Errorf("no shared flow ran")
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
	ratio := func(a, b time.Duration) string {
		if b <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", float64(a)/float64(b))
	}
	us := func(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }

	var b strings.Builder
	fmt.Fprintf(&b, "\n## flow-callout: a shared flow vs a request-callout to the same server\n\n")
	fmt.Fprintf(&b, "| scenario | c | streams/s | p50 | p99 | process CPU/stream | CPU vs request-callout | p50 vs request-callout | added CPU over pass-through | added p50 over pass-through |\n|---|---|---|---|---|---|---|---|---|---|\n")
	var verdicts []string
	for ci, r := range fcRuns {
		pass := med(got[key{0, ci}])
		for si, s := range scenarios {
			m := med(got[key{si, ci}])
			base := fcGetCallout // the request-callout doing the same HTTP work
			if s.post {
				base = fcPostCallout
			}
			co := med(got[key{base, ci}])
			vsCPU, vsP50 := ratio(m.cpuPer, co.cpuPer), ratio(m.res.P50, co.res.P50)
			addCPU, addP50 := us(m.cpuPer-pass.cpuPer), us(m.res.P50-pass.res.P50)
			switch si {
			case 0:
				addCPU, addP50 = "0 (floor)", "0 (floor)"
			case fcGetFlow, fcPostFlow:
				addCPU = fmt.Sprintf("%s (%s the request-callout's)", us(m.cpuPer-pass.cpuPer), ratio(m.cpuPer-pass.cpuPer, co.cpuPer-pass.cpuPer))
				addP50 = fmt.Sprintf("%s (%s)", us(m.res.P50-pass.res.P50), ratio(m.res.P50-pass.res.P50, co.res.P50-pass.res.P50))
				ok := float64(m.cpuPer) <= 1.2*float64(co.cpuPer) && float64(m.res.P50) <= 1.2*float64(co.res.P50)
				v := "met"
				if !ok {
					v = "NOT met"
				}
				kind := "GET"
				if s.post {
					kind = "POST"
				}
				verdicts = append(verdicts, fmt.Sprintf("%s c=%d: CPU %s, p50 %s → %s", kind, r.c, vsCPU, vsP50, v))
			}
			fmt.Fprintf(&b, "| %s | %d | %.0f | %v | %v | %s | %s | %s | %s | %s |\n", s.label, r.c, m.res.PerSecond(),
				m.res.P50.Round(time.Microsecond), m.res.P99.Round(time.Microsecond), us(m.cpuPer), vsCPU, vsP50, addCPU, addP50)
		}
	}
	fmt.Fprintf(&b, "\nTarget: flow-callout CPU and latency <= 1.2x the request-callout to the same server. This run: %s.\n\n", strings.Join(verdicts, "; "))
	fmt.Fprintf(&b, "Method: one in-process sidecall processor (`flows.Load` with every plugin, gRPC on 127.0.0.1) driven by the ext_proc load client "+
		"(one stream per request, route by xds.route_name); both plugins call the same local HTTP server (127.0.0.1, keep-alive) "+
		"that answers a small JSON body: the flow-callout forwards the request (GET, path, query, headers) to the service and stores {status, headers, body, json}; "+
		"the request-callout forwards headers and query and decodes the JSON body. The GET streams carry no request body. "+
		"The POST rows send a %d-byte JSON body as Envoy does after the processor's mode override (request headers, then the BUFFERED body message): "+
		"the flow-callout (which always asks for the body) forwards it with the POST, and is compared with a request-callout that POSTs with body.forward: true; "+
		"the server checks every request carried the whole body; their \"added over pass-through\" includes the body message (the pass-through row has none). %d alternating rounds per scenario after a warm-up, medians shown; "+
		"CPU is getrusage of the whole process (processor, load client and server), so \"added over pass-through\" isolates the plugin plus the HTTP exchange.\n", len(fcPostBody), fcRounds)
	return b.String(), nil
}
