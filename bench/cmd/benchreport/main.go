// Command benchreport runs sidecall's benchmark suite and writes RESULTS.md:
// each figure as a ratio against a floor measured in the same run (a bare
// grpc-go ext_proc server), plus absolute numbers.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sidecall/sidecall/bench/load"
)

// benchConfig's routes keep the client's path and Host (strip_path: false,
// preserve_host: true), so the pass-through route sends Envoy no mutation
// at all, as the floor does not.
const benchConfig = `_format_version: "3.0"
services:
  - name: bench
    url: http://127.0.0.1:1
    routes:
      - name: pass
        paths: ["/pass"]
        strip_path: false
        preserve_host: true
      - name: corr
        paths: ["/corr"]
        strip_path: false
        preserve_host: true
        plugins:
          - name: correlation-id
            config: {header_name: X-Correlation-ID, generator: uuid#counter, echo_downstream: true}
`

type server struct {
	cmd  *exec.Cmd
	addr string
}

func startServer(bin string, args ...string) (*server, error) {
	return startServerEnv(bin, nil, args...)
}

// startServerEnv is startServer with extra environment variables.
func startServerEnv(bin string, env []string, args ...string) (*server, error) {
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "listening "); i >= 0 {
			go func() { // keep draining
				for sc.Scan() {
				}
			}()
			return &server{cmd: cmd, addr: strings.TrimSpace(line[i+len("listening "):])}, nil
		}
		if i := strings.Index(line, `"grpc":"`); i >= 0 {
			rest := line[i+len(`"grpc":"`):]
			go func() {
				for sc.Scan() {
				}
			}()
			return &server{cmd: cmd, addr: rest[:strings.Index(rest, `"`)]}, nil
		}
	}
	_ = cmd.Process.Kill()
	return nil, fmt.Errorf("%s did not report its address", bin)
}

// cpu returns the process's CPU time: the sum of its threads' run time
// from /proc/PID/task/*/schedstat (nanoseconds), or user+system from
// /proc/PID/stat (10 ms ticks) when schedstat is missing.
func cpu(pid int) time.Duration {
	if tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid)); err == nil && len(tasks) > 0 {
		var sum time.Duration
		ok := true
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			f := strings.Fields(string(b))
			if err != nil || len(f) == 0 {
				ok = false
				break
			}
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(ns)
		}
		if ok {
			return sum
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // CLK_TCK is 100 on Linux
}

type row struct {
	name, scenario string
	c              int
	res            load.Result
	cpuPer         time.Duration
	// ratio is the median over rounds of this scenario's CPU/stream over
	// its floor's in the same round (0 for the floors).
	ratio float64
}

func measure(s *server, sc load.Scenario, c, n int) row {
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	load.Run(ctx, conn, sc, c, n/5) // warm up
	before := cpu(s.cmd.Process.Pid)
	res := load.Run(ctx, conn, sc, c, n)
	used := cpu(s.cmd.Process.Pid) - before
	if res.Errors > 0 {
		log.Printf("%s c=%d: %d errors", sc.Name, c, res.Errors)
	}
	return row{scenario: sc.Name, c: c, res: res, cpuPer: used / time.Duration(n)}
}

func build(dir, pkg string) string {
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		log.Fatalf("building %s: %v", pkg, err)
	}
	return out
}

func main() {
	outFile := flag.String("out", "bench/RESULTS.md", "where to write the report")
	n := flag.Int("n", 2000, "streams per measurement")
	rounds := flag.Int("rounds", 10, "alternating rounds per scenario (medians are reported)")
	only := flag.String("only", "", "run only these sections (comma-separated names), skipping the core measurements")
	coreOnly := flag.Bool("core-only", false, "run only the core measurements (pass-through and correlation-id vs the floor)")
	flag.Parse()
	if *only != "" {
		// A trial of some sections never replaces the full report unless
		// -out says so.
		out := ""
		flag.Visit(func(f *flag.Flag) {
			if f.Name == "out" {
				out = *outFile
			}
		})
		runOnly(out, *only)
		return
	}
	dir, err := os.MkdirTemp("", "sidecall-bench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	floorBin := build(dir, "./bench/cmd/floor")
	sidecallBin := build(dir, "./cmd/sidecall")
	cfg := filepath.Join(dir, "kong.yml")
	if err := os.WriteFile(cfg, []byte(benchConfig), 0o644); err != nil {
		log.Fatal(err)
	}
	floor, err := startServer(floorBin)
	if err != nil {
		log.Fatal(err)
	}
	defer floor.cmd.Process.Kill()
	sc, err := startServer(sidecallBin, "serve", "-c", cfg, "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "info")
	if err != nil {
		log.Fatal(err)
	}
	defer sc.cmd.Process.Kill()

	scenarios := []struct {
		name string
		srv  *server
		sc   load.Scenario
	}{
		{"floor (bare grpc-go, CONTINUE)", floor, load.Scenario{Name: "floor", Route: "pass", Path: "/pass"}},
		{"floor, request+response headers", floor, load.Scenario{Name: "floor2", Route: "corr", Path: "/corr", Response: true}},
		{"sidecall pass-through route", sc, load.Scenario{Name: "pass", Route: "pass", Path: "/pass"}},
		{"sidecall correlation-id (echo_downstream)", sc, load.Scenario{Name: "corr", Route: "corr", Path: "/corr"}},
	}
	// Short rounds alternate the scenarios so that each subject is measured
	// next to its floor: the shared machine's speed drifts over seconds.
	// A row is the round with the median CPU/stream; its ratio is the
	// median of the per-round ratios to the floor.
	floorOf := map[string]int{"pass": 0, "corr": 1}
	var rows []row
	for _, c := range []int{1, 16, 64} {
		per := make([][]row, len(scenarios))
		for round := 0; round < *rounds; round++ {
			for i, s := range scenarios {
				r := measure(s.srv, s.sc, c, *n)
				r.name = s.name
				per[i] = append(per[i], r)
				log.Printf("%-45s c=%-3d %8.0f streams/s p50 %v p99 %v cpu/stream %v", s.name, c, r.res.PerSecond(), r.res.P50, r.res.P99, r.cpuPer)
			}
		}
		for i, rs := range per {
			var ratios []float64
			if f, ok := floorOf[scenarios[i].sc.Name]; ok {
				for k := range rs {
					ratios = append(ratios, float64(rs[k].cpuPer)/float64(per[f][k].cpuPer))
				}
				sort.Float64s(ratios)
			}
			sorted := append([]row(nil), rs...)
			sort.Slice(sorted, func(i, j int) bool { return sorted[i].cpuPer < sorted[j].cpuPer })
			r := sorted[len(sorted)/2]
			if len(ratios) > 0 {
				r.ratio = ratios[len(ratios)/2]
			}
			rows = append(rows, r)
		}
	}
	report := coreReport(rows, *n, *rounds)
	// The sections measure this process's CPU: stop the core's servers and
	// start each section from a collected heap.
	for _, s := range []*server{floor, sc} {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
	if *coreOnly {
		sections = nil
	}
	for _, sec := range sections {
		log.Printf("section: %s", sec.name)
		debug.FreeOSMemory()
		md, err := sec.run()
		if err != nil {
			md = fmt.Sprintf("\n## %s\n\nnot measured: %v\n", sec.name, err)
		}
		report += md
	}
	if err := os.WriteFile(*outFile, []byte(report), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Print(report)
}

// section is one more part of the report, added by a file of its own in
// this folder (func init() { sections = append(sections, ...) }). run
// measures its floor and its subject in the same run and returns markdown
// (a "## title" heading, a table with absolute numbers and ratios).
type section struct {
	name string
	run  func() (string, error)
}

var sections []section

// runOnly runs the named sections (comma-separated, exact names) and
// prints just their markdown (also to outFile, if set): a short trial.
func runOnly(outFile, names string) {
	want := map[string]bool{}
	for _, s := range strings.Split(names, ",") {
		want[strings.TrimSpace(s)] = true
	}
	var run []section
	var known []string
	for _, sec := range sections {
		known = append(known, sec.name)
		if want[sec.name] {
			run = append(run, sec)
			delete(want, sec.name)
		}
	}
	if len(want) > 0 {
		log.Fatalf("unknown sections in -only: %v (known: %q)", want, known)
	}
	var report string
	for _, sec := range run {
		log.Printf("section: %s", sec.name)
		debug.FreeOSMemory()
		md, err := sec.run()
		if err != nil {
			md = fmt.Sprintf("\n## %s\n\nnot measured: %v\n", sec.name, err)
		}
		report += md
	}
	if outFile != "" {
		if err := os.WriteFile(outFile, []byte(report), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Print(report)
}

func coreReport(rows []row, n, rounds int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmark results\n\n## ext_proc streams: pass-through and correlation-id\n\n")
	fmt.Fprintf(&b, "Command: `make bench` (`go run ./bench/cmd/benchreport -out bench/RESULTS.md`); %d alternating rounds of %d streams per scenario (each after a warm-up), each row the round with the median server CPU per stream; \"CPU vs floor\" is the median over rounds of the ratio to the floor measured in the same round.\n", rounds, n)
	fmt.Fprintf(&b, "Machine: %d cores (GOMAXPROCS %d), 24 GiB, %s/%s, %s. Date: %s.\n\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version(), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "Client and servers share the machine; the load client plays Envoy's lock-step exchange over one HTTP/2 connection (as Envoy's per-worker pool does). Server CPU is the server process's thread run time from /proc/PID/task/*/schedstat (nanoseconds) over the measured streams.\n\n")
	fmt.Fprintf(&b, "Ratios compare with the floor row of the same concurrency and the same message count: the pass-through route against the one-message floor, the correlation-id route (request and response headers) against the two-message floor.\n\n")
	fmt.Fprintf(&b, "| scenario | c | streams/s | p50 | p99 | server CPU/stream | CPU vs floor | throughput vs floor |\n|---|---|---|---|---|---|---|---|\n")
	floors := map[string]row{}
	for _, r := range rows {
		if strings.HasPrefix(r.scenario, "floor") {
			floors[fmt.Sprintf("%s/%d", r.scenario, r.c)] = r
		}
	}
	for _, r := range rows {
		ratioCPU, ratioTP := "1.00x (floor)", "1.00x (floor)"
		key := ""
		switch r.scenario {
		case "pass":
			key = fmt.Sprintf("floor/%d", r.c)
		case "corr":
			key = fmt.Sprintf("floor2/%d", r.c)
		}
		if f, ok := floors[key]; ok && f.cpuPer > 0 {
			ratioCPU = fmt.Sprintf("%.2fx", r.ratio)
			ratioTP = fmt.Sprintf("%.2fx", r.res.PerSecond()/f.res.PerSecond())
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f | %v | %v | %.1f µs | %s | %s |\n", r.name, r.c, r.res.PerSecond(),
			r.res.P50.Round(time.Microsecond), r.res.P99.Round(time.Microsecond), float64(r.cpuPer)/float64(time.Microsecond), ratioCPU, ratioTP)
	}
	fmt.Fprintf(&b, "\nTargets: pass-through CPU per stream <= 1.15x the floor, correlation-id <= 1.3x. This run:")
	for _, r := range rows {
		target, key := 0.0, ""
		switch r.scenario {
		case "pass":
			target, key = 1.15, fmt.Sprintf("floor/%d", r.c)
		case "corr":
			target, key = 1.3, fmt.Sprintf("floor2/%d", r.c)
		default:
			continue
		}
		f, ok := floors[key]
		if !ok || f.cpuPer <= 0 {
			continue
		}
		ratio := r.ratio
		verdict := "met"
		if ratio > target {
			verdict = "not met"
		}
		fmt.Fprintf(&b, " %s c=%d %.2fx %s;", r.scenario, r.c, ratio, verdict)
	}
	b.WriteString("\n")
	return b.String()
}
