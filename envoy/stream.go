package envoy

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

type kind int

const (
	kHeaders kind = iota
	kBody
	kTrailers
)

const (
	modeNone     = extprocfilterv3.ProcessingMode_NONE
	modeStreamed = extprocfilterv3.ProcessingMode_STREAMED
	modeBuffered = extprocfilterv3.ProcessingMode_BUFFERED
	modePartial  = extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL
	modeDuplex   = extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
)

// direction is one of the two processor states (decoding or encoding):
// its effective mode, the replies it waits for, and its message timer.
type direction struct {
	isReq       bool
	headerSend  bool
	bodyMode    extprocfilterv3.ProcessingMode_BodySendMode
	trailerSend bool

	outstanding  []kind // replies awaited, in order
	inbox        []*extprocv3.ProcessingResponse
	notify       chan struct{}
	timer        *time.Timer
	gen          uint64
	timerRunning bool
	overridden   bool // override_message_timeout used in this waiting state
	attrsSent    bool
	started      bool // a message of this direction was sent
	finished     bool // nothing more will be sent in this direction

	// FULL_DUPLEX_STREAMED: body chunks sent, trailers sent and answered,
	// and whether the processor ended the body (end_of_stream or trailers).
	duplexSent       int
	trailersSent     bool
	trailersAnswered bool
	duplexDone       bool
}

func newDirection(isReq bool, m *ProcessingMode) *direction {
	d := &direction{isReq: isReq, notify: make(chan struct{}, 1)}
	d.setMode(m)
	return d
}

func (d *direction) setMode(m *ProcessingMode) {
	if d.isReq {
		d.headerSend = m.GetRequestHeaderMode() != extprocfilterv3.ProcessingMode_SKIP
		d.bodyMode = effectiveBody(m.GetRequestBodyMode())
		d.trailerSend = m.GetRequestTrailerMode() == extprocfilterv3.ProcessingMode_SEND
	} else {
		d.headerSend = m.GetResponseHeaderMode() != extprocfilterv3.ProcessingMode_SKIP
		d.bodyMode = effectiveBody(m.GetResponseBodyMode())
		d.trailerSend = m.GetResponseTrailerMode() == extprocfilterv3.ProcessingMode_SEND
	}
}

// effectiveBody maps GRPC (not implemented by Envoy's HTTP filter) to NONE,
// as Envoy does.
func effectiveBody(m extprocfilterv3.ProcessingMode_BodySendMode) extprocfilterv3.ProcessingMode_BodySendMode {
	switch m {
	case modeStreamed, modeBuffered, modePartial, modeDuplex:
		return m
	}
	return modeNone
}

func (d *direction) nothingConfigured() bool {
	return !d.headerSend && d.bodyMode == modeNone && !d.trailerSend
}

// terminal is what ended processing early for this HTTP request.
type terminal struct {
	kind      string // see StreamTrace.Failure
	status    int    // local reply status when !cont
	details   string
	immediate *extprocv3.ImmediateResponse
	body      string // local reply body
	cont      bool   // continue unmodified (fail-open or server OK close)
}

func (t *terminal) Error() string { return "ext_proc " + t.kind + ": " + t.details }

// passThrough is returned once Envoy itself closed the stream early.
var passThrough = &terminal{kind: "closed", cont: true}

// filter is one ext_proc filter instance for one HTTP request.
type filter struct {
	p        *Proxy
	r        *http.Request
	route    RouteSettings
	mode     *ProcessingMode // after the per-route override
	failOpen bool
	req      *direction
	resp     *direction

	mu          sync.Mutex
	opened      bool
	closed      bool
	closedEarly bool
	term        *terminal
	termCh      chan struct{}
	sentAny     bool
	trace       *StreamTrace
	dynMeta     map[string]*structpb.Struct // dynamic metadata the processor wrote
	idle        *time.Timer                 // HCM stream_idle_timeout, FULL_DUPLEX_STREAMED only
	cancel      context.CancelFunc
	upCancel    context.CancelFunc
	recvDone    chan struct{}
	routeName   string
	upstreamURL string
	reqHdr      *headerMap
	respHdr     *headerMap

	sendMu sync.Mutex // serialises Send and CloseSend, keeps message order
	stream extprocv3.ExternalProcessor_ProcessClient

	done chan struct{} // closed when the HTTP request ends
	wg   sync.WaitGroup
}

func (p *Proxy) newFilter(r *http.Request) *filter {
	var rs RouteSettings
	if p.cfg.Route != nil {
		rs = p.cfg.Route(r)
	}
	mode := p.cfg.ProcessingMode
	if rs.ProcessingMode != nil {
		mode = rs.ProcessingMode
	}
	if rs.Disabled {
		mode = &ProcessingMode{
			RequestHeaderMode:  extprocfilterv3.ProcessingMode_SKIP,
			ResponseHeaderMode: extprocfilterv3.ProcessingMode_SKIP,
		}
	}
	failOpen := p.cfg.FailureModeAllow
	if rs.FailureModeAllow != nil {
		failOpen = *rs.FailureModeAllow
	}
	return &filter{
		p: p, r: r, route: rs, mode: mode, failOpen: failOpen,
		req: newDirection(true, mode), resp: newDirection(false, mode),
		termCh: make(chan struct{}), done: make(chan struct{}),
		trace:     &StreamTrace{Method: r.Method, Path: r.URL.RequestURI(), Route: rs.Name},
		routeName: rs.Name, upstreamURL: rs.Upstream,
	}
}

// modes reads a direction's current effective mode.
func (f *filter) modes(d *direction) (header bool, body extprocfilterv3.ProcessingMode_BodySendMode, trailer bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return d.headerSend, d.bodyMode, d.trailerSend
}

func (f *filter) active() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.term == nil && !f.closed
}

func (f *filter) terminal() *terminal {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.term
}

// send builds and sends one message of direction d that needs a reply. It
// reports false when the stream is no longer in use.
func (f *filter) send(d *direction, k kind, fill func(*extprocv3.ProcessingRequest)) bool {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	f.mu.Lock()
	if f.term != nil || f.closed {
		f.mu.Unlock()
		return false
	}
	msg := &extprocv3.ProcessingRequest{MetadataContext: f.metadataContextLocked()}
	fill(msg)
	if !f.sentAny {
		f.sentAny = true
		msg.ProtocolConfig = &extprocv3.ProtocolConfiguration{
			RequestBodyMode:                         f.mode.GetRequestBodyMode(),
			ResponseBodyMode:                        f.mode.GetResponseBodyMode(),
			SendBodyWithoutWaitingForHeaderResponse: f.p.cfg.SendBodyWithoutWaiting,
		}
	}
	if !d.attrsSent {
		d.attrsSent = true
		exprs := f.p.cfg.ResponseAttributes
		if d.isReq {
			exprs = f.p.cfg.RequestAttributes
		}
		if s := f.evalAttributes(exprs); s != nil {
			msg.Attributes = map[string]*structpb.Struct{"envoy.filters.http.ext_proc": s}
		}
	}
	duplex := d.bodyMode == modeDuplex
	switch {
	case k == kHeaders || !duplex:
		d.outstanding = append(d.outstanding, k)
	case k == kBody:
		d.duplexSent++
	}
	if k == kTrailers {
		d.trailersSent = true
	}
	d.started = true
	d.overridden = false
	if !duplex {
		f.arm(d, f.p.cfg.MessageTimeout)
	}
	// No message timer in FULL_DUPLEX_STREAMED: only the HCM's
	// stream_idle_timeout bounds the wait.
	f.idleCheckLocked()
	needOpen := !f.opened
	f.opened = true
	f.trace.Opened = true
	f.trace.Messages = append(f.trace.Messages, TraceMessage{Sent: msg})
	var ctx context.Context
	if needOpen {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(context.Background())
		f.cancel = cancel
		f.recvDone = make(chan struct{})
	}
	f.mu.Unlock()

	if needOpen && !f.open(ctx) {
		return true // the failure is the terminal the caller will see
	}
	if f.stream == nil {
		return true
	}
	if err := f.stream.Send(msg); err == nil {
		f.p.stats.StreamMsgsSent.Add(1)
	} // else the receive loop reports the stream's status
	return true
}

// open starts the gRPC stream (called with sendMu held).
func (f *filter) open(ctx context.Context) bool {
	md := metadata.MD{}
	for k, v := range f.p.cfg.InitialMetadata {
		md.Set(k, v)
	}
	for k, v := range f.route.GRPCInitialMetadata {
		md.Set(k, v)
	}
	ctx = metadata.NewOutgoingContext(ctx, md)
	var opts []grpc.CallOption
	if f.p.cfg.Authority != "" {
		opts = append(opts, grpc.CallAuthority(f.p.cfg.Authority))
	}
	stream, err := extprocv3.NewExternalProcessorClient(f.p.conn).Process(ctx, opts...)
	if err != nil {
		close(f.recvDone)
		f.onEnd(err)
		return false
	}
	f.p.stats.StreamsStarted.Add(1)
	f.stream = stream
	go f.recvLoop(stream)
	return true
}

func (f *filter) recvLoop(s extprocv3.ExternalProcessor_ProcessClient) {
	defer close(f.recvDone)
	for {
		m, err := s.Recv()
		if err != nil {
			f.onEnd(err)
			return
		}
		f.onMessage(m)
	}
}

// onEnd handles the end of the RPC as seen by Envoy.
func (f *filter) onEnd(err error) {
	code := status.Code(err)
	if err == io.EOF {
		code = codes.OK
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.trace.EndCode = code
	if f.closed || f.term != nil {
		return
	}
	if code == codes.OK {
		f.p.stats.ServerHalfClosed.Add(1)
		f.p.stats.StreamsClosed.Add(1)
		f.failLocked(&terminal{kind: "closed_by_server", cont: true})
		return
	}
	f.p.stats.StreamsFailed.Add(1)
	msg := status.Convert(err).Message()
	f.failLocked(&terminal{kind: "grpc_error", status: f.p.cfg.StatusOnError,
		details: underscore(fmt.Sprintf("ext_proc_error_gRPC_error_%d{%s}", code, msg))})
}

// onMessage routes a reply by its oneof to its direction (ext_proc.cc
// onReceiveMessage, processor_state.cc handle*Response).
func (f *filter) onMessage(m *extprocv3.ProcessingResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.term != nil || f.closed {
		return // late messages are ignored
	}
	f.trace.Messages = append(f.trace.Messages, TraceMessage{Received: m})
	if m.GetOverrideMessageTimeout() != nil {
		// Consumed only as a timer extension; every other field is ignored.
		f.overrideTimeout(m.GetOverrideMessageTimeout())
		return
	}
	base := f.p.cfg.ProcessingMode
	if m.GetModeOverride() != nil && f.p.cfg.AllowModeOverride && !f.p.cfg.SendBodyWithoutWaiting &&
		base.GetRequestBodyMode() != modeDuplex && base.GetResponseBodyMode() != modeDuplex &&
		(f.req.waitingHeaders() || f.resp.waitingHeaders()) {
		f.applyModeOverride(m.GetModeOverride())
	}
	var d *direction
	var want kind
	var body *extprocv3.BodyResponse
	switch x := m.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		d, want = f.req, kHeaders
	case *extprocv3.ProcessingResponse_RequestBody:
		d, want, body = f.req, kBody, x.RequestBody
	case *extprocv3.ProcessingResponse_RequestTrailers:
		d, want = f.req, kTrailers
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		d, want = f.resp, kHeaders
	case *extprocv3.ProcessingResponse_ResponseBody:
		d, want, body = f.resp, kBody, x.ResponseBody
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		d, want = f.resp, kTrailers
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		if f.p.cfg.DisableImmediateResponse {
			f.spuriousLocked("unhandled immediate response due to config disabled it")
			return
		}
		f.receiveMetadataLocked(m)
		f.p.stats.StreamMsgsReceived.Add(1)
		f.p.stats.ImmediateResponsesSent.Add(1)
		f.failLocked(&terminal{kind: "immediate_response", immediate: x.ImmediateResponse})
		return
	default:
		// No oneof, or StreamedImmediateResponse (not modelled).
		f.spuriousLocked("unhandled message")
		return
	}
	f.receiveMetadataLocked(m)
	streamed := body.GetResponse().GetBodyMutation().GetStreamedResponse()
	switch {
	case d.bodyMode == modeDuplex && want == kBody:
		if d.waitingHeaders() || d.duplexSent == 0 || d.duplexDone {
			f.spuriousLocked("spurious message")
			return
		}
		if streamed == nil {
			f.spuriousLocked("spurious message: Normal body mutation response is received while body_mode_ is FULL_DUPLEX_STREAMED")
			return
		}
		d.duplexDone = streamed.GetEndOfStream()
	case d.bodyMode == modeDuplex && want == kTrailers:
		if !d.trailersSent || d.trailersAnswered {
			f.spuriousLocked("spurious message")
			return
		}
		d.trailersAnswered, d.duplexDone = true, true
	default:
		if len(d.outstanding) == 0 || d.outstanding[0] != want {
			f.spuriousLocked("spurious message")
			return
		}
		if streamed != nil && d.bodyMode == modeStreamed {
			f.spuriousLocked("spurious message: streamed_response is received while body_mode_ is not FULL_DUPLEX_STREAMED")
			return
		}
		d.outstanding = d.outstanding[1:]
		// Envoy stops the direction's timer on every reply it handles
		// (onFinishProcessorCall), even with more STREAMED chunks
		// outstanding; the next send starts it again.
		f.disarm(d)
	}
	f.idleCheckLocked()
	f.p.stats.StreamMsgsReceived.Add(1)
	d.inbox = append(d.inbox, m)
	select {
	case d.notify <- struct{}{}:
	default:
	}
}

func (d *direction) waitingHeaders() bool {
	return len(d.outstanding) > 0 && d.outstanding[0] == kHeaders
}

// spuriousLocked fails the request for a reply Envoy calls spurious; the
// details are Envoy's error text with whitespace replaced.
func (f *filter) spuriousLocked(reason string) {
	f.p.stats.SpuriousMsgsReceived.Add(1)
	f.failLocked(&terminal{kind: "spurious", status: f.p.cfg.StatusOnError, details: underscore(reason)})
}

// receiveMetadataLocked applies ProcessingResponse.dynamic_metadata: each
// top-level key is a namespace; only receiving namespaces are written, and
// writes merge into what the namespace already holds.
func (f *filter) receiveMetadataLocked(m *extprocv3.ProcessingResponse) {
	dm := m.GetDynamicMetadata()
	if dm == nil || len(f.p.cfg.ReceivingNamespaces) == 0 {
		return
	}
	for ns, v := range dm.GetFields() {
		if !slices.Contains(f.p.cfg.ReceivingNamespaces, ns) {
			continue
		}
		cur := f.dynMeta[ns]
		if cur == nil {
			cur = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			if f.dynMeta == nil {
				f.dynMeta = map[string]*structpb.Struct{}
			}
			f.dynMeta[ns] = cur
		}
		for k, fv := range v.GetStructValue().GetFields() {
			cur.Fields[k] = fv
		}
	}
}

// metadataContextLocked is the metadata_context of the next message:
// MetadataContext as is, or, with ForwardingNamespaces, only those
// namespaces of MetadataContext merged with what the processor wrote.
func (f *filter) metadataContextLocked() *corev3.Metadata {
	base := f.p.cfg.MetadataContext
	if f.p.cfg.ForwardingNamespaces == nil {
		if base == nil {
			return &corev3.Metadata{}
		}
		return base
	}
	out := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	for _, ns := range f.p.cfg.ForwardingNamespaces {
		var fields map[string]*structpb.Value
		if b := base.GetFilterMetadata()[ns]; b != nil {
			fields = maps.Clone(b.GetFields())
		}
		if w := f.dynMeta[ns]; w != nil {
			if fields == nil {
				fields = map[string]*structpb.Value{}
			}
			maps.Copy(fields, w.GetFields())
		}
		if fields != nil {
			out.FilterMetadata[ns] = &structpb.Struct{Fields: fields}
		}
	}
	return out
}

// applyModeOverride applies mode_override as Envoy does: base is the
// filter-level mode, DEFAULT header and trailer fields keep the base, body
// fields always come from the override, and the result applies to both
// directions.
func (f *filter) applyModeOverride(o *ProcessingMode) {
	base := f.p.cfg.ProcessingMode
	m := &ProcessingMode{
		RequestHeaderMode:   base.GetRequestHeaderMode(),
		ResponseHeaderMode:  base.GetResponseHeaderMode(),
		RequestTrailerMode:  base.GetRequestTrailerMode(),
		ResponseTrailerMode: base.GetResponseTrailerMode(),
		RequestBodyMode:     o.GetRequestBodyMode(),
		ResponseBodyMode:    o.GetResponseBodyMode(),
	}
	keep := func(dst *extprocfilterv3.ProcessingMode_HeaderSendMode, v extprocfilterv3.ProcessingMode_HeaderSendMode) {
		if v != extprocfilterv3.ProcessingMode_DEFAULT {
			*dst = v
		}
	}
	keep(&m.RequestHeaderMode, o.GetRequestHeaderMode())
	keep(&m.ResponseHeaderMode, o.GetResponseHeaderMode())
	keep(&m.RequestTrailerMode, o.GetRequestTrailerMode())
	keep(&m.ResponseTrailerMode, o.GetResponseTrailerMode())
	if allowed := f.p.cfg.AllowedOverrideModes; len(allowed) > 0 {
		ok := false
		for _, a := range allowed {
			if a.GetResponseHeaderMode() == m.ResponseHeaderMode &&
				a.GetRequestTrailerMode() == m.RequestTrailerMode &&
				a.GetResponseTrailerMode() == m.ResponseTrailerMode &&
				a.GetRequestBodyMode() == m.RequestBodyMode &&
				a.GetResponseBodyMode() == m.ResponseBodyMode {
				ok = true
				break
			}
		}
		if !ok {
			return
		}
	}
	reqHeader := f.req.headerSend
	f.req.setMode(m)
	f.req.headerSend = reqHeader
	f.resp.setMode(m)
}

// overrideTimeout handles override_message_timeout (ext_proc.cc
// onNewTimeout): the value, in whole milliseconds, must lie in
// [1ms, max_message_timeout]; it restarts every direction whose timer is
// running and has not been overridden since its last send. Only an
// accepted override counts as received; nothing counts it in
// stream_msgs_received.
func (f *filter) overrideTimeout(v *durationpb.Duration) {
	ignored := &f.p.stats.OverrideMessageTimeoutIgnored
	if v.CheckValid() != nil {
		ignored.Add(1)
		return
	}
	ms := v.AsDuration().Milliseconds()
	if ms < 1 || ms > f.p.cfg.MaxMessageTimeout.Milliseconds() {
		ignored.Add(1)
		return
	}
	restarted := false
	for _, d := range []*direction{f.req, f.resp} {
		if d.timerRunning && !d.overridden {
			d.overridden = true
			f.arm(d, time.Duration(ms)*time.Millisecond)
			restarted = true
		}
	}
	if !restarted {
		ignored.Add(1)
		return
	}
	f.p.stats.OverrideMessageTimeoutReceived.Add(1)
}

// arm (re)starts d's message timer; called with mu held.
func (f *filter) arm(d *direction, dur time.Duration) {
	d.gen++
	gen := d.gen
	if d.timer != nil {
		d.timer.Stop()
	}
	d.timerRunning = true
	d.timer = time.AfterFunc(dur, func() { f.onTimeout(d, gen) })
}

func (f *filter) disarm(d *direction) {
	d.gen++
	d.timerRunning = false
	if d.timer != nil {
		d.timer.Stop()
	}
}

func (f *filter) onTimeout(d *direction, gen uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != d.gen || f.term != nil || f.closed {
		return
	}
	d.timerRunning = false
	f.p.stats.MessageTimeouts.Add(1)
	f.failLocked(&terminal{kind: "timeout", status: http.StatusGatewayTimeout,
		details: "ext_proc_error_per-message_timeout_exceeded"})
}

// fail ends processing for this request (mutation errors and the like).
func (f *filter) fail(t *terminal) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failLocked(t)
}

func (f *filter) failLocked(t *terminal) {
	if f.term != nil {
		return
	}
	switch t.kind {
	case "timeout", "grpc_error", "spurious":
		if f.canFailOpenLocked() {
			t.cont = true
			f.p.stats.FailureModeAllowed.Add(1)
			f.trace.FailedOpen = true
		}
	}
	f.term = t
	f.trace.Failure = t.kind
	close(f.termCh)
	f.disarm(f.req)
	f.disarm(f.resp)
	f.stopIdleLocked()
	if f.opened && !f.closed {
		f.closed = true
		// A failed stream is not "closed" unless failure_mode_allow let
		// the request go on (Envoy then closes it as after an OK status).
		if t.kind != "closed_by_server" && (t.kind != "grpc_error" || t.cont) {
			f.p.stats.StreamsClosed.Add(1)
		}
	}
	// Envoy resets the stream; the server sees Canceled.
	if f.cancel != nil {
		f.cancel()
	}
	if t.kind == "immediate_response" && f.upCancel != nil {
		f.upCancel()
	}
}

// canFailOpenLocked is failure_mode_allow, which Envoy ignores once a
// FULL_DUPLEX_STREAMED body has started streaming (the body is gone).
func (f *filter) canFailOpenLocked() bool {
	for _, d := range []*direction{f.req, f.resp} {
		if d.bodyMode == modeDuplex && d.duplexSent > 0 {
			return false
		}
	}
	return f.failOpen
}

// idleCheckLocked keeps the HCM stream_idle_timeout running, restarted on
// every message, while Envoy waits on the processor with no message timer:
// throughout FULL_DUPLEX_STREAMED, and in STREAMED after a reply stopped
// the timer with more chunks outstanding. When it fires Envoy answers 504.
func (f *filter) idleCheckLocked() {
	for _, d := range []*direction{f.req, f.resp} {
		if len(d.outstanding) > 0 && !d.timerRunning ||
			d.bodyMode == modeDuplex && d.started && !d.duplexDone && !d.finished {
			f.touchIdleLocked()
			return
		}
	}
	f.stopIdleLocked()
}

func (f *filter) touchIdleLocked() {
	if f.idle != nil {
		f.idle.Reset(f.p.cfg.StreamIdleTimeout)
		return
	}
	f.idle = time.AfterFunc(f.p.cfg.StreamIdleTimeout, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.term != nil || f.closed || f.idle == nil {
			return
		}
		f.failLocked(&terminal{kind: "idle_timeout", status: http.StatusGatewayTimeout,
			details: "stream_idle_timeout", body: "stream timeout"})
	})
}

func (f *filter) stopIdleLocked() {
	if f.idle != nil {
		f.idle.Stop()
		f.idle = nil
	}
}

// awaitDuplex returns the next FULL_DUPLEX_STREAMED body or trailers reply
// of d, or the terminal that ended processing (errGone once gone closes).
func (f *filter) awaitDuplex(d *direction, gone <-chan struct{}) (*extprocv3.ProcessingResponse, *terminal) {
	for {
		f.mu.Lock()
		if len(d.inbox) > 0 {
			m := d.inbox[0]
			d.inbox = d.inbox[1:]
			f.mu.Unlock()
			return m, nil
		}
		if f.term != nil {
			t := f.term
			f.mu.Unlock()
			return nil, t
		}
		if f.closed {
			f.mu.Unlock()
			return nil, passThrough
		}
		f.mu.Unlock()
		select {
		case <-d.notify:
		case <-f.termCh:
		case <-gone:
			return nil, errGone
		case <-f.done:
			return nil, errGone
		}
	}
}

// await returns the next reply of direction d, or the terminal that ended
// processing.
func (f *filter) await(d *direction) (*extprocv3.ProcessingResponse, *terminal) {
	for {
		f.mu.Lock()
		if len(d.inbox) > 0 {
			m := d.inbox[0]
			d.inbox = d.inbox[1:]
			f.mu.Unlock()
			return m, nil
		}
		if f.term != nil {
			t := f.term
			f.mu.Unlock()
			return nil, t
		}
		if f.closed || len(d.outstanding) == 0 {
			f.mu.Unlock()
			return nil, passThrough
		}
		f.mu.Unlock()
		select {
		case <-d.notify:
		case <-f.termCh:
		case <-f.r.Context().Done():
			// The downstream went away while Envoy waited (onDestroy): the
			// stream is closed, no timer fires, nobody gets a reply.
			f.fail(&terminal{kind: "downstream_reset", status: http.StatusBadRequest,
				details: "downstream_remote_disconnect"})
		}
	}
}

// exchange sends one message and waits for its reply.
func (f *filter) exchange(d *direction, k kind, fill func(*extprocv3.ProcessingRequest)) (*extprocv3.ProcessingResponse, *terminal) {
	if !f.send(d, k, fill) {
		if t := f.terminal(); t != nil {
			return nil, t
		}
		return nil, passThrough
	}
	return f.await(d)
}

func (f *filter) setFinished(d *direction) {
	f.mu.Lock()
	d.finished = true
	f.mu.Unlock()
	f.maybeCloseEarly()
}

// maybeCloseEarly closes the stream once nothing more needs processing
// (Envoy 1.37+ ext_proc_stream_close_optimization); not for BUFFERED modes.
func (f *filter) maybeCloseEarly() {
	f.mu.Lock()
	ok := f.opened && !f.closed && f.term == nil &&
		f.req.finished && len(f.req.outstanding) == 0 &&
		((f.resp.finished && len(f.resp.outstanding) == 0) || (!f.resp.started && f.resp.nothingConfigured()))
	for _, d := range []*direction{f.req, f.resp} {
		if d.bodyMode == modeBuffered || d.bodyMode == modePartial {
			ok = false
		}
	}
	if ok {
		f.closedEarly = true
		f.trace.ClosedEarly = true
	}
	f.mu.Unlock()
	if ok {
		f.closeNormal()
	}
}

// closeNormal closes like Envoy: half-close, then reset at once (or, with
// GracefulClose, wait for the server to end the RPC first).
func (f *filter) closeNormal() {
	f.mu.Lock()
	if !f.opened || f.closed || f.term != nil {
		f.mu.Unlock()
		return
	}
	f.closed = true
	f.disarm(f.req)
	f.disarm(f.resp)
	f.stopIdleLocked()
	recvDone := f.recvDone
	cancel := f.cancel
	f.mu.Unlock()
	f.p.stats.StreamsClosed.Add(1)
	f.sendMu.Lock()
	if f.stream != nil {
		_ = f.stream.CloseSend()
	}
	f.sendMu.Unlock()
	if f.p.cfg.GracefulClose && recvDone != nil {
		t := time.NewTimer(f.p.cfg.GracefulCloseTimeout)
		select {
		case <-recvDone:
		case <-t.C:
		}
		t.Stop()
	}
	if cancel != nil {
		cancel()
	}
}

// finish runs when the HTTP stream is destroyed.
func (f *filter) finish(statusCode int, details string) {
	close(f.done)
	f.closeNormal()
	f.mu.Lock()
	f.disarm(f.req)
	f.disarm(f.resp)
	f.stopIdleLocked()
	cancel, recvDone, upCancel := f.cancel, f.recvDone, f.upCancel
	f.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if upCancel != nil {
		upCancel()
	}
	if recvDone != nil {
		<-recvDone
	}
	f.wg.Wait()
	f.mu.Lock()
	f.trace.Status = statusCode
	f.trace.Details = details
	f.trace.Route = f.routeName
	f.trace.DynamicMetadata = f.dynMeta
	tr := f.trace
	f.mu.Unlock()
	f.p.traces.add(tr)
	if f.p.cfg.Trace != nil {
		f.p.cfg.Trace(tr)
	}
}

// underscore is Envoy's StringUtil::replaceAllEmptySpace, used on
// response code details: every ASCII whitespace character becomes '_'.
func underscore(s string) string {
	return strings.Map(func(r rune) rune {
		if strings.ContainsRune(" \t\n\v\f\r", r) {
			return '_'
		}
		return r
	}, s)
}
