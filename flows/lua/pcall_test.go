package lua

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestPcallAndXpcall(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	cases := map[string]string{
		"ok":              `local ok, a, b = pcall(function(x) return x, 2 end, 1) r = tostring(ok) .. a .. b`,
		"error string":    `local ok, e = pcall(error, "boom", 0) r = tostring(ok) .. ":" .. e`,
		"error position":  `local ok, e = pcall(function() error("boom") end) r = e`,
		"error table":     `local ok, e = pcall(error, { code = 7 }) r = e.code`,
		"not a function":  `local ok, e = pcall(42) r = tostring(ok) .. ":" .. e`,
		"callable table":  `local t = setmetatable({}, { __call = function(_, x) return x * 2 end }) local ok, v = pcall(t, 21) r = v`,
		"nested":          `local ok, e = pcall(function() local ok2, e2 = pcall(error, "in", 0) error(e2 .. "+out", 0) end) r = e`,
		"xpcall ok":       `local ok, v = xpcall(function() return "fine" end, function(m) return "h" end) r = tostring(ok) .. v`,
		"xpcall handler":  `local ok, v = xpcall(function() error("bad", 0) end, function(m) return "handled " .. m end) r = tostring(ok) .. ":" .. v`,
		"xpcall bad hdlr": `local ok, v = xpcall(function() error("bad", 0) end, function(m) error("again", 0) end) r = tostring(ok) .. ":" .. v`,
		"upvalue after":   `local g local ok = pcall(function() local x = "kept" g = function() return x end error("e") end) local y = "other" r = g()`,
	}
	want := map[string]any{
		"ok":              "true12",
		"error string":    "false:boom",
		"error position":  "test:1: boom",
		"error table":     int64(7),
		"not a function":  "false:attempt to call a number value",
		"callable table":  int64(42),
		"nested":          "in+out",
		"xpcall ok":       "truefine",
		"xpcall handler":  "false:handled bad",
		"xpcall bad hdlr": "false:again",
		"upvalue after":   "kept",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHost()
			if err := run(t, sb, src+"\nkong.ctx.shared.r = r", h); err != nil {
				t.Fatal(err)
			}
			if got := h.shared["r"]; got != want[name] {
				t.Errorf("r = %#v, want %#v", got, want[name])
			}
		})
	}
}

// gopher-lua's stack traceback lists one line per tail call; errors must
// not build it (it is built outside the time limit: a tail-call loop
// stopped at 100 ms would take several times that and hundreds of MB more).
func TestErrorsAfterTailCallsBuildNoTraceback(t *testing.T) {
	sb := New(Options{Timeout: 5 * time.Second, Instructions: 1 << 40})
	defer sb.Close()
	alloc := func(src string) (uint64, error) {
		c, err := Compile(src, "test")
		if err != nil {
			t.Fatal(err)
		}
		_ = sb.Run(context.Background(), c, newHost()) // warm the pool
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err = sb.Run(context.Background(), c, newHost())
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc, err
	}
	const deep = `local function f(n) if n == 0 then %s end return f(n - 1) end `
	for name, src := range map[string]string{
		"top level": deep + `f(300000)`,
		"pcall":     deep + `local ok, e = pcall(f, 300000) if not ok then error(e) end`,
		"xpcall":    deep + `local ok, e = xpcall(function() return f(300000) end, function(m) return m end) if not ok then error(e) end`,
	} {
		t.Run(name, func(t *testing.T) {
			base, err := alloc(strings.Replace(src, "%s", `return "done"`, 1))
			if err != nil {
				t.Fatal(err)
			}
			failed, err := alloc(strings.Replace(src, "%s", `error("boom")`, 1))
			var re *RuntimeError
			if !errors.As(err, &re) || !strings.Contains(re.Msg, "boom") {
				t.Fatalf("want a runtime error, got %v", err)
			}
			// A traceback of 300000 lines is about 5 MB.
			if failed > base+512<<10 {
				t.Errorf("the error allocated %d KB more than the same calls returning", (failed-base)>>10)
			}
		})
	}
}

func TestTailCallLoopsStopNearTheLimit(t *testing.T) {
	limit := 100 * time.Millisecond
	sb := New(Options{Timeout: limit})
	defer sb.Close()
	for name, src := range map[string]string{
		"top level": `local function f(n) return f(n + 1) end return f(1)`,
		"in pcall":  `local function f(n) return f(n + 1) end pcall(f, 1)`,
		"in xpcall": `local function f(n) return f(n + 1) end xpcall(function() return f(1) end, function(m) return m end)`,
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := run(t, sb, src, newHost())
			took := time.Since(start)
			var te *TimeoutError
			if !errors.As(err, &te) {
				t.Fatalf("want a timeout, got %v", err)
			}
			// Generous for a loaded machine; a traceback built after the limit
			// takes several times the limit.
			if took > limit+limit*3/4 {
				t.Errorf("stopped after %s (limit %s)", took, limit)
			}
		})
	}
}
