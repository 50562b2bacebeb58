package callout

import (
	"context"
	"strings"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/expr"
)

// template is a compiled $(...) value.
type template interface {
	Render(ctx context.Context, x *flows.Exchange) (string, error)
	Callouts() []string
	Dynamic() bool // reads the callouts table in a way we cannot list
}

// script is a compiled by_lua chunk.
type script interface {
	Run(ctx context.Context, x *flows.Exchange) error
	Callouts() []string
	Dynamic() bool
}

// engine compiles templates and Lua; nil results mean b recorded a problem.
type engine interface {
	Template(b *flows.Builder, src string, at flows.Path) template
	Lua(b *flows.Builder, src string, at flows.Path) script
}

// literal is a value with no $(...).
type literal string

func (l literal) Render(context.Context, *flows.Exchange) (string, error) { return string(l), nil }
func (literal) Callouts() []string                                        { return nil }
func (literal) Dynamic() bool                                             { return false }

// compileTemplate returns a literal for plain values (the common case, no
// engine call) and asks eng otherwise. A value starting with '#' is Lua in
// Penlight; Kong tells users to write $("#...") instead, so it is rejected.
func compileTemplate(b *flows.Builder, eng engine, src string, at flows.Path) template {
	if !strings.Contains(src, "$(") {
		if strings.HasPrefix(src, "#") && !b.IsSecret(at) {
			b.Errorf(at, "a value starting with '#' is a Lua statement in Kong; write $(%q) for the literal", src)
			return nil
		}
		return literal(src)
	}
	return eng.Template(b, src, at)
}

// flowsEngine is the real engine: flows/expr templates and the flows Lua
// sandbox with Kong's PDK.
type flowsEngine struct{}

type flowsTemplate struct{ t *expr.Template }

func (t flowsTemplate) Render(ctx context.Context, x *flows.Exchange) (string, error) {
	return flows.RenderString(ctx, t.t, x)
}
func (t flowsTemplate) Callouts() []string { return t.t.Callouts() }
func (t flowsTemplate) Dynamic() bool      { return t.t.ReadsCalloutsDynamically() }

type flowsScript struct{ c *flows.LuaChunk }

func (s flowsScript) Run(ctx context.Context, x *flows.Exchange) error { return s.c.Run(ctx, x) }
func (s flowsScript) Callouts() []string                               { return s.c.Callouts() }
func (s flowsScript) Dynamic() bool                                    { return s.c.ReadsCalloutsDynamically() }

func (flowsEngine) Template(b *flows.Builder, src string, at flows.Path) template {
	t := b.Template(src, at)
	if t == nil {
		return nil
	}
	return flowsTemplate{t}
}

func (flowsEngine) Lua(b *flows.Builder, src string, at flows.Path) script {
	c := b.Lua(src, at)
	if c == nil {
		return nil
	}
	return flowsScript{c}
}
