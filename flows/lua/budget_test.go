package lua

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkLoop runs a chunk of about 100k VM instructions (a loop that
// fills and reads a table), where a per-instruction cost would show.
func BenchmarkLoop(b *testing.B) {
	sb := New(Options{})
	defer sb.Close()
	c, err := Compile(`local t = {} for i = 1, 10000 do t[i] = i * 2 end local s = 0 for i = 1, #t do s = s + t[i] end kong.ctx.shared.s = s`, "b")
	if err != nil {
		b.Fatal(err)
	}
	h := newHost()
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := sb.Run(ctx, c, h); err != nil {
			b.Fatal(err)
		}
	}
}

func wantBudget(t *testing.T, err error, limit int64) {
	t.Helper()
	var te *TimeoutError
	if !errors.As(err, &te) || !te.Budget() || te.Instructions != limit {
		t.Fatalf("want the instruction budget (%d) to stop it, got %v", limit, err)
	}
	if !strings.Contains(err.Error(), "budget of "+strconv.FormatInt(limit, 10)+" instructions") {
		t.Fatalf("message: %v", err)
	}
}

// The budget counts VM instructions exactly: a loop of n iterations needs
// about 2n of them (FORLOOP and the body's ADD here).
func TestBudgetCountsInstructions(t *testing.T) {
	src := `local s = 0 for i = 1, 1000 do s = s + i end kong.ctx.shared.s = s`
	for _, c := range []struct {
		limit int64
		ok    bool
	}{{1500, false}, {5000, true}} {
		sb := New(Options{Timeout: time.Minute, Instructions: c.limit})
		h := newHost()
		err := run(t, sb, src, h)
		if c.ok && (err != nil || h.shared["s"] != int64(500500)) {
			t.Fatalf("budget %d: %v %v", c.limit, err, h.shared["s"])
		}
		if !c.ok {
			wantBudget(t, err, c.limit)
		}
		// The state is usable again (a fresh one) after the budget stopped it.
		if err := run(t, sb, `kong.ctx.shared.after = 1`, h); err != nil {
			t.Fatalf("after: %v", err)
		}
		sb.Close()
	}
	if got := New(Options{}).Options().Instructions; got != DefaultInstructions {
		t.Fatalf("default budget %d", got)
	}
}

// Bombs that the time limit alone would let run are stopped by the budget
// (the time limit here is a minute, so nothing else can), whatever builds
// the memory: VM instructions, library calls, or conversion to Go.
func TestBudgetStopsBombs(t *testing.T) {
	sb := New(Options{Timeout: time.Minute})
	defer sb.Close()
	for name, src := range map[string]string{
		"table by index":   `local t = {} local i = 0 while true do i = i + 1 t[i] = {i, i, i} end`,
		"table by length":  `local t = {} while true do t[#t+1] = {1, 2, 3} end`,
		"nested tables":    `local t = {} while true do t = {t, t, {}} end`,
		"hash keys":        `local t = {} local i = 0 while true do i = i + 1 t["k" .. i] = i end`,
		"closures":         `local t = {} local i = 0 while true do i = i + 1 t[i] = function() return i end end`,
		"kept string.rep":  `local t = {} while true do t[#t+1] = string.rep("x", 4000000) end`,
		"kept concat":      `local t = {} local s = string.rep("x", 4000000) while true do t[#t+1] = s .. "y" end`,
		"kept upper":       `local t = {} local s = string.rep("x", 4000000) while true do t[#t+1] = s:upper() end`,
		"kept unpack":      `local b = {} for i = 1, 100000 do b[i] = i end local t = {} while true do t[#t+1] = {unpack(b)} end`,
		"kept string.byte": `local s = string.rep("x", 100000) local t = {} while true do t[#t+1] = {s:byte(1, -1)} end`,
		"shared DAG":       `local a = {} for i = 1, 60 do a = {a, a} end kong.ctx.shared.x = a`,
		"encoded DAG":      `local a = {} for i = 1, 60 do a = {a, a} end local s = cjson.encode(a)`,
		"pcall":            `while true do pcall(function() local t = {} while true do t[#t+1] = {} end end) end`,
		"xpcall":           `while true do xpcall(function() while true do end end, function(e) return e end) end`,
	} {
		t.Run(name, func(t *testing.T) {
			wantBudget(t, run(t, sb, src, newHost()), DefaultInstructions)
		})
	}
}

// Eight table bombs at once, each stopped by the default budget: the
// peak heap they reach is bounded by the budget, not by how much CPU they
// get before a time limit.
func TestBudgetBoundsConcurrentBombs(t *testing.T) {
	sb := New(Options{Timeout: time.Minute})
	defer sb.Close()
	for name, src := range map[string]string{
		"tables":  `local t = {} local i = 0 while true do i = i + 1 t[i] = {i, i, i} end`,
		"strings": `local t = {} while true do t[#t+1] = string.rep("x", 4000000) end`,
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Compile(src, name)
			if err != nil {
				t.Fatal(err)
			}
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			var peak atomic.Uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				var m runtime.MemStats
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for {
					runtime.ReadMemStats(&m)
					if m.HeapAlloc > peak.Load() {
						peak.Store(m.HeapAlloc)
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				wg.Add(1)
				go func() { defer wg.Done(); errs[i] = sb.Run(context.Background(), c, newHost()) }()
			}
			wg.Wait()
			close(stop)
			<-sampled
			for _, err := range errs {
				wantBudget(t, err, DefaultInstructions)
			}
			grew := int64(peak.Load()) - int64(before.HeapAlloc)
			t.Logf("8 concurrent %s bombs: peak heap %d MiB (%d MiB before)", name, peak.Load()>>20, before.HeapAlloc>>20)
			if grew > 512<<20 {
				t.Fatalf("8 bombs grew the heap by %d MiB", grew>>20)
			}
		})
	}
}

// Ordinary chunks stay far below the budget.
func TestBudgetLeavesNormalChunks(t *testing.T) {
	sb := New(Options{Timeout: time.Minute})
	defer sb.Close()
	h := newHost()
	h.body, h.hasBody = []byte(`{"items":[`+strings.Repeat(`{"id":1,"name":"x"},`, 999)+`{"id":1,"name":"x"}]}`), true
	h.headers["content-type"] = []string{"application/json"}
	src := `local body = cjson.decode(kong.request.get_raw_body())
local n = 0
for _, it in ipairs(body.items) do n = n + it.id; it.name = it.name .. "-" .. n end
kong.service.request.set_raw_body(cjson.encode(body))
kong.ctx.shared.n = n`
	if err := run(t, sb, src, h); err != nil || h.shared["n"] != int64(1000) {
		t.Fatalf("err=%v n=%v", err, h.shared["n"])
	}
}
