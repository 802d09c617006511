package claudebalancer

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/internal/quota"
	"github.com/claude-balancer/caddy-claude-balancer/internal/redact"
	"github.com/claude-balancer/caddy-claude-balancer/team"
)

// Version is the module's version, reported by GET /health.
const Version = "0.1.0"

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// serveHealth answers liveness and readiness probes: 200 while at least one
// provider can take messages, 503 otherwise.
func (h *Handler) serveHealth(w http.ResponseWriter, _ *http.Request) {
	avail, total := 0, 0
	for _, p := range h.bal.Providers() {
		total++
		if ok, _ := p.Health(balancer.ClassMessages).Available(h.bal.Policy()); ok && p.Enabled() && p.QuotaCooldown().IsZero() {
			avail++
		}
	}
	status, code := "healthy", http.StatusOK
	if avail == 0 {
		status, code = "unavailable", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{
		"status":              status,
		"service":             "claude_balancer",
		"version":             Version,
		"balancer":            h.bal.Name,
		"providers_available": avail,
		"providers_total":     total,
	})
}

// ProviderStatus is the state of one provider as /providers reports it.
type ProviderStatus struct {
	Name              string         `json:"name"`
	Type              string         `json:"type"`
	BaseURL           string         `json:"base_url"`
	Auth              string         `json:"auth"`
	Account           string         `json:"account,omitempty"`
	Enabled           bool           `json:"enabled"`
	Override          string         `json:"override,omitempty"`
	Healthy           bool           `json:"healthy"`
	State             string         `json:"state"`
	Errors            string         `json:"errors"`
	ErrorCount        int            `json:"error_count"`
	Threshold         int            `json:"threshold"`
	CooldownRemaining float64        `json:"cooldown_remaining_seconds"`
	CooldownUntil     *time.Time     `json:"cooldown_until,omitempty"`
	QuotaCooldown     bool           `json:"quota_cooldown,omitempty"`
	LastError         string         `json:"last_error,omitempty"`
	LastErrorTime     *time.Time     `json:"last_error_time,omitempty"`
	LastSuccessTime   *time.Time     `json:"last_success_time,omitempty"`
	Requests          int64          `json:"requests"`
	Failures          int64          `json:"failures"`
	LatencyMS         float64        `json:"latency_ms,omitempty"`
	Weight            int            `json:"weight"`
	Routes            []string       `json:"routes"`
	CountTokens       EndpointHealth `json:"count_tokens"`
	// CredentialRejected is when the provider last refused its configured
	// credential, unless it accepted it since.
	CredentialRejected *time.Time `json:"credential_rejected,omitempty"`
	// Credentials describes the client credentials of a passthrough provider.
	Credentials *CredentialStatus `json:"credentials,omitempty"`
	// Quota is what the provider's answers said about its account's quota
	// windows (for a passthrough provider, the credential heard from last).
	Quota  *QuotaStatus `json:"quota,omitempty"`
	Recent RecentStatus `json:"recent"`
	// Series is the provider's activity over the last 15 minutes, one point
	// a minute, oldest first.
	Series []MinutePoint `json:"series"`
}

// RecentStatus is a provider's activity over the last minutes.
type RecentStatus struct {
	Minutes      int     `json:"minutes"`
	Requests     int64   `json:"requests"`
	Failures     int64   `json:"failures"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	TTFTSamples  int     `json:"ttft_samples"`
	TTFTP50MS    float64 `json:"ttft_p50_ms"`
	TTFTP90MS    float64 `json:"ttft_p90_ms"`
	TTFTP99MS    float64 `json:"ttft_p99_ms"`
}

// MinutePoint is a provider's activity in one minute.
type MinutePoint struct {
	Start    time.Time `json:"start"`
	Requests int64     `json:"requests"`
	Failures int64     `json:"failures"`
	// TTFTMS is the mean time to first token of the minute's streams.
	TTFTMS float64 `json:"ttft_ms"`
}

// QuotaStatus is the state of an account's quota windows.
type QuotaStatus struct {
	Windows        []WindowStatus `json:"windows"`
	Status         string         `json:"status,omitempty"`
	Representative string         `json:"representative,omitempty"`
	// Reset is when the binding window resets.
	Reset *time.Time `json:"reset,omitempty"`
	// OverageStatus and OverageDisabledReason are the account's
	// pay-as-you-go overage; Fallback and FallbackPercentage its fallback,
	// as the latest answer gave them.
	OverageStatus         string     `json:"overage_status,omitempty"`
	OverageDisabledReason string     `json:"overage_disabled_reason,omitempty"`
	Fallback              string     `json:"fallback,omitempty"`
	FallbackPercentage    *float64   `json:"fallback_percentage,omitempty"`
	Observed              *time.Time `json:"observed,omitempty"`
	// CooldownUntil is the end of an account-wide cooldown after a 429.
	CooldownUntil  *time.Time `json:"cooldown_until,omitempty"`
	CooldownWindow string     `json:"cooldown_window,omitempty"`
}

// WindowStatus is one quota window.
type WindowStatus struct {
	Name        string     `json:"name"`
	Utilization *float64   `json:"utilization,omitempty"`
	Status      string     `json:"status,omitempty"`
	Reset       *time.Time `json:"reset,omitempty"`
	// Models are the models a model window was seen on.
	Models []string `json:"models,omitempty"`
	// CooldownUntil is the end of a rejected model window's cooldown.
	CooldownUntil *time.Time `json:"cooldown_until,omitempty"`
}

func quotaStatus(s quota.Snapshot) *QuotaStatus {
	if s.Observed.IsZero() && s.Until.IsZero() && len(s.Windows) == 0 {
		return nil
	}
	qs := &QuotaStatus{Windows: []WindowStatus{}, Status: s.Status, Representative: s.Representative,
		Observed: timePtr(s.Observed), CooldownUntil: timePtr(s.Until), CooldownWindow: s.Why}
	if sum := s.Summary; sum != nil {
		qs.Reset, qs.OverageStatus, qs.OverageDisabledReason = timePtr(sum.Reset.UTC()), sum.Overage, sum.OverageDisabledReason
		qs.Fallback, qs.FallbackPercentage = sum.Fallback, sum.FallbackPercentage
	}
	for _, w := range s.Windows {
		ws := WindowStatus{Name: w.Name, Status: w.Status, Reset: timePtr(w.Reset.UTC()), Models: w.Models, CooldownUntil: timePtr(w.Until.UTC())}
		if w.HasUtilization {
			u := w.Utilization
			ws.Utilization = &u
		}
		qs.Windows = append(qs.Windows, ws)
	}
	return qs
}

// CredentialStatus is what a passthrough provider's answers said about the
// credentials clients pass through, as counts: no credential is shown.
type CredentialStatus struct {
	Tracked     int `json:"tracked"`
	CoolingDown int `json:"cooling_down"`
	Rejected    int `json:"rejected_recently"`
}

// EndpointHealth is the health of one endpoint class of a provider.
type EndpointHealth struct {
	Healthy           bool    `json:"healthy"`
	State             string  `json:"state"`
	Errors            string  `json:"errors"`
	CooldownRemaining float64 `json:"cooldown_remaining_seconds"`
	LastError         string  `json:"last_error,omitempty"`
}

// RouteStatus describes one route.
type RouteStatus struct {
	Match []string       `json:"match"`
	To    []TargetStatus `json:"to"`
}

// TargetStatus is one candidate of a route.
type TargetStatus struct {
	Provider string `json:"provider"`
	Model    string `json:"model,omitempty"`
}

// BalancerStatus is the document /providers serves.
type BalancerStatus struct {
	Balancer          string           `json:"balancer"`
	Strategy          string           `json:"selection_strategy"`
	StickySeconds     float64          `json:"sticky_seconds"`
	StickyBindings    int              `json:"sticky_bindings"`
	Threshold         int              `json:"threshold"`
	CooldownSeconds   float64          `json:"cooldown_seconds"`
	ResetAfterSeconds float64          `json:"reset_after_seconds"`
	TotalProviders    int              `json:"total_providers"`
	HealthyProviders  int              `json:"healthy_providers"`
	TotalRoutes       int              `json:"total_model_routes"`
	Providers         []ProviderStatus `json:"providers"`
	Routes            []RouteStatus    `json:"routes"`
	Dedup             DedupStatus      `json:"dedup"`
	// Clients are the named clients: their usage, limits and windows.
	Clients []team.Status `json:"clients"`
}

// DedupStatus reports the sharing of upstream calls.
type DedupStatus struct {
	Enabled     bool   `json:"enabled"`
	Runs        uint64 `json:"runs"`
	Joins       uint64 `json:"joins"`
	ReplayHits  uint64 `json:"replay_hits"`
	FanOut      uint64 `json:"fan_out"`
	SlowEnded   uint64 `json:"slow_ended"`
	WaitExpired uint64 `json:"wait_expired"`
	InFlight    int    `json:"in_flight"`
	Groups      int    `json:"groups"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func remaining(until time.Time) float64 {
	if d := time.Until(until); d > 0 {
		return d.Seconds()
	}
	return 0
}

// Status returns the balancer's state. It holds no secret.
func (h *Handler) Status() BalancerStatus {
	b := h.bal
	pol := b.Policy()
	st := BalancerStatus{
		Balancer:          b.Name,
		Strategy:          b.Strategy(),
		StickyBindings:    b.StickyBindings(),
		Threshold:         pol.Threshold,
		CooldownSeconds:   pol.Cooldown.Seconds(),
		ResetAfterSeconds: pol.ResetAfter.Seconds(),
		Providers:         []ProviderStatus{},
		Routes:            []RouteStatus{},
	}
	if h.Sticky != nil {
		st.StickySeconds = time.Duration(*h.Sticky).Seconds()
	} else {
		st.StickySeconds = balancer.DefaultSticky.Seconds()
	}
	served := map[string][]string{}
	for _, r := range b.Routes() {
		rs := RouteStatus{Match: r.Patterns(), To: []TargetStatus{}}
		for _, t := range r.Targets {
			rs.To = append(rs.To, TargetStatus{Provider: t.Provider.Name, Model: t.Model})
			served[t.Provider.Name] = appendUnique(served[t.Provider.Name], r.ID)
		}
		st.Routes = append(st.Routes, rs)
	}
	for _, p := range b.Providers() {
		s := p.Health(balancer.ClassMessages).Snapshot(pol)
		c := p.Health(balancer.ClassCountTokens).Snapshot(pol)
		quotaUntil := p.QuotaCooldown()
		if !quotaUntil.IsZero() && quotaUntil.After(s.CooldownUntil) {
			// The account said when to come back: that is the cooldown.
			s.Healthy, s.State, s.CooldownUntil = false, "cooldown", quotaUntil
		}
		reqs, fails := p.Stats()
		ps := ProviderStatus{
			Name:              p.Name,
			Type:              p.Type,
			BaseURL:           redact.URL(p.BaseURL),
			Auth:              p.AuthMode(),
			Account:           p.Account,
			Enabled:           p.Enabled(),
			Override:          p.Override(),
			Healthy:           s.Healthy && p.Enabled(),
			State:             s.State,
			Errors:            itoa(s.Errors) + "/" + itoa(pol.Threshold),
			ErrorCount:        s.Errors,
			Threshold:         pol.Threshold,
			CooldownRemaining: remaining(s.CooldownUntil),
			CooldownUntil:     timePtr(s.CooldownUntil),
			QuotaCooldown:     !quotaUntil.IsZero(),
			LastError:         s.LastMessage,
			LastErrorTime:     timePtr(s.LastError),
			LastSuccessTime:   timePtr(s.LastSuccess),
			Requests:          reqs,
			Failures:          fails,
			LatencyMS:         float64(p.Latency().Microseconds()) / 1000,
			Weight:            p.Weight(),
			Routes:            served[p.Name],
			CountTokens: EndpointHealth{
				Healthy: c.Healthy, State: c.State, Errors: itoa(c.Errors) + "/" + itoa(pol.Threshold),
				CooldownRemaining: remaining(c.CooldownUntil), LastError: c.LastMessage,
			},
		}
		ps.CredentialRejected = timePtr(p.CredentialRejected())
		if p.Passthrough() {
			cs := p.Credentials(pol)
			ps.Credentials = &CredentialStatus{Tracked: cs.Tracked, CoolingDown: cs.CoolingDown, Rejected: cs.Rejected}
		}
		ps.Quota = quotaStatus(p.Quota())
		for _, m := range p.Series() {
			ps.Series = append(ps.Series, MinutePoint{Start: m.Start.UTC(), Requests: m.Requests, Failures: m.Failures, TTFTMS: ms(m.TTFT)})
		}
		rs := p.Recent(15)
		ps.Recent = RecentStatus{Minutes: rs.Minutes, Requests: rs.Requests, Failures: rs.Failures,
			InputTokens: rs.InputTokens, OutputTokens: rs.OutputTokens, TTFTSamples: rs.TTFTSamples,
			TTFTP50MS: ms(rs.TTFTP50), TTFTP90MS: ms(rs.TTFTP90), TTFTP99MS: ms(rs.TTFTP99)}
		if !p.Enabled() {
			ps.State = "disabled"
		}
		if ps.Routes == nil {
			ps.Routes = []string{}
		}
		st.TotalProviders++
		if ps.Healthy {
			st.HealthyProviders++
		}
		st.Providers = append(st.Providers, ps)
	}
	st.TotalRoutes = len(st.Routes)
	st.Clients = []team.Status{}
	for _, c := range h.team.Clients() {
		st.Clients = append(st.Clients, c.Status(time.Now()))
	}
	ds := h.dedup.Stats()
	st.Dedup = DedupStatus{Enabled: !h.dedupOff, Runs: ds.Runs, Joins: ds.Joins, ReplayHits: ds.ReplayHits,
		FanOut: ds.FanOut, SlowEnded: ds.SlowEnded, WaitExpired: ds.WaitExpired, InFlight: ds.Active, Groups: ds.Groups}
	return st
}

func (h *Handler) serveProviders(w http.ResponseWriter, r *http.Request) {
	if wantsHTML(r) {
		h.serveStatusPage(w, r)
		return
	}
	writeJSON(w, http.StatusOK, h.Status())
}

// wantsHTML reports whether a browser asked: it prefers text/html, unless
// ?format=json says otherwise.
func wantsHTML(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "json":
		return false
	case "html":
		return true
	}
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "text/html")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func appendUnique(list []string, s string) []string {
	for _, v := range list {
		if v == s {
			return list
		}
	}
	return append(list, s)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
