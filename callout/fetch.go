package callout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"time"

	"github.com/sidecall/sidecall/internal/httpx"
	"github.com/sidecall/sidecall/internal/tracing"
	"github.com/sidecall/sidecall/internal/urlsafe"
	"go.uber.org/zap"
)

// maxBody caps a callout response body (a misbehaving service must not
// exhaust memory).
const maxBody = 8 << 20

// fetch runs on a worker goroutine: singleflight (when caching), HTTP with
// retries. It writes only st.result.
func (p *Plugin) fetch(ctx context.Context, log *zap.Logger, st *state) {
	if !st.cacheOK {
		st.result = p.call(ctx, log, st)
		return
	}
	v, _, err := p.flight.Do(ctx, st.key, func() (any, error) {
		// The leader's context may end early; the call keeps this request's.
		return p.call(ctx, log, st), nil
	})
	if err != nil {
		st.result = &result{err: err, reason: "error"}
		return
	}
	st.result = v.(*result)
}

// call makes the attempts the error policy allows.
func (p *Plugin) call(ctx context.Context, log *zap.Logger, st *state) *result {
	c := st.c
	r := &result{retries: []any{}}
	for attempt := 0; ; attempt++ {
		start := time.Now()
		status, hdr, body, err := p.attempt(ctx, c, st.send)
		d := time.Since(start)
		switch {
		case errors.Is(err, errBreakerOpen):
			// not sent: no attempt, no latency sample
			c.m.m.refuse(c.m.route, c.name, urlsafe.Reason("breaker_open"))
		case err != nil && errors.Is(ctx.Err(), context.Canceled):
			c.m.attempt(statusCanceled) // the client went away
		case err != nil:
			c.m.attempt(0)
		default:
			c.m.attempt(status)
		}
		if !errors.Is(err, errBreakerOpen) {
			tracing.Observe(ctx, c.m.duration, d.Seconds())
		}
		log.Debug("callout", zap.String("callout", c.name), zap.String("url", redactURL(st.send.url)),
			zap.Int("status", status), zap.Float64("latency_ms", float64(d.Microseconds())/1000), zap.Error(err))
		r.status, r.headers, r.body, r.err = status, hdr, body, err
		switch {
		case err != nil:
			r.reason = "error"
		case c.statuses[status]:
			r.reason = "code"
		default:
			r.reason = ""
			return r
		}
		if c.onError != "retry" || attempt >= c.retries || ctx.Err() != nil {
			return r
		}
		rec := map[string]any{"reason": r.reason}
		if err != nil {
			rec["err"] = err.Error()
		} else {
			rec["http_code"] = status
		}
		r.retries = append(r.retries, rec)
		c.m.retries.Inc()
		// Small jittered backoff: 10-20 ms, then 20-40 ms, capped at 200 ms.
		base := time.Duration(10<<min(attempt, 4)) * time.Millisecond
		wait := min(base+time.Duration(rand.Int64N(int64(base))), 200*time.Millisecond)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return r
		case <-t.C:
		}
	}
}

// do makes one HTTP attempt, in a client span when the request is traced.
func (p *Plugin) do(ctx context.Context, c *callout, s *sendReq) (status int, h http.Header, body []byte, err error) {
	if !tracing.On(ctx) {
		return p.send(ctx, c, s)
	}
	ctx, span := tracing.StartHTTPClient(ctx, s.method, redactURL(s.url), tracing.Callout.String(c.name))
	status, h, body, err = p.send(ctx, c, s)
	tracing.EndHTTPClient(span, status, err)
	return status, h, body, err
}

// send makes one HTTP attempt.
func (p *Plugin) send(ctx context.Context, c *callout, s *sendReq) (int, http.Header, []byte, error) {
	tr, err := p.transportFor(c, s.opts)
	if err != nil {
		return 0, nil, nil, err
	}
	connect, read, write := s.opts.timeouts()
	// Per-operation socket timeouts (nginx cosocket semantics): connect
	// until the connection (and TLS) is up, write for each send, read
	// until the response headers and then between body reads. ctx keeps
	// the plugin's deadline over the whole.
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := httpx.NewWatchdog(cancel)
	defer w.Stop()
	trace := &httptrace.ClientTrace{
		GotConn:      func(httptrace.GotConnInfo) { w.Arm("write", write) },
		WroteHeaders: func() { w.Arm("write", write) },
		WroteRequest: func(httptrace.WroteRequestInfo) { w.Arm("read", read) },
	}
	var rb io.Reader
	if s.body != nil {
		rb = bytes.NewReader(s.body)
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(actx, trace), s.method, s.url, rb)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("building request: %w", err)
	}
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = io.NopCloser(httpx.WatchedReader{R: rb, W: w, Phase: "write", D: write})
		req.GetBody = func() (io.ReadCloser, error) {
			return io.NopCloser(httpx.WatchedReader{R: bytes.NewReader(s.body), W: w, Phase: "write", D: write}), nil
		}
	}
	req.Header = s.headers.Clone()
	if tracing.On(ctx) {
		if tp := req.Header.Get("Traceparent"); tp == "" || tp == s.clientTrace {
			tracing.InjectHTTP(ctx, req.Header)
		}
	}
	if s.host != "" {
		req.Host = s.host
	}
	w.Arm("connect", connect)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("calling %s: %w", redactURL(s.url), w.Failure(actx, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(httpx.WatchedReader{R: resp.Body, W: w, Phase: "read", D: read}, maxBody+1))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("reading response of %s: %w", redactURL(s.url), w.Failure(actx, err))
	}
	if len(body) > maxBody {
		return 0, nil, nil, fmt.Errorf("response of %s is larger than %d bytes", redactURL(s.url), maxBody)
	}
	return resp.StatusCode, resp.Header, body, nil
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<invalid url>"
	}
	u.RawQuery, u.User = "", nil
	return u.String()
}
