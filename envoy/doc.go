// Package envoy is an Envoy-faithful ext_proc client: a stand-in for Envoy's
// HTTP connection manager with one envoy.filters.http.ext_proc filter and a
// router, used by tests, benchmarks and `sidecall try`. Behaviour follows
// Envoy 1.37–1.39's ext_proc filter.
//
// Use:
//
//	p, err := envoy.New(envoy.Config{Upstream: "http://127.0.0.1:8080", Target: "127.0.0.1:9000",
//		ProcessingMode: &envoy.ProcessingMode{RequestHeaderMode: SEND, ResponseHeaderMode: SKIP},
//		AllowModeOverride: true})
//	http.ListenAndServe(addr, p)   // or p.Do(req) in tests
//	p.LastTrace().SentCount()      // messages Envoy sent on the last request's stream
//
// What it does like Envoy: one lazily opened stream per request (none when
// every phase is skipped or the route disables the filter);
// protocol_config on the first message only, metadata_context on every
// message, attributes on the first message of each direction; two
// direction state machines, each with its own message_timeout timer (504,
// or pass-through with failure_mode_allow), override_message_timeout;
// server OK close = pass-through; gRPC errors = status_on_error; spurious
// replies fail closed; invalid mutations are 500 whatever fail-open says;
// raw_value only, the deprecated append only, default mutation rules
// (plus allow_all_routing, allow_envoy, disallow_system, disallow_all,
// expressions, disallow_is_error); body modes NONE, BUFFERED (413 / 500
// over BufferLimit), STREAMED (pipelined, first chunk coalesced), and
// BUFFERED_PARTIAL; content-length stripping and the mutated-body check;
// CONTINUE_AND_REPLACE; clear_route_cache gated on a header mutation;
// mode_override; ImmediateResponse on either path; early close
// once nothing is left to process; half-close then reset, or graceful.
//
// Choices where Envoy is silent or cannot be copied:
//   - FULL_DUPLEX_STREAMED and observability_mode are not implemented: New
//     rejects a filter-level FULL_DUPLEX_STREAMED, and a route or
//     mode_override asking for it (or GRPC) behaves as NONE.
//     StreamedImmediateResponse is treated as spurious.
//   - MessageTimeout 0 means the 200ms default (Envoy's 0 fires at once).
//   - Routing is the Route hook: it runs in decodeHeaders and again after an
//     honoured clear_route_cache (counted in Stats.RouteCacheCleared, which
//     Envoy does not have); RouteSettings.Upstream can change the upstream.
//     Per-route ext_proc settings are not re-merged after the re-route, as
//     in Envoy.
//   - Attributes understand attribute names and request/response header
//     lookups, not general CEL; anything else is left out as "missing".
//   - Header order in messages: pseudo headers, then the client's headers
//     sorted by name (Go does not keep wire order), then x-forwarded-proto
//     and a generated x-request-id if absent. Hop-by-hop headers are
//     dropped. The router adds x-envoy-expected-rq-timeout-ms upstream and
//     x-envoy-upstream-service-time to the response.
//   - The 413/500 buffer-limit replies are treated as ext_proc's own local
//     replies and not sent to the processor; the router's 503 for an
//     unreachable upstream is sent as response_headers (Envoy 1.37+).
//   - An ImmediateResponse that arrives while the upstream is being called
//     cancels the upstream request and replaces the response; one that
//     arrives after the response started resets the downstream stream
//     (ServeHTTP panics with http.ErrAbortHandler; Do returns an error).
//   - A local reply with a body and no content-type gets text/plain.
//   - Received override_message_timeout messages count as
//     stream_msgs_received; spurious ones do not.
//   - The gRPC stream carries no deadline, like Envoy's envoy_grpc client.
package envoy
