package callout

import (
	"testing"

	"github.com/sidecall/sidecall/flows"
)

// Every request-callout example we ship loads with the shipped engine: the
// schema, the $(...) templates and the Lua all compile.
func TestExamplesLoad(t *testing.T) {
	for _, f := range []string{"../examples/request-callout-aggregation.yaml"} {
		t.Run(f, func(t *testing.T) {
			reg := flows.NewRegistry()
			Register(reg)
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
