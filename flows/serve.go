package flows

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"

	"go.uber.org/zap"
)

// The request walk, in one place for the main request and for shared
// flows: access, then (unless a plugin answered) the upstream, then the
// response phases. A plugin error becomes the JSON error reply; a local
// reply, whatever made it, goes through the response phases as Kong's
// kong.response.exit does.

// PanicError is a plugin run that panicked; the walk answers 500.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("plugin panicked: %v", e.Value) }

// Serve runs phase on x and settles its outcome. When it returns with
// x.Reply set, the client gets that reply and no later phase runs: the
// response phases have already seen it. The returned error is the
// plugin's failure (a *PanicError for a panic), already rendered into
// x.Reply; callers use it only to count or log.
func (p *Pipeline) Serve(ctx context.Context, phase Phase, x *Exchange, obs Observer) error {
	if phase != PhaseAccess {
		x.applyEarlyResponseHeaders()
	}
	err := p.protected(ctx, phase, x, obs)
	if err != nil {
		x.Reply = ErrorReply(x, err)
	}
	if x.Reply != nil {
		p.finishReply(ctx, x, obs)
	}
	return err
}

// Fail renders err as the error reply and lets the response phases see it,
// for failures found outside a plugin (a change Envoy would refuse).
func (p *Pipeline) Fail(ctx context.Context, x *Exchange, err error, obs Observer) {
	x.Reply = ErrorReply(x, err)
	p.finishReply(ctx, x, obs)
}

// protected runs the phase and turns a panic into a *PanicError.
func (p *Pipeline) protected(ctx context.Context, phase Phase, x *Exchange, obs Observer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return p.Run(ctx, phase, x, obs)
}

// finishReply lets the response plugins see a local reply as the response
// (header_filter, then body_filter), then makes the result the reply. A
// response plugin that answers again has its reply taken as it is; one that
// fails leaves the reply as it was.
func (p *Pipeline) finishReply(ctx context.Context, x *Exchange, obs Observer) {
	ctx = context.WithValue(ctx, localReplyKey{}, true)
	rep := x.Reply
	x.Reply = nil
	x.Response = Response{Status: rep.Status, Headers: rep.Headers, Body: rep.Body, HasBody: true}
	if x.Response.Headers == nil {
		x.Response.Headers = Headers{}
	}
	x.applyEarlyResponseHeaders()
	if err := p.protected(ctx, PhaseHeaderFilter, x, obs); err == nil && x.Reply == nil {
		_ = p.protected(ctx, PhaseBodyFilter, x, obs)
	}
	if x.Reply == nil {
		x.Reply = &Reply{Status: x.Response.Status, Headers: x.Response.Headers, Body: x.Response.Body}
	}
}

type localReplyKey struct{}

// IsLocalReply tells a response-phase plugin that the response it sees is
// a local reply (a plugin's answer, an error) going through the response
// phases, not one the upstream sent.
func IsLocalReply(ctx context.Context) bool {
	v, _ := ctx.Value(localReplyKey{}).(bool)
	return v
}

// ErrorReply renders err as sidecall's error reply: the HTTPError's status
// (500 for any other error) and {"message": ..., "request_id": ...}. A 5xx
// is logged with the request id the body names.
func ErrorReply(x *Exchange, err error) *Reply {
	he := AsHTTPError(err)
	return x.errorReply(he.Status, he.Message, he.Headers, err)
}

// errorReply is the one renderer of {"message","request_id"} bodies.
func (x *Exchange) errorReply(status int, message string, extra Headers, err error) *Reply {
	x.EnsureID() // before logging: the log and the body name the same id
	if status >= 500 && err != nil {
		log := x.base
		if log == nil {
			log = zap.NewNop()
		}
		route := ""
		if x.Route != nil {
			route = x.Route.Name
		}
		log.Error("request failed", zap.Int("status", status), zap.String("message", message),
			zap.Error(err), zap.String("request_id", x.ID), zap.String("route", route))
	}
	body, _ := json.Marshal(map[string]string{"message": message, "request_id": x.ID})
	h := Headers{"content-type": {"application/json"}}
	for k, v := range extra {
		h[k] = append([]string(nil), v...)
	}
	return &Reply{Status: status, Headers: h, Body: body}
}

// ErrorBody is the JSON error body with message for x, without logging:
// for plugins that answer with sidecall's error shape themselves.
func (x *Exchange) ErrorBody(message string) []byte {
	return x.errorReply(0, message, nil, nil).Body
}

// Upstream sends a sub-request's request to its service and returns the
// response. Its error is the caller's own (a transport failure).
type Upstream func(ctx context.Context, x *Exchange) (Response, error)

// SubflowError is a plugin failure inside a shared flow.
type SubflowError struct{ Err error }

func (e *SubflowError) Error() string { return e.Err.Error() }
func (e *SubflowError) Unwrap() error { return e.Err }

// Subflow runs s's own pipeline on sub as a sub-request: access, then up
// unless a plugin answered, then the response phases. It returns the
// response the flow ends with. A plugin failure is a *SubflowError (no
// response phases run); up's error is returned as it is.
func (s *Service) Subflow(ctx context.Context, sub *Exchange, up Upstream) (Response, error) {
	pl := s.Pipeline
	if err := pl.protected(ctx, PhaseAccess, sub, nil); err != nil {
		return Response{}, &SubflowError{Err: err}
	}
	if sub.Reply == nil {
		resp, err := up(ctx, sub)
		if err != nil {
			return resp, err
		}
		sub.Response = resp
		if sub.Response.Headers == nil {
			sub.Response.Headers = Headers{}
		}
		sub.Response.HasBody = true
		for _, phase := range []Phase{PhaseHeaderFilter, PhaseBodyFilter} {
			sub.applyEarlyResponseHeaders()
			if err := pl.protected(ctx, phase, sub, nil); err != nil {
				return Response{}, &SubflowError{Err: err}
			}
			if sub.Reply != nil {
				break
			}
		}
	}
	if sub.Reply != nil {
		pl.finishReply(ctx, sub, nil)
		r := sub.Reply
		return Response{Status: r.Status, Headers: r.Headers, Body: r.Body, HasBody: true}, nil
	}
	return sub.Response, nil
}

// SubflowResponse runs s's response phases (header_filter, then
// body_filter) on sub.Response, a response the caller got, then up with the
// response as the plugins left it, unless a plugin answered: that answer
// (through the response phases, as in Subflow) is then the result. A plugin
// failure is a *SubflowError; up's error is returned as it is. The flow's
// access phase does not run.
func (s *Service) SubflowResponse(ctx context.Context, sub *Exchange, up Upstream) (Response, error) {
	pl := s.Pipeline
	if sub.Response.Headers == nil {
		sub.Response.Headers = Headers{}
	}
	sub.Response.HasBody = true
	for _, phase := range []Phase{PhaseHeaderFilter, PhaseBodyFilter} {
		sub.applyEarlyResponseHeaders()
		if err := pl.protected(ctx, phase, sub, nil); err != nil {
			return Response{}, &SubflowError{Err: err}
		}
		if sub.Reply != nil {
			pl.finishReply(ctx, sub, nil)
			r := sub.Reply
			return Response{Status: r.Status, Headers: r.Headers, Body: r.Body, HasBody: true}, nil
		}
	}
	return up(ctx, sub)
}
