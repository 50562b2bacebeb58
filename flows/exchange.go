package flows

import (
	"strings"

	"github.com/google/uuid"

	"go.uber.org/zap"
)

// Phase is the Kong phase a plugin runs in.
type Phase int

const (
	PhaseAccess Phase = iota
	PhaseHeaderFilter
	PhaseBodyFilter
)

func (p Phase) String() string {
	switch p {
	case PhaseAccess:
		return "access"
	case PhaseHeaderFilter:
		return "header_filter"
	case PhaseBodyFilter:
		return "body_filter"
	}
	return "unknown"
}

// Request is the client request as the upstream will see it, but for the
// route's own path and host rewrite (UpstreamURI): Path stays the client's,
// as Kong's kong.request.get_path. Read it freely; change it only through
// the Exchange's Set* methods so the change is sent.
type Request struct {
	Method    string
	Scheme    string
	Authority string
	Path      string // without the query
	RawQuery  string // without the '?'
	Headers   Headers
	Body      []byte
	HasBody   bool // Body holds the whole buffered body
}

// Response is the upstream (or local) response in the response phases.
type Response struct {
	Status  int
	Headers Headers
	Body    []byte
	HasBody bool
}

// Reply is a response sidecall sends to the client itself.
type Reply struct {
	Status  int
	Headers Headers
	Body    []byte
}

// Captures are a regex route's path captures (Kong's uri_captures).
type Captures struct {
	Named      map[string]string
	Positional []string // 1-based in Lua; index 0 here is capture 1
}

// Exchange is one HTTP request's state: Kong's kong.ctx.shared plus the
// request/response views and the pending changes. It is owned by the
// stream's goroutine.
type Exchange struct {
	ID         string // request id (Envoy's x-request-id, else generated)
	Route      *Route // nil when no route matched
	Captures   Captures
	Attributes map[string]string // Envoy request attributes, e.g. "source.address"
	Request    Request
	Response   Response
	Shared     map[string]any // kong.ctx.shared
	Log        *zap.Logger
	Phase      Phase

	// Reply, once set, ends the pipeline and answers the client.
	Reply *Reply

	// OriginalBody is the client's body before any plugin changed it.
	OriginalBody []byte

	// Changed header names, lower-case, each once: a handful at most, so
	// slices beat maps.
	reqHeadersChanged  []string
	respHeadersChanged []string
	pathChanged        bool
	pathSet            bool // SetPath: the plugin's path replaces upPath, as Kong's set_path does
	methodChanged      bool
	bodyChanged        bool
	respBodyChanged    bool
	statusChanged      bool

	// early holds response header changes made before the response
	// exists (kong.response.set_header in access); the orchestrator
	// applies them when the response phases start.
	early []respHeaderOp
	base  *zap.Logger // Log without request fields, for error logs

	// upPath and upAuthority are Kong's upstream path and host for the
	// route (Snapshot.SelectRoute), "" when the client's stand; upSent once
	// they went with a request mutation.
	upPath, upAuthority string
	upSent              bool
	idSet               bool // SetID ran
}

type respHeaderOp struct {
	op          byte // 's'et, 'a'dd, 'c'lear
	name, value string
}

// applyEarlyResponseHeaders applies response header changes made in access
// to the response or to the local reply, whichever exists now.
func (x *Exchange) applyEarlyResponseHeaders() {
	if len(x.early) == 0 {
		return
	}
	ops := x.early
	x.early = nil
	if x.Reply == nil && x.Response.Headers == nil {
		x.Response.Headers = Headers{}
	}
	for _, o := range ops {
		switch o.op {
		case 's':
			x.SetResponseHeader(o.name, o.value)
		case 'a':
			x.AddResponseHeader(o.name, o.value)
		case 'c':
			x.ClearResponseHeader(o.name)
		}
	}
}

// SetResponseHeaderEarly sets a response header from the access phase, as
// kong.response.set_header does there: it applies when the response (or a
// local reply) goes through the response phases.
func (x *Exchange) SetResponseHeaderEarly(name, value string) {
	x.early = append(x.early, respHeaderOp{'s', name, value})
}

// HasEarlyResponseHeaders tells whether response header changes wait for
// the response.
func (x *Exchange) HasEarlyResponseHeaders() bool { return len(x.early) > 0 }

// BodyChanged tells whether a plugin replaced the request body since the
// last ResetChanges.
func (x *Exchange) BodyChanged() bool { return x.bodyChanged }

// NewExchange returns an Exchange for a request.
func NewExchange(id string, req Request, log *zap.Logger) *Exchange {
	if req.Headers == nil {
		req.Headers = Headers{}
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Exchange{ID: id, Request: req, Shared: map[string]any{}, Log: log, base: log, OriginalBody: req.Body}
}

// EnsureID gives the request an id when Envoy sent none, so an error body
// and the logs about it name the same one for the rest of the request.
func (x *Exchange) EnsureID() string {
	if x.ID == "" {
		x.ID = uuid.NewString()
	}
	return x.ID
}

// SetHeader replaces an upstream request header.
func (x *Exchange) SetHeader(name, value string) {
	x.Request.Headers.Set(name, value)
	x.markReq(name)
}

// AddHeader adds a value to an upstream request header.
func (x *Exchange) AddHeader(name, value string) {
	x.Request.Headers.Add(name, value)
	x.markReq(name)
}

// ClearHeader removes an upstream request header.
func (x *Exchange) ClearHeader(name string) {
	x.Request.Headers.Del(name)
	x.markReq(name)
}

func (x *Exchange) markReq(name string) { x.reqHeadersChanged = addName(x.reqHeadersChanged, name) }

func addName(names []string, name string) []string {
	name = strings.ToLower(name)
	for _, n := range names {
		if n == name {
			return names
		}
	}
	return append(names, name)
}

// SetPath changes the upstream path (without the query). Like Kong's
// set_path it replaces the route's upstream path (strip_path, service path).
func (x *Exchange) SetPath(p string) { x.Request.Path = p; x.pathChanged = true; x.pathSet = true }

// SetID makes id the request's id from here on (the correlation-id
// plugin's value): error bodies and their log lines name it. Log lines
// that named the id the request began with name this one as correlation_id.
func (x *Exchange) SetID(id string) {
	if id == "" || id == x.ID {
		return
	}
	if x.ID == "" {
		x.Log = x.Log.WithLazy(zap.String("request_id", id))
	} else {
		x.Log = x.Log.WithLazy(zap.String("correlation_id", id))
	}
	x.ID = id
	x.idSet = true
}

// CorrelationID is the id SetID gave the request (the correlation-id
// plugin's value), or "" when no plugin set one.
func (x *Exchange) CorrelationID() string {
	if !x.idSet {
		return ""
	}
	return x.ID
}

// UpstreamURI is the :path to send: the path a plugin set, else the
// route's upstream path, else the client's; then the query.
func (x *Exchange) UpstreamURI() string {
	p := x.Request.Path
	if !x.pathSet && x.upPath != "" {
		p = x.upPath
	}
	if x.Request.RawQuery != "" {
		p += "?" + x.Request.RawQuery
	}
	return p
}

// SetRawQuery changes the upstream query string (without the '?').
func (x *Exchange) SetRawQuery(q string) { x.Request.RawQuery = q; x.pathChanged = true }

// SetMethod changes the upstream method.
func (x *Exchange) SetMethod(m string) { x.Request.Method = strings.ToUpper(m); x.methodChanged = true }

// SetBody replaces the upstream request body.
func (x *Exchange) SetBody(b []byte) {
	x.Request.Body = b
	x.Request.HasBody = true
	x.bodyChanged = true
}

// SetResponseHeader replaces a response header sent to the client.
func (x *Exchange) SetResponseHeader(name, value string) {
	if x.Reply != nil {
		x.Reply.Headers.Set(name, value)
		return
	}
	x.Response.Headers.Set(name, value)
	x.markResp(name)
}

// AddResponseHeader adds a response header value.
func (x *Exchange) AddResponseHeader(name, value string) {
	if x.Reply != nil {
		x.Reply.Headers.Add(name, value)
		return
	}
	x.Response.Headers.Add(name, value)
	x.markResp(name)
}

// ClearResponseHeader removes a response header.
func (x *Exchange) ClearResponseHeader(name string) {
	if x.Reply != nil {
		x.Reply.Headers.Del(name)
		return
	}
	x.Response.Headers.Del(name)
	x.markResp(name)
}

func (x *Exchange) markResp(name string) { x.respHeadersChanged = addName(x.respHeadersChanged, name) }

// SetResponseStatus changes the status sent to the client.
func (x *Exchange) SetResponseStatus(code int) { x.Response.Status = code; x.statusChanged = true }

// SetResponseBody replaces the response body sent to the client.
func (x *Exchange) SetResponseBody(b []byte) {
	x.Response.Body = b
	x.Response.HasBody = true
	x.respBodyChanged = true
}

// Respond makes sidecall answer the client itself; the pipeline stops.
func (x *Exchange) Respond(status int, headers Headers, body []byte) {
	if headers == nil {
		headers = Headers{}
	}
	x.Reply = &Reply{Status: status, Headers: headers, Body: body}
}

// Changes reports what the plugins changed, for the processor.
type Changes struct {
	RequestHeaders  []string // lower-case names set, added or removed
	ResponseHeaders []string
	Path            bool // a plugin changed the path or query: send UpstreamURI and re-route
	// RoutePath: the route's upstream path (strip_path, service path)
	// differs from the client's: send UpstreamURI, the route stays.
	RoutePath bool
	// Authority is the service host for :authority (preserve_host false),
	// "" to keep the client's; a plugin's host header wins over it.
	Authority    string
	Method       bool
	Body         bool
	ResponseBody bool
	Status       bool
}

// Changes returns what changed since the last ResetChanges.
func (x *Exchange) Changes() Changes {
	c := Changes{Path: x.pathChanged, Method: x.methodChanged, Body: x.bodyChanged,
		ResponseBody: x.respBodyChanged, Status: x.statusChanged,
		RoutePath: x.upPath != "" && !x.pathSet && !x.upSent}
	if !x.upSent {
		c.Authority = x.upAuthority
	}
	c.RequestHeaders = append([]string(nil), x.reqHeadersChanged...)
	c.ResponseHeaders = append([]string(nil), x.respHeadersChanged...)
	return c
}

// ResetChanges forgets recorded changes once they are sent to Envoy.
func (x *Exchange) ResetChanges() {
	x.reqHeadersChanged, x.respHeadersChanged = nil, nil
	x.pathChanged, x.methodChanged, x.bodyChanged = false, false, false
	x.respBodyChanged, x.statusChanged = false, false
	x.upSent = true
}
