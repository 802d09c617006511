package balancer

import (
	"strings"

	"github.com/claude-balancer/caddy-claude-balancer/internal/glob"
)

// Target is one candidate of a route: a provider and the model to ask it for.
type Target struct {
	Provider *Provider
	// Model replaces the client's model; "" passes it through.
	Model string
}

// Route is a compiled route.
type Route struct {
	// ID names the route in logs, metrics and stickiness keys: its patterns
	// joined by spaces, or "*" for the implicit route.
	ID       string
	patterns []glob.Pattern
	Targets  []Target
}

// Routes is the route table of a balancer.
type Routes struct {
	routes []*Route
	// fallback serves every model when no route is configured.
	fallback *Route
}

// Match returns the route for a model: a route naming it exactly wins,
// otherwise the first route with a matching glob. It returns nil when routes
// are configured and none matches.
func (rs *Routes) Match(model string) *Route {
	if rs.fallback != nil {
		return rs.fallback
	}
	m := strings.ToLower(model)
	for _, r := range rs.routes {
		for _, p := range r.patterns {
			if p.Exact() && p.Match(m) {
				return r
			}
		}
	}
	for _, r := range rs.routes {
		for _, p := range r.patterns {
			if !p.Exact() && p.Match(m) {
				return r
			}
		}
	}
	return nil
}

// All returns the routes in order (the implicit route when none is configured).
func (rs *Routes) All() []*Route {
	if rs.fallback != nil {
		return []*Route{rs.fallback}
	}
	return rs.routes
}

// Patterns returns the route's model patterns as configured (lower case).
func (r *Route) Patterns() []string {
	out := make([]string, len(r.patterns))
	for i, p := range r.patterns {
		out[i] = p.String()
	}
	if len(out) == 0 {
		return []string{"*"}
	}
	return out
}
