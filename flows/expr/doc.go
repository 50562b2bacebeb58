// Package expr parses and renders Kong's $(...) templates.
//
// A template is parsed once at load: literal text around placeholders,
// several placeholders per value, each placeholder a Lua expression
// compiled once. A plain path over headers, query_params, uri_captures,
// shared or callouts is evaluated in Go; anything else, and any unusual
// case on the fast path (indexing a string, a missing parent), runs in the
// lua sandbox's read-only template environment, so both give the same
// result.
//
// Choices where Kong is silent or differs:
//   - Parentheses inside Lua strings, long strings and comments do not
//     count when finding a placeholder's end (Penlight's %b() counts them).
//   - Any line whose first non-blank character is '#' is refused (Penlight
//     runs it as Lua); write $("#...") for a literal '#'.
//   - A table value renders as JSON in a string (Kong prints "table: 0x...").
//   - Value keeps the type of a single whole-value placeholder; nil stays nil.
package expr
