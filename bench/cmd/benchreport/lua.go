package main

// The Lua section: $(...) templates on the Go fast path against the same
// lookup written so it needs Lua, per evaluation; a pooled chunk run
// against a fresh state; and pre-function with a small chunk against the
// pass-through route on one in-process sidecall processor driven by the
// ext_proc load client, in the same run.

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sidecall/sidecall/bench/load"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/expr"
	"github.com/sidecall/sidecall/flows/lua"
)

func init() {
	sections = append(sections, section{name: "Lua: templates and pre-function", run: runLua})
}

// luaRuns: concurrency and streams per measurement; luaRounds alternating
// measurements per scenario, the median is reported (the machine is shared).
var luaRuns = []struct{ c, n int }{{1, 5000}, {16, 20000}, {64, 20000}}

const luaRounds = 3

// luaSmallChunk is what a typical pre-function does: read a request
// header, set an upstream header, remember something in kong.ctx.shared.
const luaSmallChunk = `local id = kong.request.get_header("x-request-id") or "none"
kong.service.request.set_header("X-Lua-Seen", id)
kong.ctx.shared.seen = id`

const luaBenchConfig = `_format_version: "3.0"
services:
  - name: bench
    url: http://127.0.0.1:1
    routes:
      - name: pass
        paths: ["/pass"]
      - name: lua
        paths: ["/lua"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local id = kong.request.get_header("x-request-id") or "none"
                  kong.service.request.set_header("X-Lua-Seen", id)
                  kong.ctx.shared.seen = id
`

func luaProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// luaExchange is a request as the templates and chunks see it.
func luaExchange() *flows.Exchange {
	x := flows.NewExchange("5f0c8c1e-6d1b-4a8e-9a57-1f8f3c2b9d10", flows.Request{
		Method: "GET", Scheme: "http", Authority: "bench.local", Path: "/orders/42", RawQuery: "user=bob&tags=a&tags=b",
		Headers: flows.Headers{"x-id": {"abc"}, "accept": {"*/*"}, "x-request-id": {"5f0c8c1e-6d1b-4a8e-9a57-1f8f3c2b9d10"}},
	}, nil)
	x.Shared["callouts"] = map[string]any{"auth": map[string]any{"response": map[string]any{
		"status": int64(200), "body": map[string]any{"token": "t0k3n", "id": "u1"}}}}
	return x
}

type luaMicro struct {
	label string
	res   testing.BenchmarkResult
}

func luaBench(f func(b *testing.B)) testing.BenchmarkResult {
	// The median of three: the machine is shared.
	rs := make([]testing.BenchmarkResult, 3)
	for i := range rs {
		rs[i] = testing.Benchmark(f)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].NsPerOp() < rs[j].NsPerOp() })
	return rs[1]
}

func luaTemplateBench(src string) (func(b *testing.B), error) {
	bld := flows.NewBuilder("bench.yml")
	// A generous limit: a busy machine must slow the figure, not end the run.
	bld.Runtime = flows.NewLuaRuntime(lua.Options{Timeout: 10 * time.Second})
	tpl := bld.Template(src, "bench")
	if tpl == nil {
		return nil, fmt.Errorf("%s: %v", src, bld.Problems())
	}
	x := luaExchange()
	ctx := context.Background()
	if _, err := flows.RenderString(ctx, tpl, x); err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := flows.RenderString(ctx, tpl, x); err != nil {
				b.Fatal(err)
			}
		}
	}, nil
}

func runLua() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// --- templates, per evaluation ---
	pairs := []struct{ what, fast, slow string }{
		{"header", `$(headers["x-id"])`, `$(headers["x-id"] or "")`},
		{"callout body field in text", `Bearer $(callouts.auth.response.body.token)`, `Bearer $(callouts.auth.response.body.token or "")`},
		{"query parameter", `$(query_params.user)`, `$(query_params.user or "")`},
	}
	type tplRow struct {
		what, fastSrc, slowSrc string
		fast, slow             testing.BenchmarkResult
	}
	var tplRows []tplRow
	for _, p := range pairs {
		ff, err := luaTemplateBench(p.fast)
		if err != nil {
			return "", err
		}
		sf, err := luaTemplateBench(p.slow)
		if err != nil {
			return "", err
		}
		if t, _ := expr.Parse(p.fast); !t.FastPathOnly() {
			return "", fmt.Errorf("%s is not on the fast path", p.fast)
		}
		if t, _ := expr.Parse(p.slow); t.FastPathOnly() {
			return "", fmt.Errorf("%s is on the fast path", p.slow)
		}
		tplRows = append(tplRows, tplRow{p.what, p.fast, p.slow, luaBench(ff), luaBench(sf)})
	}

	// --- one chunk run: a pooled state against a fresh one ---
	bld := flows.NewBuilder("bench.yml")
	chunk := bld.Lua(luaSmallChunk, "bench.access[0]")
	if chunk == nil {
		return "", fmt.Errorf("chunk: %v", bld.Problems())
	}
	compiled, err := lua.Compile(luaSmallChunk, "bench")
	if err != nil {
		return "", err
	}
	pooled := luaBench(func(b *testing.B) {
		b.ReportAllocs()
		x := luaExchange()
		for i := 0; i < b.N; i++ {
			x.ResetChanges()
			if err := chunk.Run(ctx, x); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The compiled chunk on a sandbox of its own with a minimal host:
	// reusing the sandbox (pooled state) against a new sandbox per run (a
	// fresh state, what every call would cost without the pool).
	own := lua.New(lua.Options{})
	defer own.Close()
	pooledOwn := luaBench(func(b *testing.B) {
		b.ReportAllocs()
		h := newLuaHost()
		for i := 0; i < b.N; i++ {
			if err := own.Run(ctx, compiled, h); err != nil {
				b.Fatal(err)
			}
		}
	})
	fresh := luaBench(func(b *testing.B) {
		b.ReportAllocs()
		h := newLuaHost()
		for i := 0; i < b.N; i++ {
			sb := lua.New(lua.Options{PoolSize: 1})
			if err := sb.Run(ctx, compiled, h); err != nil {
				b.Fatal(err)
			}
			sb.Close()
		}
	})

	// --- pre-function against the pass-through route ---
	reg := prometheus.NewRegistry()
	conn, stop, err := inProcessWith(luaBenchConfig, reg)
	if err != nil {
		return "", err
	}
	defer stop()

	scenarios := []struct {
		label string
		sc    load.Scenario
	}{
		{"pass-through route", load.Scenario{Name: "lua-pass", Route: "pass", Path: "/pass"}},
		{"pre-function, small chunk", load.Scenario{Name: "lua-pre", Route: "lua", Path: "/lua"}},
	}
	type meas struct {
		res    load.Result
		cpuPer time.Duration
	}
	type key struct{ s, c int }
	got := map[key][]meas{}
	for ci, r := range luaRuns {
		for _, s := range scenarios {
			if w := load.Run(ctx, conn, s.sc, r.c, r.n/5); w.Errors > 0 { // warm up
				return "", fmt.Errorf("%s warm-up: %d stream errors", s.label, w.Errors)
			}
		}
		for round := 0; round < luaRounds; round++ {
			for si, s := range scenarios {
				c0 := luaProcessCPU()
				res := load.Run(ctx, conn, s.sc, r.c, r.n)
				used := luaProcessCPU() - c0
				if res.Errors > 0 {
					return "", fmt.Errorf("%s c=%d: %d stream errors", s.label, r.c, res.Errors)
				}
				got[key{si, ci}] = append(got[key{si, ci}], meas{res, used / time.Duration(r.n)})
			}
		}
	}
	if n := int(counter(reg, "sidecall_lua_errors_total", nil) + counter(reg, "sidecall_lua_timeouts_total", nil)); n > 0 {
		return "", fmt.Errorf("%d Lua errors or timeouts during the run", n)
	}
	med := func(ms []meas) meas {
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
	nsus := func(ns int64) string {
		if ns < 10000 {
			return fmt.Sprintf("%d ns", ns)
		}
		return fmt.Sprintf("%.1f µs", float64(ns)/1000)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\n## Lua: templates and pre-function\n\n")
	fmt.Fprintf(&b, "### `$(...)` templates, per evaluation\n\n")
	fmt.Fprintf(&b, "The same lookup on the Go fast path (a plain path) and written so that it needs Lua (`... or \"\"`), rendered with `flows.RenderString` on a request (Go `testing.Benchmark`, median of 3).\n\n")
	fmt.Fprintf(&b, "| lookup | fast path | allocs | Lua path | allocs | Lua / fast |\n|---|---|---|---|---|---|\n")
	for _, r := range tplRows {
		fmt.Fprintf(&b, "| %s: `%s` vs `%s` | %s | %d | %s | %d | %.1fx |\n", r.what, r.fastSrc, r.slowSrc,
			nsus(r.fast.NsPerOp()), r.fast.AllocsPerOp(), nsus(r.slow.NsPerOp()), r.slow.AllocsPerOp(), float64(r.slow.NsPerOp())/float64(r.fast.NsPerOp()))
	}
	fmt.Fprintf(&b, "\n### One chunk run: pooled state vs fresh state\n\n")
	fmt.Fprintf(&b, "The small chunk below, run once with the PDK bound (Go `testing.Benchmark`, median of 3, one goroutine).\n\n")
	fmt.Fprintf(&b, "| state | per run | allocs | bytes |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| pooled, `LuaChunk.Run` on an Exchange (what requests use) | %s | %d | %d |\n", nsus(pooled.NsPerOp()), pooled.AllocsPerOp(), pooled.AllocedBytesPerOp())
	fmt.Fprintf(&b, "| pooled, `Sandbox.Run` with a minimal host | %s | %d | %d |\n", nsus(pooledOwn.NsPerOp()), pooledOwn.AllocsPerOp(), pooledOwn.AllocedBytesPerOp())
	fmt.Fprintf(&b, "| fresh state per run (a new sandbox each time, no pool) | %s | %d | %d |\n", nsus(fresh.NsPerOp()), fresh.AllocsPerOp(), fresh.AllocedBytesPerOp())

	fmt.Fprintf(&b, "\n### pre-function with a small chunk vs the pass-through route\n\n")
	fmt.Fprintf(&b, "```lua\n%s\n```\n\n", luaSmallChunk)
	fmt.Fprintf(&b, "| scenario | c | streams/s | p50 | p99 | process CPU/stream | added p50 | added CPU/stream |\n|---|---|---|---|---|---|---|---|\n")
	var verdicts []string
	met := true
	for ci, r := range luaRuns {
		pass := med(got[key{0, ci}])
		for si, s := range scenarios {
			m := med(got[key{si, ci}])
			addP50, addCPU := "0 (floor)", "0 (floor)"
			if si == 1 {
				added, cpu := m.res.P50-pass.res.P50, m.cpuPer-pass.cpuPer
				addP50, addCPU = us(added), us(cpu)
				if ci == 0 {
					met = met && added <= 50*time.Microsecond
					verdicts = append(verdicts, fmt.Sprintf("c=%d: +%s p50", r.c, us(added)))
				}
				met = met && cpu <= 50*time.Microsecond
				verdicts = append(verdicts, fmt.Sprintf("c=%d: +%s CPU/stream", r.c, us(cpu)))
			}
			fmt.Fprintf(&b, "| %s | %d | %.0f | %v | %v | %s | %s | %s |\n", s.label, r.c, m.res.PerSecond(),
				m.res.P50.Round(time.Microsecond), m.res.P99.Round(time.Microsecond), us(m.cpuPer), addP50, addCPU)
		}
	}
	v := "met"
	if !met {
		v = "NOT met"
	}
	fmt.Fprintf(&b, "\nTarget: pooled Lua adds <= 50 µs p50 per request. This run: %s → %s. "+
		"The per-request figure is p50 at c=1, where nothing queues, and the added CPU per stream at every concurrency; "+
		"at c=16 and c=64 the load client and the processor saturate the machine's %d cores, so a p50 there is mostly queueing "+
		"(about c × CPU per stream / cores) and its difference scales with the added CPU rather than measuring it.\n\n",
		strings.Join(verdicts, "; "), v, runtime.NumCPU())
	fmt.Fprintf(&b, "Method: one in-process sidecall processor (`flows.Load` with every plugin, gRPC on 127.0.0.1) driven by the ext_proc load client "+
		"(request headers only, one stream per request, route by xds.route_name); both routes answer in one message (the chunk's header change rides on the request-headers reply). "+
		"%d alternating rounds per scenario after a warm-up, medians shown. CPU is getrusage of the whole process (processor and load client), so \"added\" isolates the plugin. "+
		"Lua time limit %s, pool of %d states.\n", luaRounds, lua.DefaultTimeout, lua.DefaultPoolSize)
	return b.String(), nil
}

// luaHost is a minimal lua.Host (one GET request) for running a compiled
// chunk on a sandbox of its own.
type luaHost struct {
	headers, respHeaders map[string][]string
	shared               map[string]any
}

func newLuaHost() *luaHost {
	return &luaHost{headers: map[string][]string{"x-request-id": {"5f0c8c1e-6d1b-4a8e-9a57-1f8f3c2b9d10"}},
		respHeaders: map[string][]string{}, shared: map[string]any{}}
}

func (h *luaHost) Phase() string                { return "access" }
func (h *luaHost) Method() string               { return "GET" }
func (h *luaHost) Scheme() string               { return "http" }
func (h *luaHost) Host() string                 { return "bench.local" }
func (h *luaHost) Port() int                    { return 80 }
func (h *luaHost) Path() string                 { return "/lua" }
func (h *luaHost) RawQuery() string             { return "" }
func (h *luaHost) Headers() map[string][]string { return h.headers }
func (h *luaHost) Body() ([]byte, bool)         { return nil, false }
func (h *luaHost) SetHeader(n, v string)        { h.headers[strings.ToLower(n)] = []string{v} }
func (h *luaHost) AddHeader(n, v string) {
	k := strings.ToLower(n)
	h.headers[k] = append(h.headers[k], v)
}
func (h *luaHost) ClearHeader(n string)                  { delete(h.headers, strings.ToLower(n)) }
func (h *luaHost) SetPath(string)                        {}
func (h *luaHost) SetRawQuery(string)                    {}
func (h *luaHost) SetMethod(string)                      {}
func (h *luaHost) SetBody([]byte)                        {}
func (h *luaHost) Status() int                           { return 0 }
func (h *luaHost) ResponseHeaders() map[string][]string  { return h.respHeaders }
func (h *luaHost) SetResponseHeader(n, v string)         { h.respHeaders[strings.ToLower(n)] = []string{v} }
func (h *luaHost) AddResponseHeader(n, v string)         { h.SetResponseHeader(n, v) }
func (h *luaHost) ClearResponseHeader(n string)          { delete(h.respHeaders, strings.ToLower(n)) }
func (h *luaHost) SetStatus(int)                         {}
func (h *luaHost) ResponseBody() ([]byte, bool)          { return nil, false }
func (h *luaHost) SetResponseBody([]byte)                {}
func (h *luaHost) Exit(int, []byte, map[string][]string) {}
func (h *luaHost) Shared() map[string]any                { return h.shared }
func (h *luaHost) Logger() *zap.Logger                   { return zap.NewNop() }
func (h *luaHost) Vault(string) (string, error)          { return "", fmt.Errorf("no vault") }
func (h *luaHost) Var(string) (string, bool)             { return "", false }
