package flows

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// orderRegistry has three plugins of the same priority (named so that name
// order and file order differ), one above them and one below. Each adds its
// name to x-ran when it runs (testPlugin).
func orderRegistry() *Registry {
	r := NewRegistry()
	for name, prio := range map[string]int{"tie-c": 500, "tie-a": 500, "tie-b": 500, "high": 900, "low": 10} {
		r.Register(name, prio, func(b *Builder, raw *yaml.Node, at Path) (Plugin, error) {
			var cfg struct {
				Tag string `yaml:"tag"`
			}
			b.Decode(raw, at, &cfg)
			return &testPlugin{name: name, prio: prio}, nil
		})
	}
	return r
}

func ranOrder(t *testing.T, p *Pipeline) []string {
	t.Helper()
	x := NewExchange("id", Request{Method: "GET", Path: "/"}, nil)
	if err := p.Run(context.Background(), PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	return x.Request.Headers.Values("x-ran")
}

// TestEqualPriorityFileOrder: plugins run in priority order, higher first,
// and plugins of equal priority in file order. File order is
// the loader's: the top-level plugins list (scoped entries included), then
// each service's plugins followed by its nested routes' plugins, then the
// top-level routes' plugins. When a more specific instance of a plugin wins,
// it takes its own place in that order.
func TestEqualPriorityFileOrder(t *testing.T) {
	const head = "_format_version: \"3.0\"\n"
	cases := []struct {
		name, src string
		pipeline  func(*Snapshot) *Pipeline
		want      []string
	}{
		{
			name: "global, file order not name order",
			src: head + `plugins:
  - name: low
  - name: tie-c
  - name: tie-a
  - name: high
  - name: tie-b
`,
			pipeline: func(s *Snapshot) *Pipeline { return s.Global },
			want:     []string{"high", "tie-c", "tie-a", "tie-b", "low"},
		},
		{
			name: "global, reversed",
			src: head + `plugins:
  - name: tie-b
  - name: tie-a
  - name: tie-c
`,
			pipeline: func(s *Snapshot) *Pipeline { return s.Global },
			want:     []string{"tie-b", "tie-a", "tie-c"},
		},
		{
			name: "service plugins",
			src: head + `services:
  - name: svc
    url: http://127.0.0.1:1
    plugins:
      - name: tie-b
      - name: tie-a
`,
			pipeline: func(s *Snapshot) *Pipeline { return s.Services["svc"].Pipeline },
			want:     []string{"tie-b", "tie-a"},
		},
		{
			name: "route under a service: global, then service, then route",
			src: head + `services:
  - name: svc
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: tie-a
    plugins:
      - name: tie-c
plugins:
  - name: tie-b
`,
			pipeline: func(s *Snapshot) *Pipeline { return s.RouteByName("r").Pipeline },
			want:     []string{"tie-b", "tie-c", "tie-a"},
		},
		{
			name: "top-level scoped plugins come first",
			src: head + `services:
  - name: svc
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: tie-c
plugins:
  - name: tie-a
    route: r
  - name: tie-b
    service: svc
`,
			pipeline: func(s *Snapshot) *Pipeline { return s.RouteByName("r").Pipeline },
			want:     []string{"tie-a", "tie-b", "tie-c"},
		},
		{
			name: "top-level routes after services",
			src: head + `routes:
  - name: r
    paths: [/]
    plugins:
      - name: tie-a
plugins:
  - name: tie-c
`,
			pipeline: func(s *Snapshot) *Pipeline { return s.RouteByName("r").Pipeline },
			want:     []string{"tie-c", "tie-a"},
		},
		{
			name: "the winning route instance takes the route's place",
			src: head + `services:
  - name: svc
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: tie-a
            config: {tag: route}
plugins:
  - name: tie-a
    config: {tag: global}
  - name: tie-b
`,
			pipeline: func(s *Snapshot) *Pipeline { return s.RouteByName("r").Pipeline },
			want:     []string{"tie-b", "tie-a"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// assemble collects each pipeline through a map: load several
			// times so an order that depends on map iteration shows.
			for i := 0; i < 20; i++ {
				s, err := Load("kong.yml", []byte(c.src), LoadOptions{Registry: orderRegistry()})
				if err != nil {
					t.Fatal(err)
				}
				got := ranOrder(t, c.pipeline(s))
				s.Close()
				if !reflect.DeepEqual(got, c.want) {
					t.Fatalf("load %d ran %s, want %s", i, strings.Join(got, ","), strings.Join(c.want, ","))
				}
			}
		})
	}
}

// TestEqualPriorityWinningInstance: of a plugin configured at several
// scopes, the most specific instance is the one in the pipeline (and runs
// once) while ties with other plugins keep file order.
func TestEqualPriorityWinningInstance(t *testing.T) {
	src := `services:
  - name: svc
    url: http://127.0.0.1:1
    plugins:
      - name: tie-b
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: tie-b
plugins:
  - name: tie-b
  - name: tie-a
`
	s, err := Load("kong.yml", []byte(src), LoadOptions{Registry: orderRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := s.RouteByName("r").Pipeline
	if got := ranOrder(t, p); !reflect.DeepEqual(got, []string{"tie-a", "tie-b"}) {
		t.Fatalf("route ran %v, want [tie-a tie-b] (the route's tie-b comes after the global tie-a)", got)
	}
	if n := len(p.Instances); n != 2 {
		t.Fatalf("%d instances, want 2", n)
	}
	if in := p.Instances[1]; in.Name != "tie-b" || in.Scope.Route != "r" {
		t.Errorf("second instance %s scoped %+v, want the route's tie-b", in.Name, in.Scope)
	}
	// The service's own pipeline (a shared flow's) has only its plugins.
	if got := ranOrder(t, s.Services["svc"].Pipeline); !reflect.DeepEqual(got, []string{"tie-b"}) {
		t.Errorf("service ran %v, want [tie-b]", got)
	}
	// The global pipeline: tie-b was first in the file.
	if got := ranOrder(t, s.Global); !reflect.DeepEqual(got, []string{"tie-b", "tie-a"}) {
		t.Errorf("global ran %v, want [tie-b tie-a]", got)
	}
}
