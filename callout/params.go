package callout

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"
	"gopkg.in/yaml.v3"
)

// paramsTable is Kong's request.params for the rendered config: what
// by_lua reads and may edit before the call.
func paramsTable(x *flows.Exchange, c *callout, r *rendered) map[string]any {
	cc := &c.cfg.Request
	params := map[string]any{"url": r.url, "method": cc.Method}
	hdrs := map[string]any{}
	if cc.Headers.Forward {
		for k, vs := range x.Request.Headers {
			if httpx.NotForwarded(k) || strings.HasPrefix(k, ":") {
				continue
			}
			hdrs[k] = listValue(vs)
		}
	}
	for _, h := range r.headers {
		delFold(hdrs, h.name)
		if !h.del {
			hdrs[h.name] = h.value
		}
	}
	params["headers"] = hdrs
	q := make(map[string]any, len(r.query))
	for k, vs := range r.query {
		q[k] = listValue(vs)
	}
	params["query"] = q
	if r.body != nil {
		params["body"] = r.body
	}
	params["decode"] = cc.Body.Decode
	o := cc.HTTPOpts
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
	if t := o.Timeouts; t.Connect != nil && t.Read != nil && t.Write != nil {
		params["timeouts"] = map[string]any{"connect": *t.Connect, "read": *t.Read, "write": *t.Write}
	}
	return params
}

// sendFromParams builds the HTTP request from request.params as by_lua
// left it; removedQuery are the query args the config sets to null.
func (p *Plugin) sendFromParams(x *flows.Exchange, c *callout, entry map[string]any, removedQuery []string) (*sendReq, error) {
	params, _ := mapGet(entry, "request", "params").(map[string]any)
	if params == nil {
		return nil, errors.New("request.params is not a table")
	}
	s := &sendReq{}
	s.method, _ = params["method"].(string)
	if s.method == "" {
		s.method = http.MethodGet
	}
	if !httpx.ValidMethod(s.method) {
		return nil, fmt.Errorf("invalid method %q", s.method)
	}
	raw, _ := params["url"].(string)
	u, err := c.checkedURL(raw)
	if err != nil {
		return nil, err
	}
	// query: url args, then params.query overriding same names.
	switch q := params["query"].(type) {
	case string:
		if q != "" {
			u.RawQuery = q
		}
	case map[string]any:
		if len(q) == 0 && len(removedQuery) == 0 {
			break // nothing customised: the url's query goes as written
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
	for k, v := range hdrs {
		lk := strings.ToLower(k)
		if str, ok := v.(string); ok {
			if err := s.addHeader(k, lk, str); err != nil {
				return nil, err
			}
			continue
		}
		for _, val := range stringList(v) {
			if err := s.addHeader(k, lk, val); err != nil {
				return nil, err
			}
		}
	}
	for k := range s.headers {
		if !httpx.ValidHeaderName(k) {
			return nil, errors.New("invalid header name")
		}
	}
	p.defaultHeaders(x, s)
	if err := s.setBody(params["body"]); err != nil {
		return nil, err
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

// othersReadCallouts tells whether a plugin of the file other than
// request-callout may read kong.ctx.shared.callouts (a post-function
// reading request.params): some value mentions "callouts", or reads
// kong.ctx.shared other than by a plain field.
func othersReadCallouts(cfg *flows.Config) bool {
	if cfg == nil {
		return false
	}
	lists := [][]flows.PluginConfig{cfg.Plugins}
	for _, s := range cfg.Services {
		lists = append(lists, s.Plugins)
		for _, r := range s.Routes {
			lists = append(lists, r.Plugins)
		}
	}
	for _, r := range cfg.Routes {
		lists = append(lists, r.Plugins)
	}
	for _, l := range lists {
		for _, pc := range l {
			if pc.Name != Name && pc.Config != nil && mentionsCallouts(pc.Config) {
				return true
			}
		}
	}
	return false
}

func mentionsCallouts(n *yaml.Node) bool {
	if n.Kind == yaml.ScalarNode {
		return strings.Contains(n.Value, "callouts") || readsSharedDynamically(n.Value)
	}
	for _, c := range n.Content {
		if mentionsCallouts(c) {
			return true
		}
	}
	return false
}

// readsSharedDynamically tells whether s uses "shared" other than as
// shared.<field> (an alias, an index, an iteration).
func readsSharedDynamically(s string) bool {
	for {
		i := strings.Index(s, "shared")
		if i < 0 {
			return false
		}
		s = s[i+len("shared"):]
		if s == "" || (s[0] != '.' && s[0] != '_' && !isAlnum(s[0])) {
			return true
		}
	}
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
