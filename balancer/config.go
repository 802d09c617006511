package balancer

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/claude-balancer/caddy-claude-balancer/convert"
)

// Provider types.
const (
	TypeAnthropic = "anthropic"
	TypeOpenAI    = "openai"
)

// Strategies that order the healthy candidates of a route.
const (
	StrategyPriority     = "priority"
	StrategyRoundRobin   = "round_robin"
	StrategyRandom       = "random"
	StrategyWeighted     = "weighted"
	StrategyLeastLatency = "least_latency"
	StrategyHeadroom     = "headroom"
)

// ProviderConfig declares one upstream provider.
type ProviderConfig struct {
	// Name identifies the provider in routes, logs, metrics and the status
	// endpoints. Names are unique within a balancer.
	Name string `json:"name"`

	// Type is the wire format the provider speaks: "anthropic" (the Messages
	// API, the default) or "openai" (Chat Completions).
	Type string `json:"type,omitempty"`

	// BaseURL is the provider's root URL. "/v1/messages" and
	// "/v1/messages/count_tokens" (anthropic) or "/chat/completions" (openai)
	// are appended to it. Providers that log in with OAuth default to
	// https://api.anthropic.com.
	BaseURL string `json:"base_url,omitempty"`

	// APIKey is sent as "x-api-key" to anthropic providers and as
	// "Authorization: Bearer" to openai providers. Write it as a placeholder
	// such as "{env.ANTHROPIC_API_KEY}" so it never appears in the config.
	APIKey string `json:"api_key,omitempty"`

	// AuthToken is sent as "Authorization: Bearer". Use a placeholder.
	AuthToken string `json:"auth_token,omitempty"`

	// OAuth names a Claude subscription account (its email) logged in through
	// this balancer's /oauth/ page; its access token is sent as a bearer token.
	OAuth string `json:"oauth,omitempty"`

	// PassthroughAuth forwards the client's own "x-api-key" or
	// "Authorization" header to the provider instead of a configured
	// credential, so each user of the balancer spends their own account.
	PassthroughAuth bool `json:"passthrough_auth,omitempty"`

	// Headers are extra headers sent with every request to this provider.
	// Values may use placeholders.
	Headers map[string][]string `json:"headers,omitempty"`

	// Proxy is an HTTP, HTTPS or SOCKS5 proxy URL for this provider's
	// connections (for example "socks5://127.0.0.1:1080").
	Proxy string `json:"proxy,omitempty"`

	// Resolvers are DNS servers ("host:port", port 53 by default) that
	// resolve the provider's host name instead of the system's resolver.
	Resolvers []string `json:"resolvers,omitempty"`

	// Timeouts bound each phase of a request to this provider.
	Timeouts *Timeouts `json:"timeouts,omitempty"`

	// Weight is the provider's share of traffic under the "weighted"
	// strategy. Default: 1.
	Weight int `json:"weight,omitempty"`

	// Disabled keeps the provider configured but sends it nothing.
	Disabled bool `json:"disabled,omitempty"`

	// FoldSystem is for Anthropic-compatible relays that refuse messages of
	// role "system" inside "messages" (Claude Code's mid-conversation system
	// messages). Such a message is sent to this provider as one user text
	// block, in place: joined to the user turn before it (or after it),
	// with the cache_control of its last block. Only requests holding such
	// messages are re-encoded, and only for this provider; the others get
	// the request as the client sent it. Anthropic providers only.
	FoldSystem bool `json:"fold_system,omitempty"`

	// OpenAI holds the conversion options of "openai" providers.
	OpenAI *convert.Options `json:"openai,omitempty"`
}

// Timeouts bound the phases of an upstream request.
type Timeouts struct {
	// Connect bounds establishing the connection, TLS included. Default: 10s.
	Connect caddy.Duration `json:"connect,omitempty"`

	// FirstByte bounds the wait for the response to start: its headers and,
	// for a stream, its first event. Default: 60s for streaming requests and
	// 10m for non-streaming ones, whose headers only arrive when the whole
	// answer is ready. Set explicitly, it applies to both.
	FirstByte caddy.Duration `json:"first_byte,omitempty"`

	// Idle bounds the silence between two reads of a response body, such as
	// the gap between two events of a stream. Default: 2m.
	Idle caddy.Duration `json:"idle,omitempty"`
}

// RouteConfig sends the models it matches to its candidates.
type RouteConfig struct {
	// Match lists model names, with "*" matching any run of characters,
	// compared case-insensitively with the whole requested model name. A
	// route naming the model exactly wins over glob matches; otherwise the
	// first matching route in order wins.
	Match []string `json:"match"`

	// To lists the candidates in priority order.
	To []TargetConfig `json:"to"`
}

// TargetConfig is one candidate of a route.
type TargetConfig struct {
	// Provider is the name of a configured provider.
	Provider string `json:"provider"`

	// Model replaces the request's model for this provider. Empty passes the
	// client's model through.
	Model string `json:"model,omitempty"`
}

// HealthConfig tunes passive health checking.
type HealthConfig struct {
	// Threshold is the number of counted errors in a row that takes a
	// provider out of rotation. Default: 2.
	Threshold int `json:"threshold,omitempty"`

	// Cooldown is how long an unhealthy provider stays out before it gets one
	// trial request. Default: 5m.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`

	// ResetAfter clears an error count that saw no new error for this long.
	// Default: 5m.
	ResetAfter caddy.Duration `json:"reset_after,omitempty"`

	// Status replaces the list of upstream statuses counted as provider
	// errors. Default: 401 402 403 404 408 429 and every 5xx (including the
	// 52x Cloudflare codes and 529).
	Status []int `json:"status,omitempty"`

	// BodyPattern adds regular expressions matched against error bodies and
	// in-band stream errors; a match counts as a provider error and fails
	// over even when the status alone would not.
	BodyPattern []string `json:"body_pattern,omitempty"`

	// NearLimit is the share of a quota window (anthropic-ratelimit-unified-*
	// utilization) at or above which a subscription account goes to the end
	// of the candidate order for requests without a sticky binding: new
	// sessions are steered to accounts with headroom before any 429. A sticky
	// session stays on its account until the window is rejected or full.
	// Between 0 and 1; default 0.9.
	NearLimit float64 `json:"near_limit,omitempty"`
}
