package callout

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"go.uber.org/zap"
)

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
	if r.err != nil && asRefused(r.err) == nil {
		p.warnFailed(x, c, "request-callout: callout failed", failReason(r.err), r.err)
	}
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
	if r.reason != "" {
		p.markPartial(x, c.name)
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
						c.m.cacheError()
						x.Log.Warn("callout cache unavailable, result not stored", zap.String("callout", c.name), zap.Error(err))
						break
					}
				}
			}
		}
	}
	return nil
}
