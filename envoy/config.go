package envoy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// ProcessingMode is Envoy's ext_proc ProcessingMode.
type ProcessingMode = extprocfilterv3.ProcessingMode

// Config mirrors the ExternalProcessor filter fields (Envoy names and
// defaults) plus the few HCM/listener settings the filter depends on.
type Config struct {
	// Upstream is the base URL requests are forwarded to (scheme://host[:port]).
	Upstream string
	// Transport carries upstream requests; nil means a private transport
	// without transparent gzip, like Envoy's router.
	Transport http.RoundTripper

	// Conn is the gRPC connection to the processor; or Target is dialled
	// with insecure credentials (and closed by Close).
	Conn   *grpc.ClientConn
	Target string
	// Authority is the gRPC :authority (Envoy sends the cluster name); empty
	// keeps grpc-go's default.
	Authority string

	// ProcessingMode nil means Envoy's default: request and response headers
	// SEND, bodies NONE, trailers SKIP.
	ProcessingMode       *ProcessingMode
	MessageTimeout       time.Duration // 0 means Envoy's default 200ms
	MaxMessageTimeout    time.Duration // 0 disables override_message_timeout
	FailureModeAllow     bool
	AllowModeOverride    bool
	AllowedOverrideModes []*ProcessingMode
	RequestAttributes    []string
	ResponseAttributes   []string
	// InitialMetadata is grpc_service.initial_metadata: gRPC headers on the stream.
	InitialMetadata map[string]string
	// MetadataContext is the stream's dynamic metadata as earlier filters
	// left it. Without ForwardingNamespaces it is sent as metadata_context
	// on every message as is (empty when nil).
	MetadataContext *corev3.Metadata
	// ForwardingNamespaces is metadata_options.forwarding_namespaces.untyped:
	// when set, metadata_context carries only these namespaces, from
	// MetadataContext merged with what the processor wrote.
	ForwardingNamespaces []string
	// ReceivingNamespaces is metadata_options.receiving_namespaces.untyped:
	// the namespaces of ProcessingResponse.dynamic_metadata that are written
	// (merged); StreamTrace.DynamicMetadata shows the result.
	ReceivingNamespaces []string
	// RouteCacheAction is route_cache_action; DisableClearRouteCache the
	// legacy disable_clear_route_cache (RETAIN). Envoy rejects both set.
	RouteCacheAction       extprocfilterv3.ExternalProcessor_RouteCacheAction
	DisableClearRouteCache bool
	// StreamIdleTimeout is the HCM stream_idle_timeout, which alone bounds a
	// FULL_DUPLEX_STREAMED exchange (504); 0 means Envoy's 5 minutes.
	StreamIdleTimeout time.Duration

	BufferLimit              int // per_connection_buffer_limit_bytes; 0 means 1 MiB
	StatusOnError            int // 0 means 500; outside 400-599 means 500
	DisableImmediateResponse bool
	// GracefulClose: half-close and wait (up to GracefulCloseTimeout, default
	// 1s) for the server to end the RPC, instead of half-close then reset.
	GracefulClose        bool
	GracefulCloseTimeout time.Duration
	// SendBodyWithoutWaiting is send_body_without_waiting_for_header_response.
	SendBodyWithoutWaiting bool
	MutationRules          *mutationrulesv3.HeaderMutationRules
	MaxHeaderCount         int // HCM max_headers_count; 0 means 100
	MaxHeadersKB           int // HCM max_request_headers_kb; 0 means 60

	// Route plays Envoy's router and ExtProcPerRoute: called in decodeHeaders
	// and again after an honoured clear_route_cache.
	Route func(*http.Request) RouteSettings

	// Trace, if set, receives each request's stream trace when the request ends.
	Trace func(*StreamTrace)
	// KeepTraces is how many recent traces Traces returns; 0 means 64.
	KeepTraces int
}

// RouteSettings is what a route contributes: its name (xds.route_name), an
// upstream override, and its ExtProcPerRoute.
type RouteSettings struct {
	Name string
	// Upstream overrides Config.Upstream for this route.
	Upstream string
	// GRPCInitialMetadata is merged by key into InitialMetadata.
	GRPCInitialMetadata map[string]string
	// Disabled is ExtProcPerRoute{disabled: true}: no stream at all.
	Disabled bool
	// ProcessingMode replaces the whole filter-level mode (no field merge).
	ProcessingMode   *ProcessingMode
	FailureModeAllow *bool
}

// Proxy is an Envoy HCM with one ext_proc filter and a router in front of
// an upstream HTTP server.
type Proxy struct {
	cfg       Config
	upstream  *url.URL
	conn      *grpc.ClientConn
	ownConn   bool
	transport http.RoundTripper
	ownTrans  *http.Transport
	rules     *rules
	stats     Stats
	traces    traceRing
}

// New checks cfg like Envoy's config loader and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	u, err := url.Parse(cfg.Upstream)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("upstream %q: must be an absolute URL", cfg.Upstream)
	}
	if cfg.MessageTimeout == 0 {
		cfg.MessageTimeout = 200 * time.Millisecond
	}
	if cfg.MessageTimeout < 0 || cfg.MessageTimeout > time.Hour {
		return nil, fmt.Errorf("message_timeout %v: must be within [0, 3600s]", cfg.MessageTimeout)
	}
	if cfg.MaxMessageTimeout < 0 || cfg.MaxMessageTimeout > time.Hour {
		return nil, fmt.Errorf("max_message_timeout %v: must be within [0, 3600s]", cfg.MaxMessageTimeout)
	}
	if cfg.BufferLimit <= 0 {
		cfg.BufferLimit = 1 << 20
	}
	if cfg.StatusOnError < 400 || cfg.StatusOnError > 599 {
		cfg.StatusOnError = 500
	}
	if cfg.MaxHeaderCount <= 0 {
		cfg.MaxHeaderCount = 100
	}
	if cfg.MaxHeadersKB <= 0 {
		cfg.MaxHeadersKB = 60
	}
	if cfg.GracefulCloseTimeout <= 0 {
		cfg.GracefulCloseTimeout = time.Second
	}
	if cfg.KeepTraces <= 0 {
		cfg.KeepTraces = 64
	}
	if cfg.StreamIdleTimeout <= 0 {
		cfg.StreamIdleTimeout = 5 * time.Minute
	}
	if cfg.DisableClearRouteCache {
		if cfg.RouteCacheAction != extprocfilterv3.ExternalProcessor_DEFAULT {
			return nil, errors.New("disable_clear_route_cache and route_cache_action can not be set to none-default at the same time")
		}
		cfg.RouteCacheAction = extprocfilterv3.ExternalProcessor_RETAIN
	}
	if cfg.ProcessingMode == nil {
		cfg.ProcessingMode = &ProcessingMode{
			RequestHeaderMode:  extprocfilterv3.ProcessingMode_SEND,
			ResponseHeaderMode: extprocfilterv3.ProcessingMode_SEND,
		}
	}
	if err := checkMode(cfg.ProcessingMode); err != nil {
		return nil, err
	}
	r, err := compileRules(cfg.MutationRules)
	if err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, upstream: u, rules: r, transport: cfg.Transport}
	p.traces.keep = cfg.KeepTraces
	if p.transport == nil {
		p.ownTrans = &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: false}
		p.transport = p.ownTrans
	}
	switch {
	case cfg.Conn != nil:
		p.conn = cfg.Conn
	case cfg.Target != "":
		c, err := grpc.NewClient(cfg.Target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("dialling ext_proc %q: %w", cfg.Target, err)
		}
		p.conn, p.ownConn = c, true
	default:
		return nil, errors.New("one of Conn or Target is required")
	}
	return p, nil
}

// checkMode applies Envoy's load-time mode check: FULL_DUPLEX_STREAMED
// needs the matching trailer mode SEND.
func checkMode(m *ProcessingMode) error {
	if m.GetRequestBodyMode() == modeDuplex && m.GetRequestTrailerMode() != extprocfilterv3.ProcessingMode_SEND ||
		m.GetResponseBodyMode() == modeDuplex && m.GetResponseTrailerMode() != extprocfilterv3.ProcessingMode_SEND {
		return errors.New("processing_mode: FULL_DUPLEX_STREAMED needs the matching trailer mode SEND")
	}
	return nil
}

// Close releases the gRPC connection it dialled and idle upstream connections.
func (p *Proxy) Close() error {
	if p.ownTrans != nil {
		p.ownTrans.CloseIdleConnections()
	}
	if p.ownConn {
		return p.conn.Close()
	}
	return nil
}

// Stats returns the filter's counters.
func (p *Proxy) Stats() *Stats { return &p.stats }
