package flows

import (
	"net/url"
	"time"
)

// Service is a compiled Kong service.
type Service struct {
	Name   string
	URL    *url.URL
	Config *ServiceConfig
	// Pipeline holds the plugins scoped to this service alone (with globals
	// excluded): what runs when the service is used as a shared flow.
	Pipeline *Pipeline
}

// Route is a compiled Kong route.
type Route struct {
	Name     string
	Service  *Service // nil for a route without a service
	Config   *RouteConfig
	Pipeline *Pipeline
	Index    int // position in file order
}

// MatchInput is what Kong-style routing looks at.
type MatchInput struct {
	Method  string
	Host    string // :authority without the port
	Path    string // without the query
	Headers Headers
}

// Snapshot is one loaded config: immutable, swapped atomically on reload.
type Snapshot struct {
	File     string
	Loaded   time.Time
	Routes   []*Route
	Services map[string]*Service
	// Global runs for requests that match no route.
	Global *Pipeline
	// Redacted is the effective config for /config, secrets hidden.
	Redacted any
	// Warnings are what the load accepted but sidecall ignores or changes
	// (also logged at warn), secrets hidden.
	Warnings []string
	// WarningsAt are the same warnings with their paths and lines.
	WarningsAt []FieldError

	byName       map[string]*Route
	router       *Router
	matchHeaders bool
	closers      []func()
	res          *Resources
	leases       []string
}

// RouteByName returns the route with that name, or nil.
func (s *Snapshot) RouteByName(name string) *Route { return s.byName[name] }

// Match runs Kong-style route matching.
func (s *Snapshot) Match(in MatchInput) (*Route, Captures, bool) {
	if s.router == nil {
		return nil, Captures{}, false
	}
	return s.router.Match(in)
}

// Captures returns the uri_captures of route's regex paths for path.
func (s *Snapshot) Captures(route *Route, path string) Captures {
	return s.router.Captures(route, path)
}

// MatchUsesHeaders tells whether Match looks at MatchInput.Headers.
func (s *Snapshot) MatchUsesHeaders() bool { return s.matchHeaders }

// Close runs the plugins' OnClose hooks and releases the shared clients
// this snapshot held; a client no other snapshot holds is closed.
func (s *Snapshot) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
	if s.res != nil {
		s.res.release(s.leases)
		s.res, s.leases = nil, nil
	}
}
