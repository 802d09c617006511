// Package claudebalancer is a Caddy HTTP handler that puts one endpoint in
// front of many Claude-capable providers for Claude Code and other clients of
// the Anthropic Messages API: routing by model, failover before the first
// byte, passive health, session stickiness and the status endpoints. It also
// registers the admin API module (admin.go) and the `caddy claude-balancer
// check` command (check.go).
package claudebalancer

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/dedup"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/shared"
	"github.com/claude-balancer/caddy-claude-balancer/oauth"
	"github.com/claude-balancer/caddy-claude-balancer/team"
	"github.com/claude-balancer/caddy-claude-balancer/tokens"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// DefaultMaxRequestBody is the largest request body accepted by default.
const DefaultMaxRequestBody = 32 << 20

// Handler balances Anthropic Messages API requests across providers. It
// serves POST /v1/messages and /v1/messages/count_tokens, GET /health and
// GET / (liveness and readiness), GET /providers (state, for operators),
// GET /api/hello (Claude Code's warm-up probe: 200, no body) and answers other
// paths with an Anthropic-format 404. HEAD is answered as GET, without a body.
type Handler struct {
	// Name identifies this balancer's state (health, cooldowns, session
	// bindings) across config reloads when a config holds several balancers.
	// Default: "default".
	Name string `json:"name,omitempty"`

	// Providers are the upstreams requests can go to.
	Providers []balancer.ProviderConfig `json:"providers,omitempty"`

	// Routes map model names to candidate providers. Without routes, every
	// enabled provider serves every model, in declaration order.
	Routes []balancer.RouteConfig `json:"routes,omitempty"`

	// Strategy orders the healthy candidates of a route: "priority" (the
	// default: as listed), "round_robin", "random", "weighted" (by provider
	// weight), "least_latency" (lowest smoothed time to first token) or
	// "headroom" (most remaining share of the fullest quota window).
	// The first is tried first; the rest are the failover order.
	Strategy string `json:"strategy,omitempty"`

	// Sticky is how long a Claude Code session keeps going back to the
	// provider that last answered it (sliding), so its prompt cache stays
	// warm. 0 turns stickiness off. Default: 5m.
	Sticky *caddy.Duration `json:"sticky,omitempty"`

	// Health tunes passive health checking.
	Health *balancer.HealthConfig `json:"health,omitempty"`

	// ClientKeys are the keys clients must present, in "x-api-key",
	// "Authorization: Bearer" or "x-claude-balancer-key". With none, only
	// clients on the loopback interface are served. Use placeholders such as
	// "{env.BALANCER_KEY}".
	ClientKeys []string `json:"client_keys,omitempty"`

	// Clients names the balancer's clients: people or services, each with
	// keys, optional limits (requests and tokens per sliding window), the
	// models it may ask for and prices for its usage. A config with clients
	// is keyed: unknown keys get 401, as with client_keys.
	Clients []team.ClientConfig `json:"clients,omitempty"`

	// AdminKey protects the management endpoints served on the site
	// (/providers and its reload, /oauth/). With none, only loopback clients
	// may use them. Present it as "Authorization: Bearer", "x-admin-key" or
	// the password of HTTP basic auth.
	AdminKey string `json:"admin_key,omitempty"`

	// MaxRequestBody is the largest request body accepted, in bytes; larger
	// bodies get 413. Default: 32 MiB.
	MaxRequestBody int64 `json:"max_request_body,omitempty"`

	// OAuth tunes the login and token refresh of Claude subscription
	// accounts (providers with "oauth").
	OAuth *OAuthConfig `json:"oauth,omitempty"`

	// Dedup tunes the sharing of one upstream call among identical
	// in-flight requests. It is on by default.
	Dedup *DedupConfig `json:"dedup,omitempty"`

	// CountTokens tunes POST /v1/messages/count_tokens: exact counts from
	// the model's Anthropic provider when it can, local counts otherwise.
	CountTokens *CountTokensConfig `json:"count_tokens,omitempty"`

	// ListModels names models GET /v1/models lists besides the routes' exact
	// patterns and what Anthropic-type providers list.
	ListModels []string `json:"list_models,omitempty"`

	bal         *balancer.Balancer
	oauth       *oauth.Manager
	oauthPage   http.Handler
	oauthKey    string
	dedup       *dedup.Registry
	dedupKey    string
	dedupOff    bool
	dedupIgnore []string
	counter     *tokens.Counter
	counterKey  string
	logger      *zap.Logger
	clientKeys  [][32]byte
	adminKey    [32]byte
	hasAdmin    bool
	maxBody     int64
	// claimed is the name this handler claimed in its config load.
	claimed string
	load    any
	// board shares quota facts with other instances, teamBoard the named
	// clients' windows; they start with the first request, so that
	// validating a config touches no storage.
	board, teamBoard *shared.Board
	// team is the named clients; releaseTeam gives their state back.
	team        *team.Team
	releaseTeam func()
	// loaded is when the config was provisioned: the created_at of listed
	// models no provider describes.
	loaded time.Time
	// series keeps the metric series this handler updates.
	series *seriesCache
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.claude_balancer",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision builds the balancer. It expands placeholders in secrets, takes
// references on the state shared with earlier configs, and touches no
// network.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.loaded = time.Now().UTC().Truncate(time.Second)
	h.series = &seriesCache{}
	repl := caddy.NewReplacer()
	cfg := balancer.Config{
		Name:      h.Name,
		Providers: h.Providers,
		Routes:    h.Routes,
		Strategy:  h.Strategy,
		Sticky:    balancer.DefaultSticky,
	}
	if h.Sticky != nil {
		cfg.Sticky = time.Duration(*h.Sticky)
	}
	if h.Health != nil {
		cfg.Health = *h.Health
	}
	for _, k := range h.ClientKeys {
		k = repl.ReplaceKnown(k, "")
		if k == "" {
			return fmt.Errorf("client_keys: a key is empty (is the environment variable set?)")
		}
		h.clientKeys = append(h.clientKeys, sha256.Sum256([]byte(k)))
	}
	if h.AdminKey != "" {
		k := repl.ReplaceKnown(h.AdminKey, "")
		if k == "" {
			return fmt.Errorf("admin_key is empty (is the environment variable set?)")
		}
		h.adminKey, h.hasAdmin = sha256.Sum256([]byte(k)), true
	}
	tm, release, err := team.Compile(h.Clients, nameOf(h.Name), func(s string) string { return repl.ReplaceKnown(s, "") })
	if err != nil {
		return err
	}
	h.team, h.releaseTeam = tm, release
	for _, d := range h.clientKeys {
		if c := tm.Owner(d); c != nil {
			return fmt.Errorf("client_keys: a key is also client %q's: a key identifies one client (keep it under the client)", c.Name)
		}
	}
	h.maxBody = h.MaxRequestBody
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxRequestBody
	}
	if h.maxBody < 0 {
		return fmt.Errorf("max_request_body must not be negative")
	}
	name := nameOf(h.Name)
	config, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encoding the configuration: %w", err)
	}
	load := ctx.FileSystems()
	if err := claimName(load, name, sha256.Sum256(config)); err != nil {
		return err
	}
	h.claimed, h.load = name, load
	m, key, err := h.provisionOAuth(ctx, name)
	if err != nil {
		return err
	}
	h.oauth, h.oauthKey, h.oauthPage = m, key, m.Handler("/oauth")
	if err := h.provisionDedup(name); err != nil {
		return err
	}
	if cfg.Count, err = h.provisionCount(name); err != nil {
		return err
	}
	evApp, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("getting events app: %w", err)
	}
	obs := &observer{ctx: ctx, events: evApp.(*caddyevents.App), name: name}
	m.SetObserver(obs.oauthRefreshed(h.logger))
	// Facts about accounts are shared with the instances on the same
	// storage (Caddy's, as the global storage option sets it).
	board := shared.New(ctx.Storage(), "quota", name, shared.Options{}, h.logger.Named("shared"))
	b, err := balancer.New(cfg, balancer.Options{
		Logger:   h.logger,
		Replacer: repl,
		Tokens:   m,
		Observer: obs,
		Shared:   board,
	})
	if err != nil {
		return err
	}
	h.bal, h.board = b, board
	// Named clients' windows are shared the same way, a count each instance
	// writes at most every 5 seconds: Caddy storage has no atomic add.
	h.teamBoard = shared.New(ctx.Storage(), "clients", name, shared.Options{MinWrite: 5 * time.Second}, h.logger.Named("shared"))
	h.teamBoard.SetSource(func() []byte { return h.team.Export(time.Now()) })
	h.teamBoard.OnUpdate(h.team.Import)
	if err := getMetrics().register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	register(h)
	return nil
}

// Cleanup releases the shared state this config held. Requests still being
// served by it finish normally.
func (h *Handler) Cleanup() error {
	if h.claimed != "" {
		releaseName(h.load, h.claimed)
		h.claimed = ""
	}
	if h.bal != nil {
		unregister(h)
		h.bal.Close()
	}
	if h.board != nil {
		h.board.Stop()
	}
	if h.teamBoard != nil {
		h.teamBoard.Stop()
	}
	if h.releaseTeam != nil {
		h.releaseTeam()
		h.releaseTeam = nil
	}
	if h.oauthKey != "" {
		_, _ = oauthManagers.Delete(h.oauthKey)
	}
	if h.dedupKey != "" {
		_, _ = registries.Delete(h.dedupKey)
	}
	if h.counterKey != "" {
		_, _ = counters.Delete(h.counterKey)
	}
	return nil
}

// nameOf returns a balancer's name: "default" when none is set.
func nameOf(name string) string {
	if name == "" {
		return "default"
	}
	return name
}

// ServeHTTP dispatches by path.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.board.Start()
	h.teamBoard.Start()
	switch path := r.URL.Path; path {
	case "/v1/messages":
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, http.MethodPost)
		}
		h.serveMessages(w, r)
	case "/v1/messages/count_tokens":
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, http.MethodPost)
		}
		h.serveCount(w, r)
	case "/v1/models":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed(w, "GET, HEAD")
		}
		h.serveModels(w, r, "")
	case "/api/hello":
		// Claude Code's warm-up probe, sent without a key: it learns only
		// that something answers, and no provider hears of it.
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed(w, "GET, HEAD")
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	case "/health", "/":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed(w, "GET, HEAD")
		}
		h.serveHealth(w, r)
	case "/providers/reload":
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, http.MethodPost)
		}
		if h.management(w, r) {
			h.serveReload(w, r)
		}
	case "/providers", "/providers/":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed(w, "GET, HEAD")
		}
		if h.management(w, r) {
			h.serveProviders(w, r)
		}
	default:
		if id, ok := strings.CutPrefix(path, "/v1/models/"); ok && id != "" {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				return methodNotAllowed(w, "GET, HEAD")
			}
			h.serveModels(w, r, id)
			return nil
		}
		if path == "/oauth" || strings.HasPrefix(path, "/oauth/") {
			if h.management(w, r) {
				h.oauthPage.ServeHTTP(w, r)
			}
			return nil
		}
		apierr.Write(w, http.StatusNotFound, apierr.NotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, path))
	}
	return nil
}

func methodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	apierr.Write(w, http.StatusMethodNotAllowed, apierr.InvalidRequest, "method not allowed; use "+allow)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
