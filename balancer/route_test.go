package balancer

import (
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/glob"
)

func TestGlobMatching(t *testing.T) {
	for _, tc := range []struct {
		pattern, model string
		want           bool
	}{
		{"*sonnet*", "claude-sonnet-4-5", true},
		{"*sonnet*", "sonnet", true},
		{"claude-*", "claude-opus-4-1", true},
		{"claude-*", "anthropic/claude", false},
		{"*-haiku-*-latest", "claude-3-5-haiku-20241022-latest", true},
		{"*-haiku-*-latest", "claude-3-5-haiku-latest", false},
		{"a*b*a", "aba", true},
		{"a*b*a", "ab", false},
		{"*", "", true},
		{"claude.sonnet", "claudeXsonnet", false}, // no regular expressions
		{"CLAUDE-*", "claude-x", true},
		{"exact-model", "EXACT-MODEL", true},
		{"exact-model", "exact-model-2", false},
	} {
		p := glob.Compile(tc.pattern)
		if got := p.Match(toLower(tc.model)); got != tc.want {
			t.Errorf("%q matches %q = %v, want %v", tc.pattern, tc.model, got, tc.want)
		}
	}
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

func TestRoutesExactBeforeGlobThenFileOrder(t *testing.T) {
	mk := func(id string, pats ...string) *Route {
		r := &Route{ID: id}
		for _, p := range pats {
			r.patterns = append(r.patterns, glob.Compile(p))
		}
		return r
	}
	rs := Routes{routes: []*Route{mk("first", "*sonnet*"), mk("second", "*"), mk("exact", "claude-sonnet-4-5")}}
	for model, want := range map[string]string{
		"claude-sonnet-4-5": "exact",
		"claude-sonnet-4":   "first",
		"gpt-4o":            "second",
	} {
		if got := rs.Match(model); got == nil || got.ID != want {
			t.Errorf("%s -> %v, want %s", model, got, want)
		}
	}
	rs = Routes{routes: []*Route{mk("only", "*opus*")}}
	if rs.Match("haiku") != nil {
		t.Error("unmatched model found a route")
	}
}
