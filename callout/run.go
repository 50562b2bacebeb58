package callout

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sidecall/sidecall/callout/cache"
	"github.com/sidecall/sidecall/flows"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// maxBody caps a callout response body (a misbehaving service must not
// exhaust memory).
const maxBody = 8 << 20

var flight cache.Flight

// hopByHop headers are never forwarded to a callout.
var hopByHop = map[string]bool{"connection": true, "keep-alive": true, "proxy-authenticate": true,
	"proxy-authorization": true, "te": true, "trailer": true, "transfer-encoding": true, "upgrade": true,
	"host": true, "content-length": true, "proxy-connection": true}

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

// Access runs the callouts, then the upstream customisation.
//
// The plugin's deadline (p.timeout from the start) is a context made only
// once something does I/O: a fetch, or a Redis lookup. A request served
// from the memory cache creates no timer; at low load a new timer wakes
// the sleeping network poller, which cost more than the hit itself.
func (p *Plugin) Access(parent context.Context, x *flows.Exchange) error {
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
			if st.hit == nil {
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
				if st.hit != nil {
					continue
				}
				g.Go(func() error { p.fetch(gctx, x.Log, st); return nil })
			}
			_ = g.Wait()
		}
		if err := ctx.Err(); err != nil {
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

// prepare builds request.params, runs request.by_lua and computes the
// cache key, on the plugin goroutine.
//
// The work is split into functions called one after the other (newEntry,
// buildSend, lookup) so that the deepest stack stays small: an ext_proc
// stream runs on a fresh goroutine, and growing its stack (copying it)
// cost more than a cache hit itself.
func (p *Plugin) prepare(ctx context.Context, x *flows.Exchange, calls map[string]any, c *callout) (*state, error) {
	entry, removedQuery, err := newEntry(ctx, x, c)
	if err != nil {
		return nil, err
	}
	calls[c.name] = entry
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
	}
	st := &state{c: c, ctxMap: entry}
	send, err := buildSend(x, c, entry, removedQuery)
	if err != nil {
		return nil, internal(fmt.Errorf("callout %q: %w", c.name, err))
	}
	st.send = send
	if p.cache != nil && !truthy(mapGet(entry, "caching", "bypass")) {
		p.lookup(ctx, x, st)
	}
	if st.hit == nil {
		send.url = send.u.String()
	}
	return st, nil
}

// lookup computes the cache key and reads the cache.
func (p *Plugin) lookup(ctx context.Context, x *flows.Exchange, st *state) {
	c := st.c
	st.cacheOK = true
	st.key = p.cacheKey(x, c.name, st.send, st.ctxMap)
	v, ok, err := p.cache.Get(ctx, st.key)
	switch {
	case err != nil:
		mCache.WithLabelValues(c.name, "error").Inc()
		x.Log.Warn("callout cache unavailable, calling through", zap.String("callout", c.name), zap.Error(err))
	case ok:
		if m, ok := decodeResponse(v); ok {
			c.counter(&c.mHit, "hit").Inc()
			st.hit = m
		}
	default:
		c.counter(&c.mMiss, "miss").Inc()
	}
}

// newEntry builds kong.ctx.shared.callouts.<name> before request.by_lua:
// request.params from the config, and the caching settings.
func newEntry(ctx context.Context, x *flows.Exchange, c *callout) (map[string]any, []string, error) {
	cc := &c.cfg
	params := map[string]any{}
	u, err := c.url.Render(ctx, x)
	if err != nil {
		return nil, nil, internal(fmt.Errorf("callout %q: rendering url: %w", c.name, err))
	}
	params["url"] = u
	params["method"] = cc.Request.Method
	// headers
	hdrs := map[string]any{}
	if cc.Request.Headers.Forward {
		for k, vs := range x.Request.Headers {
			if hopByHop[k] || strings.HasPrefix(k, ":") {
				continue
			}
			hdrs[k] = listValue(vs)
		}
	}
	for _, h := range c.headers {
		delFold(hdrs, h.name)
		if h.t == nil {
			continue
		}
		v, err := h.t.Render(ctx, x)
		if err != nil {
			return nil, nil, internal(fmt.Errorf("callout %q: rendering header %s: %w", c.name, h.name, err))
		}
		hdrs[h.name] = v
	}
	params["headers"] = hdrs
	// query
	q := map[string]any{}
	if cc.Request.Query.Forward {
		vals, _ := url.ParseQuery(x.Request.RawQuery)
		for k, vs := range vals {
			q[k] = listValue(vs)
		}
	}
	var removedQuery []string
	for _, kv := range c.query {
		delete(q, kv.name)
		if kv.t == nil {
			removedQuery = append(removedQuery, kv.name)
			continue
		}
		v, err := kv.t.Render(ctx, x)
		if err != nil {
			return nil, nil, internal(fmt.Errorf("callout %q: rendering query %s: %w", c.name, kv.name, err))
		}
		q[kv.name] = v
	}
	params["query"] = q
	// body
	var body any
	if cc.Request.Body.Forward && len(x.Request.Body) > 0 {
		body = string(x.Request.Body)
	}
	if cc.Request.Body.Decode || len(c.body) > 0 {
		m, err := decodeObject(body)
		if err != nil {
			return nil, nil, internal(fmt.Errorf("callout %q: decoding request body: %w", c.name, err))
		}
		if m != nil || len(c.body) > 0 {
			if m == nil {
				m = map[string]any{} // empty body + customisation: start from {}
			}
			for _, kv := range c.body {
				delete(m, kv.name)
				if kv.t == nil {
					continue
				}
				v, err := kv.t.Render(ctx, x)
				if err != nil {
					return nil, nil, internal(fmt.Errorf("callout %q: rendering body %s: %w", c.name, kv.name, err))
				}
				m[kv.name] = v
			}
			body = m
		}
	}
	if body != nil {
		params["body"] = body
	}
	params["decode"] = cc.Request.Body.Decode
	o := cc.Request.HTTPOpts
	params["ssl_verify"] = o.SSLVerify
	if o.SSLServerName != "" {
		params["ssl_server_name"] = o.SSLServerName
	}
	if o.Proxy != (ProxyConfig{}) {
		px := map[string]any{}
		for k, v := range map[string]string{"http_proxy": o.Proxy.HTTPProxy, "https_proxy": o.Proxy.HTTPSProxy,
			"auth_username": o.Proxy.AuthUsername, "auth_password": o.Proxy.AuthPassword} {
			if v != "" {
				px[k] = v
			}
		}
		params["proxy"] = px
	}
	if o.Timeouts.Connect != nil {
		params["timeouts"] = map[string]any{"connect": *o.Timeouts.Connect, "read": *o.Timeouts.Read, "write": *o.Timeouts.Write}
	}
	caching := map[string]any{"bypass": cc.Cache.Bypass}
	entry := map[string]any{
		"request": map[string]any{"params": params, "retries": []any{}, "n_retries": 0},
		"caching": caching,
	}
	return entry, removedQuery, nil
}

// buildSend turns request.params (possibly edited by Lua) into an HTTP
// request description the workers can use without touching the Exchange.
func buildSend(x *flows.Exchange, c *callout, entry map[string]any, removedQuery []string) (*sendReq, error) {
	params, _ := mapGet(entry, "request", "params").(map[string]any)
	if params == nil {
		return nil, errors.New("request.params is not a table")
	}
	s := &sendReq{}
	s.method, _ = params["method"].(string)
	if s.method == "" {
		s.method = http.MethodGet
	}
	if !validMethod(s.method) {
		return nil, fmt.Errorf("invalid method %q", s.method)
	}
	raw, _ := params["url"].(string)
	u, err := c.parseURL(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid callout url %q", raw)
	}
	// query: url args, then params.query overriding same names.
	switch q := params["query"].(type) {
	case string:
		if q != "" {
			u.RawQuery = q
		}
	case map[string]any:
		if len(q) == 0 && len(removedQuery) == 0 {
			break // nothing customised: the url's query goes as written (row 7)
		}
		s.canonQuery = true
		vals := u.Query()
		for _, k := range removedQuery {
			vals.Del(k)
		}
		for k, v := range q {
			vals.Del(k)
			if str, ok := v.(string); ok {
				vals[k] = []string{str}
				continue
			}
			for _, s := range stringList(v) {
				vals.Add(k, s)
			}
		}
		u.RawQuery = vals.Encode()
	}
	s.u = u
	hdrs, _ := params["headers"].(map[string]any)
	s.headers = make(http.Header, len(hdrs)+3)
	addHeader := func(k, lk, val string) error {
		if strings.ContainsAny(val, "\r\n\x00") {
			return fmt.Errorf("header %s: value contains CR, LF or NUL", k)
		}
		if lk == "host" {
			s.host = val
			return nil
		}
		if hopByHop[lk] {
			return nil
		}
		ck := http.CanonicalHeaderKey(k)
		s.headers[ck] = append(s.headers[ck], val)
		return nil
	}
	for k, v := range hdrs {
		lk := strings.ToLower(k)
		if str, ok := v.(string); ok {
			if err := addHeader(k, lk, str); err != nil {
				return nil, err
			}
			continue
		}
		for _, val := range stringList(v) {
			if err := addHeader(k, lk, val); err != nil {
				return nil, err
			}
		}
	}
	if !validHeaderNames(s.headers) {
		return nil, errors.New("invalid header name")
	}
	if s.headers.Get("User-Agent") == "" {
		s.headers["User-Agent"] = []string{c.userAgent()}
	}
	if tp := x.Request.Headers.Get("traceparent"); tp != "" && s.headers.Get("Traceparent") == "" && !strings.ContainsAny(tp, "\r\n\x00") {
		s.headers.Set("Traceparent", tp)
		if ts := x.Request.Headers.Get("tracestate"); ts != "" && !strings.ContainsAny(ts, "\r\n\x00") {
			s.headers.Set("Tracestate", ts)
		}
	}
	switch b := params["body"].(type) {
	case string:
		s.body = []byte(b)
	case nil:
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("encoding body: %w", err)
		}
		s.body = enc
		if s.headers.Get("Content-Type") == "" {
			s.headers.Set("Content-Type", "application/json")
		}
	}
	o := httpOpts{sslVerify: true}
	if v, ok := params["ssl_verify"].(bool); ok {
		o.sslVerify = v
	}
	o.serverName, _ = params["ssl_server_name"].(string)
	if px, ok := params["proxy"].(map[string]any); ok {
		o.httpProxy, _ = px["http_proxy"].(string)
		o.httpsProxy, _ = px["https_proxy"].(string)
		o.proxyUser, _ = px["auth_username"].(string)
		o.proxyPass, _ = px["auth_password"].(string)
	}
	if t, ok := params["timeouts"].(map[string]any); ok {
		o.connect = msValue(t["connect"])
		o.read = msValue(t["read"])
		o.write = msValue(t["write"])
	}
	s.opts = o
	return s, nil
}

func validHeaderNames(h http.Header) bool {
	for k := range h {
		if !validHeaderName(k) {
			return false
		}
	}
	return true
}

// fetch runs on a worker goroutine: singleflight (when caching), HTTP with
// retries. It writes only st.result.
func (p *Plugin) fetch(ctx context.Context, log *zap.Logger, st *state) {
	if !st.cacheOK {
		st.result = p.call(ctx, log, st)
		return
	}
	v, _, err := flight.Do(ctx, st.key, func() (any, error) {
		// The leader's context may end early; the call keeps this request's.
		return p.call(ctx, log, st), nil
	})
	if err != nil {
		st.result = &result{err: err, reason: "error"}
		return
	}
	st.result = v.(*result)
}

func (p *Plugin) call(ctx context.Context, log *zap.Logger, st *state) *result {
	c := st.c
	r := &result{retries: []any{}}
	for attempt := 0; ; attempt++ {
		start := time.Now()
		status, hdr, body, err := p.do(ctx, st.send)
		d := time.Since(start)
		mDuration.WithLabelValues(c.name).Observe(d.Seconds())
		cls := "error"
		if err == nil {
			cls = statusClass(status)
		}
		mRequests.WithLabelValues(c.name, cls).Inc()
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
		mRetries.WithLabelValues(c.name).Inc()
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

// do makes one HTTP attempt.
func (p *Plugin) do(ctx context.Context, s *sendReq) (int, http.Header, []byte, error) {
	tr, err := transportFor(p.res, s.opts)
	if err != nil {
		return 0, nil, nil, err
	}
	connect, read, write := s.opts.timeouts()
	actx, cancel := context.WithTimeout(ctx, connect+write+read)
	defer cancel()
	var rb io.Reader
	if s.body != nil {
		rb = bytes.NewReader(s.body)
	}
	req, err := http.NewRequestWithContext(actx, s.method, s.url, rb)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("building request: %w", err)
	}
	req.Header = s.headers.Clone()
	if s.host != "" {
		req.Host = s.host
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("calling %s: %w", redactURL(s.url), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("reading response of %s: %w", redactURL(s.url), err)
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

// finish applies the error policy, stores the response, runs
// response.by_lua and writes the cache, on the plugin goroutine.
func (p *Plugin) finish(ctx context.Context, x *flows.Exchange, st *state) error {
	req, _ := st.ctxMap["request"].(map[string]any)
	if req == nil {
		req = map[string]any{}
		st.ctxMap["request"] = req
	}
	if st.hit != nil {
		st.ctxMap["response"] = st.hit
		return nil
	}
	return p.finishCall(ctx, x, st, req)
}

// finishCall is finish for a callout that was called (not a cache hit).
func (p *Plugin) finishCall(ctx context.Context, x *flows.Exchange, st *state, req map[string]any) error {
	c := st.c
	r := st.result
	req["retries"] = r.retries
	req["n_retries"] = len(r.retries)
	if r.err == nil {
		resp := map[string]any{"status": r.status}
		if c.cfg.Response.Headers.Store {
			h := map[string]any{}
			for k, vs := range r.headers {
				h[strings.ToLower(k)] = listValue(vs)
			}
			resp["headers"] = h
		}
		if c.cfg.Response.Body.Store {
			var b any = string(r.body)
			if c.cfg.Response.Body.Decode && len(r.body) > 0 {
				var v any
				if err := json.Unmarshal(r.body, &v); err != nil {
					x.Log.Warn("callout response body is not JSON; stored as text", zap.String("callout", c.name), zap.Error(err))
				} else {
					b = v
				}
			}
			resp["body"] = b
		}
		st.ctxMap["response"] = resp
	}
	if r.reason != "" && c.onError != "continue" {
		msg, err := c.errMsg.Render(ctx, x)
		if err != nil {
			return internal(fmt.Errorf("callout %q: rendering error_response_msg: %w", c.name, err))
		}
		cause := r.err
		if cause == nil {
			cause = fmt.Errorf("callout %q: status %d", c.name, r.status)
		}
		return &flows.HTTPError{Status: c.cfg.Request.Error.ErrorResponseCode, Message: msg, Err: cause}
	}
	if c.respLua != nil {
		if err := c.respLua.Run(ctx, x); err != nil {
			return internal(fmt.Errorf("callout %q: response.by_lua: %w", c.name, err))
		}
		if x.Reply != nil {
			return nil
		}
		if e, ok := x.Shared["callouts"].(map[string]any)[c.name].(map[string]any); ok {
			st.ctxMap = e
		}
	}
	if st.cacheOK && r.reason == "" && r.err == nil {
		if resp, ok := st.ctxMap["response"].(map[string]any); ok {
			if enc, ok := encodeResponse(resp); ok {
				keys := []string{st.key}
				if k, ok := mapGet(st.ctxMap, "caching", "cache_key").(string); ok && k != "" && k != st.key {
					keys = append(keys, k)
				}
				for _, k := range keys {
					if err := p.cache.Set(ctx, k, enc, p.ttl); err != nil {
						mCache.WithLabelValues(c.name, "error").Inc()
						x.Log.Warn("callout cache unavailable, result not stored", zap.String("callout", c.name), zap.Error(err))
						break
					}
				}
			}
		}
	}
	return nil
}

// sortedQuery is raw with its pairs sorted by name, or raw itself when it
// is empty or has pairs a parse would drop.
func sortedQuery(raw string) string {
	if raw == "" {
		return ""
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return raw
	}
	return q.Encode()
}

// cacheKey is reference §1.7's key, or caching.cache_key when by_lua set it.
// The digest is SHA-256 over "<len>:<part>|" for each part: route, plugin,
// callout name, method, URL without query, query sorted by name, each
// header (sorted by name, values joined by ","; the default User-Agent and
// trace headers excluded), body (JSON bodies are encoded with sorted keys).
func (p *Plugin) cacheKey(x *flows.Exchange, name string, s *sendReq, entry map[string]any) string {
	if k, ok := mapGet(entry, "caching", "cache_key").(string); ok && k != "" {
		return k
	}
	route := p.scope.Route
	if x.Route != nil {
		route = x.Route.Name
	}
	// Heap buffers, not stack arrays: see prepare.
	b := make([]byte, 0, 128+len(s.body)+64*len(s.headers)+len(s.u.Path)+len(s.u.RawQuery))
	b = keyPart(b, route)
	b = keyPart(b, p.scope.PluginID)
	b = keyPart(b, name)
	b = keyPart(b, s.method)
	u := *s.u
	u.RawQuery = ""
	b = keyPart(b, u.String())
	if s.canonQuery {
		b = keyPart(b, s.u.RawQuery) // already sorted and encoded
	} else {
		b = keyPart(b, sortedQuery(s.u.RawQuery)) // from the URL or a by_lua string
	}
	ks := make([]string, 0, len(s.headers))
	for k := range s.headers {
		if k != "User-Agent" && k != "Traceparent" && k != "Tracestate" {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	for _, k := range ks {
		b = keyPart(b, k)
		vs := s.headers[k]
		n := len(vs) - 1
		for _, v := range vs {
			n += len(v)
		}
		if n < 0 {
			n = 0
		}
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, ':')
		for i, v := range vs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, v...)
		}
		b = append(b, '|')
	}
	b = keyPart(b, s.body)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func keyPart[T string | []byte](b []byte, s T) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	b = append(b, s...)
	return append(b, '|')
}

// parsedURL is a callout's literal url, parsed once.
type parsedURL struct {
	raw string
	u   url.URL
}

// parseURL is url.Parse, from a copy of the parsed literal url when raw is
// that literal (by_lua may change params.url).
func (c *callout) parseURL(raw string) (*url.URL, error) {
	lit, isLit := c.url.(literal)
	if isLit && string(lit) == raw {
		if pu := c.parsed.Load(); pu != nil {
			u := pu.u
			return &u, nil
		}
	}
	u, err := url.Parse(raw)
	if err == nil && isLit && string(lit) == raw {
		c.parsed.Store(&parsedURL{raw: raw, u: *u})
	}
	return u, err
}

// userAgent is the default User-Agent (Version is set before configs load).
func (c *callout) userAgent() string {
	if ua := c.ua.Load(); ua != nil {
		return *ua
	}
	ua := "sidecall/" + Version + "/request-callout"
	c.ua.Store(&ua)
	return ua
}

// validMethod is ^[A-Z]+$.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

// helpers

func listValue(vs []string) any {
	if len(vs) == 1 {
		return vs[0]
	}
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

func stringList(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []string:
		return t
	case []any:
		var out []string
		for _, e := range t {
			out = append(out, stringList(e)...)
		}
		return out
	case nil:
		return nil
	case bool:
		if t {
			return []string{"true"}
		}
		return []string{"false"}
	case float64:
		return []string{strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%f", t), "0"), ".")}
	default:
		return []string{fmt.Sprint(t)}
	}
}

func delFold(m map[string]any, name string) {
	for k := range m {
		if strings.EqualFold(k, name) {
			delete(m, k)
		}
	}
}

func mapGet(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

func truthy(v any) bool { b, _ := v.(bool); return b }

func msValue(v any) time.Duration {
	switch t := v.(type) {
	case int:
		return time.Duration(t) * time.Millisecond
	case int64:
		return time.Duration(t) * time.Millisecond
	case float64:
		return time.Duration(t * float64(time.Millisecond))
	}
	return 0
}

// decodeObject decodes a JSON object body; nil/"" gives nil.
func decodeObject(body any) (map[string]any, error) {
	switch b := body.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return b, nil
	case string:
		if strings.TrimSpace(b) == "" {
			return nil, nil
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(b), &m); err != nil {
			return nil, fmt.Errorf("body is not a JSON object: %w", err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("unexpected body type %T", body)
}
