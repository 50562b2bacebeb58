package lua

import "go.uber.org/zap"

// Host is what the PDK reads and changes: one request, in one phase. The
// flows package implements it over *flows.Exchange. Header maps have
// lower-case keys; Host methods are called from one goroutine at a time.
type Host interface {
	// Phase is "rewrite", "access", "header_filter", "body_filter" or
	// "log".
	Phase() string

	Method() string
	Scheme() string
	Host() string // without the port
	Port() int
	Path() string     // without the query
	RawQuery() string // without the '?'
	Headers() map[string][]string
	Body() (body []byte, buffered bool)

	SetHeader(name, value string)
	AddHeader(name, value string)
	ClearHeader(name string)
	SetPath(p string)
	SetRawQuery(q string)
	SetMethod(m string)
	SetBody(b []byte)

	Status() int
	ResponseHeaders() map[string][]string
	SetResponseHeader(name, value string)
	AddResponseHeader(name, value string)
	ClearResponseHeader(name string)
	SetStatus(code int)
	ResponseBody() (body []byte, buffered bool)
	SetResponseBody(b []byte)

	// Exit answers the client; the chunk stops.
	Exit(status int, body []byte, headers map[string][]string)

	// Shared is kong.ctx.shared; the PDK reads and writes it live.
	Shared() map[string]any
	Logger() *zap.Logger
	// Vault resolves a {vault://...} reference.
	Vault(ref string) (string, error)
	// Var is ngx.var.NAME.
	Var(name string) (string, bool)
}

// Vars are a template's variables (Kong's request-callout and
// request-transformer template environment).
type Vars struct {
	Headers    map[string][]string // lower-case keys
	RawQuery   string
	Query      map[string]any // ParseQuery(RawQuery) when nil
	Named      map[string]string
	Positional []string
	Shared     map[string]any // Host.Shared() when nil
}

// QueryParams returns v.Query, parsing RawQuery once if needed.
func (v *Vars) QueryParams() map[string]any {
	if v.Query == nil {
		v.Query = ParseQuery(v.RawQuery)
	}
	return v.Query
}

// SharedMap returns the shared table for v and h.
func (v *Vars) SharedMap(h Host) map[string]any {
	if v.Shared == nil && h != nil {
		v.Shared = h.Shared()
	}
	return v.Shared
}
