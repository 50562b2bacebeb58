package main

// The tracing section: sidecall's pass-through route with OpenTelemetry
// off, on with every stream sampled (exported over OTLP/gRPC to a receiver
// in this process), and on with none sampled (trace context propagated
// only), against the bare grpc-go floor, each a sidecall process set up by
// the standard OTEL_* variables alone.

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/sidecall/sidecall/bench/load"
)

func init() {
	sections = append(sections, section{name: "tracing", run: runTracing})
}

const (
	trRounds = 5
	trN      = 2000
)

// spanCounter is an OTLP/gRPC trace receiver that counts spans.
type spanCounter struct {
	collectorpb.UnimplementedTraceServiceServer
	spans atomic.Int64
}

func (c *spanCounter) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	n := 0
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
		}
	}
	c.spans.Add(int64(n))
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func runTracing() (string, error) {
	dir, err := os.MkdirTemp("", "sidecall-bench")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	floorBin := build(dir, "./bench/cmd/floor")
	sidecallBin := build(dir, "./cmd/sidecall")
	cfg := filepath.Join(dir, "kong.yml")
	if err := os.WriteFile(cfg, []byte(benchConfig), 0o644); err != nil {
		return "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	rcv := &spanCounter{}
	g := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(g, rcv)
	go func() { _ = g.Serve(l) }()
	defer g.Stop()

	off := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", "OTEL_TRACES_EXPORTER="}
	on := func(sampler string) []string {
		return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + l.Addr().String(), "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
			"OTEL_TRACES_SAMPLER=" + sampler, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", "OTEL_TRACES_EXPORTER="}
	}
	args := []string{"serve", "-c", cfg, "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "info"}
	type subject struct {
		name string
		env  []string
		bin  string
		args []string
		sc   load.Scenario
		srv  *server
	}
	pass := load.Scenario{Name: "pass", Route: "pass", Path: "/pass"}
	subjects := []*subject{
		{name: "floor (bare grpc-go, CONTINUE)", bin: floorBin, sc: load.Scenario{Name: "floor", Route: "pass", Path: "/pass"}},
		{name: "floor, request+response headers", bin: floorBin, sc: load.Scenario{Name: "floor2", Route: "corr", Path: "/corr", Response: true}},
		{name: "sidecall pass-through, tracing off", env: off, bin: sidecallBin, args: args, sc: pass},
		{name: "sidecall pass-through, tracing on, 100% sampled", env: on("always_on"), bin: sidecallBin, args: args, sc: pass},
		{name: "sidecall pass-through, tracing on, 0% sampled", env: on("always_off"), bin: sidecallBin, args: args, sc: pass},
	}
	for _, s := range subjects {
		if s.srv, err = startServerEnv(s.bin, s.env, s.args...); err != nil {
			return "", err
		}
		defer func(s *server) { _ = s.cmd.Process.Kill(); _ = s.cmd.Wait() }(s.srv)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## OpenTelemetry tracing overhead\n\n")
	fmt.Fprintf(&b, "Command: `go run ./bench/cmd/benchreport -only tracing`; %d alternating rounds of %d streams per subject, each row the round with the median server CPU per stream; \"vs floor\" is the median over rounds of the ratio to the one-message floor of the same round. ", trRounds, trN)
	b.WriteString("Each sidecall is its own process configured by the OTEL_* variables only (OTLP/gRPC to a receiver in the benchmark process, the SDK's default batch processor); a sampled pass-through stream also asks Envoy for the response headers (the span ends with the status), so it is two messages: compare it with the two-message floor too.\n\n")
	b.WriteString("| subject | c | streams/s | p50 | p99 | server CPU/stream | CPU vs floor | CPU vs 2-message floor |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range []int{1, 16} {
		per := make([][]row, len(subjects))
		for round := 0; round < trRounds; round++ {
			for i, s := range subjects {
				r := measure(s.srv, s.sc, c, trN)
				r.name = s.name
				per[i] = append(per[i], r)
				log.Printf("%-48s c=%-3d %8.0f streams/s cpu/stream %v", s.name, c, r.res.PerSecond(), r.cpuPer)
			}
		}
		ratio := func(i, f int) float64 {
			var rs []float64
			for k := range per[i] {
				rs = append(rs, float64(per[i][k].cpuPer)/float64(per[f][k].cpuPer))
			}
			sort.Float64s(rs)
			return rs[len(rs)/2]
		}
		for i := range subjects {
			sorted := append([]row(nil), per[i]...)
			sort.Slice(sorted, func(a, b int) bool { return sorted[a].cpuPer < sorted[b].cpuPer })
			r := sorted[len(sorted)/2]
			vs, vs2 := "1.00x (floor)", "-"
			if i >= 2 {
				vs, vs2 = fmt.Sprintf("%.2fx", ratio(i, 0)), fmt.Sprintf("%.2fx", ratio(i, 1))
			} else if i == 1 {
				vs, vs2 = fmt.Sprintf("%.2fx", ratio(1, 0)), "1.00x (floor)"
			}
			fmt.Fprintf(&b, "| %s | %d | %.0f | %v | %v | %.1f µs | %s | %s |\n", r.name, c, r.res.PerSecond(),
				r.res.P50.Round(time.Microsecond), r.res.P99.Round(time.Microsecond), float64(r.cpuPer)/float64(time.Microsecond), vs, vs2)
		}
	}
	// The sampled subject's spans arrive within the batch delay (5 s).
	time.Sleep(6 * time.Second)
	fmt.Fprintf(&b, "\nSpans received by the OTLP receiver: %d (one per sampled stream; the batch processor drops spans only when its queue, 2048, is full).\n", rcv.spans.Load())
	return b.String(), nil
}
