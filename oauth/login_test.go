package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

func TestAuthorizeURLDefaultsToClaude(t *testing.T) {
	m := NewManager(Config{}, nil, nil)
	l, err := m.startLogin("Me@Example.com")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(l.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != DefaultAuthorizeURL {
		t.Errorf("authorize URL %s, want %s", got, DefaultAuthorizeURL)
	}
	q := u.Query()
	want := map[string]string{
		"code":                  "true",
		"client_id":             DefaultClientID,
		"response_type":         "code",
		"redirect_uri":          DefaultRedirectURI,
		"scope":                 "org:create_api_key user:profile user:inference",
		"code_challenge_method": "S256",
		"state":                 l.State,
	}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, q.Get(k), v)
		}
	}
	if len(l.State) != 43 || len(q.Get("code_challenge")) != 43 {
		t.Errorf("state %q and challenge %q should be 43 base64url characters", l.State, q.Get("code_challenge"))
	}
	if l.Account != "me@example.com" {
		t.Errorf("account %q, want it lower-cased", l.Account)
	}
	if strings.Contains(l.URL, "code_verifier") {
		t.Error("the verifier must stay on the server")
	}
}

func TestExchangeSendsTheVerifierOfTheChallenge(t *testing.T) {
	e := newEnv(t)
	l, err := e.m.startLogin("me@example.com")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(l.URL)
	challenge := u.Query().Get("code_challenge")
	code := e.mock.visit(t, l.URL)
	st, err := e.m.exchange(context.Background(), code, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.mock.verifiers) != 1 || oauth2.S256ChallengeFromVerifier(e.mock.verifiers[0]) != challenge {
		t.Fatalf("token endpoint got verifiers %v, none matching challenge %s", e.mock.verifiers, challenge)
	}
	body := e.mock.bodies[0]
	for _, k := range []string{"grant_type", "client_id", "code", "redirect_uri", "code_verifier", "state"} {
		if body[k] == "" {
			t.Errorf("exchange body lacks %s: %v", k, body)
		}
	}
	if e.mock.ctypes[0] != "application/json" {
		t.Errorf("content type %q, want JSON like Claude Code", e.mock.ctypes[0])
	}
	if body["state"] != l.State || strings.Contains(body["code"], "#") {
		t.Errorf("code %q state %q: want the code cleaned of #state and the state sent", body["code"], body["state"])
	}
	if !st.LoggedIn || !st.Healthy || st.Account != "me@example.com" || !st.ExpiresAt.Equal(e.clock.Now().Add(time.Hour)) {
		t.Errorf("status after login: %+v", st)
	}
	if strings.Join(st.Scopes, " ") != "user:inference user:profile" {
		t.Errorf("scopes %v, want the granted ones", st.Scopes)
	}
}

func TestExchangeFormEncodedWhenConfigured(t *testing.T) {
	e := newEnv(t)
	cfg := e.mock.config()
	cfg.TokenFormat = FormatForm
	e.m.Update(cfg, e.st, nil)
	e.login(t, "me@example.com")
	if e.mock.ctypes[0] != "application/x-www-form-urlencoded" {
		t.Fatalf("content type %q, want form encoding", e.mock.ctypes[0])
	}
}

func TestParseCodeCleansWhatUsersPaste(t *testing.T) {
	for _, tc := range []struct{ in, code, state string }{
		{"abc#xyz", "abc", "xyz"},
		{"  abc#xyz \n", "abc", "xyz"},
		{"abc", "abc", ""},
		{"abc&foo=1#xyz", "abc", "xyz"},
		{"https://console.anthropic.com/oauth/code/callback?code=abc&state=xyz", "abc", "xyz"},
		{"https://console.anthropic.com/oauth/code/callback?code=abc#xyz", "abc", "xyz"},
		{"code=abc&state=xyz", "abc", "xyz"},
		{"", "", ""},
	} {
		code, state := parseCode(tc.in)
		if code != tc.code || state != tc.state {
			t.Errorf("parseCode(%q) = %q, %q; want %q, %q", tc.in, code, state, tc.code, tc.state)
		}
	}
}

func TestExchangeAcceptsEveryPastedForm(t *testing.T) {
	for _, tc := range []struct {
		name    string
		paste   func(code, state string) string
		account string
	}{
		{"code#state", func(c, s string) string { return c + "#" + s }, ""},
		{"with whitespace", func(c, s string) string { return "\n  " + c + "#" + s + "  \t" }, ""},
		{"callback URL", func(c, s string) string {
			return "https://console.anthropic.com/oauth/code/callback?code=" + c + "&state=" + s
		}, ""},
		{"bare code and account", func(c, _ string) string { return c }, "Me@Example.com"},
		{"code#state and the same account", func(c, s string) string { return c + "#" + s }, "me@example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			l, _ := e.m.startLogin("me@example.com")
			code, state, _ := strings.Cut(e.mock.visit(t, l.URL), "#")
			st, err := e.m.exchange(context.Background(), tc.paste(code, state), tc.account)
			if err != nil {
				t.Fatal(err)
			}
			if st.Account != "me@example.com" || !st.LoggedIn {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

func TestExchangeRejectsBadStates(t *testing.T) {
	for _, tc := range []struct {
		name  string
		run   func(e *testEnv, code, state string) error
		wants string
	}{
		{"unknown state", func(e *testEnv, code, _ string) error {
			_, err := e.m.exchange(context.Background(), code+"#not-a-state", "")
			return err
		}, "unknown or expired login state"},
		{"expired state", func(e *testEnv, code, state string) error {
			e.clock.Advance(loginTTL + time.Second)
			_, err := e.m.exchange(context.Background(), code+"#"+state, "")
			return err
		}, "unknown or expired login state"},
		{"state used twice", func(e *testEnv, code, state string) error {
			if _, err := e.m.exchange(context.Background(), code+"#"+state, ""); err != nil {
				return errors.New("first exchange failed: " + err.Error())
			}
			_, err := e.m.exchange(context.Background(), code+"#"+state, "")
			return err
		}, "unknown or expired login state"},
		{"bare code without account", func(e *testEnv, code, _ string) error {
			_, err := e.m.exchange(context.Background(), code, "")
			return err
		}, "carries no state"},
		{"bare code for an account with no login", func(e *testEnv, code, _ string) error {
			_, err := e.m.exchange(context.Background(), code, "other@example.com")
			return err
		}, "no login for other@example.com"},
		{"another account's login", func(e *testEnv, code, state string) error {
			_, err := e.m.exchange(context.Background(), code+"#"+state, "other@example.com")
			return err
		}, "started for me@example.com, not other@example.com"},
		{"missing code", func(e *testEnv, _, state string) error {
			_, err := e.m.exchange(context.Background(), "  #"+state, "")
			return err
		}, "Missing authorization code"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			l, _ := e.m.startLogin("me@example.com")
			code, state, _ := strings.Cut(e.mock.visit(t, l.URL), "#")
			err := tc.run(e, code, state)
			var oe *opError
			if !errors.As(err, &oe) || oe.status != http.StatusBadRequest || oe.typ != apierr.InvalidRequest {
				t.Fatalf("err %v, want a 400 invalid_request_error", err)
			}
			if !strings.Contains(oe.msg, tc.wants) {
				t.Fatalf("message %q does not say %q", oe.msg, tc.wants)
			}
		})
	}
}

func TestExchangeRejectsCodeClaudeRefuses(t *testing.T) {
	e := newEnv(t)
	l, _ := e.m.startLogin("me@example.com")
	_, state, _ := strings.Cut(e.mock.visit(t, l.URL), "#")
	_, err := e.m.exchange(context.Background(), "forged#"+state, "")
	var oe *opError
	if !errors.As(err, &oe) || oe.status != http.StatusBadRequest || !strings.Contains(oe.msg, "invalid_grant") {
		t.Fatalf("err %v, want 400 naming invalid_grant", err)
	}
	if _, err := e.m.Token(context.Background(), "me@example.com"); !errors.Is(err, ErrNoToken) {
		t.Fatalf("Token after a failed login: %v", err)
	}
}

func TestExchangeRejectsLoginOfAnotherClaudeAccount(t *testing.T) {
	e := newEnv(t)
	e.mock.reportEmail = "Someone.Else@example.com"
	l, _ := e.m.startLogin("me@example.com")
	_, err := e.m.exchange(context.Background(), e.mock.visit(t, l.URL), "")
	if err == nil || !strings.Contains(err.Error(), "Claude logged in someone.else@example.com, not me@example.com") {
		t.Fatalf("err %v, want a mismatch", err)
	}
	e.mock.reportEmail = "ME@example.com"
	l, _ = e.m.startLogin("me@example.com")
	if _, err := e.m.exchange(context.Background(), e.mock.visit(t, l.URL), ""); err != nil {
		t.Fatalf("same account in another case: %v", err)
	}
}

func TestManyPendingLoginsAtOnce(t *testing.T) {
	e := newEnv(t)
	accounts := []string{"a@example.com", "b@example.com", "c@example.com"}
	codes := map[string]string{}
	for _, a := range accounts {
		l, err := e.m.startLogin(a)
		if err != nil {
			t.Fatal(err)
		}
		codes[a] = e.mock.visit(t, l.URL)
	}
	for i := len(accounts) - 1; i >= 0; i-- {
		st, err := e.m.exchange(context.Background(), codes[accounts[i]], "")
		if err != nil || st.Account != accounts[i] {
			t.Fatalf("exchange for %s: %v %+v", accounts[i], err, st)
		}
	}
}

func TestPendingLoginsAreBounded(t *testing.T) {
	e := newEnv(t)
	first, _ := e.m.startLogin("first@example.com")
	for range maxPending {
		e.clock.Advance(time.Millisecond)
		if _, err := e.m.startLogin(""); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.m.logins.byState); n != maxPending {
		t.Fatalf("%d pending logins, want at most %d", n, maxPending)
	}
	if e.m.logins.get(first.State, e.clock.Now()) != nil {
		t.Fatal("the oldest login should have given way")
	}
}
