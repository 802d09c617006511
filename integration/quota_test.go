package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// account is a mock subscription account whose 5h window fills as it
// serves: each answer adds step to its utilization and says so in the
// unified headers; once full it answers 429 with the window rejected.
type account struct {
	mu      sync.Mutex
	util    float64
	step    float64
	served  int
	limited int
	reset   time.Time
	// window is the window the account fills (5h unless set).
	window string
	// models, when set, are the only models whose answers carry a model
	// window (window other than 5h/7d).
	models []string
}

func newAccount(step float64) *account {
	return &account{step: step, window: "5h", reset: time.Now().Add(3 * time.Hour).Truncate(time.Second)}
}

func (a *account) headers(w http.ResponseWriter, status string) {
	h := w.Header()
	h.Set("Anthropic-Ratelimit-Unified-Status", status)
	h.Set("Anthropic-Ratelimit-Unified-Representative-Claim", map[string]string{"5h": "five_hour", "7d": "seven_day"}[a.window])
	h.Set("Anthropic-Ratelimit-Unified-"+a.window+"-Utilization", strconv.FormatFloat(a.util, 'f', 3, 64))
	h.Set("Anthropic-Ratelimit-Unified-"+a.window+"-Reset", strconv.FormatInt(a.reset.Unix(), 10))
	h.Set("Anthropic-Ratelimit-Unified-"+a.window+"-Status", status)
	h.Set("Anthropic-Ratelimit-Unified-Reset", strconv.FormatInt(a.reset.Unix(), 10))
	h.Set("Anthropic-Ratelimit-Unified-Overage-Status", "rejected")
	h.Set("Anthropic-Ratelimit-Unified-Overage-Disabled-Reason", "org_level_disabled")
	h.Set("Anthropic-Ratelimit-Unified-Fallback-Percentage", "0.5")
}

func (a *account) behave(w http.ResponseWriter, r *http.Request, n int) {
	var req struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(mustBody(r), &req)
	a.mu.Lock()
	carries := a.models == nil || contains(a.models, req.Model)
	if a.util >= 1 && carries {
		a.limited++
		a.headers(w, "rejected")
		a.mu.Unlock()
		errorStatus(429, "rate_limit_error", "This request would exceed your account's rate limit.")(w, r, n)
		return
	}
	a.served++
	if carries {
		a.util += a.step
		status := "allowed"
		if a.util >= 0.8 {
			status = "allowed_warning"
		}
		a.headers(w, status)
	}
	a.mu.Unlock()
	okEither("served")(w, r, n)
}

func (a *account) counts() (served, limited int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.served, a.limited
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func mustBody(r *http.Request) []byte {
	b, _ := readAllAndRestore(r)
	return b
}

func threeAccounts(t *testing.T, step float64, extra string) (*env, []*account, []*mock) {
	var accts []*account
	var mocks []*mock
	block := extra + "\n"
	for _, name := range []string{"a", "b", "c"} {
		acct := newAccount(step)
		m := newMock(t, acct.behave)
		accts, mocks = append(accts, acct), append(mocks, m)
		block += fmt.Sprintf("provider %s {\nbase_url %s\nauth_token tok-%s\n}\n", name, m.URL, name)
	}
	return start(t, block), accts, mocks
}

func TestNewSessionsAreServedWithoutA429WhileAnAccountHasHeadroom(t *testing.T) {
	e, accts, _ := threeAccounts(t, 0.1, "")
	// Each account fills to 0.9 (the default near_limit) after nine answers:
	// 27 new sessions fit without any account answering 429.
	for i := range 27 {
		resp, out := e.messages(body("claude-sonnet-4-5", i%2 == 0), "X-Claude-Code-Session-Id", fmt.Sprintf("session-%d", i))
		if resp.StatusCode != 200 {
			t.Fatalf("session %d: %d %s", i, resp.StatusCode, out)
		}
	}
	for i, a := range accts {
		served, limited := a.counts()
		if limited != 0 || served != 9 {
			t.Errorf("account %d served %d and answered 429 %d times", i, served, limited)
		}
	}
	st := e.status()
	for _, p := range st.Providers {
		if p.Quota == nil || len(p.Quota.Windows) != 1 || p.Quota.Windows[0].Name != "5h" || p.Quota.Windows[0].Utilization == nil ||
			*p.Quota.Windows[0].Utilization < 0.89 || p.Quota.Windows[0].Status != "allowed_warning" || p.Quota.Representative != "5h" {
			t.Fatalf("%s quota %+v", p.Name, p.Quota)
		}
		// What the answers said of the account as a whole is shown too.
		if q := p.Quota; q.Reset == nil || !slices.ContainsFunc(accts, func(a *account) bool { return q.Reset.Equal(a.reset) }) || q.Overage != "rejected" || q.OverageReason != "org_level_disabled" ||
			q.FallbackPct == nil || *q.FallbackPct != 0.5 {
			t.Fatalf("%s account summary: reset %v, overage %q (%q), fallback %v", p.Name, q.Reset, q.Overage, q.OverageReason, q.FallbackPct)
		}
	}
}

func TestStickySessionStaysUntilItsWindowIsFull(t *testing.T) {
	e, accts, _ := threeAccounts(t, 0.3, "")
	send := func(session string) string {
		t.Helper()
		resp, out := e.messages(body("claude-sonnet-4-5", false), "X-Claude-Code-Session-Id", session)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", session, resp.StatusCode, out)
		}
		return resp.Header.Get("X-Claude-Balancer-Provider")
	}
	// The session is bound to a; a fills to 0.9, past near_limit.
	for range 3 {
		if p := send("warm-session"); p != "a" {
			t.Fatalf("warm session on %s", p)
		}
	}
	// A new session goes elsewhere; the warm one stays on a, whose window
	// is near but not full.
	if p := send("new-session"); p != "b" {
		t.Fatalf("new session on %s, want b", p)
	}
	// a reaches 1.2: full. The warm session moves before any 429.
	accts[0].mu.Lock()
	accts[0].util = 1.0 - 0.3
	accts[0].mu.Unlock()
	if p := send("warm-session"); p != "a" {
		t.Fatalf("warm session on %s, want a while not full", p)
	}
	if p := send("warm-session"); p == "a" {
		t.Fatal("the warm session stayed on a full window")
	}
	if _, limited := accts[0].counts(); limited != 0 {
		t.Fatalf("a answered 429 %d times", limited)
	}
}

func TestHeadroomStrategyOrdersByRemainingShare(t *testing.T) {
	var accts []*account
	block := "strategy headroom\nsticky 0\n"
	for _, name := range []string{"a", "b", "c"} {
		acct := newAccount(0)
		m := newMock(t, acct.behave)
		accts = append(accts, acct)
		block += fmt.Sprintf("provider %s {\nbase_url %s\nauth_token tok-%s\n}\nroute warm-%s {\nto %s\n}\n", name, m.URL, name, name, name)
	}
	block += "route * {\nto a\nto b\nto c\n}"
	e := start(t, block)
	set := func(i int, u float64) {
		accts[i].mu.Lock()
		accts[i].util = u
		accts[i].mu.Unlock()
	}
	provider := func(model string) string {
		t.Helper()
		resp, out := e.messages(body(model, false))
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", model, resp.StatusCode, out)
		}
		return resp.Header.Get("X-Claude-Balancer-Provider")
	}
	// Readings: a 0.5, b 0.2; c has none and counts as empty.
	set(0, 0.5)
	set(1, 0.2)
	provider("warm-a")
	provider("warm-b")
	if p := provider("claude-sonnet-4-5"); p != "c" {
		t.Fatalf("first choice %s, want c (no reading counts as 1.0)", p)
	}
	// c now reads 0.95: b (0.8 left) comes first, then a (0.5 left).
	set(2, 0.95)
	provider("warm-c")
	if p := provider("claude-sonnet-4-5"); p != "b" {
		t.Fatalf("got %s, want b", p)
	}
	set(1, 0.7)
	provider("warm-b")
	if p := provider("claude-sonnet-4-5"); p != "a" {
		t.Fatalf("with a at 0.5, b at 0.7 and c at 0.95, got %s, want a", p)
	}
}

// quotaDoc is the part of /providers the quota tests read.
type quotaDoc struct {
	Providers []struct {
		Name          string  `json:"name"`
		Healthy       bool    `json:"healthy"`
		State         string  `json:"state"`
		QuotaCooldown bool    `json:"quota_cooldown"`
		Cooldown      float64 `json:"cooldown_remaining_seconds"`
		Quota         *struct {
			Status         string     `json:"status"`
			Representative string     `json:"representative"`
			Reset          *time.Time `json:"reset"`
			Overage        string     `json:"overage_status"`
			OverageReason  string     `json:"overage_disabled_reason"`
			FallbackPct    *float64   `json:"fallback_percentage"`
			CooldownUntil  *time.Time
			Windows        []struct {
				Name          string     `json:"name"`
				Utilization   *float64   `json:"utilization"`
				Status        string     `json:"status"`
				Reset         *time.Time `json:"reset"`
				Models        []string   `json:"models"`
				CooldownUntil *time.Time `json:"cooldown_until"`
			} `json:"windows"`
		} `json:"quota"`
	} `json:"providers"`
}

func (e *env) status() quotaDoc {
	e.t.Helper()
	resp, b := e.get("/providers")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("/providers: %d %s", resp.StatusCode, b)
	}
	var doc quotaDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		e.t.Fatalf("/providers: %v", err)
	}
	return doc
}

func readAllAndRestore(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b, err
}

func TestAModelWindowRejectionCoolsOnlyItsModels(t *testing.T) {
	opus := newAccount(0)
	opus.window, opus.models, opus.util = "7d_oi", []string{"claude-opus-5"}, 1.0
	opus.reset = time.Now().Add(5 * 24 * time.Hour).Truncate(time.Second)
	a := newMock(t, opus.behave)
	b := newMock(t, okEither("from b"))
	e := start(t, fmt.Sprintf(`
		sticky 0
		provider a {
			base_url %s
			auth_token tok-a
		}
		provider b {
			base_url %s
			auth_token tok-b
		}`, a.URL, b.URL))
	e.load(fmt.Sprintf(`
		sticky 0
		provider a {
			base_url %s
			auth_token tok-a
		}
		provider b {
			base_url %s
			auth_token tok-b
		}`, a.URL, b.URL), `events {
			on claude_balancer.quota_rejected cb_test_recorder
		}`)
	resp, out := e.messages(body("claude-opus-5", false))
	if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "b" {
		t.Fatalf("opus: %d from %s: %s", resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Provider"), out)
	}
	// Opus cools down at a for days; sonnet keeps being served there.
	for range 3 {
		resp, out = e.messages(body("claude-sonnet-5", false))
		if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "a" {
			t.Fatalf("sonnet: %d from %s: %s", resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Provider"), out)
		}
	}
	before := a.count()
	resp, _ = e.messages(body("claude-opus-5", false))
	if resp.Header.Get("X-Claude-Balancer-Provider") != "b" || a.count() != before {
		t.Fatal("opus reached a during its window's cooldown")
	}
	p := e.status().Providers[0]
	if !p.Healthy || p.QuotaCooldown || p.Quota == nil {
		t.Fatalf("a: %+v", p)
	}
	var win = p.Quota.Windows[0]
	if win.Name != "7d_oi" || win.CooldownUntil == nil || time.Until(*win.CooldownUntil) < 4*24*time.Hour || !contains(win.Models, "claude-opus-5") {
		t.Fatalf("window %+v", win)
	}
	if got := eventsMatching("claude_balancer.quota_rejected " + e.name + " a"); len(got) != 1 {
		t.Fatalf("events %v", got)
	}
}

func TestARejectedAccountWindowCoolsEveryModelForDays(t *testing.T) {
	acct := newAccount(0)
	acct.window, acct.util = "7d", 1.0
	acct.reset = time.Now().Add(6 * 24 * time.Hour).Truncate(time.Second)
	a := newMock(t, acct.behave)
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\nauth_token tok\n}", a.URL))
	resp, out := e.messages(body("claude-sonnet-5", false))
	if resp.StatusCode != 429 {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	resp, out = e.messages(body("claude-haiku-5", false))
	secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != 429 || !strings.Contains(string(out), "rate_limit_error") || secs < 5*24*3600 || a.count() != 1 {
		t.Fatalf("another model during the cooldown: %d retry-after %ds, %d calls: %s", resp.StatusCode, secs, a.count(), out)
	}
	p := e.status().Providers[0]
	if p.Healthy || !p.QuotaCooldown || p.State != "cooldown" || p.Cooldown < 5*24*3600 {
		t.Fatalf("a: %+v", p)
	}
}

func TestQuotaIsVisibleAndKeptAcrossReloads(t *testing.T) {
	acct := newAccount(0.4)
	a := newMock(t, acct.behave)
	conf := fmt.Sprintf("provider a {\nbase_url %s\nauth_token tok\n}", a.URL)
	e := start(t, conf)
	logFile := t.TempDir() + "/access.log"
	e.load(conf, "")
	e.tester.InitServer(globalOptions(`events {
		on claude_balancer.quota_near_limit cb_test_recorder
		on claude_balancer.quota_reset cb_test_recorder
	}`)+fmt.Sprintf(`
:%d {
	log {
		output file %s
	}
	claude_balancer {
		name %s
		provider a {
			base_url %s
			auth_token tok
		}
	}
}
`, httpPort, logFile, e.name, a.URL), "caddyfile")
	e.settle()
	e.messages(body("m", false))
	e.messages(body("m", false))
	if got := eventsMatching("claude_balancer.quota_near_limit " + e.name + " a"); len(got) != 0 {
		t.Fatalf("near-limit event at 0.8? %v", got)
	}
	e.messages(body("m", false)) // 1.2: past near_limit
	if got := eventsMatching("claude_balancer.quota_near_limit " + e.name + " a"); len(got) != 1 {
		t.Fatalf("near-limit events %v", got)
	}
	_, metrics := adminDo(t, http.MethodGet, "/metrics")
	if !strings.Contains(string(metrics), fmt.Sprintf(`claude_balancer_quota_utilization{balancer=%q,provider="a",window="5h"} 1.2`, e.name)) {
		t.Fatal("no utilization gauge")
	}
	waitFor(t, "the access log", func() bool {
		b, _ := os.ReadFile(logFile)
		return strings.Contains(string(b), `"quota_window":"5h"`)
	})
	// A reload keeps what the account said.
	e.load(conf+"\nstrategy round_robin", "")
	if q := e.status().Providers[0].Quota; q == nil || *q.Windows[0].Utilization != 1.2 {
		t.Fatalf("after a reload: %+v", q)
	}
}
