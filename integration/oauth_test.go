package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// tokenServer is a Claude-like OAuth token endpoint.
type tokenServer struct {
	*httptest.Server
	mu        sync.Mutex
	n         int
	refreshes int
	fail      bool
}

func newTokenServer(t *testing.T) *tokenServer {
	ts := &tokenServer{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &req)
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if req["grant_type"] == "refresh_token" {
			ts.refreshes++
			if ts.fail {
				w.WriteHeader(400)
				io.WriteString(w, `{"error":"invalid_grant"}`)
				return
			}
		}
		ts.n++
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"at-%d","refresh_token":"rt-%d","expires_in":28800,"token_type":"Bearer","scope":"user:inference"}`, ts.n, ts.n)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func TestOAuthAccountLoginUseRefreshAndFailover(t *testing.T) {
	ts := newTokenServer(t)
	var mu sync.Mutex
	rejectNext := false
	sub := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		mu.Lock()
		reject := rejectNext
		rejectNext = false
		mu.Unlock()
		if reject || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer at-") {
			errorStatus(401, "authentication_error", "OAuth token has expired")(w, r, n)
			return
		}
		okEither("from subscription")(w, r, n)
	})
	api := newMock(t, okEither("from api"))
	e := start(t, fmt.Sprintf(`
		sticky 0
		oauth {
			token_url %s/token
			authorize_url %s/authorize
		}
		provider max {
			base_url %s
			oauth Me@Example.com
		}
		provider api {
			base_url %s
			api_key sk-api
		}`, ts.URL, ts.URL, sub.URL, api.URL))

	// Not logged in yet: the account is a credential failure and the
	// request fails over at once.
	resp, out := e.messages(body("m", false), "X-Api-Key", "sk-client-own")
	if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "api" || sub.count() != 0 {
		t.Fatalf("before login: %d %q sub=%d %s", resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Provider"), sub.count(), out)
	}

	// Log in through the JSON endpoints.
	resp, out = e.get("/oauth/generate-url?account_email=me@example.com")
	var gen struct {
		LoginURL string `json:"login_url"`
		State    string `json:"state"`
	}
	if err := json.Unmarshal(out, &gen); err != nil || resp.StatusCode != 200 || !strings.Contains(gen.LoginURL, "code_challenge_method=S256") {
		t.Fatalf("generate-url: %d %s", resp.StatusCode, out)
	}
	resp, out = e.post("/oauth/exchange-code", []byte(fmt.Sprintf(`{"code":"the-code#%s","account_email":"me@example.com"}`, gen.State)))
	if resp.StatusCode != 200 {
		t.Fatalf("exchange: %d %s", resp.StatusCode, out)
	}

	// Requests now carry the account's token and the OAuth beta, never the
	// client's own key.
	resp, out = e.messages(body("m", false), "X-Api-Key", "sk-client-own", "Anthropic-Beta", "claude-code-20250219")
	if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "max" {
		t.Fatalf("after login: %d %s", resp.StatusCode, out)
	}
	h := sub.last().Header
	if h.Get("Authorization") != "Bearer at-1" || h.Get("X-Api-Key") != "" ||
		h.Get("Anthropic-Beta") != "claude-code-20250219,oauth-2025-04-20" {
		t.Fatalf("upstream headers: %v", h)
	}

	// A reload keeps the account logged in.
	e.load(fmt.Sprintf(`
		sticky 0
		strategy priority
		oauth {
			token_url %s/token
			authorize_url %s/authorize
		}
		provider max {
			base_url %s
			oauth Me@Example.com
		}
		provider api {
			base_url %s
			api_key sk-api
		}`, ts.URL, ts.URL, sub.URL, api.URL), "")
	resp, _ = e.messages(body("m", false))
	if resp.Header.Get("X-Claude-Balancer-Provider") != "max" || sub.last().Header.Get("Authorization") != "Bearer at-1" {
		t.Fatalf("after reload: %q %q", resp.Header.Get("X-Claude-Balancer-Provider"), sub.last().Header.Get("Authorization"))
	}
	// The same status is on Caddy's admin socket.
	if status, out := adminDo(t, http.MethodGet, "/claude_balancer/oauth/status?balancer="+e.name); status != 200 ||
		!strings.Contains(string(out), "me@example.com") || strings.Contains(string(out), "at-1") {
		t.Fatalf("admin oauth status: %d %s", status, out)
	}

	// A 401 triggers one refresh and one retry on the same account.
	mu.Lock()
	rejectNext = true
	mu.Unlock()
	resp, _ = e.messages(body("m", true))
	if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "max" || ts.refreshes != 1 {
		t.Fatalf("refresh and retry: %d %q refreshes=%d", resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Provider"), ts.refreshes)
	}
	if sub.last().Header.Get("Authorization") != "Bearer at-2" {
		t.Fatalf("retry used %q", sub.last().Header.Get("Authorization"))
	}

	// A refresh that fails fails over to the API provider.
	ts.mu.Lock()
	ts.fail = true
	ts.mu.Unlock()
	mu.Lock()
	rejectNext = true
	mu.Unlock()
	resp, _ = e.messages(body("m", false))
	if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "api" {
		t.Fatalf("failed refresh: %d %q", resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Provider"))
	}

	// Status shows the account without its tokens.
	resp, out = e.get("/oauth/status")
	if resp.StatusCode != 200 || !strings.Contains(string(out), "me@example.com") || strings.Contains(string(out), "at-2") || strings.Contains(string(out), "rt-2") {
		t.Fatalf("status: %d %s", resp.StatusCode, out)
	}
	_, out = e.get("/providers")
	if strings.Contains(string(out), "at-2") {
		t.Fatalf("token in /providers: %s", out)
	}
}
