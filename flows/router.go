package flows

// Router matches requests to routes, Kong style. (Being written.)
type Router struct{ routes []*Route }

// NewRouter compiles the routes' matching rules. Problems go to b.
func NewRouter(b *Builder, routes []*Route, paths []Path) *Router { return &Router{routes: routes} }

// Match returns the best route for in.
func (r *Router) Match(in MatchInput) (*Route, Captures, bool) { return nil, Captures{}, false }
