package lua

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConcatKeepsLuaSemantics(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	cases := []struct{ name, src, want string }{
		{"strings and numbers", `r = "a" .. "b" .. 1 .. 2.5 .. -3`, "ab12.5-3"},
		{"number format as tostring", `r = tostring(1e15 .. "" == tostring(1e15)) .. (10 / 4 .. "")`, "true2.5"},
		{"parenthesised left", `r = ("a" .. "b") .. "c"`, "abc"},
		{"method on a concatenation", `r = ("a" .. "b"):upper()`, "AB"},
		{"last operand returning several values", `local function f() return "a", "b" end r = "x" .. f()`, "xa"},
		{"varargs", `r = (function(...) return "x" .. ... end)("a", "b")`, "xa"},
		{"first operand returning several values", `local function f() return "a", "b" end r = f() .. "y"`, "ay"},
		{"__concat on the left", `local t = setmetatable({}, { __concat = function(a, b) return "T+" .. tostring(b) end }) r = t .. "x"`, "T+x"},
		{"__concat on the right", `local t = setmetatable({}, { __concat = function(a, b) return tostring(a) .. "+T" end }) r = "x" .. t`, "x+T"},
		{"__concat in a chain, right to left", `local t = setmetatable({}, { __concat = function(a, b) return "<" .. (type(a) == "table" and "T" or a) .. "|" .. (type(b) == "table" and "T" or b) .. ">" end }) r = "a" .. t .. "b" .. "c"`, "a<T|bc>"},
		{"in a loop", `local s = "" for i = 1, 5 do s = s .. i end r = s`, "12345"},
		{"in a table and a call", `r = table.concat({ "a" .. "b", "c" .. "d" }, ("," .. ""))`, "ab,cd"},
		{"nested function", `local function g(x) return function() return x .. "!" end end r = g("hi")()`, "hi!"},
		{"in a condition", `if "a" .. "b" == "ab" then r = "yes" end`, "yes"},
		{"reads kong.ctx.shared", `kong.ctx.shared.a = "A" r = kong.ctx.shared.a .. kong.ctx.shared.a`, "AA"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHost()
			if err := run(t, sb, c.src+"\nkong.ctx.shared.r = r", h); err != nil {
				t.Fatal(err)
			}
			if h.shared["r"] != c.want {
				t.Errorf("r = %#v, want %q", h.shared["r"], c.want)
			}
		})
	}
}

func TestConcatErrors(t *testing.T) {
	sb := New(Options{MaxStringLen: 1 << 20})
	defer sb.Close()
	for name, c := range map[string]struct{ src, want string }{
		"nil operand":      {"local a = 1\nlocal b = a .. nil", "test:2: cannot perform concat operation between number and nil"},
		"table operand":    {`local x = "a" .. {}`, "test:1: cannot perform concat operation between string and table"},
		"no value":         {`local function g() end local x = "x" .. g()`, "between string and nil"},
		"too large":        {`local s = string.rep("x", 600000) s = s .. s`, "result too large (limit 1048576 bytes)"},
		"doubling bomb":    {`local s = "x" while true do s = s .. s end`, "result too large"},
		"quadrupling bomb": {`local s = "x" while true do s = s .. s .. s .. s end`, "result too large"},
	} {
		t.Run(name, func(t *testing.T) {
			c0, err := Compile(c.src, "test")
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = sb.Run(context.Background(), c0, newHost())
			var re *RuntimeError
			if !errors.As(err, &re) || !strings.Contains(re.Msg, c.want) {
				t.Fatalf("want a runtime error %q, got %v", c.want, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
	// pcall sees the cap as an ordinary error.
	h := newHost()
	if err := run(t, sb, `local ok, e = pcall(function() local s = string.rep("x", 600000) return s .. s end) kong.ctx.shared.r = tostring(ok) .. " " .. e`, h); err != nil {
		t.Fatal(err)
	}
	if r, _ := h.shared["r"].(string); !strings.HasPrefix(r, "false ") || !strings.Contains(r, "too large") {
		t.Errorf("pcall: %q", r)
	}
}
