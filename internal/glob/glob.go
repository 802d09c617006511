// Package glob matches model names against the patterns of the
// configuration: routes and client model lists. A pattern is a model name in
// which "*" matches any run of characters; it is compared case-insensitively
// with the whole name.
package glob

import "strings"

// Pattern is a compiled pattern.
type Pattern struct {
	raw   string // lower case
	exact bool
	parts []string // the pattern split at '*'
}

// Compile compiles a pattern.
func Compile(p string) Pattern {
	p = strings.ToLower(p)
	if !strings.Contains(p, "*") {
		return Pattern{raw: p, exact: true}
	}
	return Pattern{raw: p, parts: strings.Split(p, "*")}
}

// String returns the pattern as compiled (lower case).
func (p Pattern) String() string { return p.raw }

// Exact reports whether the pattern names one model, without "*".
func (p Pattern) Exact() bool { return p.exact }

// Match reports whether a model name, already in lower case, matches the
// pattern as a whole.
func (p Pattern) Match(lower string) bool {
	if p.exact {
		return lower == p.raw
	}
	// parts[0] is a prefix, the last part a suffix, the middle parts must
	// appear in order between them.
	first, last := p.parts[0], p.parts[len(p.parts)-1]
	if len(lower) < len(first)+len(last) || !strings.HasPrefix(lower, first) || !strings.HasSuffix(lower, last) {
		return false
	}
	rest := lower[len(first) : len(lower)-len(last)]
	for _, mid := range p.parts[1 : len(p.parts)-1] {
		i := strings.Index(rest, mid)
		if i < 0 {
			return false
		}
		rest = rest[i+len(mid):]
	}
	return true
}

// Any reports whether a model matches any of the patterns.
func Any(patterns []Pattern, model string) bool {
	lower := strings.ToLower(model)
	for _, p := range patterns {
		if p.Match(lower) {
			return true
		}
	}
	return false
}
