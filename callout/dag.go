package callout

import (
	"fmt"
	"strings"
)

// waves groups callouts (indexes) so that every callout comes after all it
// depends on: wave k holds the callouts whose longest dependency chain has
// length k, in declaration order. sequential puts one callout per wave in
// Kong's stable topological order. It returns an error naming a cycle.
func waves(names []string, deps [][]int, sequential bool) ([][]int, error) {
	n := len(names)
	level := make([]int, n)
	state := make([]int, n) // 0 new, 1 visiting, 2 done
	var stack []int
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case 1:
			var cyc []string
			start := 0
			for k, v := range stack {
				if v == i {
					start = k
				}
			}
			for _, v := range stack[start:] {
				cyc = append(cyc, names[v])
			}
			cyc = append(cyc, names[i])
			return fmt.Errorf("dependency cycle: %s", strings.Join(cyc, " -> "))
		case 2:
			return nil
		}
		state[i] = 1
		stack = append(stack, i)
		lv := 0
		for _, d := range deps[i] {
			if err := visit(d); err != nil {
				return err
			}
			if level[d]+1 > lv {
				lv = level[d] + 1
			}
		}
		stack = stack[:len(stack)-1]
		level[i] = lv
		state[i] = 2
		return nil
	}
	for i := 0; i < n; i++ {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	if sequential {
		// Kong: stable topological sort, declaration order breaks ties.
		done := make([]bool, n)
		var out [][]int
		for len(out) < n {
			progressed := false
			for i := 0; i < n; i++ {
				if done[i] {
					continue
				}
				ready := true
				for _, d := range deps[i] {
					if !done[d] {
						ready = false
						break
					}
				}
				if ready {
					done[i] = true
					out = append(out, []int{i})
					progressed = true
					break
				}
			}
			if !progressed {
				return nil, fmt.Errorf("dependency cycle")
			}
		}
		return out, nil
	}
	max := 0
	for _, l := range level {
		if l > max {
			max = l
		}
	}
	out := make([][]int, max+1)
	for i := 0; i < n; i++ {
		out[level[i]] = append(out[level[i]], i)
	}
	return out, nil
}
