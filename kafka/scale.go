package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"
)

// idempotencyConfig is config.idempotency.
type idempotencyConfig struct {
	Header   string      `yaml:"header"`
	TTL      int         `yaml:"ttl"`
	Strategy string      `yaml:"strategy"`
	Redis    redisConfig `yaml:"redis"`
}

// asyncConfig is config.async.
type asyncConfig struct {
	Enabled    bool        `yaml:"enabled"`
	ResultPath string      `yaml:"result_path"`
	TTL        int         `yaml:"ttl"`
	Strategy   string      `yaml:"strategy"`
	Redis      redisConfig `yaml:"redis"`
}

// gatherConfig is config.gather.
type gatherConfig struct {
	Replies  int    `yaml:"replies"`
	WindowMS int    `yaml:"window_ms"`
	ByLua    string `yaml:"by_lua"`
}

// scaleConfig holds the optional blocks (inline in requestReplyConfig);
// nil when absent.
type scaleConfig struct {
	Idempotency *idempotencyConfig `yaml:"idempotency"`
	Async       *asyncConfig       `yaml:"async"`
	Gather      *gatherConfig      `yaml:"gather"`
}

// scale is the compiled idempotency, async and gather settings.
type scale struct {
	idem   *idempotency
	async  *asyncMode
	gather *gatherMode
	log    *zap.Logger
}

type idempotency struct {
	header   string
	ttl      time.Duration
	strategy string
	redis    redisConfig
	store    replyStore // set by Provision
}

type asyncMode struct {
	resultPath string
	ttl        time.Duration
	strategy   string
	redis      redisConfig
	store      replyStore // set by Provision
}

type gatherMode struct {
	n         int
	window    time.Duration
	lua       *flows.LuaChunk // by_lua; nil: the JSON answer
	readsBody bool            // by_lua reads the request body
}

// Defaults of the optional blocks, applied to zero values (zero is never
// valid for these).
const (
	defaultIdemTTL    = 86400000 // 24 h
	defaultAsyncTTL   = 300000   // 5 min
	defaultResultPath = "/replies"
	// pendingGrace keeps a pending marker a little past reply_timeout so a
	// replica that dies mid-request frees the key soon after.
	pendingGrace = 5 * time.Second
)

func defaultRedis(r *redisConfig) {
	d := defaultRedisConfig()
	if r.Host == "" {
		r.Host = d.Host
	}
	if r.Port == 0 {
		r.Port = d.Port
	}
	if r.ConnectTimeout == 0 {
		r.ConnectTimeout = d.ConnectTimeout
	}
	if r.SendTimeout == 0 {
		r.SendTimeout = d.SendTimeout
	}
	if r.ReadTimeout == 0 {
		r.ReadTimeout = d.ReadTimeout
	}
	if r.KeepalivePoolSize == 0 {
		r.KeepalivePoolSize = d.KeepalivePoolSize
	}
}

func checkStrategy(b *flows.Builder, at flows.Path, s *string, r *redisConfig) {
	if *s == "" {
		*s = "memory"
	}
	switch *s {
	case "memory":
	case "redis":
		defaultRedis(r)
		validateRedis(b, at.Key("redis"), r)
	default:
		b.Errorf(at.Key("strategy"), "must be memory or redis, got %q", *s)
	}
}

// compileScale decodes and validates idempotency, async and gather; nil
// when none is set (or async is disabled).
func compileScale(b *flows.Builder, at flows.Path, c *scaleConfig, timeout time.Duration) *scale {
	s := &scale{}
	if i := c.Idempotency; i != nil {
		ip := at.Key("idempotency")
		if i.Header == "" {
			i.Header = "Idempotency-Key"
		}
		if !httpx.ValidHeaderName(i.Header) {
			b.Errorf(ip.Key("header"), "must be a valid header name, got %q", i.Header)
		}
		if i.TTL == 0 {
			i.TTL = defaultIdemTTL
		}
		checkRange(b, ip.Key("ttl"), i.TTL, 1, 30*86400000)
		checkStrategy(b, ip, &i.Strategy, &i.Redis)
		s.idem = &idempotency{header: i.Header, ttl: time.Duration(i.TTL) * time.Millisecond, strategy: i.Strategy, redis: i.Redis}
	}
	if a := c.Async; a != nil {
		ap := at.Key("async")
		if a.ResultPath == "" {
			a.ResultPath = defaultResultPath
		}
		a.ResultPath = strings.TrimRight(a.ResultPath, "/")
		if !strings.HasPrefix(a.ResultPath, "/") || len(a.ResultPath) < 2 {
			b.Errorf(ap.Key("result_path"), "must be a path like /replies, got %q", a.ResultPath)
		}
		if a.TTL == 0 {
			a.TTL = defaultAsyncTTL
		}
		checkRange(b, ap.Key("ttl"), a.TTL, int(timeout/time.Millisecond), 30*86400000)
		checkStrategy(b, ap, &a.Strategy, &a.Redis)
		if a.Enabled {
			s.async = &asyncMode{resultPath: a.ResultPath, ttl: time.Duration(a.TTL) * time.Millisecond, strategy: a.Strategy, redis: a.Redis}
		}
	}
	if g := c.Gather; g != nil {
		gp := at.Key("gather")
		checkRange(b, gp.Key("replies"), g.Replies, 1, 10000)
		if g.WindowMS == 0 {
			g.WindowMS = int(timeout / time.Millisecond)
		}
		// The window lives inside reply_timeout, the plugin's budget.
		checkRange(b, gp.Key("window_ms"), g.WindowMS, 1, int(timeout/time.Millisecond))
		s.gather = &gatherMode{n: g.Replies, window: time.Duration(g.WindowMS) * time.Millisecond}
		if g.ByLua != "" {
			// An async result is stored without a client request to run on.
			if s.async != nil {
				b.Errorf(gp.Key("by_lua"), "not supported with async (the stored result is the JSON answer)")
			}
			s.gather.lua = b.Lua(g.ByLua, gp.Key("by_lua"))
			s.gather.readsBody = strings.Contains(g.ByLua, "get_body") || strings.Contains(g.ByLua, "get_raw_body")
		}
	}
	if s.idem == nil && s.async == nil && s.gather == nil {
		return nil
	}
	return s
}

// provision takes the stores.
func (s *scale) provision(b *flows.Builder) error {
	s.log = b.Log
	var err error
	if s.idem != nil {
		if s.idem.store, err = acquireStore(b, s.idem.strategy, &s.idem.redis); err != nil {
			return err
		}
	}
	if s.async != nil {
		if s.async.store, err = acquireStore(b, s.async.strategy, &s.async.redis); err != nil {
			return err
		}
	}
	return nil
}

// Access produces the request and answers the client with the reply, or
// with an async result, a replayed idempotent reply or gathered replies.
func (p *requestReply) Access(ctx context.Context, x *flows.Exchange) error {
	s := p.scale
	if s == nil {
		return p.call(ctx, x)
	}
	if s.async != nil {
		if id, ok := s.async.resultID(x.Request.Path); ok {
			return p.result(ctx, x, id)
		}
	}
	if s.idem != nil {
		if key := x.Request.Headers.Get(s.idem.header); key != "" {
			return p.idempotent(ctx, x, key)
		}
	}
	return p.dispatch(ctx, x)
}

func (p *requestReply) dispatch(ctx context.Context, x *flows.Exchange) error {
	switch {
	case p.scale.async != nil:
		return p.accept(ctx, x)
	case p.scale.gather != nil:
		return p.gatherCall(ctx, x)
	}
	return p.call(ctx, x)
}

// requestID is the correlation ID call uses.
func (p *requestReply) requestID(x *flows.Exchange) string {
	id := ""
	if p.idHeader != "" {
		id = x.Request.Headers.Get(p.idHeader)
	}
	if id == "" {
		// The correlation-id plugin's value, so the request has one id.
		id = x.CorrelationID()
	}
	if id == "" {
		id = uuid.NewString()
	}
	return id
}

// fail counts outcome and returns call's error shape.
func (p *requestReply) fail(id string, status int, outcome, msg string, err error) error {
	p.m.requests.WithLabelValues(p.route, p.topic, outcome).Inc()
	return &flows.HTTPError{Status: status, Message: msg + " (correlation id " + id + ")", Err: err,
		Headers: flows.Headers{strings.ToLower(p.names.Correlation): {id}}}
}

// send registers a waiter for id (for n replies) and produces the request
// as call does; the waiter is cancelled when it fails.
func (p *requestReply) send(ctx context.Context, x *flows.Exchange, id string, n int) (*ReplyWaiter, time.Time, error) {
	start := time.Now()
	if p.replies == nil {
		return nil, start, p.fail(id, 503, "unavailable", "kafka clients not started", errNotReady)
	}
	deadline := start.Add(p.timeout)
	w, err := p.replies.RegisterN(id, n, p.maxPending)
	switch {
	case errors.Is(err, errPendingFull):
		return nil, start, p.fail(id, 503, "pending_full", "too many requests waiting for kafka replies", err)
	case errors.Is(err, errDuplicateID):
		return nil, start, p.fail(id, 409, "duplicate_id", "a request with this correlation id is already waiting", err)
	case err != nil:
		return nil, start, p.fail(id, 503, "unavailable", "kafka reply consumer not ready", err)
	}
	sctx, span := startSpan(ctx, "send", trace.SpanKindProducer, p.topic, id)
	msg, err := p.record(sctx, x, id, deadline)
	if err != nil {
		endSpan(span, "encode_error", err)
		p.replies.Cancel(w, false)
		return nil, start, p.fail(id, 500, "encode_error", "could not encode the kafka request", err)
	}
	pctx, cancel := context.WithDeadline(sctx, deadline)
	err = p.prod.Produce(pctx, msg, true, false)
	cancel()
	endSpan(span, "", err)
	if err == nil {
		return w, start, nil
	}
	p.replies.Cancel(w, errors.Is(err, context.DeadlineExceeded))
	switch {
	case ctx.Err() != nil:
		return nil, start, p.fail(id, 499, "canceled", "client went away", ctx.Err())
	case errors.Is(err, context.DeadlineExceeded):
		return nil, start, p.fail(id, 504, "timeout", "kafka produce timed out", err)
	case unavailable(err):
		return nil, start, p.fail(id, 503, "unavailable", "kafka brokers unavailable", err)
	}
	return nil, start, p.fail(id, 502, "produce_error", "could not produce the kafka request", err)
}

// jsonError is an error body like flows' own: {"message": msg}.
func jsonError(status int, msg string) *storedReply {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return &storedReply{Status: status, Headers: [][2]string{{"content-type", "application/json"}}, Body: b}
}
