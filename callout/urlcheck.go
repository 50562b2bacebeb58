package callout

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/urlsafe"
	"go.uber.org/zap"
)

// compileURL splits request.url by its written text (urlsafe.Compile) and
// compiles each $(...) alone, so each value is encoded for the part of the
// URL it stands in; it makes the callout's host policy from
// request.allowed_hosts and the process's own listeners.
func compileURL(b *flows.Builder, c *callout, r RequestConfig, rp flows.Path, self *urlsafe.Self) {
	at := rp.Key("url")
	var parts []urlsafe.Part
	if c.url.literal() {
		parts = []urlsafe.Part{{Text: c.url.lit}}
	} else {
		if problemAt(b, at) {
			return // the whole template was refused; say it once
		}
		// Written text holds no "$(": each one found is the next placeholder.
		src := c.url.t.Source()
		for _, code := range c.url.t.Code() {
			ph := "$(" + code + ")"
			i := strings.Index(src, ph)
			if i < 0 {
				b.Errorf(at, "cannot split the url template")
				return
			}
			parts = append(parts, urlsafe.Part{Text: src[:i]}, urlsafe.Part{Value: true})
			src = src[i+len(ph):]
			t := b.Template(ph, at)
			if t == nil {
				return
			}
			c.urlVals = append(c.urlVals, t)
		}
		parts = append(parts, urlsafe.Part{Text: src})
	}
	t, err := urlsafe.Compile(parts)
	if err != nil {
		if !c.url.literal() { // validate reported a literal's problem
			b.Errorf(at, "%v", err)
		}
		return
	}
	pol, err := urlsafe.NewHostPolicy(r.AllowedHosts, self)
	if err != nil {
		return // validate reported it
	}
	c.urlT, c.hosts = t, pol
	switch {
	case t.HostDynamic() && len(r.AllowedHosts) == 0:
		b.Warnf("%s: the host comes from a template and allowed_hosts is empty: every call is refused until allowed_hosts lists the hosts it may reach", at)
	case !t.HostDynamic() && len(r.AllowedHosts) > 0:
		b.Warnf("%s: allowed_hosts has no effect: the url's host is written in the config", rp.Key("allowed_hosts"))
	}
}

func problemAt(b *flows.Builder, at flows.Path) bool {
	for _, p := range b.Problems() {
		if p.Path == at {
			return true
		}
	}
	return false
}

// renderURL renders request.url: each $(...) value encoded for its part of
// the URL. A value the URL cannot take is a *refusedError.
func (c *callout) renderURL(ctx context.Context, x *flows.Exchange) (string, error) {
	if c.urlT == nil || len(c.urlVals) == 0 {
		return c.url.Render(ctx, x)
	}
	vals := make([]string, len(c.urlVals))
	for i, t := range c.urlVals {
		v, err := flows.RenderString(ctx, t, x)
		if err != nil {
			return "", internal(fmt.Errorf("callout %q: rendering url: %w", c.name, err))
		}
		vals[i] = v
	}
	s, r := c.urlT.Render(vals)
	if r != nil {
		return "", &refusedError{callout: c.name, r: r}
	}
	return s, nil
}

// checkedURL parses the url to send (rendered, or as request.by_lua left
// it) and checks it: http(s) with a host, the scheme, userinfo, host and
// port the config writes unchanged, a templated host allowed.
func (c *callout) checkedURL(raw string) (*url.URL, error) {
	if c.parsed != nil && raw == c.url.lit {
		u := *c.parsed
		return &u, nil // the config's own url
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, &refusedError{callout: c.name, r: &urlsafe.Refusal{Reason: urlsafe.InvalidURL, Why: "the url does not parse"}}
	}
	if c.urlT == nil {
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, &refusedError{callout: c.name, r: &urlsafe.Refusal{Reason: urlsafe.InvalidURL, Why: "not an http or https URL"}}
		}
		return u, nil
	}
	if r := c.urlT.Check(u, c.hosts); r != nil {
		return nil, &refusedError{callout: c.name, r: r}
	}
	return u, nil
}

// refusedError is a callout not sent: a url refused, or a control
// character from the client. Its text names the callout and the rule,
// never the value.
type refusedError struct {
	callout string
	r       *urlsafe.Refusal
}

func (e *refusedError) Error() string {
	if e.callout == "" {
		return fmt.Sprintf("upstream: %v", e.r)
	}
	return fmt.Sprintf("callout %q: %v", e.callout, e.r)
}

func badClientValue(callout, why string) error {
	return &refusedError{callout: callout, r: &urlsafe.Refusal{Reason: urlsafe.BadClientValue, Why: why}}
}

func asRefused(err error) *refusedError {
	var re *refusedError
	if errors.As(err, &re) {
		return re
	}
	return nil
}

// errBadClientValue is the client's answer when a value it sent holds a
// control character: 400, logged at info (not a server error).
func (p *Plugin) errBadClientValue(x *flows.Exchange, re *refusedError) error {
	p.m.refuse(p.scope.Route, re.callout, re.r.Reason)
	x.Log.Info("request-callout: control character in a client value; not sent",
		zap.String("callout", re.callout), zap.String("why", re.r.Why))
	return &flows.HTTPError{Status: http.StatusBadRequest, Message: "invalid character in the request", Err: re}
}

// refused turns a refusal into the callout's outcome: a control character
// from the client answers 400; a refused url fails the callout under its
// on_error policy (never retried: the same url would be refused again), as
// a transport error would.
func (p *Plugin) refused(x *flows.Exchange, calls map[string]any, c *callout, entry map[string]any, re *refusedError) (*state, error) {
	if re.r.Reason == urlsafe.BadClientValue {
		return nil, p.errBadClientValue(x, re)
	}
	p.m.refuse(p.scope.Route, c.name, re.r.Reason)
	p.warnFailed(x, c, "request-callout: url refused; not sent", string(re.r.Reason), re)
	if entry == nil {
		entry = map[string]any{"request": map[string]any{"retries": []any{}, "n_retries": 0},
			"caching": map[string]any{"bypass": c.cfg.Cache.Bypass}}
		calls[c.name] = entry
	}
	return &state{c: c, ctxMap: entry, result: &result{err: re, reason: "error", retries: []any{}}}, nil
}

// errCanceled is the outcome when the client went away: not a server
// error (the engine logs only 5xx), logged at debug; nobody reads the
// answer.
func errCanceled(x *flows.Exchange, err error) error {
	x.Log.Debug("request-callout: the client canceled the request", zap.Error(err))
	return &flows.HTTPError{Status: statusClientClosed, Message: "client closed request", Err: err}
}

// statusClientClosed is nginx's 499 "client closed request".
const statusClientClosed = 499
