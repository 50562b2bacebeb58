package callout

import (
	"context"
	"fmt"
	"strings"

	"github.com/sidecall/sidecall/flows"
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

// noEngine is used until the template/Lua engine is wired: it rejects what
// it cannot run at load time, never at request time.
type noEngine struct{}

func (noEngine) Template(b *flows.Builder, src string, at flows.Path) template {
	b.Errorf(at, "templates are not available in this build: %q", src)
	return nil
}

func (noEngine) Lua(b *flows.Builder, _ string, at flows.Path) script {
	b.Errorf(at, "Lua is not available in this build")
	return nil
}

var _ = fmt.Sprint
