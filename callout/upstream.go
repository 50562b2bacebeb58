package callout

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/urlsafe"
)

// applyUpstream is config.upstream: custom values are rendered first (so
// they can read incoming headers), then forwarding is applied, then the
// custom values, then upstream.by_lua.
func (p *Plugin) applyUpstream(ctx context.Context, x *flows.Exchange) error {
	u := &p.up
	type rendered struct {
		name string
		val  string
		del  bool
	}
	render := func(kvs []kv, what string) ([]rendered, error) {
		out := make([]rendered, 0, len(kvs))
		for _, e := range kvs {
			if e.t == nil {
				out = append(out, rendered{name: e.name, del: true})
				continue
			}
			v, err := e.t.Render(ctx, x)
			if err != nil {
				return nil, internal(fmt.Errorf("upstream: rendering %s %s: %w", what, e.name, err))
			}
			out = append(out, rendered{name: e.name, val: v})
		}
		return out, nil
	}
	hs, err := render(u.headers, "header")
	if err != nil {
		return err
	}
	qs, err := render(u.query, "query")
	if err != nil {
		return err
	}
	bs, err := render(u.body, "body")
	if err != nil {
		return err
	}
	for _, h := range hs {
		if urlsafe.HasCTL(h.val, true) {
			// Literal values are checked at load: this one came from a template.
			return p.errBadClientValue(x, &refusedError{r: &urlsafe.Refusal{Reason: urlsafe.BadClientValue,
				Why: "upstream header " + h.name + ": a control character in its value"}})
		}
	}

	if !u.cfg.Headers.Forward {
		for _, k := range x.Request.Headers.Keys() {
			if !strings.HasPrefix(k, ":") {
				x.ClearHeader(k)
			}
		}
	}
	for _, h := range hs {
		if h.del {
			x.ClearHeader(h.name)
		} else {
			x.SetHeader(h.name, h.val)
		}
	}

	if !u.cfg.Query.Forward && x.Request.RawQuery != "" {
		x.SetRawQuery("")
	}
	if len(qs) > 0 {
		vals, _ := url.ParseQuery(x.Request.RawQuery)
		for _, q := range qs {
			vals.Del(q.name)
			if !q.del {
				vals.Set(q.name, q.val)
			}
		}
		x.SetRawQuery(vals.Encode())
	}

	switch {
	case !u.cfg.Body.Forward:
		if len(x.Request.Body) > 0 {
			x.SetBody(nil)
		}
	case len(bs) > 0:
		var m map[string]any
		if len(strings.TrimSpace(string(x.Request.Body))) > 0 {
			if err := json.Unmarshal(x.Request.Body, &m); err != nil || m == nil {
				return internal(fmt.Errorf("upstream: body customisation needs a JSON object body: %v", err))
			}
		} else {
			m = map[string]any{}
			x.SetHeader("content-type", "application/json")
		}
		for _, b := range bs {
			delete(m, b.name)
			if !b.del {
				m[b.name] = b.val
			}
		}
		enc, err := json.Marshal(m)
		if err != nil {
			return internal(fmt.Errorf("upstream: encoding body: %w", err))
		}
		x.SetBody(enc)
	}

	if u.lua != nil {
		if err := u.lua.Run(ctx, x); err != nil {
			return internal(fmt.Errorf("upstream.by_lua: %w", err))
		}
	}
	return nil
}
