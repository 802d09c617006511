package balancer

import (
	"net/http"
	"testing"
	"time"
)

func TestRetryAt(t *testing.T) {
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		h    http.Header
		want time.Duration // 0: no hint
	}{
		{"seconds", http.Header{"Retry-After": {"30"}}, 30 * time.Second},
		{"date", http.Header{"Retry-After": {base.Add(time.Minute).Format(http.TimeFormat)}}, time.Minute},
		{"exhausted tokens", http.Header{
			"Anthropic-Ratelimit-Tokens-Remaining":   {"0"},
			"Anthropic-Ratelimit-Tokens-Reset":       {base.Add(2 * time.Minute).Format(time.RFC3339)},
			"Anthropic-Ratelimit-Requests-Remaining": {"5"},
			"Anthropic-Ratelimit-Requests-Reset":     {base.Add(time.Hour).Format(time.RFC3339)},
		}, 2 * time.Minute},
		{"unified subscription windows are the quota package's", http.Header{
			"Anthropic-Ratelimit-Unified-Status": {"rejected"},
			"Anthropic-Ratelimit-Unified-Reset":  {"1777640400"},
		}, 0},
		{"nothing exhausted", http.Header{
			"Anthropic-Ratelimit-Requests-Remaining": {"5"},
			"Anthropic-Ratelimit-Requests-Reset":     {base.Add(time.Hour).Format(time.RFC3339)},
		}, 0},
		{"absurd reset capped", http.Header{"Anthropic-Ratelimit-Tokens-Remaining": {"0"},
			"Anthropic-Ratelimit-Tokens-Reset": {base.Add(72 * time.Hour).Format(time.RFC3339)}}, 24 * time.Hour},
		{"none", http.Header{}, 0},
	} {
		got := retryAt(tc.h, base)
		if tc.want == 0 {
			if !got.IsZero() {
				t.Errorf("%s: got %v, want none", tc.name, got)
			}
			continue
		}
		if d := got.Sub(base); d != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, d, tc.want)
		}
	}
}

func TestForwardRequestHeaders(t *testing.T) {
	src := http.Header{
		"Anthropic-Version":     {"2023-06-01"},
		"Anthropic-Beta":        {"a,b"},
		"User-Agent":            {"claude-cli/2"},
		"X-Stainless-Os":        {"Linux"},
		"Connection":            {"keep-alive, X-Custom-Hop"},
		"X-Custom-Hop":          {"1"},
		"Keep-Alive":            {"timeout=5"},
		"Accept-Encoding":       {"gzip"},
		"X-Api-Key":             {"secret"},
		"Authorization":         {"Bearer secret"},
		"Host":                  {"example"},
		"X-Forwarded-For":       {"1.2.3.4"},
		"X-Claude-Balancer-Key": {"k"},
		"Transfer-Encoding":     {"chunked"},
	}
	dst := http.Header{}
	forwardRequestHeaders(dst, src)
	for _, k := range []string{"Anthropic-Version", "Anthropic-Beta", "User-Agent", "X-Stainless-Os"} {
		if dst.Get(k) != src.Get(k) {
			t.Errorf("%s not forwarded", k)
		}
	}
	for _, k := range []string{"Connection", "X-Custom-Hop", "Keep-Alive", "Accept-Encoding", "X-Api-Key", "Authorization",
		"Host", "X-Forwarded-For", "X-Claude-Balancer-Key", "Transfer-Encoding"} {
		if _, ok := dst[k]; ok {
			t.Errorf("%s forwarded", k)
		}
	}
}

func TestMergeBeta(t *testing.T) {
	h := http.Header{}
	mergeBeta(h, "oauth-2025-04-20")
	if h.Get("Anthropic-Beta") != "oauth-2025-04-20" {
		t.Fatalf("empty: %q", h.Get("Anthropic-Beta"))
	}
	h.Set("Anthropic-Beta", "claude-code-20250219, oauth-2025-04-20")
	mergeBeta(h, "oauth-2025-04-20")
	if h.Get("Anthropic-Beta") != "claude-code-20250219, oauth-2025-04-20" {
		t.Fatalf("duplicate added: %q", h.Get("Anthropic-Beta"))
	}
	h.Set("Anthropic-Beta", "claude-code-20250219")
	mergeBeta(h, "oauth-2025-04-20")
	if h.Get("Anthropic-Beta") != "claude-code-20250219,oauth-2025-04-20" {
		t.Fatalf("merge: %q", h.Get("Anthropic-Beta"))
	}
}
