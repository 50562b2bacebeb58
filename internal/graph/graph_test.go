package graph

import (
	"reflect"
	"testing"
)

func TestCycle(t *testing.T) {
	if c := Cycle([][]int{{1}, {2}, nil}); c != nil {
		t.Fatalf("acyclic: got %v", c)
	}
	if c := Cycle([][]int{nil, {2}, {3}, {1}}); !reflect.DeepEqual(c, []int{1, 2, 3, 1}) {
		t.Fatalf("got %v, want [1 2 3 1]", c)
	}
	if c := Cycle([][]int{{0}}); !reflect.DeepEqual(c, []int{0, 0}) {
		t.Fatalf("self loop: got %v", c)
	}
}

func TestStableOrder(t *testing.T) {
	// 0 depends on 2; 1 on nothing; 2 on 1: declaration order breaks ties.
	got, ok := StableOrder([][]int{{2}, nil, {1}})
	if !ok || !reflect.DeepEqual(got, []int{1, 2, 0}) {
		t.Fatalf("got %v %v, want [1 2 0]", got, ok)
	}
	if _, ok := StableOrder([][]int{{1}, {0}}); ok {
		t.Fatal("cycle: want ok=false")
	}
}

func TestDepths(t *testing.T) {
	got := Depths([][]int{nil, {0}, {1, 0}, nil})
	if !reflect.DeepEqual(got, []int{0, 1, 2, 0}) {
		t.Fatalf("got %v", got)
	}
}

func TestNamedCycle(t *testing.T) {
	var g Named
	g.Edge("a", "b")
	g.Edge("b", "c")
	if g.Cycle() != nil {
		t.Fatal("acyclic")
	}
	g.Edge("c", "a")
	if c := g.Cycle(); !reflect.DeepEqual(c, []string{"a", "b", "c", "a"}) {
		t.Fatalf("got %v", c)
	}
}
