package main

// The flow-callout section: a flow-callout to a local HTTP server against a
// request-callout to the same server doing the same HTTP work (forward the
// request's headers and query, decode the JSON answer, store it in
// kong.ctx.shared), and both against the pass-through route, all on one
// in-process sidecall processor driven by the ext_proc load client.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sidecall/sidecall/bench/load"
	"github.com/sidecall/sidecall/cmd/sidecall/wire"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/processor"
)

func init() {
	sections = append(sections, section{name: "flow-callout", run: runFlowCallout})
}

// fcRuns: concurrency and streams per measurement; fcRounds alternating
// measurements per scenario, the median is reported (the machine is shared).
var fcRuns = []struct{ c, n int }{{1, 4000}, {16, 10000}, {64, 10000}}

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
`
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
}

func runFlowCallout() (string, error) {
	// The local server: what a security flow answers, small JSON.
	var hits atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("content-type", "application/json")
		_, _ = io.WriteString(w, `{"allowed":true,"user":"ann"}`)
	}), ReadHeaderTimeout: 5 * time.Second}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = srv.Serve(hl) }()
	defer srv.Close()

	dir, err := os.MkdirTemp("", "sidecall-flow-bench")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	res := flows.NewResources()
	defer res.Close()
	snap, err := flows.Load(filepath.Join(dir, "kong.yml"), []byte(fcBenchConfig("http://"+hl.Addr().String())),
		flows.LoadOptions{Registry: wire.Registry(), Resources: res})
	if err != nil {
		return "", err
	}
	holder := &processor.Holder{}
	holder.Swap(snap)
	defer func() {
		if s := holder.Current(); s != nil {
			s.Close()
		}
	}()
	g := processor.New(processor.Options{Holder: holder}).GRPCServer()
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = g.Serve(gl) }()
	defer g.Stop()
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()

	var flowOK, flowBad atomic.Int64
	flows.SetFlowObserver(func(_, result string, _ time.Duration) {
		if result == flows.FlowResultOK {
			flowOK.Add(1)
		} else {
			flowBad.Add(1)
		}
	})
	defer flows.SetFlowObserver(nil)

	scenarios := []fcScenario{
		{"pass-through route", load.Scenario{Name: "fc-pass", Route: "pass", Path: "/pass"}, false},
		{"request-callout to the local server", load.Scenario{Name: "fc-callout", Route: "callout", Path: "/callout?id=7"}, true},
		{"flow-callout to the local server", load.Scenario{Name: "fc-flow", Route: "flow", Path: "/flow?id=7"}, true},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	type key struct{ s, c int }
	got := map[key][]fcMeasure{}
	for ci, r := range fcRuns {
		for _, s := range scenarios {
			before := hits.Load()
			w := load.Run(ctx, conn, s.sc, r.c, r.n/5) // warm up
			if w.Errors > 0 {
				return "", fmt.Errorf("%s warm-up: %d stream errors", s.label, w.Errors)
			}
			if want := int64(r.n / 5); s.hits && hits.Load()-before != want {
				return "", fmt.Errorf("%s: server got %d requests for %d streams", s.label, hits.Load()-before, want)
			}
		}
		for round := 0; round < fcRounds; round++ {
			for si, s := range scenarios {
				before := hits.Load()
				c0 := fcProcessCPU()
				res := load.Run(ctx, conn, s.sc, r.c, r.n)
				used := fcProcessCPU() - c0
				if res.Errors > 0 {
					return "", fmt.Errorf("%s c=%d: %d stream errors", s.label, r.c, res.Errors)
				}
				if n := hits.Load() - before; s.hits && n != int64(r.n) {
					return "", fmt.Errorf("%s c=%d: server got %d requests for %d streams", s.label, r.c, n, r.n)
				}
				got[key{si, ci}] = append(got[key{si, ci}], fcMeasure{res: res, cpuPer: used / time.Duration(r.n)})
			}
		}
	}
	if n := flowBad.Load(); n > 0 {
		return "", fmt.Errorf("%d shared flow runs failed", n)
	}
	if flowOK.Load() == 0 {
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
		co := med(got[key{1, ci}])
		for si, s := range scenarios {
			m := med(got[key{si, ci}])
			vsCPU, vsP50, addCPU, addP50 := "", "", "", ""
			switch si {
			case 0:
				vsCPU, vsP50, addCPU, addP50 = ratio(m.cpuPer, co.cpuPer), ratio(m.res.P50, co.res.P50), "0 (floor)", "0 (floor)"
			case 1:
				vsCPU, vsP50 = "1.00x", "1.00x"
				addCPU, addP50 = us(m.cpuPer-pass.cpuPer), us(m.res.P50-pass.res.P50)
			case 2:
				vsCPU, vsP50 = ratio(m.cpuPer, co.cpuPer), ratio(m.res.P50, co.res.P50)
				addCPU = fmt.Sprintf("%s (%s the request-callout's)", us(m.cpuPer-pass.cpuPer), ratio(m.cpuPer-pass.cpuPer, co.cpuPer-pass.cpuPer))
				addP50 = fmt.Sprintf("%s (%s)", us(m.res.P50-pass.res.P50), ratio(m.res.P50-pass.res.P50, co.res.P50-pass.res.P50))
				ok := float64(m.cpuPer) <= 1.2*float64(co.cpuPer) && float64(m.res.P50) <= 1.2*float64(co.res.P50)
				v := "met"
				if !ok {
					v = "NOT met"
				}
				verdicts = append(verdicts, fmt.Sprintf("c=%d: CPU %s, p50 %s → %s", r.c, ratio(m.cpuPer, co.cpuPer), ratio(m.res.P50, co.res.P50), v))
			}
			fmt.Fprintf(&b, "| %s | %d | %.0f | %v | %v | %s | %s | %s | %s | %s |\n", s.label, r.c, m.res.PerSecond(),
				m.res.P50.Round(time.Microsecond), m.res.P99.Round(time.Microsecond), us(m.cpuPer), vsCPU, vsP50, addCPU, addP50)
		}
	}
	fmt.Fprintf(&b, "\nTarget (issue 4): flow-callout CPU and latency <= 1.2x the request-callout to the same server. This run: %s.\n\n", strings.Join(verdicts, "; "))
	fmt.Fprintf(&b, "Method: one in-process sidecall processor (`flows.Load` with every plugin, gRPC on 127.0.0.1) driven by the ext_proc load client "+
		"(request headers only, one stream per request, route by xds.route_name); both plugins call the same local HTTP server (127.0.0.1, keep-alive) "+
		"that answers a small JSON body: the flow-callout forwards the request (GET, path, query, headers) to the service and stores {status, headers, body, json}; "+
		"the request-callout forwards headers and query and decodes the JSON body. The streams carry no request body (a POST adds the buffered body message for both plugins alike). %d alternating rounds per scenario after a warm-up, medians shown; "+
		"CPU is getrusage of the whole process (processor, load client and server), so \"added over pass-through\" isolates the plugin plus the HTTP exchange.\n", fcRounds)
	return b.String(), nil
}
