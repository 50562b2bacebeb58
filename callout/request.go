package callout

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"
	"github.com/sidecall/sidecall/internal/urlsafe"
)

// rendered is a callout's config rendered for one request: what Kong puts
// in request.params, before forwarded headers are added.
type rendered struct {
	url     string
	headers []field    // headers.custom, in name order
	query   url.Values // forwarded and custom query args
	removed []string   // query args set to null
	body    any        // nil, a string (forwarded) or a JSON object
}

type field struct {
	name, value string
	del         bool
}

// render renders the callout's templates: url, custom headers, query and
// body, in that order. A url value its part of the URL cannot take, or a
// control character in a client value headed for a header, the url or the
// query, is a *refusedError.
func render(ctx context.Context, x *flows.Exchange, c *callout) (*rendered, error) {
	cc := &c.cfg.Request
	r := &rendered{}
	var err error
	if r.url, err = c.renderURL(ctx, x); err != nil {
		return nil, err
	}
	if cc.Headers.Forward {
		if err := c.checkForwarded(x); err != nil {
			return nil, err
		}
	}
	if len(c.headers) > 0 {
		r.headers = make([]field, len(c.headers))
		for i, h := range c.headers {
			r.headers[i] = field{name: h.name, del: h.t == nil}
			if h.t == nil {
				continue
			}
			if r.headers[i].value, err = h.t.Render(ctx, x); err != nil {
				return nil, internal(fmt.Errorf("callout %q: rendering header %s: %w", c.name, h.name, err))
			}
			if urlsafe.HasCTL(r.headers[i].value, true) {
				return nil, badClientValue(c.name, "header "+h.name+": a control character in its value")
			}
		}
	}
	if cc.Query.Forward && x.Request.RawQuery != "" {
		r.query, _ = url.ParseQuery(x.Request.RawQuery)
	}
	for _, q := range c.query {
		r.query.Del(q.name)
		if q.t == nil {
			r.removed = append(r.removed, q.name)
			continue
		}
		v, err := q.t.Render(ctx, x)
		if err != nil {
			return nil, internal(fmt.Errorf("callout %q: rendering query %s: %w", c.name, q.name, err))
		}
		if urlsafe.HasCTL(v, false) {
			return nil, badClientValue(c.name, "query "+q.name+": a control character in its value")
		}
		if r.query == nil {
			r.query = url.Values{}
		}
		r.query[q.name] = []string{v}
	}
	if r.body, err = renderBody(ctx, x, c); err != nil {
		return nil, err
	}
	return r, nil
}

// checkForwarded refuses a forwarded client header value with a control
// character (Envoy rejects them; a stand-in or another proxy may not).
func (c *callout) checkForwarded(x *flows.Exchange) error {
	for k, vs := range x.Request.Headers {
		if strings.HasPrefix(k, ":") || httpx.NotForwarded(k) {
			continue
		}
		for _, v := range vs {
			if urlsafe.HasCTL(v, true) && !c.customHeader(k) {
				return badClientValue(c.name, "forwarded header "+k+": a control character in its value")
			}
		}
	}
	return nil
}

// renderBody is request.params.body: the forwarded body, decoded and
// customised when decode is on or body.custom is set.
func renderBody(ctx context.Context, x *flows.Exchange, c *callout) (any, error) {
	cb := &c.cfg.Request.Body
	var body any
	if cb.Forward && len(x.Request.Body) > 0 {
		body = string(x.Request.Body)
	}
	if !cb.Decode && len(c.body) == 0 {
		return body, nil
	}
	m, err := decodeObject(body)
	if err != nil {
		return nil, internal(fmt.Errorf("callout %q: decoding request body: %w", c.name, err))
	}
	if m == nil && len(c.body) == 0 {
		return body, nil
	}
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
			return nil, internal(fmt.Errorf("callout %q: rendering body %s: %w", c.name, kv.name, err))
		}
		m[kv.name] = v
	}
	return m, nil
}

// sendFrom builds the HTTP request from the rendered config, as
// sendFromParams would from the request.params table made of it.
func (p *Plugin) sendFrom(x *flows.Exchange, c *callout, r *rendered) (*sendReq, error) {
	s := &sendReq{method: c.cfg.Request.Method, opts: c.opts}
	u, err := c.checkedURL(r.url)
	if err != nil {
		return nil, err
	}
	if len(r.query) > 0 || len(r.removed) > 0 {
		s.canonQuery = true
		vals := u.Query()
		for _, k := range r.removed {
			vals.Del(k)
		}
		for k, vs := range r.query {
			vals[k] = vs
		}
		u.RawQuery = vals.Encode()
	}
	s.u = u
	s.headers = make(http.Header, len(r.headers)+3)
	if c.cfg.Request.Headers.Forward {
		for k, vs := range x.Request.Headers {
			if strings.HasPrefix(k, ":") || httpx.NotForwarded(k) || c.customHeader(k) {
				continue
			}
			if !httpx.ValidHeaderName(k) {
				return nil, fmt.Errorf("invalid header name")
			}
			for _, v := range vs {
				if err := s.addHeader(k, k, v); err != nil {
					return nil, err
				}
			}
		}
	}
	for i, h := range r.headers {
		if h.del || shadowed(r.headers, i) {
			continue
		}
		if err := s.addHeader(h.name, strings.ToLower(h.name), h.value); err != nil {
			return nil, err
		}
	}
	p.defaultHeaders(x, s)
	if err := s.setBody(r.body); err != nil {
		return nil, err
	}
	return s, nil
}

// customHeader tells whether headers.custom names the lower-case name.
func (c *callout) customHeader(name string) bool {
	for _, h := range c.headers {
		if strings.EqualFold(h.name, name) {
			return true
		}
	}
	return false
}

// shadowed tells whether a later custom header has fs[i]'s name in another
// case (the later one wins, as in a Lua table edited in order).
func shadowed(fs []field, i int) bool {
	for _, f := range fs[i+1:] {
		if strings.EqualFold(f.name, fs[i].name) {
			return true
		}
	}
	return false
}

// addHeader adds one header value: Host sets the request's Host, headers
// that belong to one connection are dropped.
func (s *sendReq) addHeader(name, lower, val string) error {
	if urlsafe.HasCTL(val, true) {
		return fmt.Errorf("header %s: value contains a control character (CR, LF, NUL...)", name)
	}
	if lower == "host" {
		s.host = val
		return nil
	}
	if httpx.NotForwarded(lower) {
		return nil
	}
	ck := http.CanonicalHeaderKey(name)
	s.headers[ck] = append(s.headers[ck], val)
	return nil
}

// defaultHeaders adds the default User-Agent and propagates the client's
// trace context, unless the callout sets them.
func (p *Plugin) defaultHeaders(x *flows.Exchange, s *sendReq) {
	if s.headers.Get("User-Agent") == "" {
		s.headers["User-Agent"] = []string{p.ua}
	}
	if tp := x.Request.Headers.Get("traceparent"); tp != "" && s.headers.Get("Traceparent") == "" && !strings.ContainsAny(tp, "\r\n\x00") {
		s.headers.Set("Traceparent", tp)
		s.clientTrace = tp
		if ts := x.Request.Headers.Get("tracestate"); ts != "" && !strings.ContainsAny(ts, "\r\n\x00") {
			s.headers.Set("Tracestate", ts)
		}
	}
}

// setBody sends a string as it is and anything else as JSON.
func (s *sendReq) setBody(body any) error {
	switch b := body.(type) {
	case nil:
	case string:
		s.body = []byte(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("encoding body: %w", err)
		}
		s.body = enc
		if s.headers.Get("Content-Type") == "" {
			s.headers.Set("Content-Type", "application/json")
		}
	}
	return nil
}
