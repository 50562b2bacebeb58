// Package processor is sidecall's Envoy ext_proc gRPC server: one goroutine
// per stream, the request and response phase state machines, route
// selection, mode_override, Exchange ⇄ protobuf, and error rendering.
//
// Choices where Kong/Envoy are silent:
//   - A route name from xds.route_name, x-sidecall-route or metadata that
//     names no sidecall route falls through to the next way of selecting one
//     (Envoy route names often differ from Kong route names).
//   - The request-headers reply always carries mode_override: it asks for a
//     BUFFERED request body only when a plugin needs it (and the request has
//     one), and for response headers/body only when a plugin works there.
//   - When nothing more is needed the server ends the stream with OK right
//     after its reply: Envoy then passes the rest through.
//   - Faults that end a stream with a gRPC error: a message with no request
//     set, a second headers message for the same direction, a request-path
//     message after the request path ended. Bad client requests never do.
//   - Body chunks Envoy sends without being asked (a STREAMED filter config
//     without allow_mode_override) are answered unchanged, in order.
//   - A plugin answer (Respond or an error) still runs header_filter and
//     body_filter plugins on the local reply, as Kong does, before the
//     ImmediateResponse is sent: Envoy never sends it back to us.
//   - A method change uses CONTINUE_AND_REPLACE (Envoy's default mutation
//     rules drop :method otherwise); :authority/host changes are dropped by
//     Envoy's default rules and so are not sent.
//   - A body the plugins need is buffered up to Options.MaxBodySize across
//     all its chunks; the chunk that passes it is not kept, and the stream
//     is answered 413 (request) or 502 (response) through the response
//     plugins.
//   - A reply over the gRPC send limit (a huge local reply or mutation) is
//     replaced by a plain 500 JSON error that skips the response plugins,
//     so it surely fits: grpc-go would otherwise end the stream.
//   - A stream whose first message is not the request headers (Envoy set to
//     skip them) cannot run the access phase: with access plugins in the
//     pipeline it is answered 500; without, it goes on as usual.
//   - With Options.TracerProvider set, each stream is a server span, child
//     of the request's traceparent; the request Envoy sends upstream gets
//     the span's traceparent (a plugin's own wins), and a sampled stream
//     asks for the response headers so its span ends with the status.
package processor
