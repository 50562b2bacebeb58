package envoy

import (
	"sync"
	"sync/atomic"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
)

// Stats mirrors Envoy's http.<prefix>.ext_proc.* counters.
type Stats struct {
	StreamsStarted                 atomic.Int64
	StreamMsgsSent                 atomic.Int64
	StreamMsgsReceived             atomic.Int64
	SpuriousMsgsReceived           atomic.Int64
	StreamsClosed                  atomic.Int64
	StreamsFailed                  atomic.Int64
	FailureModeAllowed             atomic.Int64
	MessageTimeouts                atomic.Int64
	RejectedHeaderMutations        atomic.Int64
	OverrideMessageTimeoutReceived atomic.Int64
	OverrideMessageTimeoutIgnored  atomic.Int64
	ClearRouteCacheIgnored         atomic.Int64
	ClearRouteCacheDisabled        atomic.Int64
	ImmediateResponsesSent         atomic.Int64
	ServerHalfClosed               atomic.Int64
	// RouteCacheCleared counts honoured clear_route_cache (Route re-run);
	// Envoy has no counter for it.
	RouteCacheCleared atomic.Int64
}

// Snapshot returns the counters under Envoy's stat names.
func (s *Stats) Snapshot() map[string]int64 {
	return map[string]int64{
		"streams_started":                   s.StreamsStarted.Load(),
		"stream_msgs_sent":                  s.StreamMsgsSent.Load(),
		"stream_msgs_received":              s.StreamMsgsReceived.Load(),
		"spurious_msgs_received":            s.SpuriousMsgsReceived.Load(),
		"streams_closed":                    s.StreamsClosed.Load(),
		"streams_failed":                    s.StreamsFailed.Load(),
		"failure_mode_allowed":              s.FailureModeAllowed.Load(),
		"message_timeouts":                  s.MessageTimeouts.Load(),
		"rejected_header_mutations":         s.RejectedHeaderMutations.Load(),
		"override_message_timeout_received": s.OverrideMessageTimeoutReceived.Load(),
		"override_message_timeout_ignored":  s.OverrideMessageTimeoutIgnored.Load(),
		"clear_route_cache_ignored":         s.ClearRouteCacheIgnored.Load(),
		"clear_route_cache_disabled":        s.ClearRouteCacheDisabled.Load(),
		"immediate_responses_sent":          s.ImmediateResponsesSent.Load(),
		"server_half_closed":                s.ServerHalfClosed.Load(),
	}
}

// TraceMessage is one message on the stream, in the order Envoy saw it.
type TraceMessage struct {
	Sent     *extprocv3.ProcessingRequest  // set for a message Envoy sent
	Received *extprocv3.ProcessingResponse // set for a message Envoy received
}

// StreamTrace records one HTTP request's ext_proc stream.
type StreamTrace struct {
	Method, Path string
	Route        string
	Opened       bool           // a stream was opened
	Messages     []TraceMessage // sent and received, in order
	// EndCode is the gRPC status the stream ended with as seen by Envoy:
	// OK for a server close or Canceled when Envoy reset it after its close.
	EndCode codes.Code
	// Failure is empty, or what ended processing early: "timeout",
	// "grpc_error", "spurious", "mutation", "immediate_response",
	// "closed_by_server", "idle_timeout" (the HCM stream_idle_timeout),
	// "downstream_reset" (the client went away while Envoy waited).
	Failure    string
	FailedOpen bool
	// Status is the HTTP status sent to the client, Details Envoy's
	// response code details (e.g. ext_proc_error_per-message_timeout_exceeded).
	Status  int
	Details string
	// ClosedEarly is true when Envoy closed the stream before the HTTP
	// request ended because nothing more needed processing.
	ClosedEarly bool
	// DynamicMetadata is what the processor wrote into the receiving
	// namespaces (nil when nothing was written).
	DynamicMetadata map[string]*structpb.Struct
}

// SentKinds names the oneof of each sent message, in order
// ("request_headers", "response_body", ...).
func (t *StreamTrace) SentKinds() []string {
	var out []string
	for _, m := range t.Messages {
		if m.Sent != nil {
			out = append(out, requestKind(m.Sent))
		}
	}
	return out
}

// SentCount is the number of messages Envoy sent on the stream.
func (t *StreamTrace) SentCount() int { return len(t.SentKinds()) }

// ReceivedCount is the number of messages Envoy received.
func (t *StreamTrace) ReceivedCount() int {
	n := 0
	for _, m := range t.Messages {
		if m.Received != nil {
			n++
		}
	}
	return n
}

// SentMessages returns the sent messages in order.
func (t *StreamTrace) SentMessages() []*extprocv3.ProcessingRequest {
	var out []*extprocv3.ProcessingRequest
	for _, m := range t.Messages {
		if m.Sent != nil {
			out = append(out, m.Sent)
		}
	}
	return out
}

func requestKind(r *extprocv3.ProcessingRequest) string {
	switch r.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingRequest_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingRequest_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return "response_trailers"
	}
	return "none"
}

type traceRing struct {
	mu   sync.Mutex
	keep int
	list []*StreamTrace
}

func (r *traceRing) add(t *StreamTrace) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, t)
	if len(r.list) > r.keep {
		r.list = append(r.list[:0:0], r.list[len(r.list)-r.keep:]...)
	}
}

// Traces returns the most recent request traces, oldest first.
func (p *Proxy) Traces() []*StreamTrace {
	p.traces.mu.Lock()
	defer p.traces.mu.Unlock()
	return append([]*StreamTrace(nil), p.traces.list...)
}

// LastTrace returns the most recent request trace, or nil.
func (p *Proxy) LastTrace() *StreamTrace {
	p.traces.mu.Lock()
	defer p.traces.mu.Unlock()
	if len(p.traces.list) == 0 {
		return nil
	}
	return p.traces.list[len(p.traces.list)-1]
}
