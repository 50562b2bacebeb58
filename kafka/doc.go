// Package kafka implements the kafka-request-reply and kafka-upstream
// plugins, the Kafka envelope codec, and Responder, the service side used
// by examples/kafka-responder and `sidecall demo`. Register adds both
// plugins to a flows.Registry with their own Prometheus collectors and
// returns a *Plugins whose Ready reports the readiness of the Kafka clients
// held in a flows.Resources that gate it.
//
// # Request-reply
//
// Access registers a ReplyWaiter for the correlation ID before producing,
// produces the request (waiting for the broker's ack per
// producer_request_acks), then waits for the waiter, the request context or
// a timer of reply_timeout started before the produce. The reply's status,
// headers and body answer the client through Exchange.Respond.
//
// Errors are flows.HTTPError whose message ends with "(correlation id ID)"
// and which carry the correlation header (correlation_header, lower-cased)
// in Headers: 504 no reply in time (and a produce that outlives the
// timeout), 503 brokers unreachable or reply consumer not yet positioned,
// 503 pending map full, 502 produce refused by the broker, 502 a matched
// reply that cannot be decoded, 409 a client-given correlation ID already
// waiting, 499 the client went away.
//
// # Behaviour details
//
//   - Clients: one sarama async producer per (brokers, auth, TLS,
//     producer settings) and one reply consumer per (brokers, auth, TLS,
//     reply topic, reply_partition, correlation header name). The plugin
//     factories only decode, validate and compile; the clients are taken in
//     Provision with flows.Builder.Acquire, which the loader calls only once
//     the whole file is valid (never for `sidecall validate`), so routes and
//     reloads with the same settings share them and a client whose settings
//     went away is closed when the last snapshot holding it is released.
//     Both connect in the background (a config load never waits on the
//     network) and retry with backoff up to 2 s.
//   - Readiness: a producer is ready once it has fetched metadata, a reply
//     consumer once it has resolved the newest offset of each of its
//     partitions, and both only while a broker answered a metadata request
//     for their topic within the last 6 s (asked every 2 s on the client's
//     own connection; partitions without a leader still count as an
//     answer): a lost broker makes them unready within about 8 s, a broker
//     back makes them ready at the next check. Each reports itself through
//     Health (kind, name, gates, ready, since) for /readyz and
//     sidecall_dependency_up. The producers and reply consumers of
//     kafka-request-reply gate readiness (Plugins.Ready); a producer held
//     only by kafka-upstream does not. A producer counts the
//     kafka-request-reply snapshots holding it (Builder.OnClose), so a
//     reload that drops the last request-reply route stops its gating.
//   - The reply consumer reads without a consumer group from the newest
//     offset. If a partition consumer stops (for example the broker lost its
//     log and the offset is out of range) the whole session restarts at the
//     newest offsets; readiness is false meanwhile. Partitions added to the
//     reply topic later are picked up only on such a restart.
//   - Correlation: the ID comes from correlation_id_header when set and
//     present, else a random UUID (text). Replies are matched by the
//     correlation record header, else the envelope's correlation_id. A
//     16-byte non-text header (Spring's binaryCorrelation) is read as a UUID.
//     Timed-out IDs are remembered for 5 minutes (at most 100000) to count
//     a later reply as late rather than unknown.
//   - max_pending is checked against the shared reply consumer's map, so
//     it bounds every route using that consumer.
//   - Producer retries default to 3 for kafka-request-reply (Kong's 10 for
//     kafka-upstream) so an outage is a quick 503, not a timeout; metadata
//     retries are 1 with 100 ms backoff. sarama batches only what queues
//     while a request is in flight (no linger): the Kong fields
//     producer_request_limits_bytes_per_request, producer_async_flush_timeout
//     and producer_async_buffering_limits_messages_in_memory are accepted but
//     unused; producer_request_limits_messages_per_request caps a batch.
//   - compression (none, gzip, snappy, lz4, zstd) and max_message_bytes are
//     ours; timeout (ms, default 10000) is Kong's socket timeout.
//   - Security: ssl enables TLS; ssl_verify defaults to true (Kong's
//     default since 3.14) and verifies against the system roots;
//     ssl_verify: false skips it.
//     certificate_id (mTLS) is ignored with a warning;
//     authentication.tokenauth is rejected. SCRAM is implemented here
//     (RFC 5802, no channel binding) so no SCRAM module is needed.
//   - Record key: the correlation ID, or the value of the request header
//     named by key (no key when the header is absent).
//
// # At scale (scale.go, idempotency.go, async.go, gather.go)
//
// idempotency replays the stored answer for a key seen within ttl (or
// waits for it while pending) instead of producing; the same key with
// another method, path, query or body is 422. async answers 202 with a
// Location under result_path and stores the reply for GETs there. gather
// answers with up to N replies for one correlation ID within window_ms,
// as JSON or through by_lua (kong.ctx.shared.kafka_replies).
// Stores: one in-process map per flows.Resources (memory), or Redis shared
// by replicas (waiters poll). See docs/kafka-at-scale.md.
//
// # Envelope (proto/sidecall/kafka/v1/envelope.proto)
//
// json: protojson with snake_case names, except body (Kong
// kafka-upstream's convention): a body that is valid UTF-8 is written as
// the text itself in body, any other body as base64 in body with
// "body_base64": true; an empty body is left out. Readers take body as
// text unless body_base64 is true (a non-string body is taken as its JSON
// text), still accept body_text from older writers, and accept headers as
// protojson's [{"name","value"}] list or as an object of name to a string
// or list of strings. protobuf: binary, always the raw bytes in body. The
// deadline is an RFC 3339 timestamp in JSON. Request record headers always carry the correlation
// ID, the reply topic and, when pinned, the reply partition as a 4-byte
// big-endian int (Spring); readers also accept a decimal string.
//
// raw: the record value is the body. Request metadata goes in record
// headers sidecall_method, sidecall_path, sidecall_query, sidecall_deadline
// (unix ms) plus each HTTP header under its own lower-case name. A raw
// reply's status is the sidecall_status header (default 200); every other
// record header becomes a response header except the correlation and reply
// headers and names starting with kafka_, sidecall_ or __.
//
// A reply status must be 100-599 (0 means 200); header fields that are not
// valid HTTP are dropped.
//
// # kafka-upstream
//
// Kong's envelope from its handler: method, headers (lower-case, arrays for
// repeats), uri (path with query), uri_args, body, body_args (parsed JSON,
// form or multipart fields) and body_base64 when the content type is
// neither parsed nor one of Kong's raw types (compared as the whole header
// value, as Kong does). A JSON body that does not parse is sent without
// body_args. producer_async true answers after the record is enqueued,
// false after the ack. Errors answer Kong's 502
// {"message":"Bad Gateway","error":"could not send message to topic"}
// (the Kafka error text with error_handling.return_error_message).
// topics_query_arg, allowed_topics and key_query_arg are supported;
// message_by_lua_functions, headers and schema_registry are config errors
// ("not supported yet"); keepalive and cluster_name are accepted and unused
// (producers are shared by settings).
//
// # Metrics
//
// Each Register call registers its own sidecall_kafka_produced_total{topic,result},
// sidecall_kafka_replies_total{reply_topic,result=matched|late|unknown|malformed},
// sidecall_kafka_requests_total{route,topic,outcome}, sidecall_kafka_pending{reply_topic}
// and sidecall_kafka_reply_latency_seconds{reply_topic} with the
// prometheus.Registerer it is given; the plugins, producers and reply
// consumers it builds count into those. The Responder counts nothing.
package kafka
