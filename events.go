package claudebalancer

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/internal/quota"
)

// Event names the module emits through Caddy's events app, on transitions
// only.
const (
	EventProviderUnhealthy  = "provider_unhealthy"
	EventProviderHealthy    = "provider_healthy"
	EventFailover           = "failover"
	EventOAuthRefreshFailed = "oauth_refresh_failed"
	EventCredentialRejected = "credential_rejected"
	EventQuotaNearLimit     = "claude_balancer." + quota.EventNearLimit
	EventQuotaRejected      = "claude_balancer." + quota.EventRejected
	EventQuotaReset         = "claude_balancer." + quota.EventReset
)

// observer turns balancer transitions into events.
type observer struct {
	ctx    caddy.Context
	events *caddyevents.App
	name   string
}

func (o *observer) emit(event string, data map[string]any) {
	if o.events == nil || !o.events.ShouldEmit(event) {
		return
	}
	data["balancer"] = o.name
	o.events.Emit(o.ctx, event, data)
}

// HealthChanged implements balancer.Observer.
func (o *observer) HealthChanged(p *balancer.Provider, class string, t balancer.Transition, errors int, reason string) {
	event := EventProviderHealthy
	if t == balancer.BecameUnhealthy {
		event = EventProviderUnhealthy
	}
	o.emit(event, map[string]any{"provider": p.Name, "endpoint": class, "errors": errors, "reason": reason})
}

// Failover implements balancer.Observer.
func (o *observer) Failover(from, to *balancer.Provider, reason string) {
	o.emit(EventFailover, map[string]any{"from": from.Name, "to": to.Name, "reason": reason})
}

// CredentialRejected implements balancer.Observer.
func (o *observer) CredentialRejected(p *balancer.Provider, status int, reason string) {
	o.emit(EventCredentialRejected, map[string]any{"provider": p.Name, "auth": p.AuthMode(), "status": status, "reason": reason})
}

// Quota implements balancer.Observer.
func (o *observer) Quota(p *balancer.Provider, client bool, ev quota.Event) {
	data := map[string]any{"provider": p.Name, "window": ev.Window, "client_credential": client}
	if ev.Utilization > 0 {
		data["utilization"] = ev.Utilization
	}
	if !ev.Until.IsZero() {
		data["until"] = ev.Until.UTC().Format(time.RFC3339)
	}
	o.emit("claude_balancer."+ev.Kind, data)
}

// oauthRefreshed records an OAuth refresh in metrics and, when it failed,
// as an event.
func (o *observer) oauthRefreshed(logger *zap.Logger) func(account string, err error) {
	return func(account string, err error) {
		m := getMetrics()
		if err == nil {
			m.oauthRefresh.WithLabelValues(o.name, "success").Inc()
			return
		}
		m.oauthRefresh.WithLabelValues(o.name, "failure").Inc()
		o.emit(EventOAuthRefreshFailed, map[string]any{"account": account, "error": err.Error()})
	}
}

var _ balancer.Observer = (*observer)(nil)
