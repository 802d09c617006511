package oauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/clock"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/oauth2"
)

// fakeClock is the time tests see; it moves only when told.
type fakeClock = clock.Fake

func newClock() *fakeClock { return clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) }

// logBuffer collects every log line a Manager writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger() (*zap.Logger, *logBuffer) {
	buf := &logBuffer{}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(buf), zap.DebugLevel)
	return zap.New(core), buf
}

// grant is an authorization code the mock issued.
type grant struct {
	challenge, state, redirect string
	used                       bool
}

// refusal is an answer the mock gives to refresh requests instead of tokens.
type refusal struct {
	status     int
	retryAfter string
	body       string
}

// mockOAuth is an authorize page and token endpoint behaving like Claude's.
type mockOAuth struct {
	srv *httptest.Server

	mu          sync.Mutex
	codes       map[string]*grant
	refresh     map[string]bool // refresh tokens still valid
	issued      []string        // every token handed out
	verifiers   []string        // PKCE verifiers that matched their challenge
	bodies      []map[string]string
	ctypes      []string
	exchanges   int
	refreshes   int
	expiresIn   int64
	reportEmail string
	// refuse, when set, answers refresh requests for these refresh tokens
	// (or all, under key "") with a refusal.
	refuse map[string]refusal
	// gate, when set, holds refresh requests until it is closed.
	gate chan struct{}
	// entered receives a value as each refresh request arrives, if set.
	entered chan struct{}
}

const mockClientID = "test-client"

func newMock(t testing.TB) *mockOAuth {
	mk := &mockOAuth{codes: map[string]*grant{}, refresh: map[string]bool{}, expiresIn: 3600, refuse: map[string]refusal{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", mk.authorize)
	mux.HandleFunc("POST /token", mk.token)
	mk.srv = httptest.NewServer(mux)
	t.Cleanup(mk.srv.Close)
	return mk
}

func (mk *mockOAuth) config() Config {
	return Config{
		AuthorizeURL: mk.srv.URL + "/authorize",
		TokenURL:     mk.srv.URL + "/token",
		ClientID:     mockClientID,
		RedirectURI:  "https://console.example.test/oauth/code/callback",
		HTTPClient:   mk.srv.Client(),
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// authorize plays Claude's login: it checks the request and shows the code
// as "code#state" on a page, as Claude's callback page does.
func (mk *mockOAuth) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k, want := range map[string]string{"code": "true", "response_type": "code", "client_id": mockClientID,
		"code_challenge_method": "S256", "redirect_uri": "https://console.example.test/oauth/code/callback",
		"scope": "org:create_api_key user:profile user:inference"} {
		if q.Get(k) != want {
			http.Error(w, fmt.Sprintf("bad %s %q", k, q.Get(k)), http.StatusBadRequest)
			return
		}
	}
	if len(q.Get("code_challenge")) != 43 || q.Get("state") == "" {
		http.Error(w, "missing challenge or state", http.StatusBadRequest)
		return
	}
	code := "ac_" + randHex(16)
	mk.mu.Lock()
	mk.codes[code] = &grant{challenge: q.Get("code_challenge"), state: q.Get("state"), redirect: q.Get("redirect_uri")}
	mk.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, `<!doctype html><html><body><h1>Authentication Code</h1><p>Paste this into Claude Code:</p><code id="auth-code">%s</code></body></html>`,
		html.EscapeString(code+"#"+q.Get("state")))
}

func (mk *mockOAuth) token(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	body := map[string]string{}
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		v, _ := url.ParseQuery(string(raw))
		for k := range v {
			body[k] = v.Get(k)
		}
	} else if err := json.Unmarshal(raw, &body); err != nil {
		writeTokenJSON(w, 400, map[string]any{"error": "invalid_request", "error_description": "Invalid request format"})
		return
	}
	mk.mu.Lock()
	mk.bodies = append(mk.bodies, body)
	mk.ctypes = append(mk.ctypes, ct)
	mk.mu.Unlock()
	if body["client_id"] != mockClientID {
		writeTokenJSON(w, 401, map[string]any{"error": "invalid_client"})
		return
	}
	switch body["grant_type"] {
	case "authorization_code":
		mk.mu.Lock()
		mk.exchanges++
		g := mk.codes[body["code"]]
		ok := g != nil && !g.used && g.state == body["state"] && g.redirect == body["redirect_uri"] &&
			oauth2.S256ChallengeFromVerifier(body["code_verifier"]) == g.challenge
		if ok {
			g.used = true
			mk.verifiers = append(mk.verifiers, body["code_verifier"])
		}
		mk.mu.Unlock()
		if !ok {
			writeTokenJSON(w, 400, map[string]any{"error": "invalid_grant", "error_description": "Invalid code or verifier"})
			return
		}
		mk.issue(w)
	case "refresh_token":
		mk.mu.Lock()
		mk.refreshes++
		gate, entered := mk.gate, mk.entered
		ref, refused := mk.refuse[body["refresh_token"]]
		if !refused {
			ref, refused = mk.refuse[""]
		}
		valid := mk.refresh[body["refresh_token"]]
		mk.mu.Unlock()
		if entered != nil {
			entered <- struct{}{}
		}
		if gate != nil {
			<-gate
		}
		if refused {
			if ref.retryAfter != "" {
				w.Header().Set("Retry-After", ref.retryAfter)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(ref.status)
			_, _ = io.WriteString(w, ref.body)
			return
		}
		if !valid {
			writeTokenJSON(w, 400, map[string]any{"error": "invalid_grant", "error_description": "Refresh token not found or invalid"})
			return
		}
		mk.mu.Lock()
		delete(mk.refresh, body["refresh_token"])
		mk.mu.Unlock()
		mk.issue(w)
	default:
		writeTokenJSON(w, 400, map[string]any{"error": "unsupported_grant_type"})
	}
}

// issue answers with a new token pair.
func (mk *mockOAuth) issue(w http.ResponseWriter) {
	at, rt := "sk-ant-oat01-"+randHex(24), "sk-ant-ort01-"+randHex(24)
	mk.mu.Lock()
	mk.refresh[rt] = true
	mk.issued = append(mk.issued, at, rt)
	resp := map[string]any{"token_type": "Bearer", "access_token": at, "refresh_token": rt,
		"expires_in": mk.expiresIn, "scope": "user:inference user:profile"}
	if mk.reportEmail != "" {
		resp["account"] = map[string]string{"email_address": mk.reportEmail, "uuid": "u1"}
	}
	mk.mu.Unlock()
	writeTokenJSON(w, 200, resp)
}

func writeTokenJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (mk *mockOAuth) counts() (exchanges, refreshes int) {
	mk.mu.Lock()
	defer mk.mu.Unlock()
	return mk.exchanges, mk.refreshes
}

func (mk *mockOAuth) tokens() []string {
	mk.mu.Lock()
	defer mk.mu.Unlock()
	return append([]string(nil), mk.issued...)
}

func (mk *mockOAuth) setRefuse(key string, r refusal) {
	mk.mu.Lock()
	defer mk.mu.Unlock()
	mk.refuse[key] = r
}

func (mk *mockOAuth) clearRefuse() {
	mk.mu.Lock()
	defer mk.mu.Unlock()
	mk.refuse = map[string]refusal{}
}

var codeOnPage = regexp.MustCompile(`<code id="auth-code">([^<]+)</code>`)

// visit follows a login URL like a browser and returns the code Claude shows.
func (mk *mockOAuth) visit(t testing.TB, loginURL string) string {
	t.Helper()
	resp, err := mk.srv.Client().Get(loginURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("authorize page: %d %s", resp.StatusCode, b)
	}
	mm := codeOnPage.FindSubmatch(b)
	if mm == nil {
		t.Fatalf("no code on the authorize page: %s", b)
	}
	return html.UnescapeString(string(mm[1]))
}

// testEnv is a Manager wired to a mock, a fake clock and a log buffer.
type testEnv struct {
	m     *Manager
	mock  *mockOAuth
	clock *fakeClock
	logs  *logBuffer
	st    certmagic.Storage
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	mk := newMock(t)
	return newEnvWith(t, mk, &certmagic.FileStorage{Path: t.TempDir()}, newClock())
}

func newEnvWith(t testing.TB, mk *mockOAuth, st certmagic.Storage, clock *fakeClock) *testEnv {
	t.Helper()
	logger, logs := newLogger()
	m := NewManager(mk.config(), st, logger)
	m.clock = clock
	m.after = func(time.Duration) <-chan time.Time { return nil }
	t.Cleanup(m.Close)
	return &testEnv{m: m, mock: mk, clock: clock, logs: logs, st: st}
}

// login logs account in through the whole flow and returns its access token.
func (e *testEnv) login(t testing.TB, account string) string {
	t.Helper()
	l, err := e.m.startLogin(account)
	if err != nil {
		t.Fatal(err)
	}
	code := e.mock.visit(t, l.URL)
	if _, err := e.m.exchange(context.Background(), code, ""); err != nil {
		t.Fatalf("exchange: %v", err)
	}
	tok, err := e.m.Token(context.Background(), account)
	if err != nil {
		t.Fatalf("token after login: %v", err)
	}
	return tok
}
