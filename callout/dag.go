package callout

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sidecall/sidecall/internal/graph"
)

// waves groups callouts (indexes) so that every callout comes after all it
// depends on: wave k holds the callouts whose longest dependency chain has
// length k, in declaration order. sequential puts one callout per wave in
// Kong's stable topological order. It returns an error naming a cycle.
func waves(names []string, deps [][]int, sequential bool) ([][]int, error) {
	if cyc := graph.Cycle(deps); cyc != nil {
		ns := make([]string, len(cyc))
		for i, v := range cyc {
			ns[i] = names[v]
		}
		return nil, fmt.Errorf("dependency cycle: %s", strings.Join(ns, " -> "))
	}
	if sequential {
		order, ok := graph.StableOrder(deps)
		if !ok {
			return nil, errors.New("dependency cycle")
		}
		out := make([][]int, len(order))
		for k, i := range order {
			out[k] = []int{i}
		}
		return out, nil
	}
	depth := graph.Depths(deps)
	n := 0
	for _, d := range depth {
		n = max(n, d+1)
	}
	out := make([][]int, n)
	for i, d := range depth {
		out[d] = append(out[d], i)
	}
	return out, nil
}
