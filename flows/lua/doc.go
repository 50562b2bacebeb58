// Package lua is sidecall's gopher-lua sandbox with Kong's PDK subset.
//
// Chunks are compiled once (Compile, CompileExpr) and run on pooled states
// (Sandbox.Run, Sandbox.Eval) with a per-call time limit. The PDK is bound
// to a Host, which the flows package implements over its Exchange.
//
// Choices where the contract is silent:
//   - Globals: assert, error, next, select, tonumber, tostring, type,
//     unpack, rawequal, rawget, rawset (not on sandbox tables),
//     setmetatable, getmetatable, pairs/ipairs (honouring __pairs), pcall and
//     xpcall (which cannot swallow kong.response.exit or the time limit),
//     print (to the logger), string, table, math (no randomseed), kong, ngx,
//     cjson, and require of "cjson" and "cjson.safe" only. No os, io, debug,
//     package, coroutine, load*, dofile, getfenv/setfenv, string.dump.
//   - Library tables are read-only views; globals a chunk sets live in a
//     per-call table, so nothing leaks between requests on a pooled state.
//   - Bombs: string.rep, string.format widths, string.gsub, table.concat
//     and the `..` operator are capped (Options.MaxStringLen; chunks are
//     compiled with `..` replaced by a call of the capped concatenation,
//     since one VM instruction could otherwise build any size outside the
//     time limit), table.insert by MaxTableLen; the call stack is 200
//     frames; everything else is stopped by the time limit, checked at
//     every Lua instruction (a table filled by plain assignment reaches
//     tens of MB in 100 ms).
//   - Errors build no gopher-lua stack traceback when the stack is deep
//     (it lists one line per tail call: a tail-call loop stopped by the
//     limit used to spend hundreds of ms and MB on it); pcall and xpcall
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
