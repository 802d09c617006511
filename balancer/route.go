package balancer

import (
	"strings"
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
	patterns []pattern
	Targets  []Target
}

type pattern struct {
	raw   string // lower case
	exact bool
	parts []string // the pattern split at '*'
}

func compilePattern(p string) pattern {
	p = strings.ToLower(p)
	if !strings.Contains(p, "*") {
		return pattern{raw: p, exact: true}
	}
	return pattern{raw: p, parts: strings.Split(p, "*")}
}

// match reports whether the lower-cased model matches the glob as a whole.
func (p pattern) match(model string) bool {
	if p.exact {
		return model == p.raw
	}
	// parts[0] is a prefix, the last part a suffix, the middle parts must
	// appear in order between them.
	first, last := p.parts[0], p.parts[len(p.parts)-1]
	if len(model) < len(first)+len(last) || !strings.HasPrefix(model, first) || !strings.HasSuffix(model, last) {
		return false
	}
	rest := model[len(first) : len(model)-len(last)]
	for _, mid := range p.parts[1 : len(p.parts)-1] {
		i := strings.Index(rest, mid)
		if i < 0 {
			return false
		}
		rest = rest[i+len(mid):]
	}
	return true
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
			if p.exact && p.raw == m {
				return r
			}
		}
	}
	for _, r := range rs.routes {
		for _, p := range r.patterns {
			if !p.exact && p.match(m) {
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
		out[i] = p.raw
	}
	if len(out) == 0 {
		return []string{"*"}
	}
	return out
}
