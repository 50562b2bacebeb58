package callout

import (
	"context"
	"regexp"
	"strings"

	"github.com/sidecall/sidecall/flows"
)

// template is a compiled config value: a literal, or a $(...) template.
type template struct {
	lit string
	t   *flows.Template // nil: lit is the value
}

// Render returns the value for x.
func (t *template) Render(ctx context.Context, x *flows.Exchange) (string, error) {
	if t.t == nil {
		return t.lit, nil
	}
	return flows.RenderString(ctx, t.t, x)
}

// literal tells whether the value is the same for every request.
func (t *template) literal() bool { return t.t == nil }

func (t *template) callouts() []string {
	if t.t == nil {
		return nil
	}
	return t.t.Callouts()
}

func (t *template) dynamic() bool { return t.t != nil && t.t.ReadsCalloutsDynamically() }

// readsRequest tells whether the template may read some
// callouts.<name>.request: any reference to the callouts table other than
// callouts.<name>.response counts.
func (t *template) readsRequest() bool {
	if t.t == nil {
		return false
	}
	if t.dynamic() {
		return true
	}
	return strings.Contains(responseRef.ReplaceAllString(t.t.Source(), ""), "callouts")
}

var responseRef = regexp.MustCompile(`callouts\s*\.\s*[A-Za-z_][A-Za-z0-9_]*\s*\.\s*response\b`)

// compileTemplate returns a literal for plain values (the common case) and
// a compiled template otherwise; nil means b recorded a problem. A value
// starting with '#' is a Lua statement in Kong's templates; Kong tells users
// to write $("#...") for the literal, so the raw form is rejected.
func compileTemplate(b *flows.Builder, src string, at flows.Path) *template {
	if !strings.Contains(src, "$(") {
		if strings.HasPrefix(src, "#") && !b.IsSecret(at) {
			b.Errorf(at, "a value starting with '#' is a Lua statement in Kong; write $(%q) for the literal", src)
			return nil
		}
		return &template{lit: src}
	}
	t := b.Template(src, at)
	if t == nil {
		return nil
	}
	return &template{t: t}
}
