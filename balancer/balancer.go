// Package balancer picks providers for Anthropic Messages requests and runs
// the attempt loop: routes and strategies, passive health per provider and
// endpoint class and per client credential, session stickiness, failover
// before the commit point, and the upstream transport.
//
// A newcomer finds a behaviour by its file: request.go (what the loop is
// given), result.go (what it reports, and an attempt's outcome), serve.go
// (the loop over candidates, and what the client gets when all fail),
// attempt.go (one call to one provider), classify.go (whose fault a failure
// is), relay.go (committing an answer and relaying a stream, each event read
// once), upstream.go (headers, credentials, the watchdog), codec.go and
// openai.go (wire formats), health.go, scope.go, select.go, sticky.go,
// route.go, provider.go, count.go and probe_count.go (count_tokens
// upstream), quota.go (subscription quota windows and the headroom
// strategy), share.go (state shared with other instances), models.go (model
// listing), fold.go (fold_system), body.go (request body edits), stats.go
// (the last minutes), config.go, and readahead*.go (the upstream
// connection's read-ahead). A commit is in attempt.go.
package balancer

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/claude-balancer/caddy-claude-balancer/internal/glob"
	"github.com/claude-balancer/caddy-claude-balancer/internal/quota"
	"github.com/claude-balancer/caddy-claude-balancer/internal/shared"
	"go.uber.org/zap"
)

// Defaults of the balancer-wide options.
const (
	DefaultThreshold  = 2
	DefaultCooldown   = 5 * time.Minute
	DefaultResetAfter = 5 * time.Minute
	DefaultSticky     = 5 * time.Minute
	DefaultNearLimit  = 0.9
)

// pool keeps provider health, stickiness and cursors across config reloads,
// keyed by balancer name and provider identity.
var pool = caddy.NewUsagePool()

// Config is everything a Balancer is built from.
type Config struct {
	// Name identifies the balancer's state across reloads.
	Name      string
	Providers []ProviderConfig
	Routes    []RouteConfig
	Strategy  string
	// Sticky is the session affinity TTL; 0 turns stickiness off.
	Sticky time.Duration
	Health HealthConfig
	Count  CountConfig
}

// Observer is told about events worth logging, counting or emitting.
// Implementations must be cheap and must not block.
type Observer interface {
	// HealthChanged reports a provider becoming unhealthy or healthy again.
	HealthChanged(p *Provider, class string, t Transition, errors int, reason string)
	// Failover reports that a request moves from one provider to the next.
	Failover(from, to *Provider, reason string)
	// CredentialRejected reports that a provider refused the credential
	// configured for it (api_key, auth_token, oauth), after accepting it or
	// at the first request: the operator must act.
	CredentialRejected(p *Provider, status int, reason string)
	// Quota reports a change of a provider's quota window: near its limit,
	// rejected, reset. client is set for the credential a client passes
	// through.
	Quota(p *Provider, client bool, ev quota.Event)
}

// Options carry what a Balancer needs from its host.
type Options struct {
	Logger   *zap.Logger
	Replacer *caddy.Replacer
	Tokens   TokenSource
	Observer Observer
	// DialContext replaces the network dialer of every provider (tests).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Shared, when set, shares what the balancer learns about accounts with
	// the other instances on the same storage.
	Shared *shared.Board
}

// Balancer is one provisioned balancer. It is immutable once built; what
// must outlive a reload lives in pooled state.
type Balancer struct {
	Name      string
	providers []*Provider
	byName    map[string]*Provider
	routes    Routes
	strategy  string
	stickyTTL time.Duration
	policy    HealthPolicy
	count     CountConfig
	counted   map[int]bool
	patterns  []*regexp.Regexp
	nearLimit float64

	logger   *zap.Logger
	tokens   TokenSource
	observer Observer
	board    *shared.Board

	state    *balancerState
	poolKeys []string
}

// New validates cfg and builds a Balancer, taking references on the pooled
// state of the balancer and each provider. Close releases them.
func New(cfg Config, opt Options) (b *Balancer, err error) {
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	if opt.Replacer == nil {
		opt.Replacer = caddy.NewReplacer()
	}
	b = &Balancer{
		Name:      cfg.Name,
		byName:    make(map[string]*Provider),
		strategy:  cfg.Strategy,
		stickyTTL: cfg.Sticky,
		logger:    opt.Logger,
		tokens:    opt.Tokens,
		observer:  opt.Observer,
		board:     opt.Shared,
	}
	// The returns below set b to nil: the deferred release gets the
	// balancer it must close as an argument.
	defer func(built *Balancer) {
		if err != nil {
			built.Close()
		}
	}(b)
	if b.Name == "" {
		b.Name = "default"
	}
	switch b.strategy {
	case "":
		b.strategy = StrategyPriority
	case StrategyPriority, StrategyRoundRobin, StrategyRandom, StrategyWeighted, StrategyLeastLatency, StrategyHeadroom:
	default:
		return nil, fmt.Errorf("unknown strategy %q (want priority, round_robin, random, weighted, least_latency or headroom)", b.strategy)
	}
	if b.stickyTTL < 0 {
		return nil, fmt.Errorf("sticky must not be negative")
	}
	if err := b.setHealth(cfg.Health); err != nil {
		return nil, err
	}
	b.count = cfg.Count
	if b.count.Threshold < 0 || b.count.Cooldown < 0 || b.count.Timeout < 0 {
		return nil, fmt.Errorf("count_tokens: failure_threshold, cooldown and timeout must not be negative")
	}
	if b.count.Threshold == 0 {
		b.count.Threshold = DefaultCountThreshold
	}
	if b.count.Cooldown == 0 {
		b.count.Cooldown = DefaultCountCooldown
	}
	if b.count.Timeout == 0 {
		b.count.Timeout = DefaultCountTimeout
	}

	bs, _, err := pool.LoadOrNew("balancer/"+b.Name, func() (caddy.Destructor, error) { return newBalancerState(), nil })
	if err != nil {
		return nil, err
	}
	b.poolKeys = append(b.poolKeys, "balancer/"+b.Name)
	b.state = bs.(*balancerState)

	if len(cfg.Providers) == 0 {
		return nil, fmt.Errorf("no providers configured")
	}
	for _, pc := range cfg.Providers {
		p, err := newProvider(pc, opt.Replacer, opt.DialContext)
		if err != nil {
			return nil, err
		}
		if _, dup := b.byName[p.Name]; dup {
			return nil, fmt.Errorf("provider %q is declared twice", p.Name)
		}
		if p.auth == authOAuth && b.tokens == nil {
			return nil, fmt.Errorf("provider %q: oauth accounts are not available", p.Name)
		}
		key := "provider/" + b.Name + "/" + p.Name + "/" + p.identity
		st, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) { return new(providerState), nil })
		if err != nil {
			return nil, err
		}
		b.poolKeys = append(b.poolKeys, key)
		p.state = st.(*providerState)
		tkey := p.transportKey(b.Name)
		tv, _, err := pool.LoadOrNew(tkey, func() (caddy.Destructor, error) {
			t, err := p.newTransport()
			if err != nil {
				return nil, err
			}
			return &sharedTransport{t: t}, nil
		})
		if err != nil {
			return nil, fmt.Errorf("provider %q: %w", p.Name, err)
		}
		b.poolKeys = append(b.poolKeys, tkey)
		p.shared = tv.(*sharedTransport)
		p.transport = p.shared.t
		b.providers = append(b.providers, p)
		b.byName[p.Name] = p
	}

	if len(cfg.Routes) == 0 {
		r := &Route{ID: "*"}
		for _, p := range b.providers {
			r.Targets = append(r.Targets, Target{Provider: p})
		}
		b.routes.fallback = r
	}
	for i, rc := range cfg.Routes {
		if len(rc.Match) == 0 {
			return nil, fmt.Errorf("route %d has no model pattern", i+1)
		}
		if len(rc.To) == 0 {
			return nil, fmt.Errorf("route %s has no \"to\" target", strings.Join(rc.Match, " "))
		}
		r := &Route{ID: strings.Join(rc.Match, " ")}
		for _, m := range rc.Match {
			if strings.TrimSpace(m) == "" {
				return nil, fmt.Errorf("route %d: empty model pattern", i+1)
			}
			r.patterns = append(r.patterns, glob.Compile(m))
		}
		for _, tc := range rc.To {
			p, ok := b.byName[tc.Provider]
			if !ok {
				return nil, fmt.Errorf("route %s: unknown provider %q", r.ID, tc.Provider)
			}
			r.Targets = append(r.Targets, Target{Provider: p, Model: tc.Model})
		}
		b.routes.routes = append(b.routes.routes, r)
	}
	if b.board != nil {
		b.board.SetSource(b.exportQuota)
		b.board.OnUpdate(b.importQuota)
	}
	return b, nil
}

func (b *Balancer) setHealth(hc HealthConfig) error {
	b.policy = HealthPolicy{Threshold: hc.Threshold, Cooldown: time.Duration(hc.Cooldown), ResetAfter: time.Duration(hc.ResetAfter)}
	if b.policy.Threshold < 0 || b.policy.Cooldown < 0 || b.policy.ResetAfter < 0 {
		return fmt.Errorf("health: threshold, cooldown and reset_after must not be negative")
	}
	if b.policy.Threshold == 0 {
		b.policy.Threshold = DefaultThreshold
	}
	if b.policy.Cooldown == 0 {
		b.policy.Cooldown = DefaultCooldown
	}
	if b.policy.ResetAfter == 0 {
		b.policy.ResetAfter = DefaultResetAfter
	}
	b.nearLimit = hc.NearLimit
	if b.nearLimit < 0 || b.nearLimit > 1 {
		return fmt.Errorf("health: near_limit must be between 0 and 1")
	}
	if b.nearLimit == 0 {
		b.nearLimit = DefaultNearLimit
	}
	b.counted = make(map[int]bool)
	if len(hc.Status) == 0 {
		for _, s := range []int{401, 402, 403, 404, 408, 429} {
			b.counted[s] = true
		}
		for s := 500; s < 600; s++ {
			b.counted[s] = true
		}
	}
	for _, s := range hc.Status {
		if s < 100 || s > 599 {
			return fmt.Errorf("health: invalid status %d", s)
		}
		b.counted[s] = true
	}
	for _, p := range hc.BodyPattern {
		re, err := regexp.Compile(p)
		if err != nil {
			return fmt.Errorf("health: body_pattern %q: %w", p, err)
		}
		b.patterns = append(b.patterns, re)
	}
	return nil
}

// Close releases the balancer's references on pooled state. Requests still
// running on it keep working: nothing they use is torn down.
func (b *Balancer) Close() {
	for _, k := range b.poolKeys {
		_, _ = pool.Delete(k)
	}
	b.poolKeys = nil
}

// Providers returns the providers in declaration order.
func (b *Balancer) Providers() []*Provider { return b.providers }

// Provider returns a provider by name, or nil.
func (b *Balancer) Provider(name string) *Provider { return b.byName[name] }

// Routes returns the routes in order.
func (b *Balancer) Routes() []*Route { return b.routes.All() }

// MatchRoute returns the route serving a model, or nil.
func (b *Balancer) MatchRoute(model string) *Route { return b.routes.Match(model) }

// Policy returns the effective health settings of messages.
func (b *Balancer) Policy() HealthPolicy { return b.policy }

// PolicyFor returns the effective health settings of an endpoint class.
func (b *Balancer) PolicyFor(class string) HealthPolicy { return b.policyFor(class) }

// Strategy returns the strategy in effect.
func (b *Balancer) Strategy() string { return b.strategy }

// StickyBindings returns the number of live session bindings.
func (b *Balancer) StickyBindings() int { return b.state.sticky.len() }

// NearLimit returns the quota share at which accounts are steered away from.
func (b *Balancer) NearLimit() float64 { return b.nearLimit }

// ResetProvider clears a provider's errors and cooldowns for every endpoint
// class, its quota cooldowns included.
func (b *Balancer) ResetProvider(p *Provider) {
	p.state.quota.ClearCooldowns(now())
	b.shareQuota(&p.state.quota)
	for _, class := range []string{ClassMessages, ClassCountTokens} {
		if p.Health(class).Reset() == BecameHealthy {
			b.transition(p, class, BecameHealthy, 0, "reset by an operator")
		}
	}
}

func (b *Balancer) transition(p *Provider, class string, t Transition, errors int, reason string) {
	switch t {
	case BecameUnhealthy:
		b.logger.Warn("provider unhealthy",
			zap.String("provider", p.Name), zap.String("endpoint", class),
			zap.String("count", countString(errors, b.policy.Threshold)), zap.String("reason", reason))
	case BecameHealthy:
		b.logger.Warn("provider healthy", zap.String("provider", p.Name), zap.String("endpoint", class), zap.String("reason", reason))
	default:
		return
	}
	if b.observer != nil {
		b.observer.HealthChanged(p, class, t, errors, reason)
	}
}
