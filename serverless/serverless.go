package serverless

import (
	"context"
	"sync"
	"time"

	"github.com/sidecall/sidecall/flows"
	"go.uber.org/zap"

	"gopkg.in/yaml.v3"
)

// Kong's priorities for the serverless plugins.
const (
	PreFunctionPriority  = 1000000
	PostFunctionPriority = -1000
)

// Register adds pre-function and post-function to r.
func Register(r *flows.Registry) {
	r.Register("pre-function", PreFunctionPriority, serverlessFactory("pre-function", PreFunctionPriority))
	r.Register("post-function", PostFunctionPriority, serverlessFactory("post-function", PostFunctionPriority))
}

type serverlessConfig struct {
	Certificate  []string   `yaml:"certificate"`
	Rewrite      []string   `yaml:"rewrite"`
	Access       []string   `yaml:"access"`
	HeaderFilter []string   `yaml:"header_filter"`
	BodyFilter   []string   `yaml:"body_filter"`
	Log          []string   `yaml:"log"`
	Functions    *yaml.Node `yaml:"functions"`
}

// serverless is Kong's pre-function / post-function: Lua chunks per phase,
// run in order. rewrite chunks run first in the access phase (sidecall has
// no separate rewrite phase); certificate chunks are compiled (so their
// syntax is checked) and a warning says they never run. log chunks run on
// a flows.LogCopy in a goroutine once the plugin's last response phase
// (body_filter when it has body_filter chunks, else header_filter) is
// done: off the request path, as in Kong; at most maxLogRuns at once, a
// request beyond that skips them with a warning. A chunk error stops the
// phase's later chunks. Needs are found statically: kong.request.get_body/
// get_raw_body, kong.service.request.set_body/set_raw_body or ngx.req's
// body functions in rewrite/access (or kong.request aliased) ask for the
// request body; header_filter and log chunks or early kong.response/
// ngx.header changes for response headers; body_filter chunks or
// kong.service.request.enable_buffering for the buffered response body.
type serverless struct {
	name     string
	priority int
	rewrite  []*flows.LuaChunk
	access   []*flows.LuaChunk
	header   []*flows.LuaChunk
	body     []*flows.LuaChunk
	log      []*flows.LuaChunk
	needs    flows.Needs
	luaLimit time.Duration // the time limit of one chunk run (budget.go)
}

func serverlessFactory(name string, priority int) flows.Factory {
	return func(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
		var c serverlessConfig
		b.Decode(raw, at, &c)
		if c.Functions != nil {
			b.Errorf(at.Key("functions"), "the legacy functions field is not supported (Kong removed it in 2.0); put the chunks in access (or rewrite, header_filter, body_filter)")
		}
		if len(c.Certificate)+len(c.Rewrite)+len(c.Access)+len(c.HeaderFilter)+len(c.BodyFilter)+len(c.Log) == 0 && c.Functions == nil {
			b.Errorf(at, "at least one of these fields must be non-empty: 'rewrite', 'access', 'header_filter', 'body_filter'")
		}
		p := &serverless{name: name, priority: priority, luaLimit: b.LuaTimeLimit()}
		compile := func(field string, srcs []string) []*flows.LuaChunk {
			var out []*flows.LuaChunk
			for i, src := range srcs {
				if ch := b.Lua(src, at.Key(field).Index(i)); ch != nil {
					out = append(out, ch)
				}
			}
			return out
		}
		if len(c.Certificate) > 0 {
			compile("certificate", c.Certificate) // still reported if they do not compile
			b.Warnf("%s: %s certificate chunks are accepted but never run (sidecall has no certificate phase)", at.Key("certificate"), name)
		}
		p.log = compile("log", c.Log)
		for _, ch := range p.log {
			ch.AsLog()
		}
		p.rewrite = compile("rewrite", c.Rewrite)
		for _, ch := range p.rewrite {
			ch.AsRewrite()
		}
		p.access = compile("access", c.Access)
		p.header = compile("header_filter", c.HeaderFilter)
		p.body = compile("body_filter", c.BodyFilter)
		for _, ch := range append(append([]*flows.LuaChunk(nil), p.rewrite...), p.access...) {
			// Kong's set_raw_body/set_body read the client body first
			// (ngx.req.read_body); buffering it here also lets the
			// replacement go out in the body phase with a matching
			// content-length (from the headers phase Envoy drops
			// content-length and the upstream gets a chunked body).
			for _, f := range []string{"kong.request.get_body", "kong.request.get_raw_body",
				"kong.service.request.set_raw_body", "kong.service.request.set_body",
				"ngx.req.read_body", "ngx.req.get_body_data", "ngx.req.get_post_args", "ngx.req.set_body_data"} {
				if ch.UsesKong(f) {
					p.needs.RequestBody = true
				}
			}
			// Kong's enable_buffering: the response body is read whole.
			if ch.UsesKong("kong.service.request.enable_buffering") {
				p.needs.ResponseBody = true
			}
		}
		p.needs.ResponseHeaders = len(p.header) > 0 || len(p.body) > 0 || len(p.log) > 0
		for _, ch := range append(append([]*flows.LuaChunk(nil), p.rewrite...), p.access...) {
			if ch.SetsResponseHeaders() {
				p.needs.ResponseHeaders = true // applied once the response exists
			}
		}
		p.needs.ResponseBody = p.needs.ResponseBody || len(p.body) > 0
		return p, nil
	}
}

func (p *serverless) Name() string       { return p.name }
func (p *serverless) Priority() int      { return p.priority }
func (p *serverless) Needs() flows.Needs { return p.needs }

func runChunks(ctx context.Context, x *flows.Exchange, chunks []*flows.LuaChunk) error {
	for _, c := range chunks {
		if err := c.Run(ctx, x); err != nil {
			return err
		}
		if x.Reply != nil && x.Phase == flows.PhaseAccess {
			return nil
		}
	}
	return nil
}

func (p *serverless) Access(ctx context.Context, x *flows.Exchange) error {
	if err := runChunks(ctx, x, p.rewrite); err != nil || x.Reply != nil {
		return err
	}
	return runChunks(ctx, x, p.access)
}

func (p *serverless) HeaderFilter(ctx context.Context, x *flows.Exchange) error {
	err := runChunks(ctx, x, p.header)
	if len(p.body) == 0 {
		p.startLog(x)
	}
	return err
}

func (p *serverless) BodyFilter(ctx context.Context, x *flows.Exchange) error {
	err := runChunks(ctx, x, p.body)
	if len(p.body) > 0 {
		p.startLog(x)
	}
	return err
}

const maxLogRuns = 64

var (
	logSlots = make(chan struct{}, maxLogRuns)
	logRuns  sync.WaitGroup // tests wait on it
)

// startLog runs the log chunks on a copy of x, off the request path.
func (p *serverless) startLog(x *flows.Exchange) {
	if len(p.log) == 0 {
		return
	}
	select {
	case logSlots <- struct{}{}:
	default:
		if x.Log != nil {
			x.Log.Warn("log phase chunks skipped: too many running", zap.String("plugin", p.name))
		}
		return
	}
	cp := flows.LogCopy(x)
	logRuns.Add(1)
	go func() {
		defer func() { <-logSlots; logRuns.Done() }()
		_ = runChunks(context.Background(), cp, p.log) // errors are logged by Run
	}()
}
