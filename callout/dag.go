package callout

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sidecall/sidecall/internal/graph"
)

// plan is how a request runs the callouts, computed once at load.
//
// In parallel mode a callout starts the moment every callout it depends on
// (declared and inferred) has finished, bounded by max_parallel; when more
// callouts are ready than workers are free, the one heading the longest
// chain of dependents goes first (critical-path first). In sequential
// mode the callouts run one at a time in Kong's stable order.
type plan struct {
	sequential bool
	// order is Kong's stable topological order (sequential mode).
	order []int
	// dependents[i] are the callouts that depend on callout i.
	dependents [][]int
	// height[i] is the length of the longest chain of callouts depending
	// on i: the dispatch priority.
	height []int
}

// newPlan checks that deps (deps[i]: the callouts i depends on, no
// duplicates) has no cycle and builds the plan. It returns an error
// naming a cycle.
func newPlan(names []string, deps [][]int, sequential bool) (plan, error) {
	if cyc := graph.Cycle(deps); cyc != nil {
		ns := make([]string, len(cyc))
		for i, v := range cyc {
			ns[i] = names[v]
		}
		return plan{}, fmt.Errorf("dependency cycle: %s", strings.Join(ns, " -> "))
	}
	pl := plan{sequential: sequential, dependents: make([][]int, len(deps))}
	if sequential {
		order, ok := graph.StableOrder(deps)
		if !ok {
			return plan{}, errors.New("dependency cycle")
		}
		pl.order = order
		return pl, nil
	}
	for i, ds := range deps {
		for _, d := range ds {
			pl.dependents[d] = append(pl.dependents[d], i)
		}
	}
	// The longest chain of dependents is the depth in the reversed graph.
	pl.height = graph.Depths(pl.dependents)
	return pl, nil
}
