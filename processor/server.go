package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/sidecall/sidecall/internal/tracing"
)

// Options configure a Server.
type Options struct {
	Holder         *Holder
	Log            *zap.Logger
	Metrics        *Metrics
	MaxRecvMsgSize int // default 8 MiB; also the largest reply sent
	// MaxBodySize caps the request and the response body buffered for the
	// plugins, each across all its chunks (default 8 MiB): over it a
	// request gets 413, a response 502.
	MaxBodySize int
	// EnvoyMessageTimeout is Envoy's ext_proc message_timeout (default
	// 200ms, Envoy's): before a phase whose pipeline budget
	// (flows.Pipeline.Budget) exceeds it, the processor sends
	// override_message_timeout.
	EnvoyMessageTimeout time.Duration
	// EnvoyMaxMessageTimeout is Envoy's max_message_timeout (default
	// 10s), the cap of every override: Envoy ignores a larger one.
	EnvoyMaxMessageTimeout time.Duration
	// TracerProvider, when set, traces every stream (a server span, child
	// of the request's traceparent) and the plugins under it; nil (or a
	// no-op provider) leaves tracing off at no cost.
	TracerProvider trace.TracerProvider
}

// Defaults of Options.EnvoyMessageTimeout and EnvoyMaxMessageTimeout, and
// the margin an override adds to the budget.
const (
	DefaultEnvoyMessageTimeout    = 200 * time.Millisecond
	DefaultEnvoyMaxMessageTimeout = 10 * time.Second
	OverrideMargin                = 500 * time.Millisecond
)

// Server is the ext_proc gRPC service.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	holder   *Holder
	log      *zap.Logger
	metrics  *Metrics
	maxRecv  int
	maxBody  int
	msgTO    time.Duration // Envoy's message_timeout
	maxMsgTO time.Duration // Envoy's max_message_timeout
	health   *health.Server
	tracer   trace.Tracer // nil: tracing off
	wg       sync.WaitGroup
}

// New returns a Server. It serves the Holder's current snapshot.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.MaxRecvMsgSize <= 0 {
		o.MaxRecvMsgSize = 8 << 20
	}
	if o.MaxBodySize <= 0 {
		o.MaxBodySize = 8 << 20
	}
	if o.Holder == nil {
		o.Holder = &Holder{}
	}
	if o.EnvoyMessageTimeout <= 0 {
		o.EnvoyMessageTimeout = DefaultEnvoyMessageTimeout
	}
	if o.EnvoyMaxMessageTimeout <= 0 {
		o.EnvoyMaxMessageTimeout = DefaultEnvoyMaxMessageTimeout
	}
	s := &Server{holder: o.Holder, log: o.Log, metrics: o.Metrics, maxRecv: o.MaxRecvMsgSize, maxBody: o.MaxBodySize,
		msgTO: o.EnvoyMessageTimeout, maxMsgTO: o.EnvoyMaxMessageTimeout, health: health.NewServer()}
	if _, off := o.TracerProvider.(noop.TracerProvider); o.TracerProvider != nil && !off {
		s.tracer = o.TracerProvider.Tracer(tracing.ScopeName)
	}
	return s
}

// GRPCServer returns a grpc.Server with the ext_proc and health services.
// Keepalive enforcement is relaxed so Envoy's HTTP/2 pings (as often as
// every few seconds) never draw a GOAWAY too_many_pings.
func (s *Server) GRPCServer(extra ...grpc.ServerOption) *grpc.Server {
	opts := append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.maxRecv),
		grpc.MaxSendMsgSize(s.maxRecv),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}, extra...)
	g := grpc.NewServer(opts...)
	extprocv3.RegisterExternalProcessorServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return g
}

// SetServing flips the gRPC health status (NOT_SERVING while draining).
func (s *Server) SetServing(ok bool) {
	st := healthpb.HealthCheckResponse_SERVING
	if !ok {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, st)
}

// Wait blocks until every open stream has finished or ctx ends.
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Listen opens a TCP address or unix:///path.sock.
func Listen(addr string) (net.Listener, error) {
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(p) // a stale socket from a previous run
		}
		return net.Listen("unix", p)
	}
	return net.Listen("tcp", addr)
}

// Process handles one ext_proc stream (one HTTP request).
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	s.wg.Add(1)
	defer s.wg.Done()
	h := s.holder.acquire()
	if h == nil {
		return status.Error(codes.Unavailable, "no config loaded")
	}
	defer h.release()
	s.metrics.active.Inc()
	defer s.metrics.active.Dec()
	start := time.Now()
	st := newStream(s, h.snap, stream.Context())
	st.out = stream // for override_message_timeout, sent ahead of a reply
	defer func() { tracing.Observe(st.ctx, s.metrics.streamDur, time.Since(start).Seconds()) }()
	if s.tracer != nil {
		defer st.endSpan()
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || peerGone(err, stream.Context()) {
				return nil
			}
			s.metrics.streamErrors.WithLabelValues("recv").Inc()
			return err
		}
		resp, err := st.handle(req)
		if err != nil {
			s.metrics.streamErrors.WithLabelValues("protocol").Inc()
			s.log.Warn("ending stream on protocol fault", zap.Error(err), zap.String("request_id", st.id()))
			return err
		}
		if err := stream.Send(resp); err != nil {
			if status.Code(err) == codes.Canceled || stream.Context().Err() != nil {
				return nil
			}
			s.metrics.streamErrors.WithLabelValues("send").Inc()
			return err
		}
		if st.finished() {
			return nil
		}
	}
}

// peerGone tells whether a Recv error means Envoy reset or dropped the
// stream. grpc-go also ends the stream's context when it rejects a message
// itself (over MaxRecvMsgSize, undecodable): those are recv errors.
func peerGone(err error, ctx context.Context) bool {
	switch status.Code(err) {
	case codes.Canceled:
		return true
	case codes.ResourceExhausted, codes.Internal:
		return false
	}
	return ctx.Err() != nil
}

func protocolFault(format string, args ...any) error {
	return status.Error(codes.FailedPrecondition, fmt.Sprintf(format, args...))
}
