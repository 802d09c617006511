package oauth

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// AccountStatus describes one account. It holds masked token previews, never
// a token.
type AccountStatus struct {
	// Account is the account's lower-cased email.
	Account string
	// Configured is set when a configured provider uses the account.
	Configured bool
	// LoggedIn is set when a token is stored.
	LoggedIn bool
	// Healthy is set when the token has not expired: requests can use it.
	Healthy bool
	// ExpiringSoon is set when the token is within RefreshBefore of expiry.
	ExpiringSoon bool
	// NeedsLogin is set when the token endpoint refused the refresh token.
	NeedsLogin bool
	// ExpiresAt is when the access token expires.
	ExpiresAt time.Time
	// CreatedAt is when the account logged in.
	CreatedAt time.Time
	// LastRefresh is when the token was last refreshed, by any instance.
	LastRefresh time.Time
	// LastUsed is when this process last handed the token out.
	LastUsed time.Time
	// UsageCount counts tokens handed out since this process started.
	UsageCount int64
	// Scopes are the scopes granted.
	Scopes []string
	// AccessTokenPreview and RefreshTokenPreview are masked: the first 8
	// and the last 4 characters.
	AccessTokenPreview  string
	RefreshTokenPreview string
	// LastError is the last refresh failure, cleared by a success.
	LastError string
	// RetryAt is when a failed refresh will be tried again.
	RetryAt time.Time
	// LoginPage is where the account logs in.
	LoginPage string
	// Now is the time the status was taken at.
	Now time.Time
}

// statusOf describes one account as it is in memory.
func (m *Manager) statusOf(a *account) AccountStatus {
	e := m.env()
	now := m.now()
	s := AccountStatus{
		Account:    a.name,
		Configured: m.isConfigured(a.name),
		UsageCount: a.usage.Load(),
		LoginPage:  e.loginPage,
		Now:        now,
	}
	if n := a.lastUsed.Load(); n != 0 {
		s.LastUsed = time.Unix(0, n)
	}
	a.mu.Lock()
	rec := a.rec
	s.LastRefresh, s.LastError, s.NeedsLogin = a.lastRefresh, a.lastErr, a.needsLogin
	if !a.loaded && a.loadErr != nil {
		s.LastError = a.loadErr.Error()
	}
	if now.Before(a.retryAt) {
		s.RetryAt = a.retryAt
	}
	a.mu.Unlock()
	if rec != nil {
		s.LoggedIn = true
		s.Healthy = now.Before(rec.ExpiresAt)
		s.ExpiringSoon = !now.Before(rec.ExpiresAt.Add(-e.cfg.RefreshBefore))
		s.ExpiresAt, s.CreatedAt = rec.ExpiresAt, rec.CreatedAt
		s.Scopes = append([]string(nil), rec.Scopes...)
		s.AccessTokenPreview, s.RefreshTokenPreview = mask(rec.AccessToken), mask(rec.RefreshToken)
		if s.LastRefresh.IsZero() {
			s.LastRefresh = rec.RefreshedAt
		}
	}
	return s
}

// State is a one-word summary: "ok", "expiring", "expired", "refresh_failing",
// "needs_login" or "logged_out".
func (s AccountStatus) State() string {
	switch {
	case !s.LoggedIn:
		return "logged_out"
	case s.NeedsLogin:
		return "needs_login"
	case !s.Healthy:
		return "expired"
	case !s.RetryAt.IsZero():
		return "refresh_failing"
	case s.ExpiringSoon:
		return "expiring"
	}
	return "ok"
}

// MarshalJSON writes the status in the shape of the original service's
// /oauth/status entries (Unix seconds, previews, usage), with English
// durations and ISO times added.
func (s AccountStatus) MarshalJSON() ([]byte, error) {
	left := s.ExpiresAt.Sub(s.Now)
	v := struct {
		Account             string   `json:"account_email"`
		State               string   `json:"state"`
		Configured          bool     `json:"configured"`
		LoggedIn            bool     `json:"logged_in"`
		Healthy             bool     `json:"is_healthy"`
		Expired             bool     `json:"is_expired"`
		ExpiringSoon        bool     `json:"will_expire_soon"`
		NeedsLogin          bool     `json:"needs_login"`
		ExpiresAt           *int64   `json:"expires_at"`
		ExpiresAtISO        string   `json:"expires_at_iso,omitempty"`
		ExpiresInSeconds    *int64   `json:"expires_in_seconds"`
		ExpiresInMinutes    *float64 `json:"expires_in_minutes"`
		ExpiresInHuman      string   `json:"expires_in_human,omitempty"`
		CreatedAt           *int64   `json:"created_at"`
		LastRefresh         *int64   `json:"last_refresh"`
		LastRefreshISO      string   `json:"last_refresh_iso,omitempty"`
		UsageCount          int64    `json:"usage_count"`
		LastUsed            string   `json:"last_used"`
		LastUsedTimestamp   *int64   `json:"last_used_timestamp"`
		AccessTokenPreview  string   `json:"access_token_preview,omitempty"`
		RefreshTokenPreview string   `json:"refresh_token_preview,omitempty"`
		Scopes              []string `json:"scopes"`
		ScopeCount          int      `json:"scope_count"`
		LastError           string   `json:"last_error,omitempty"`
		RetryAt             *int64   `json:"retry_at,omitempty"`
		LoginPage           string   `json:"login_page"`
	}{
		Account: s.Account, State: s.State(), Configured: s.Configured, LoggedIn: s.LoggedIn,
		Healthy: s.Healthy, Expired: s.LoggedIn && !s.Healthy, ExpiringSoon: s.ExpiringSoon, NeedsLogin: s.NeedsLogin,
		CreatedAt: unix(s.CreatedAt), LastRefresh: unix(s.LastRefresh), LastRefreshISO: iso(s.LastRefresh),
		UsageCount: s.UsageCount, LastUsed: ago(s.LastUsed, s.Now), LastUsedTimestamp: unix(s.LastUsed),
		AccessTokenPreview: s.AccessTokenPreview, RefreshTokenPreview: s.RefreshTokenPreview,
		Scopes: s.Scopes, ScopeCount: len(s.Scopes), LastError: s.LastError, RetryAt: unix(s.RetryAt),
		LoginPage: s.LoginPage,
	}
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if s.LoggedIn {
		secs := int64(math.Floor(left.Seconds()))
		mins := math.Round(left.Minutes()*10) / 10
		v.ExpiresAt, v.ExpiresAtISO = unix(s.ExpiresAt), iso(s.ExpiresAt)
		v.ExpiresInSeconds, v.ExpiresInMinutes, v.ExpiresInHuman = &secs, &mins, human(left)
	}
	return json.Marshal(v)
}

func unix(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	u := t.Unix()
	return &u
}

func iso(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// human writes a remaining lifetime for people: "expired", "45s", "12m",
// "2h30m", "3d4h".
func human(d time.Duration) string {
	switch {
	case d <= 0:
		return "expired"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// ago writes when something last happened: "never", "just now", "5m ago".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	return human(d) + " ago"
}

// mask shows enough of a token to tell tokens apart and nothing more: the
// first 8 characters (Claude's are all "sk-ant-o") and the last 4.
func mask(t string) string {
	switch {
	case t == "":
		return ""
	case len(t) < 20:
		return "…"
	}
	return t[:8] + "..." + t[len(t)-4:]
}
