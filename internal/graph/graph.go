// Package graph holds the dependency-graph helpers the loader and the
// callout scheduler share. Nodes are indexes 0..n-1; deps[i] lists the
// nodes i depends on (that must come before it).
package graph

// Cycle returns one dependency cycle as node indexes, its first node
// repeated at the end, or nil. Nodes are tried in index order, so the
// answer is stable for a given graph.
func Cycle(deps [][]int) []int {
	state := make([]byte, len(deps)) // 0 new, 1 on the stack, 2 done
	var stack []int
	var visit func(i int) []int
	visit = func(i int) []int {
		state[i] = 1
		stack = append(stack, i)
		for _, d := range deps[i] {
			switch state[d] {
			case 1:
				for k, v := range stack {
					if v == d {
						return append(append([]int(nil), stack[k:]...), d)
					}
				}
			case 0:
				if c := visit(d); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = 2
		return nil
	}
	for i := range deps {
		if state[i] == 0 {
			if c := visit(i); c != nil {
				return c
			}
		}
	}
	return nil
}

// StableOrder is the stable topological order: at each step the lowest
// index whose dependencies are all placed. ok is false on a cycle.
func StableOrder(deps [][]int) (order []int, ok bool) {
	n := len(deps)
	done := make([]bool, n)
	for len(order) < n {
		picked := -1
		for i := 0; i < n && picked < 0; i++ {
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
				picked = i
			}
		}
		if picked < 0 {
			return nil, false
		}
		done[picked] = true
		order = append(order, picked)
	}
	return order, true
}

// Depths returns, for each node, the length of its longest dependency
// chain (0 for a node with no dependencies). The graph must be acyclic.
func Depths(deps [][]int) []int {
	depth := make([]int, len(deps))
	seen := make([]bool, len(deps))
	var visit func(i int) int
	visit = func(i int) int {
		if seen[i] {
			return depth[i]
		}
		seen[i] = true
		for _, d := range deps[i] {
			if x := visit(d) + 1; x > depth[i] {
				depth[i] = x
			}
		}
		return depth[i]
	}
	for i := range deps {
		visit(i)
	}
	return depth
}

// Named is a graph over names, for configs that refer to things by name.
type Named struct {
	names []string
	index map[string]int
	deps  [][]int
}

// Node returns name's index, adding it the first time.
func (g *Named) Node(name string) int {
	if i, ok := g.index[name]; ok {
		return i
	}
	if g.index == nil {
		g.index = map[string]int{}
	}
	g.index[name] = len(g.names)
	g.names = append(g.names, name)
	g.deps = append(g.deps, nil)
	return len(g.names) - 1
}

// Edge records that from depends on to.
func (g *Named) Edge(from, to string) {
	f, t := g.Node(from), g.Node(to)
	g.deps[f] = append(g.deps[f], t)
}

// Deps returns the graph by index; Name maps an index back.
func (g *Named) Deps() [][]int { return g.deps }

// Name returns the name of node i.
func (g *Named) Name(i int) string { return g.names[i] }

// Cycle returns a cycle by name (first name repeated at the end), or nil.
func (g *Named) Cycle() []string {
	c := Cycle(g.deps)
	if c == nil {
		return nil
	}
	out := make([]string, len(c))
	for i, v := range c {
		out[i] = g.names[v]
	}
	return out
}
