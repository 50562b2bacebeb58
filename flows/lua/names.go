package lua

import (
	"fmt"
	"sort"
	"strings"
)

// Phase sets of the PDK table. Kong's own phase rules, restricted to the
// phases sidecall runs.
const (
	allPhases  = "rewrite, access, header_filter, body_filter, log"
	reqPhases  = "rewrite, access"
	respRead   = "header_filter, body_filter, log"
	respWrite  = "rewrite, access, header_filter"
	bodyFilter = "body_filter"
)

// Name is one entry of the PDK table: what sidecall provides under kong.*,
// ngx.* and the other globals Kong's sandbox gives.
type Name struct {
	Path   string // e.g. "kong.request.get_header"
	Phases string // comma-separated phases, "" for tables and values
	Kind   string // "function", "table" (any field may be read), "value"
	Note   string // how sidecall differs from Kong, if it does
}

func fn(path, phases string, note ...string) Name {
	return Name{Path: path, Phases: phases, Kind: "function", Note: strings.Join(note, " ")}
}

func tbl(path, note string) Name { return Name{Path: path, Kind: "table", Note: note} }

func val(path, phases, note string) Name {
	return Name{Path: path, Phases: phases, Kind: "value", Note: note}
}

// Names is the PDK table: every kong.* and ngx.* name sidecall provides.
// The load check, the docs (docs/lua.md) and a test that the sandbox has
// exactly these functions are all made from it.
var Names = []Name{
	fn("kong.request.get_scheme", allPhases),
	fn("kong.request.get_host", allPhases),
	fn("kong.request.get_port", allPhases),
	fn("kong.request.get_forwarded_scheme", allPhases, "x-forwarded-proto, else the scheme (every proxy is trusted)."),
	fn("kong.request.get_forwarded_host", allPhases, "x-forwarded-host, else the host."),
	fn("kong.request.get_forwarded_port", allPhases, "x-forwarded-port, else the port."),
	fn("kong.request.get_forwarded_path", allPhases, "x-forwarded-path, else the path."),
	fn("kong.request.get_forwarded_prefix", allPhases, "x-forwarded-prefix, else nil."),
	fn("kong.request.get_http_version", allPhases, "Always 1.1 (Envoy does not say)."),
	fn("kong.request.get_method", allPhases),
	fn("kong.request.get_path", allPhases),
	fn("kong.request.get_raw_path", allPhases, "The path as Envoy hands it over (after its normalisation)."),
	fn("kong.request.get_path_with_query", allPhases),
	fn("kong.request.get_raw_query", allPhases),
	fn("kong.request.get_query_arg", allPhases),
	fn("kong.request.get_query", allPhases),
	fn("kong.request.get_header", allPhases, "host reads :authority."),
	fn("kong.request.get_headers", allPhases, "host is :authority."),
	fn("kong.request.get_raw_body", reqPhases, "nil, err when the body was not buffered."),
	fn("kong.request.get_body", reqPhases, "JSON and form bodies; multipart is unsupported."),
	fn("kong.request.get_start_time", allPhases, "The time the chunk's call started."),
	fn("kong.request.get_uri_captures", allPhases),

	fn("kong.client.get_ip", allPhases, "Envoy's source.address, else x-envoy-external-address, else the first x-forwarded-for hop."),
	fn("kong.client.get_forwarded_ip", allPhases, "The first x-forwarded-for hop, else get_ip()."),
	fn("kong.client.get_port", allPhases),
	fn("kong.client.get_forwarded_port", allPhases, "x-forwarded-port, else get_port()."),
	fn("kong.client.get_protocol", allPhases, "http, https, grpc or grpcs."),
	fn("kong.client.get_consumer", allPhases, "Always nil: sidecall has no consumers."),
	fn("kong.client.get_credential", allPhases, "Always nil."),

	fn("kong.router.get_route", allPhases, "id, name, paths, hosts, methods, protocols of the matched route, or nil."),
	fn("kong.router.get_service", allPhases, "id, name, host, port, path, protocol of its service, or nil."),

	fn("kong.node.get_id", allPhases, "A random id per process."),
	fn("kong.node.get_hostname", allPhases),
	tbl("kong.configuration", "Read-only: database (\"off\"), role (\"traditional\"), untrusted_lua (\"sandbox\"), plugins (the plugins sidecall runs). Other kong.conf keys are nil."),

	fn("kong.service.request.set_header", reqPhases, "host sets :authority."),
	fn("kong.service.request.add_header", reqPhases),
	fn("kong.service.request.clear_header", reqPhases),
	fn("kong.service.request.set_headers", reqPhases),
	fn("kong.service.request.set_path", reqPhases),
	fn("kong.service.request.set_raw_query", reqPhases),
	fn("kong.service.request.set_query", reqPhases),
	fn("kong.service.request.set_method", reqPhases),
	fn("kong.service.request.set_raw_body", reqPhases),
	fn("kong.service.request.set_body", reqPhases, "JSON and form bodies."),
	fn("kong.service.request.enable_buffering", reqPhases, "Makes the plugin buffer the response body."),
	fn("kong.service.response.get_status", respRead),
	fn("kong.service.response.get_header", respRead),
	fn("kong.service.response.get_headers", respRead),
	fn("kong.service.response.get_raw_body", respRead, "nil until the body is buffered (body_filter)."),
	fn("kong.service.response.get_body", respRead, "JSON and form bodies; nil until buffered."),

	fn("kong.response.get_status", respRead),
	fn("kong.response.get_header", respRead),
	fn("kong.response.get_headers", respRead),
	fn("kong.response.get_source", respRead, "\"exit\" after kong.response.exit, else \"service\"."),
	fn("kong.response.set_status", respWrite),
	fn("kong.response.set_header", respWrite, "In rewrite/access applied once the response exists."),
	fn("kong.response.add_header", respWrite),
	fn("kong.response.clear_header", respWrite),
	fn("kong.response.set_headers", respWrite),
	fn("kong.response.get_raw_body", bodyFilter, "The whole buffered body."),
	fn("kong.response.set_raw_body", bodyFilter),
	fn("kong.response.exit", respWrite),
	fn("kong.response.error", respWrite, "Body {\"message\": ...} in JSON."),

	tbl("kong.ctx.shared", "The request's map, shared with templates and callouts."),
	tbl("kong.ctx.plugin", "Per plugin instance and request."),

	fn("kong.table.new", allPhases),
	fn("kong.table.clear", allPhases),

	fn("kong.log.debug", allPhases, "kong.log(...) itself is kong.log.notice(...)."),
	fn("kong.log.info", allPhases),
	fn("kong.log.notice", allPhases),
	fn("kong.log.warn", allPhases),
	fn("kong.log.err", allPhases),
	fn("kong.log.crit", allPhases),
	fn("kong.log.alert", allPhases),
	fn("kong.log.emerg", allPhases),
	fn("kong.log.inspect", allPhases),
	fn("kong.log.set_serialize_value", allPhases, "Kept for the request: kong.log.serialize applies it; sidecall has no logging plugin that reads it."),
	fn("kong.log.serialize", "log", "request (method, uri, url, querystring, headers), response (status, headers), route, service, client_ip, started_at."),

	fn("kong.vault.get", allPhases, "Only references the config names."),
	fn("kong.vault.is_reference", allPhases),

	fn("kong.cache.get", allPhases, "Called as kong.cache:get(key, opts, cb, ...): a per-process TTL cache (opts.ttl seconds, 0 or none: no expiry); nil results are not cached."),
	fn("kong.cache.probe", allPhases),
	fn("kong.cache.invalidate", allPhases),

	tbl("ngx.var", "request_uri, uri, args, query_string, is_args, host, http_host, server_name, server_port, server_addr, scheme, request_method, request_id, request_body, request_time, msec, remote_addr, realip_remote_addr, remote_port, status, upstream_status, upstream_uri, upstream_host, http_*, arg_*, cookie_*. Writable: args, upstream_uri, upstream_host, upstream_x_forwarded_* (for, proto, host, port, path, prefix: the X-Forwarded-* headers the upstream gets; nil or \"\" removes one)."),
	tbl("ngx.ctx", "Per request, shared by every chunk of the request."),
	tbl("ngx.header", "The response headers: reads in header_filter/body_filter, writes in rewrite/access/header_filter."),
	tbl("ngx.arg", "body_filter only: [1] is the whole buffered body, [2] is true."),
	val("ngx.status", allPhases, "Writable: in rewrite/access it is the status of a later ngx.exit or ngx.say."),
	val("ngx.null", "", "Same value as cjson.null."),
	tbl("ngx.config", "subsystem (\"http\"), debug, is_console, nginx_version, ngx_lua_version."),

	fn("ngx.get_phase", allPhases),
	fn("ngx.resp.get_headers", allPhases),

	fn("ngx.exit", allPhases, "In rewrite/access, a status >= 200 answers the client (with what ngx.say/print buffered); 0 ends the chunk."),
	fn("ngx.say", reqPhases, "Buffers the body; the client gets it when the chunk ends (ngx.status, else 200)."),
	fn("ngx.print", reqPhases, "As ngx.say without the newline."),
	fn("ngx.redirect", reqPhases, "Answers with the status (default 302) and a Location header."),
	fn("ngx.log", allPhases),
	fn("ngx.encode_base64", allPhases),
	fn("ngx.decode_base64", allPhases),
	fn("ngx.md5", allPhases),
	fn("ngx.md5_bin", allPhases),
	fn("ngx.sha1_bin", allPhases),
	fn("ngx.hmac_sha1", allPhases),
	fn("ngx.crc32_short", allPhases),
	fn("ngx.crc32_long", allPhases),
	fn("ngx.time", allPhases),
	fn("ngx.now", allPhases),
	fn("ngx.today", allPhases),
	fn("ngx.http_time", allPhases),
	fn("ngx.cookie_time", allPhases),
	fn("ngx.utctime", allPhases),
	fn("ngx.localtime", allPhases),
	fn("ngx.update_time", allPhases, "No-op."),
	fn("ngx.escape_uri", allPhases),
	fn("ngx.unescape_uri", allPhases),
	fn("ngx.encode_args", allPhases),
	fn("ngx.decode_args", allPhases),

	fn("ngx.re.match", allPhases, "Go regexp (RE2): no backreferences or lookaround. Flags: a, i, j, m, o, s, u, x (j, o, u change nothing)."),
	fn("ngx.re.find", allPhases),
	fn("ngx.re.gmatch", allPhases),
	fn("ngx.re.sub", allPhases, "Replacement: $0, $1, ${name}, $$, or a function of the captures."),
	fn("ngx.re.gsub", allPhases),

	fn("ngx.req.get_headers", allPhases),
	fn("ngx.req.get_uri_args", allPhases),
	fn("ngx.req.get_post_args", reqPhases),
	fn("ngx.req.get_method", allPhases),
	fn("ngx.req.http_version", allPhases, "Always 1.1."),
	fn("ngx.req.start_time", allPhases),
	fn("ngx.req.read_body", reqPhases, "No-op: the plugin buffers the body when a chunk calls it."),
	fn("ngx.req.discard_body", reqPhases, "No-op."),
	fn("ngx.req.get_body_data", reqPhases),
	fn("ngx.req.get_body_file", reqPhases, "Always nil: bodies are in memory."),
	fn("ngx.req.set_body_data", reqPhases),
	fn("ngx.req.set_header", reqPhases),
	fn("ngx.req.clear_header", reqPhases),
	fn("ngx.req.set_uri", reqPhases, "No internal redirect (jump)."),
	fn("ngx.req.set_uri_args", reqPhases),
	fn("ngx.req.set_method", reqPhases, "Takes a method name or an ngx.HTTP_* method constant."),

	fn("ngx.worker.pid", allPhases),
	fn("ngx.worker.id", allPhases, "Always 0."),
	fn("ngx.worker.count", allPhases, "Always 1."),
}

// Refused lists what Kong code may use and sidecall does not provide, with
// why (docs/lua.md). Calling any of these is a load error, as is calling
// or indexing any global neither the chunk nor the sandbox defines.
var Refused = []struct{ Name, Why string }{
	{"ngx.location.*, ngx.exec", "nginx subrequests and internal redirects: use a request-callout or a route"},
	{"ngx.socket.*, ngx.timer.*, ngx.thread.*, ngx.sleep", "no sockets, timers, threads or blocking in the sandbox"},
	{"ngx.shared.*", "no shared dictionaries: kong.cache is a per-process cache"},
	{"ngx.flush, ngx.eof, ngx.send_headers", "responses are sent by Envoy, whole"},
	{"ngx.ctx.balancer_data", "Kong's balancer state: timeouts and retries are Envoy's route and cluster settings"},
	{"kong.db, kong.dns, kong.cluster, kong.nginx, kong.ip, kong.websocket", "sidecall has no database, DNS client, cluster or nginx"},
	{"kong.service.set_target, kong.service.set_upstream, kong.service.set_tls_*", "Envoy picks the upstream"},
	{"kong.client.authenticate, kong.client.load_consumer", "sidecall has no consumers"},
	{"require of anything but cjson and cjson.safe", "no module loading (a literal name is refused at load, a computed one when it runs)"},
	{"os (but os.clock, os.date, os.difftime, os.time), io, debug, package, coroutine, load*, dofile, getfenv/setfenv, string.dump", "as Kong's sandbox"},
}

// OtherGlobals are the globals besides kong and ngx (docs/lua.md).
var OtherGlobals = "assert, error, next, select, tonumber, tostring, type, unpack, rawequal, rawget, rawset, setmetatable, getmetatable, pairs, ipairs, pcall, xpcall, print, string, table, math, os.clock, os.date, os.difftime, os.time, cjson (require \"cjson\" and \"cjson.safe\")"

var nameIndex = func() map[string]*Name {
	m := map[string]*Name{}
	for i := range Names {
		m[Names[i].Path] = &Names[i]
	}
	return m
}()

// namespaces are the tables in which every field is listed in Names.
var namespaces = func() map[string]bool {
	m := map[string]bool{"kong": true, "ngx": true}
	for _, n := range Names {
		parts := strings.Split(n.Path, ".")
		for i := 2; i < len(parts); i++ {
			m[strings.Join(parts[:i], ".")] = true
		}
	}
	return m
}()

// kongValues are kong.* fields that are values, not functions or
// namespaces: accepted when read, never listed as unknown.
var kongValues = map[string]bool{"kong.version": true, "kong.version_num": true, "kong.configuration": true, "kong.ctx": true}

// Provided tells whether path (a static kong.* or ngx.* path) names
// something sidecall provides, or a part or a field of it. For a path it
// does not provide it returns the unknown prefix (e.g. "ngx.location" for
// "ngx.location.capture").
func Provided(path string) (bool, string) {
	parts := strings.Split(path, ".")
	for i := 1; i <= len(parts); i++ {
		p := strings.Join(parts[:i], ".")
		if n, ok := nameIndex[p]; ok {
			// A table's fields are free; a function or value ends the path.
			return n.Kind == "table" || i == len(parts), ""
		}
		if namespaces[p] || kongValues[p] {
			if kongValues[p] {
				return true, ""
			}
			continue
		}
		if i == 2 && parts[0] == "ngx" && isUpperName(parts[1]) {
			return true, "" // ngx.HTTP_OK, ngx.ERR, ...
		}
		return false, p
	}
	return true, ""
}

func isUpperName(s string) bool {
	return s != "" && strings.ToUpper(s) == s
}

// RenderDocs renders docs/lua.md from Names and Refused.
func RenderDocs() string {
	var b strings.Builder
	b.WriteString("# Lua in sidecall\n\n")
	b.WriteString("<!-- Generated from flows/lua/names.go by `UPDATE_DOCS=1 go test ./flows/lua/ -run TestDocsLua`; do not edit. -->\n\n")
	b.WriteString("pre-function, post-function and `$(...)` templates run Lua 5.1 (gopher-lua) with Kong's PDK subset below. ")
	b.WriteString("A chunk that calls a `kong.*` or `ngx.*` function not listed here is a load error naming the function and its line. ")
	b.WriteString("A function called outside its phases raises Kong's phase error.\n\n")
	b.WriteString("Phases: sidecall runs `rewrite` (first in its access step), `access`, `header_filter`, `body_filter` ")
	b.WriteString("(once, on the whole buffered body) and `log`: log chunks run off the request path once the plugin's last response phase is done, ")
	b.WriteString("on a copy of the request (the response body is not kept). `certificate` chunks are compiled and never run, with a warning.\n\n")
	b.WriteString("A chunk that returns a function (`return function() ... end`) is run once per Lua state; the function it returns runs for every request, its upvalues kept per state (as Kong keeps them per worker).\n\n")
	groups := map[string][]Name{}
	var order []string
	for _, n := range Names {
		parts := strings.Split(n.Path, ".")
		g := strings.Join(parts[:len(parts)-1], ".")
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], n)
	}
	for _, g := range order {
		fmt.Fprintf(&b, "## %s\n\n| Name | Kind | Phases | Notes |\n|---|---|---|---|\n", g)
		for _, n := range groups[g] {
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", n.Path, n.Kind, n.Phases, strings.ReplaceAll(n.Note, "|", "\\|"))
		}
		b.WriteString("\n")
	}
	b.WriteString("## ngx constants\n\n`ngx.OK`, `ngx.ERROR`, `ngx.DECLINED`, log levels (`ngx.ERR`, `ngx.WARN`, ...), `ngx.HTTP_*` statuses and methods.\n\n")
	b.WriteString("## Other globals\n\n")
	b.WriteString(OtherGlobals + ".\n\n")
	b.WriteString("## Refused\n\n| Name | Why |\n|---|---|\n")
	for _, r := range Refused {
		fmt.Fprintf(&b, "| %s | %s |\n", r.Name, r.Why)
	}
	b.WriteString("\nAnything else under `kong.` or `ngx.` is refused too: a call of it is a load error, and at run time an error names the function.\n")
	return b.String()
}

// sortedNames is Names' paths, sorted (tests).
func sortedNames() []string {
	out := make([]string, 0, len(Names))
	for _, n := range Names {
		out = append(out, n.Path)
	}
	sort.Strings(out)
	return out
}
