package callout

import (
	"testing"

	"github.com/sidecall/sidecall/flows"
	"gopkg.in/yaml.v3"
)

// Every request-callout example we ship loads (schema check; the Lua is
// checked once flows/lua is wired).
func TestExamplesLoad(t *testing.T) {
	for _, f := range []string{"../examples/request-callout-aggregation.yaml"} {
		t.Run(f, func(t *testing.T) {
			reg := flows.NewRegistry()
			reg.Register(Name, Priority, func(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
				return newWith(b, raw, at, fakeEngine{anyLua: true})
			})
			snap, err := flows.LoadFile(f, flows.LoadOptions{Registry: reg})
			if err != nil {
				t.Fatal(err)
			}
			defer snap.Close()
			n := 0
			for _, r := range snap.Routes {
				for _, in := range r.Pipeline.Instances {
					if in.Name == Name {
						n++
					}
				}
			}
			if n != 2 {
				t.Fatalf("request-callout instances = %d, want 2", n)
			}
		})
	}
}
