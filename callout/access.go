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
	// clientTrace is the client's traceparent defaultHeaders copied: with
	// tracing on the attempt's own replaces it, not one the callout set.
	clientTrace string
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
	r := run{p: p, x: x, parent: parent, ctx: parent, deadline: time.Now().Add(p.timeout)}
	defer r.close()
	if _, local := p.cache.(*cache.Memory); p.cache != nil && !local {
		r.withDeadline()
	}
	r.calls, _ = x.Shared["callouts"].(map[string]any)
	if r.calls == nil {
		r.calls = map[string]any{}
		x.Shared["callouts"] = r.calls
	}
	var err error
	if p.plan.sequential {
		err = r.sequential()
	} else {
		err = r.graph()
	}
	if err != nil || x.Reply != nil {
		return err
	}
	if p.up.noop {
		return nil
	}
	return p.applyUpstream(r.ctx, x)
}

// run is one request's pass over the callouts. Its fields belong to the
// plugin goroutine; workers get a state and a context, nothing else.
type run struct {
	p        *Plugin
	x        *flows.Exchange
	parent   context.Context
	ctx      context.Context // parent, then with the plugin's deadline once needed
	deadline time.Time
	cancel   context.CancelFunc
	calls    map[string]any // kong.ctx.shared.callouts

	// graph mode
	left    []int           // per callout, its dependencies not finished yet
	ready   []int           // callouts to prepare, in declaration order
	queue   []*state        // prepared callouts waiting for a worker, by priority
	done    chan *state     // a worker's state once fetched
	fctx    context.Context // the workers' context: ctx, canceled when the run stops
	fcancel context.CancelFunc
	running int // workers in flight
}

func (r *run) withDeadline() {
	if r.cancel == nil {
		r.ctx, r.cancel = context.WithDeadline(r.parent, r.deadline)
	}
}

// close stops the workers still in flight (a callout failed, a by_lua
// answered, the deadline passed) and waits for them: none outlives the
// request.
func (r *run) close() {
	if r.fcancel != nil {
		r.fcancel()
		for ; r.running > 0; r.running-- {
			<-r.done
		}
	}
	if r.cancel != nil {
		r.cancel()
	}
}

// expired is the outcome once the plugin's context has ended, else nil.
func (r *run) expired() error {
	err := r.ctx.Err()
	if err == nil {
		return nil
	}
	if errors.Is(r.parent.Err(), context.Canceled) {
		return errCanceled(r.x, err)
	}
	return &flows.HTTPError{Status: http.StatusGatewayTimeout, Message: "request-callout timed out", Err: err}
}

// sequential runs the callouts one at a time in Kong's order, each fetch
// on this goroutine.
func (r *run) sequential() error {
	p, x := r.p, r.x
	for _, i := range p.plan.order {
		st, err := p.prepare(r.ctx, x, r.calls, p.callouts[i])
		if err != nil || x.Reply != nil {
			return err
		}
		if st.hit == nil && st.result == nil { // not cached, not refused
			r.withDeadline()
			p.fetch(r.ctx, x.Log, st)
		}
		if err := r.expired(); err != nil {
			return err
		}
		if err := p.finish(r.ctx, x, st); err != nil || x.Reply != nil {
			return err
		}
	}
	return nil
}

// graph runs the callouts as their dependencies allow. The plugin
// goroutine prepares a callout (templates, request.by_lua, cache lookup)
// once all it depends on has finished, hands its HTTP call to a worker
// (at most max_parallel at a time), and finishes it (error policy,
// response, response.by_lua, cache write) when the worker is done, which
// may make its dependents ready. The first error, or a by_lua answering
// the client, stops the run: close cancels the calls in flight.
func (r *run) graph() error {
	p, x := r.p, r.x
	n := len(p.callouts)
	r.left = make([]int, n)
	r.ready = make([]int, 0, n)
	for i, c := range p.callouts {
		r.left[i] = len(c.deps)
		if r.left[i] == 0 {
			r.ready = append(r.ready, i)
		}
	}
	for {
		for len(r.ready) > 0 {
			i := r.ready[0]
			r.ready = r.ready[1:]
			st, err := p.prepare(r.ctx, x, r.calls, p.callouts[i])
			if err != nil || x.Reply != nil {
				return err
			}
			if st.hit != nil || st.result != nil { // cached or refused: nothing to send
				if err := r.complete(st); err != nil || x.Reply != nil {
					return err
				}
				continue
			}
			r.enqueue(st)
		}
		switch {
		case len(r.queue) == 0 && r.running == 0:
			return nil // every callout finished
		case len(r.queue) == 1 && r.running == 0:
			// A lone fetch (nothing else can start before it ends) runs
			// on this goroutine: no spawn, no channel.
			st := r.queue[0]
			r.queue = r.queue[:0]
			r.withDeadline()
			p.fetch(r.ctx, x.Log, st)
			if err := r.complete(st); err != nil || x.Reply != nil {
				return err
			}
			continue
		}
		for len(r.queue) > 0 && r.running < p.maxParallel {
			r.start()
		}
		st := <-r.done
		r.running--
		if err := r.complete(st); err != nil || x.Reply != nil {
			return err
		}
	}
}

// enqueue adds a prepared callout to the queue: the longest chain of
// dependents first, then declaration order.
func (r *run) enqueue(st *state) {
	h := r.p.plan.height
	i := st.c.idx
	k := len(r.queue)
	for k > 0 {
		q := r.queue[k-1].c.idx
		if h[q] > h[i] || (h[q] == h[i] && q < i) {
			break
		}
		k--
	}
	r.queue = append(r.queue, nil)
	copy(r.queue[k+1:], r.queue[k:])
	r.queue[k] = st
}

// start hands the queue's first callout to a worker.
func (r *run) start() {
	if r.fcancel == nil {
		r.withDeadline()
		r.fctx, r.fcancel = context.WithCancel(r.ctx)
		r.done = make(chan *state, len(r.p.callouts))
	}
	st := r.queue[0]
	r.queue = r.queue[1:]
	r.running++
	go r.p.work(r.fctx, r.x.Log, st, r.done)
}

// work is a worker: it writes only st.result.
func (p *Plugin) work(ctx context.Context, log *zap.Logger, st *state, done chan<- *state) {
	p.fetch(ctx, log, st)
	done <- st
}

// complete finishes a fetched (or cached, or refused) callout on the
// plugin goroutine and readies the dependents it was the last wait of.
func (r *run) complete(st *state) error {
	if err := r.expired(); err != nil {
		return err
	}
	if err := r.p.finish(r.ctx, r.x, st); err != nil || r.x.Reply != nil {
		return err
	}
	for _, j := range r.p.plan.dependents[st.c.idx] {
		if r.left[j]--; r.left[j] == 0 {
			k := len(r.ready)
			for k > 0 && r.ready[k-1] > j {
				k--
			}
			r.ready = append(r.ready, 0)
			copy(r.ready[k+1:], r.ready[k:])
			r.ready[k] = j
		}
	}
	return nil
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
