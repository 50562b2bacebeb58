// Package lua is sidecall's gopher-lua sandbox with Kong's PDK subset.
//
// Chunks are compiled once (Compile, CompileExpr) and run on pooled states
// (Sandbox.Run, Sandbox.Eval) with a per-call time limit and instruction
// budget. The PDK is bound
// to a Host, which the flows package implements over its Exchange.
//
// Choices where Kong is silent:
//   - Globals: assert, error, next, select, tonumber, tostring, type,
//     unpack, rawequal, rawget, rawset (not on sandbox tables),
//     setmetatable (tables only, as in Lua 5.1), getmetatable,
//     pairs/ipairs (honouring __pairs), pcall and
//     xpcall (which cannot swallow kong.response.exit or the limits),
//     print (to the logger), string, table, math (no randomseed), kong, ngx,
//     cjson, os.clock/date/difftime/time (as Kong's sandbox), and require
//     of "cjson" and "cjson.safe" only. No other os, io, debug, package,
//     coroutine, load*, dofile, getfenv/setfenv, string.dump.
//   - Names (names.go) is the PDK table: Compile refuses a call of a
//     kong.*/ngx.* name it lacks (UnknownNameError), docs/lua.md is
//     rendered from it, and tests hold the sandbox and its phase checks
//     to it. A failed call of a nil value names the call(s) on its line.
//   - A chunk returning a function (Kong's "return function() ... end")
//     runs once per pooled state; the function runs per request with its
//     upvalues and globals kept in that state (Kong keeps them per
//     worker). Nothing else survives a call.
//   - ngx.ctx and kong.ctx.plugin live in the request's Shared map under
//     hidden keys, so they last across phases (JSON-like values only, as
//     kong.ctx.shared). kong.cache is one TTL cache per process.
//   - ngx.re runs on Go's regexp (RE2): linear time, no backreferences or
//     lookaround; flags a, i, j, m, o, s, u, x (others are an error).
//   - ngx.say/print in rewrite/access buffer a body that answers the
//     client when the chunk ends or at ngx.exit; ngx.exit(0) only ends the
//     chunk (Kong would end the phase for every plugin).
//   - Nothing one call does survives into another on the same pooled
//     state (another route's or request's), as Kong's sandbox makes
//     library tables read-only. string, table, math, kong and each of its
//     sub-tables, ngx, ngx.var, cjson (also as require returns it),
//     cjson.array_mt and kong.ctx are read-only: writing a field raises
//     "attempt to modify a read-only table", and so do rawset and
//     table.insert/remove/sort on them (they write raw, past __newindex).
//     Each is an empty view whose __index is the real table; its
//     metatable is locked (getmetatable gives false, setmetatable fails),
//     and pairs on it hands out the view, never the real table. Strings
//     have a locked metatable of their own (getmetatable("") is false and
//     ("").__index is nil; gopher-lua's was the string library itself,
//     reachable and writable as ("").__index). setmetatable takes tables
//     only, since on a number, boolean, function or library userdata it
//     would change that type's metatable for the whole state. Globals a
//     chunk sets live in a fresh per-call table over the read-only
//     globals (there is no _G), and template expressions cannot set any.
//     kong.ctx.shared stays writable: it is the request's own map.
//   - Bombs: string.rep, string.format widths, string.gsub, table.concat
//     and the `..` operator are capped per string (Options.MaxStringLen;
//     chunks are compiled with `..` replaced by a call of the capped
//     concatenation, since one VM instruction could otherwise build any
//     size outside the time limit), table.insert and cjson.decode lists by
//     MaxTableLen; the call stack is 200 frames.
//   - Two limits per call stop everything else, the first one reached
//     wins, and both are a *TimeoutError (a 500, counted as a Lua timeout;
//     TimeoutError.Budget tells which): the time limit (Options.Timeout,
//     100 ms) and the instruction budget (Options.Instructions, 500000).
//     gopher-lua checks the call's context before every VM instruction;
//     the sandbox's context counts those checks, so the budget costs one
//     decrement an instruction. Library calls that build values are
//     charged for them: one instruction per 32 bytes of new string
//     (string.rep/format/gsub/upper/lower/reverse/char, table.concat, `..`,
//     cjson.encode, ngx base64 and uri escaping, kong.request/response
//     bodies, headers and query), 16 bytes a value for unpack and
//     string.byte (charged before they push anything), 4x the text for
//     cjson.decode, and one per table (plus half its length) converted to
//     Go (cjson.encode, kong.ctx.shared), so a table shared many times
//     inside another cannot blow up exponentially.
//   - What bounds what: CPU by the time limit and the budget; memory by
//     the budget: a VM instruction allocates about 60 bytes at most
//     (table, closure and hash-key bombs measured 25 to 60, amortised), so
//     a call allocates at most about 30 MB with the defaults (15 MB of
//     strings), whatever the
//     machine's speed (8 concurrent table bombs peaked at about 70 MB of
//     heap, 8 string.rep bombs at about 90 MB). The bound is per call:
//     concurrent calls add up, and there is no process-wide cap.
//     Allocations inside one library call are bounded by the caps above,
//     not by the budget; pattern matching is charged one instruction per
//     1024 steps and is bounded by the time limit.
//   - Errors build no gopher-lua stack traceback when the stack is deep
//     (it lists one line per tail call: a tail-call loop stopped by the
//     limit would spend hundreds of ms and MB on it); pcall and xpcall
//     are sidecall's own for that reason, and xpcall's handler runs after
//     the failed call has unwound (nothing can tell without debug). string.find/match/gmatch/gsub
//     use sidecall's own Lua 5.1 matcher, which checks the time limit as it
//     goes (gopher-lua's cannot be stopped, and ".-.-b" is cubic).
//   - Patterns follow Lua 5.1 (LuaJIT): %f frontiers work, a '^' in gmatch
//     is a literal, malformed parts error only when reached; string.find
//     with init beyond the end gives nil (as Lua 5.2 and gopher-lua).
//   - kong.ctx.shared is a live view of the Go map: reads convert lazily,
//     nested map[string]any and []any are live too; a Lua table stored in
//     it is converted to Go at once and again at the end of the call, so
//     later changes to it are kept. Functions cannot be stored.
//   - Go values seen from Lua: integers beyond 2^53 (and cjson.decode'd
//     ones) are a userdata that keeps the exact digits, prints and encodes
//     exactly, and does float arithmetic. Lua numbers back in Go are int64
//     when integral (|n| <= 2^53), else float64. cjson.null and ngx.null are
//     the same value; a Go nil reads as it.
//   - cjson.encode sorts object keys; a table with keys 1..n is an array,
//     an empty table an object unless it has cjson.array_mt.
//   - Template rendering of a table (map or list) is its JSON, not Kong's
//     "table: 0x...".
//   - kong.response.exit with a table body sets content-type
//     application/json; charset=utf-8 unless the headers give one.
package lua
