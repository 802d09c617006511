package oauth

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

// call runs one request through h and returns the status and body.
func call(t *testing.T, h http.Handler, method, target, ctype, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Header(), rec.Body.String()
}

func decode(t *testing.T, body string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("not JSON: %s", body)
	}
	return v
}

func wantEnvelope(t *testing.T, status int, body string, wantStatus int, wantType, wantMsg string) {
	t.Helper()
	typ, msg, ok := apierr.Parse([]byte(body))
	if status != wantStatus || !ok || typ != wantType || !strings.Contains(msg, wantMsg) {
		t.Fatalf("got %d %s; want %d %s containing %q", status, body, wantStatus, wantType, wantMsg)
	}
}

func TestJSONLoginFlowAsInTheOriginal(t *testing.T) {
	e := newEnv(t)
	h := e.m.Handler("/oauth")
	status, _, body := call(t, h, "GET", "/oauth/generate-url?account_email=Me@Example.com", "", "")
	gen := decode(t, body)
	if status != 200 || gen["status"] != "success" || gen["account_email"] != me || gen["expires_in_minutes"] != float64(10) ||
		gen["instructions"] == nil || gen["state"] == "" {
		t.Fatalf("generate-url: %d %s", status, body)
	}
	code := e.mock.visit(t, gen["login_url"].(string))
	status, _, body = call(t, h, "POST", "/oauth/exchange-code", "application/json",
		`{"code":"`+code+`","account_email":"me@example.com"}`)
	ex := decode(t, body)
	if status != 200 || ex["status"] != "success" || ex["message"] != "Authorization successful" || ex["account_email"] != me ||
		ex["expires_at"] != float64(e.clock.Now().Add(time.Hour).Unix()) || len(ex["scopes"].([]any)) != 2 {
		t.Fatalf("exchange-code: %d %s", status, body)
	}
}

func TestExchangeCodeTakesStateAsAField(t *testing.T) {
	e := newEnv(t)
	h := e.m.Handler("/oauth")
	_, _, body := call(t, h, "GET", "/oauth/generate-url", "", "")
	code, state, _ := strings.Cut(e.mock.visit(t, decode(t, body)["login_url"].(string)), "#")
	status, _, body := call(t, h, "POST", "/oauth/exchange-code", "application/json",
		`{"code":"`+code+`","state":"`+state+`","account_email":"me@example.com"}`)
	if status != 200 {
		t.Fatalf("%d %s", status, body)
	}
}

func TestEndpointErrorsUseTheAnthropicEnvelope(t *testing.T) {
	e := newEnv(t)
	h := e.m.Handler("/oauth")
	for _, tc := range []struct {
		name, method, target, body string
		status                     int
		typ, msg                   string
	}{
		{"unknown state", "POST", "/oauth/exchange-code", `{"code":"abc#nope","account_email":"me@example.com"}`,
			400, apierr.InvalidRequest, "unknown or expired login state"},
		{"missing code", "POST", "/oauth/exchange-code", `{"account_email":"me@example.com"}`,
			400, apierr.InvalidRequest, "Missing authorization code"},
		{"bad JSON", "POST", "/oauth/exchange-code", `{"code":`, 400, apierr.InvalidRequest, "body must be JSON"},
		{"refresh unknown", "POST", "/oauth/refresh/nobody@example.com", "", 404, apierr.NotFound, "log in at /oauth/"},
		{"delete unknown", "DELETE", "/oauth/tokens/nobody@example.com", "", 404, apierr.NotFound, "not found"},
		{"wrong method", "GET", "/oauth/exchange-code", "", 405, apierr.InvalidRequest, "not allowed"},
		{"unknown path", "GET", "/oauth/authorize", "", 404, apierr.NotFound, "no such oauth endpoint"},
		{"bad account", "GET", "/oauth/generate-url?account_email=a%20b", "", 400, apierr.InvalidRequest, "spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := call(t, h, tc.method, tc.target, "application/json", tc.body)
			wantEnvelope(t, status, body, tc.status, tc.typ, tc.msg)
		})
	}
}

func TestManagementEndpoints(t *testing.T) {
	e := newEnv(t)
	e.m.SetAccounts([]string{"a@example.com", "waiting@example.com"})
	h := e.m.Handler("/oauth")
	e.login(t, "a@example.com")
	e.login(t, "b@example.com")

	_, _, body := call(t, h, "GET", "/oauth/status", "", "")
	st := decode(t, body)
	sum := st["summary"].(map[string]any)
	if sum["total_tokens"] != float64(2) || sum["healthy_tokens"] != float64(2) || sum["accounts"] != float64(3) {
		t.Fatalf("summary %v", sum)
	}
	toks := st["tokens"].([]any)
	first := toks[0].(map[string]any)
	if first["account_email"] != "a@example.com" || first["configured"] != true || first["state"] != "ok" ||
		!strings.HasPrefix(first["access_token_preview"].(string), "sk-ant-o...") || first["usage_count"] != float64(1) ||
		first["expires_in_seconds"] != float64(3600) || first["expires_in_human"] != "1h0m" {
		t.Fatalf("first account %v", first)
	}
	if w := toks[1].(map[string]any); w["account_email"] != "waiting@example.com" || w["logged_in"] != false || w["state"] != "logged_out" {
		t.Fatalf("configured account without login: %v", w)
	}
	if o := toks[2].(map[string]any); o["account_email"] != "b@example.com" || o["configured"] != false {
		t.Fatalf("logged-in account no provider uses: %v", o)
	}

	e.clock.Advance(10 * time.Minute)
	status, _, body := call(t, h, "POST", "/oauth/refresh/A@Example.com", "", "")
	r := decode(t, body)
	if status != 200 || r["account_email"] != "a@example.com" || r["expires_at"] != float64(e.clock.Now().Add(time.Hour).Unix()) ||
		r["refreshed_at"] != float64(e.clock.Now().Unix()) {
		t.Fatalf("refresh: %d %s", status, body)
	}

	status, _, body = call(t, h, "DELETE", "/oauth/tokens/A@EXAMPLE.COM", "", "")
	if status != 200 || decode(t, body)["message"] != "Token for a@example.com removed" {
		t.Fatalf("delete one: %d %s", status, body)
	}
	if e.st.Exists(context.Background(), storageKey("a@example.com")) {
		t.Fatal("the token is still in storage")
	}
	status, _, body = call(t, h, "DELETE", "/oauth/tokens", "", "")
	if status != 200 || decode(t, body)["message"] != "All tokens cleared" {
		t.Fatalf("delete all: %d %s", status, body)
	}
	if names, _ := storedAccounts(context.Background(), e.st); len(names) != 0 {
		t.Fatalf("left in storage: %v", names)
	}
	if _, err := e.m.Token(context.Background(), "b@example.com"); err == nil {
		t.Fatal("b still has a token")
	}
}

func TestStatusFindsAccountsLoggedInElsewhere(t *testing.T) {
	e := newEnv(t)
	e.login(t, "elsewhere@example.com")
	other := newEnvWith(t, e.mock, e.st, e.clock)
	_, _, body := call(t, other.m.Handler("/oauth"), "GET", "/oauth/status", "", "")
	if !strings.Contains(body, `"account_email":"elsewhere@example.com"`) {
		t.Fatalf("status of a fresh instance: %s", body)
	}
}

func TestNoTokenAppearsInLogsOrAnswers(t *testing.T) {
	e := newEnv(t)
	e.m.SetAccounts([]string{me, "b@example.com"})
	h := e.m.Handler("/oauth")
	var answers []string
	record := func(status int, _ http.Header, body string) { answers = append(answers, body) }

	_, _, body := call(t, h, "GET", "/oauth/generate-url?account_email="+me, "", "")
	answers = append(answers, body)
	code := e.mock.visit(t, decode(t, body)["login_url"].(string))
	record(call(t, h, "POST", "/oauth/exchange-code", "application/json", `{"code":"`+code+`"}`))
	e.login(t, "b@example.com")
	record(call(t, h, "GET", "/oauth/status", "", ""))
	record(call(t, h, "GET", "/oauth/", "", ""))
	record(call(t, h, "POST", "/oauth/refresh/"+me, "", ""))

	// A refusal that echoes the refresh token back must not leak it either.
	rec, _ := loadRecord(context.Background(), e.st, "b@example.com")
	e.mock.setRefuse("", refusal{status: 400, body: `{"error":"invalid_grant","error_description":"refresh token ` + rec.RefreshToken + ` was revoked"}`})
	e.clock.Advance(time.Hour)
	_, err := e.m.Token(context.Background(), "b@example.com")
	if err == nil {
		t.Fatal("want a refresh failure")
	}
	answers = append(answers, err.Error())
	record(call(t, h, "POST", "/oauth/refresh/b@example.com", "", ""))
	record(call(t, h, "GET", "/oauth/status", "", ""))
	record(call(t, h, "GET", "/oauth/", "", ""))
	st, _ := json.Marshal(e.m.Status())
	answers = append(answers, string(st))

	logs := e.logs.String()
	if !strings.Contains(logs, "oauth token refresh failed") || !strings.Contains(logs, "oauth account logged in") {
		t.Fatalf("expected log lines missing:\n%s", logs)
	}
	issued := e.mock.tokens()
	if len(issued) < 6 {
		t.Fatalf("only %d tokens issued", len(issued))
	}
	for _, tok := range issued {
		if strings.Contains(logs, tok) {
			t.Errorf("a token appears in the logs:\n%s", logs)
		}
		for _, a := range answers {
			if strings.Contains(a, tok) {
				t.Errorf("a token appears in an answer: %s", a)
			}
		}
	}
	if !strings.Contains(answers[len(answers)-1], "sk-ant-o...") {
		t.Error("status should show masked previews")
	}
}

func TestLoginPageWorksWithoutJavaScript(t *testing.T) {
	e := newEnv(t)
	e.m.SetAccounts([]string{me})
	h := e.m.Handler("/oauth/")

	status, hdr, page := call(t, h, "GET", "/oauth/", "", "")
	if status != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || strings.Contains(page, "<script") ||
		!strings.Contains(page, `href="/oauth/login?account_email=me%40example.com"`) || !strings.Contains(page, "not logged in") {
		t.Fatalf("page: %d %s", status, page)
	}
	if !strings.Contains(hdr.Get("Content-Security-Policy"), "form-action 'self' "+e.mock.srv.URL) {
		t.Fatalf("CSP %q must let the account form redirect to the authorize page", hdr.Get("Content-Security-Policy"))
	}
	if status, hdr, _ := call(t, h, "GET", "/oauth", "", ""); status != http.StatusMovedPermanently || hdr.Get("Location") != "/oauth/" {
		t.Fatalf("prefix without slash: %d %s", status, hdr.Get("Location"))
	}

	status, hdr, _ = call(t, h, "GET", "/oauth/login?account_email=me%40example.com", "", "")
	loc := hdr.Get("Location")
	if status != http.StatusSeeOther || !strings.HasPrefix(loc, e.mock.srv.URL+"/authorize?") {
		t.Fatalf("login link: %d %s", status, loc)
	}
	code := e.mock.visit(t, loc)

	form := url.Values{"code": {"  " + code + "\n"}, "account_email": {""}}.Encode()
	status, _, page = call(t, h, "POST", "/oauth/exchange", "application/x-www-form-urlencoded", form)
	if status != 200 || !strings.Contains(page, "<strong>me@example.com</strong> is logged in") || !strings.Contains(page, "logged in") {
		t.Fatalf("after pasting the code: %d %s", status, page)
	}

	status, _, page = call(t, h, "POST", "/oauth/exchange", "application/x-www-form-urlencoded", form)
	if status != 400 || !strings.Contains(page, `id="error"`) || !strings.Contains(page, "unknown or expired login state") {
		t.Fatalf("pasting the same code again: %d %s", status, page)
	}

	status, _, page = call(t, h, "POST", "/oauth/logout", "application/x-www-form-urlencoded", "account_email=me%40example.com")
	if status != 200 || !strings.Contains(page, "me@example.com is logged out") {
		t.Fatalf("log out: %d %s", status, page)
	}
	status, _, page = call(t, h, "GET", "/oauth/login?account_email=", "", "")
	if status != 400 || !strings.Contains(page, "Type the email") {
		t.Fatalf("login without account: %d %s", status, page)
	}
}

func TestCrossSiteFormPostsAreRefused(t *testing.T) {
	e := newEnv(t)
	e.login(t, me)
	h := e.m.Handler("/oauth")
	status, _, body := call(t, h, "POST", "/oauth/logout", "application/x-www-form-urlencoded", "account_email=me%40example.com",
		"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
	wantEnvelope(t, status, body, 403, apierr.Permission, "cross-origin")
	if _, err := e.m.Token(context.Background(), me); err != nil {
		t.Fatal("a cross-site post logged the account out")
	}
	status, _, _ = call(t, h, "POST", "/oauth/logout", "application/x-www-form-urlencoded", "account_email=me%40example.com",
		"Sec-Fetch-Site", "same-origin")
	if status != 200 {
		t.Fatalf("same-origin post: %d", status)
	}
}

func TestAdminHandlerServesTheSameEndpoints(t *testing.T) {
	e := newEnv(t)
	e.m.Handler("/oauth")
	e.login(t, me)
	ah := e.m.AdminHandler("/claude_balancer/oauth")
	req := httptest.NewRequest("GET", "/claude_balancer/oauth/status", nil)
	rec := httptest.NewRecorder()
	if err := ah.ServeHTTP(rec, req); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 || !strings.Contains(string(b), `"login_page":"/oauth/"`) || !strings.Contains(string(b), me) {
		t.Fatalf("admin status: %d %s", rec.Code, b)
	}
}

func TestAccountStatusJSON(t *testing.T) {
	now := time.Unix(1760000000, 0)
	s := AccountStatus{Account: me, LoggedIn: true, Healthy: true, ExpiresAt: now.Add(2*time.Hour + 30*time.Minute),
		LastUsed: now.Add(-5 * time.Minute), UsageCount: 3, Scopes: []string{"user:inference"}, Now: now, LoginPage: "/oauth/"}
	b, _ := json.Marshal(s)
	v := decode(t, string(b))
	for k, want := range map[string]any{"expires_at": float64(1760009000), "expires_in_seconds": float64(9000),
		"expires_in_minutes": float64(150), "expires_in_human": "2h30m", "last_used": "5m ago", "is_expired": false,
		"scope_count": float64(1), "state": "ok"} {
		if v[k] != want {
			t.Errorf("%s = %v, want %v", k, v[k], want)
		}
	}
	b, _ = json.Marshal(AccountStatus{Account: me, Now: now})
	if v := decode(t, string(b)); v["expires_at"] != nil || v["last_used"] != "never" || v["state"] != "logged_out" {
		t.Errorf("logged out: %s", b)
	}
}

func TestMaskShowsOnlyEnds(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   "",
		"short":                              "…",
		"sk-ant-oat01-abcdefghijklmnop-wxyz": "sk-ant-o...wxyz",
	} {
		if got := mask(in); got != want {
			t.Errorf("mask(%q) = %q, want %q", in, got, want)
		}
	}
}
