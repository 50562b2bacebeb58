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
// What it does like Envoy (conformance_test.go holds one case per
// behaviour, each naming the Envoy test that shows it): one lazily opened
// stream per request (none when every phase is skipped or the route
// disables the filter); protocol_config on the first message only,
// metadata_context on every message (ForwardingNamespaces), attributes on
// the first message of each direction; two direction state machines, each
// with its own message_timeout timer, started on every send and stopped on
// every handled reply (504, or pass-through with failure_mode_allow);
// override_message_timeout (only with max_message_timeout, within [1ms,
// max], once per message, counted received only when accepted); server OK
// close = pass-through; gRPC errors = status_on_error; spurious replies
// fail closed (details "spurious_message", "unhandled_message"...);
// invalid mutations are status_on_error whatever fail-open says; raw_value
// only, the deprecated append only, default mutation rules (plus
// allow_all_routing, allow_envoy, disallow_system, disallow_all,
// expressions, disallow_is_error); body modes NONE, BUFFERED (413 / 500
// over BufferLimit), STREAMED (pipelined, first chunk coalesced),
// BUFFERED_PARTIAL and FULL_DUPLEX_STREAMED (no message timer, M:N
// streamed_response replies, no fail-open once the body streams, the HCM
// stream_idle_timeout as the only bound); content-length stripping and the
// mutated-body check; CONTINUE_AND_REPLACE; clear_route_cache gated on a
// header mutation, route_cache_action and disable_clear_route_cache;
// mode_override (headers replies only, allowed_override_modes);
// ImmediateResponse on either path, with grpc_status for gRPC clients;
// dynamic_metadata into receiving namespaces (StreamTrace.DynamicMetadata);
// early close once nothing is left to process; half-close then reset, or
// graceful; a downstream that goes away closes the stream.
//
// Choices where Envoy is silent or cannot be copied:
//   - observability_mode and StreamedImmediateResponse are not modelled; a
//     StreamedImmediateResponse is answered as an unhandled reply (500).
//   - MessageTimeout 0 means the 200ms default (Envoy's explicit 0 fires at
//     once): Go's zero value cannot tell unset from zero.
//   - Routing is the Route hook: it runs in decodeHeaders and again after an
//     honoured clear_route_cache (counted in Stats.RouteCacheCleared, which
//     Envoy does not have); RouteSettings.Upstream can change the upstream.
//     Per-route ext_proc settings are not re-merged after the re-route, as
//     in Envoy. forward_rules, typed metadata namespaces and per-route
//     metadata_options are not modelled.
//   - Attributes understand attribute names and request/response header
//     lookups, not general CEL; anything else is left out as "missing".
//   - Header order in messages: pseudo headers, then the client's headers
//     sorted by name (Go does not keep wire order), then x-forwarded-proto
//     and a generated x-request-id if absent. Hop-by-hop headers are
//     dropped. The router adds x-envoy-expected-rq-timeout-ms upstream and
//     x-envoy-upstream-service-time to the response.
//   - Chunk boundaries are Go's reads (up to 32 KiB), and a
//     BUFFERED_PARTIAL message is exactly BufferLimit bytes; processors
//     must not depend on either, in Envoy neither.
//   - The 413/500 buffer-limit replies are treated as ext_proc's own local
//     replies and not sent to the processor; the router's 503 for an
//     unreachable upstream is sent as response_headers (Envoy 1.37+).
//   - An ImmediateResponse that arrives while the upstream is being called
//     cancels the upstream request and replaces the response; one that
//     arrives after the response started resets the downstream stream
//     (ServeHTTP panics with http.ErrAbortHandler; Do returns an error).
//   - A local reply with a body and no content-type gets text/plain.
//   - The gRPC stream carries no deadline, like Envoy's envoy_grpc client.
//
// SidecarBootstrap turns envoy/sidecar.yaml into a real Envoy's bootstrap
// for the same settings, so the end-to-end suites can also run against a
// real Envoy (envoy/run-against-envoy.sh, docs/envoy-stand-in.md).
package envoy
