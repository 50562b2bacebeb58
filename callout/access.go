package callout

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/sidecall/sidecall/callout/cache"
	"github.com/sidecall/sidecall/flows"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// state is one callout's per-request work. The HTTP part (send, result)
// is touched by one worker goroutine; everything else by the plugin's.
type state struct {
	c       *callout
	ctxMap  map[string]any // kong.ctx.shared.callouts.<name>
	send    *sendReq
	key     string // cache key; "" when not caching
	result  *result
	hit     map[string]any // cached response
	cacheOK bool
}

// sendReq is the HTTP request a callout makes.
type sendReq struct {
	method string
	u      *url.URL
	// canonQuery: u.RawQuery is url.Values.Encode output (sorted), so the
	// cache key can use it as is.
	canonQuery bool
	url        string // u.String(), set once the request is to be sent
	headers    http.Header
	host       string
	body       []byte
	opts       httpOpts
}

type result struct {
	status  int
	headers http.Header
	body    []byte
	err     error  // transport error of the last attempt
	reason  string // "", "error", "code"
	retries []any
}

// Access runs the callouts, then the upstream customisation. When the
// client goes away (the request's context canceled) the outcome is
// canceled whatever failed on the way: 499, logged at debug.
func (p *Plugin) Access(parent context.Context, x *flows.Exchange) error {
	err := p.access(parent, x)
	if err != nil && errors.Is(parent.Err(), context.Canceled) {
		return errCanceled(x, err)
	}
	return err
}

// access is Access.
//
// The plugin's deadline (p.timeout from the start) is a context made only
// once something does I/O: a fetch, or a Redis lookup. A request served
// from the memory cache creates no timer, which would wake the sleeping
// network poller.
func (p *Plugin) access(parent context.Context, x *flows.Exchange) error {
	ctx := parent
	deadline := time.Now().Add(p.timeout)
	var cancel context.CancelFunc
	withDeadline := func() {
		if cancel == nil {
			ctx, cancel = context.WithDeadline(parent, deadline)
		}
	}
	defer func() {
		if cancel != nil {
			cancel()
		}
	}()
	if _, local := p.cache.(*cache.Memory); p.cache != nil && !local {
		withDeadline()
	}
	calls, _ := x.Shared["callouts"].(map[string]any)
	if calls == nil {
		calls = map[string]any{}
		x.Shared["callouts"] = calls
	}
	for _, wave := range p.waves {
		sts := make([]*state, 0, len(wave))
		for _, i := range wave {
			st, err := p.prepare(ctx, x, calls, p.callouts[i])
			if err != nil || x.Reply != nil {
				return err
			}
			sts = append(sts, st)
		}
		var one *state
		n := 0
		for _, st := range sts {
			if st.hit == nil && st.result == nil { // not cached, not refused
				one = st
				n++
			}
		}
		if n > 0 {
			withDeadline()
		}
		switch {
		case n == 1:
			// A lone fetch runs on this goroutine: no spawn, no errgroup.
			p.fetch(ctx, x.Log, one)
		case n > 1:
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(p.maxParallel)
			for _, st := range sts {
				if st.hit != nil || st.result != nil {
					continue
				}
				g.Go(func() error { p.fetch(gctx, x.Log, st); return nil })
			}
			_ = g.Wait()
		}
		if err := ctx.Err(); err != nil {
			if errors.Is(parent.Err(), context.Canceled) {
				return errCanceled(x, err)
			}
			return &flows.HTTPError{Status: http.StatusGatewayTimeout, Message: "request-callout timed out", Err: err}
		}
		for _, st := range sts {
			if err := p.finish(ctx, x, st); err != nil || x.Reply != nil {
				return err
			}
		}
	}
	if p.up.noop {
		return nil
	}
	return p.applyUpstream(ctx, x)
}

func internal(err error) error {
	return &flows.HTTPError{Status: http.StatusInternalServerError, Message: "An unexpected error occurred", Err: err}
}

// prepare renders the callout's request, builds its entry in
// kong.ctx.shared.callouts, runs request.by_lua and reads the cache, on the
// plugin goroutine. Without request.by_lua the request is built from the
// rendered config directly; with it, from request.params as Lua left it.
//
// The steps are separate functions called one after the other so the
// deepest stack stays small: an ext_proc stream runs on a fresh goroutine,
// and growing its stack costs more than a cache hit.
func (p *Plugin) prepare(ctx context.Context, x *flows.Exchange, calls map[string]any, c *callout) (*state, error) {
	r, err := render(ctx, x, c)
	if err != nil {
		if re := asRefused(err); re != nil {
			return p.refused(x, calls, c, nil, re)
		}
		return nil, err
	}
	entry := p.newEntry(x, c, r)
	calls[c.name] = entry
	var send *sendReq
	if c.reqLua != nil {
		if err := c.reqLua.Run(ctx, x); err != nil {
			return nil, internal(fmt.Errorf("callout %q: request.by_lua: %w", c.name, err))
		}
		if x.Reply != nil {
			return nil, nil
		}
		// by_lua may have replaced the entry or its tables.
		if e, ok := calls[c.name].(map[string]any); ok {
			entry = e
		}
		send, err = p.sendFromParams(x, c, entry, r.removed)
	} else {
		send, err = p.sendFrom(x, c, r)
	}
	if err != nil {
		if re := asRefused(err); re != nil {
			return p.refused(x, calls, c, entry, re)
		}
		return nil, internal(fmt.Errorf("callout %q: %w", c.name, err))
	}
	st := &state{c: c, ctxMap: entry, send: send}
	if p.cache != nil && !truthy(mapGet(entry, "caching", "bypass")) {
		p.lookup(ctx, x, st)
	}
	if st.hit == nil {
		send.url = send.u.String()
	}
	return st, nil
}

// newEntry is kong.ctx.shared.callouts.<name> before request.by_lua.
func (p *Plugin) newEntry(x *flows.Exchange, c *callout, r *rendered) map[string]any {
	req := map[string]any{"retries": []any{}, "n_retries": 0}
	if p.params {
		req["params"] = paramsTable(x, c, r)
	}
	return map[string]any{"request": req, "caching": map[string]any{"bypass": c.cfg.Cache.Bypass}}
}

// lookup computes the cache key and reads the cache.
func (p *Plugin) lookup(ctx context.Context, x *flows.Exchange, st *state) {
	c := st.c
	st.cacheOK = true
	st.key = p.cacheKey(x, c.name, st.send, st.ctxMap)
	v, ok, err := p.cache.Get(ctx, st.key)
	switch {
	case err != nil && errors.Is(ctx.Err(), context.Canceled):
		// the client went away: not the cache's fault
	case err != nil:
		c.m.cacheError()
		x.Log.Warn("callout cache unavailable, calling through", zap.String("callout", c.name), zap.Error(err))
	case ok:
		if m, ok := decodeResponse(v); ok {
			c.m.hit.Inc()
			st.hit = m
		}
	default:
		c.m.miss.Inc()
	}
}
