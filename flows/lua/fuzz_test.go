package lua

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzChunk: any source either fails to compile with a SyntaxError (or an
// UnknownNameError: a kong.*/ngx.* name sidecall lacks) or runs
// to a result, a RuntimeError or a TimeoutError; nothing panics.
func FuzzChunk(f *testing.F) {
	for _, s := range []string{
		`kong.ctx.shared.a = cjson.decode('{"a":[1,2]}')`,
		`kong.response.exit(200, {a = 1})`,
		`local t = setmetatable({}, {__index = function(t, k) return k end}) return t.x`,
		`for k, v in pairs(kong.ctx.shared) do kong.log.err(k, v) end`,
		`string.format("%d", "x")`,
		`return ("x"):rep(3):gsub("x", "%%1")`,
		`local t = setmetatable({}, {__concat = function(a, b) return "x" end}) return "a" .. t .. 1 .. t`,
		`local function f(n) if n == 0 then error({}) end return f(n - 1) end return pcall(f, 10), xpcall(f, print, 3)`,
	} {
		f.Add(s)
	}
	sb := New(Options{Timeout: 20 * time.Millisecond})
	f.Fuzz(func(t *testing.T, src string) {
		c, err := Compile(src, "fuzz")
		if err != nil {
			var se *SyntaxError
			var ue *UnknownNameError
			if !errors.As(err, &se) && !errors.As(err, &ue) {
				t.Fatalf("compile error of type %T", err)
			}
			return
		}
		h := newHost()
		h.shared["list"] = []any{1, "x", map[string]any{"k": nil}}
		err = sb.Run(context.Background(), c, h)
		var re *RuntimeError
		var te *TimeoutError
		if err != nil && !errors.As(err, &re) && !errors.As(err, &te) {
			t.Fatalf("error of type %T: %v", err, err)
		}
		if re != nil && strings.HasPrefix(re.Msg, "panic:") {
			t.Fatalf("Go panic: %v", err)
		}
	})
}
