package glob

import "testing"

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, model string
		want           bool
	}{
		{"claude-opus-4-5", "claude-opus-4-5", true},
		{"claude-opus-4-5", "Claude-Opus-4-5", true},
		{"claude-opus-4-5", "claude-opus-4-5-x", false},
		{"*", "", true},
		{"*", "anything", true},
		{"*opus*", "claude-opus-4-5", true},
		{"*opus*", "opus", true},
		{"*opus*", "claude-sonnet", false},
		{"claude-*", "claude-", true},
		{"claude-*", "claud", false},
		{"*-4-5", "claude-haiku-4-5", true},
		{"*-4-5", "claude-haiku-4-1", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "a-b-b-c", true},
		{"a*b*c", "acb", false},
		// The prefix and the suffix may not overlap.
		{"ab*ba", "aba", false},
		{"ab*ba", "abba", true},
		{"a**b", "ab", true},
	} {
		if got := Any([]Pattern{Compile(tc.pattern)}, tc.model); got != tc.want {
			t.Errorf("%q matches %q: %v, want %v", tc.pattern, tc.model, got, tc.want)
		}
	}
	if p := Compile("Claude-*"); p.Exact() || p.String() != "claude-*" {
		t.Errorf("compiled %+v", p)
	}
	if !Compile("x").Exact() || Any(nil, "x") {
		t.Error("an exact pattern, or no pattern at all")
	}
}
