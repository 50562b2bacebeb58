// Package callout is sidecall's request-callout plugin: Kong 3.14's schema
// and behaviour, with the choices below where Kong's docs are silent.
//
// Per request, callouts run as a dependency DAG built from depends_on
// plus every callouts.<name> reference found in a callout's templates and
// by_lua; a by_lua that reads the callouts table dynamically depends on
// every callout declared before it. A callout starts the moment all it
// depends on has finished (critical-path scheduling, not waves): the
// plugin goroutine renders its templates and runs request.by_lua (ready
// callouts one at a time, in declaration order), a worker makes the HTTP
// call (at most max_parallel in flight; when more are ready, the one
// heading the longest chain of dependents goes first), then the plugin
// goroutine applies the error policy, stores the response, runs
// response.by_lua and writes the cache, which may make dependents ready.
// A failing callout (on_error fail), a by_lua answering the client or the
// plugin's timeout stops the run and cancels the calls in flight.
// concurrency: sequential runs one callout at a time in Kong's stable
// order.
// Only the plugin goroutine touches the Exchange.
//
// Kong's request.params table is built only when something may read it:
// a by_lua of the plugin, a template reading callouts.<name>.request, or
// another plugin of the file mentioning the callouts. Otherwise the request
// is built from the compiled config directly.
//
// Clients (transports, caches) are built by Provision, shared by key with
// every route and reload using the same settings.
//
// Choices where Kong's docs are silent:
//   - Plugin options beyond Kong: concurrency (parallel | sequential,
//     default parallel), max_parallel (default 8), timeout (ms, default
//     10000) bounding the whole plugin. Envoy's ext_proc message_timeout
//     (and max_message_timeout with mode override) must be larger than
//     timeout, or Envoy gives up first; when timeout expires the client gets
//     504 {"message": "request-callout timed out"}. A client that goes away
//     (the request's context canceled) is canceled, not an error: 499
//     "client closed request" (never sent: the stream is gone), a debug
//     log, and attempts it cut short count as status_class="canceled".
//   - on_error defaults to fail, except an error block that sets retries
//     without on_error retries. retries: N = up to N more attempts, with a
//     small jittered backoff (10-20 ms, doubling, capped at 200 ms).
//   - The fail response is flows.HTTPError{error_response_code,
//     rendered error_response_msg}: JSON {"message": ..., "request_id": ...}.
//   - A transport error under continue leaves callouts.<name>.response unset.
//   - A Lua or template runtime error, or a non-JSON body where a JSON
//     customisation applies, is a 500; nothing is sent.
//   - A control character (CR, LF, NUL, ...) in a templated header, url or
//     query value, or in a forwarded client header, is the client's: 400
//     {"message": "invalid character in the request"}, nothing sent, an info
//     log and sidecall_callout_refused_total{reason="bad_client_value"}
//     (callout="" for config.upstream headers). Literal header values with
//     one are config errors.
//   - Templated urls stay where their author put them. At load the url is
//     split by its written text into scheme, userinfo, host, port, path,
//     query and fragment, and each $(...) value is encoded for its part:
//     a path-segment value is url.PathEscape'd (no '/', '?', '#'; a value
//     making a "." or ".." segment is refused); a query key or value is
//     url.QueryEscape'd (no '&' or '=' pairs); a userinfo value has all
//     but unreserved characters escaped; a host value may hold only
//     letters, digits, '-', '_', '.' (the whole host may be [IPv6], the
//     whole authority host:port); a port value only digits. A value right
//     after a written host or port (http://h:8081$(path)) is an absolute
//     path: it must start with '/', each segment is escaped. A url that
//     starts with $(...) and has no written "scheme://" takes its base
//     (http(s)://authority[/path], no query or fragment) from the value.
//   - The url sent (rendered, or as request.by_lua left
//     request.params.url) must keep the scheme, userinfo, host and port
//     the written text fixes. A host from a template must be in
//     request.allowed_hosts (exact names or IP literals, or "*.suffix";
//     a load warning when it is empty: every call is refused). Loopback,
//     localhost, link-local, unspecified and cloud metadata hosts
//     (169.254.169.254, fd00:ec2::254, metadata.google.internal) need an
//     exact entry; sidecall's own listeners (Options.SelfAddrs) are never
//     reached through a templated host or port. Hosts are compared as
//     written, no DNS; IP literals in every form a resolver reads (127.1,
//     0x7f.1, 2130706433, [::ffff:127.0.0.1]). A written host is the
//     operator's choice and is not checked. A refused url fails the
//     callout under its on_error policy like a transport error (retry does
//     not retry it), counts sidecall_callout_refused_total{route,
//     callout, reason}, and is logged at warn naming the callout, the
//     route and the rule, never the value. Failed callouts (connection
//     refused, timeout, refused url) log at most one warn line a second
//     per callout; the next line counts those held back (suppressed).
//   - http_opts.timeouts apply per operation, like nginx cosockets: connect
//     until the TCP (and TLS, and proxy CONNECT) connection is up, write
//     for each send of the request, read from the request sent to the
//     response headers and then between reads of the body (a target
//     dripping a byte every 100 ms is not cut by read 500; one silent for
//     600 ms is). Each fails the attempt as a transport error logged as a
//     timeout ("read timeout after 500ms"), under on_error like any other.
//     Unset or 0: 60 s (nginx's). The plugin timeout still bounds the whole.
//   - Hop-by-hop headers, Host and Content-Length are never forwarded to a
//     callout (a custom Host sets the request's Host). traceparent and
//     tracestate are propagated unless set by the callout: the client's as
//     sent with tracing off; with tracing on, each attempt's own client
//     span (a child of the plugin's span), and baggage. Default
//     User-Agent: sidecall/<version>/request-callout (Options.Version).
//   - A response body that fails JSON decoding is stored as text, with a
//     warning. Response bodies are capped at 8 MiB (larger is an error).
//   - Cache: only non-error results are stored; entries hold the response
//     after response.by_lua. On a hit response.by_lua is not run again. The
//     key is SHA-256 over route, plugin id, callout name, method, URL
//     without query, sorted query, sorted headers (User-Agent and trace
//     headers excluded) and body; a caching.cache_key set in request.by_lua
//     replaces it (used as given); one set in response.by_lua stores the
//     entry under that key as well. Concurrent misses for one key make one
//     call (singleflight, per plugin instance). A cache error is logged and counted
//     (sidecall_callout_cache_total{result="error"}) and the call goes
//     through. memory: bigcache per process, size_mb (default 64);
//     memory.dictionary_name is accepted and ignored. redis: standalone only
//     (sentinel, cluster and cloud_authentication are config errors); keys
//     are prefixed sidecall:callout:.
//   - The request body is asked from Envoy only when a callout forwards it,
//     upstream.body customises or drops it, or Lua/templates mention the
//     body PDK functions.
//   - upstream.headers.forward=false clears every non-pseudo header (Envoy
//     cannot remove :authority), after custom values are rendered.
//   - kong.response.set_header (and add/clear) in a by_lua applies to the
//     client's response; the plugin then asks Envoy for response headers.
//   - Beyond Kong (docs/resilience.md): request.circuit_breaker, one
//     breaker per target and settings shared through Resources (breaker.go);
//     request.hedge_after_ms (hedge.go); partial_header and
//     kong.ctx.shared.callouts_failed for callouts continued after a
//     failure (partial.go).
package callout
