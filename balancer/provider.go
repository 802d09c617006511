package balancer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/claude-balancer/caddy-claude-balancer/convert"
	"github.com/claude-balancer/caddy-claude-balancer/internal/quota"
	"github.com/claude-balancer/caddy-claude-balancer/internal/redact"
)

// Default timeouts.
const (
	DefaultConnectTimeout         = 10 * time.Second
	DefaultStreamFirstByteTimeout = 60 * time.Second
	DefaultJSONFirstByteTimeout   = 10 * time.Minute
	DefaultIdleTimeout            = 2 * time.Minute
)

// MaxWeight is the largest provider weight: the weights of a route add up
// without overflow whatever their number.
const MaxWeight = 1_000_000

// DefaultAnthropicURL is the base URL of OAuth providers with none set.
const DefaultAnthropicURL = "https://api.anthropic.com"

type authMode int

const (
	authNone authMode = iota
	authAPIKey
	authToken
	authPassthrough
	authOAuth
)

// TokenSource supplies access tokens for OAuth providers.
type TokenSource interface {
	// Token returns a usable access token for the account.
	Token(ctx context.Context, account string) (string, error)
	// Refresh replaces a token the provider rejected and returns the new one.
	Refresh(ctx context.Context, account, rejected string) (string, error)
}

// Provider is a provisioned provider: its configuration, transport and the
// state it shares with earlier configs.
type Provider struct {
	Name    string
	Type    string
	BaseURL string
	// Account is the OAuth account email, if any.
	Account string

	messagesURL string
	countURL    string

	auth      authMode
	secret    string // api key or auth token, expanded
	headers   http.Header
	proxy     string
	resolvers []string
	weight    int
	disabled  bool
	// foldSystem folds mid-conversation system messages into user turns.
	foldSystem bool

	connect   time.Duration
	firstByte time.Duration // 0: per-mode default
	idle      time.Duration
	transport http.RoundTripper
	shared    *sharedTransport
	openai    convert.Options
	identity  string
	// accountKey names the provider's own account among instances sharing
	// a storage; scopePrefix starts the keys of its client credentials'.
	accountKey, scopePrefix string
	state                   *providerState
	dialContext             func(ctx context.Context, network, addr string) (net.Conn, error)
	firstByteSet            bool
}

// newProvider validates a provider config and builds its runtime form.
// repl expands placeholders such as {env.KEY} in secrets and headers.
func newProvider(cfg ProviderConfig, repl *caddy.Replacer, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*Provider, error) {
	p := &Provider{Name: cfg.Name, Type: cfg.Type, weight: cfg.Weight, disabled: cfg.Disabled, dialContext: dial}
	if p.Name == "" {
		return nil, fmt.Errorf("provider without a name")
	}
	if strings.ContainsAny(p.Name, " \t/{}") {
		return nil, fmt.Errorf("provider %q: name must not contain spaces, slashes or braces", p.Name)
	}
	if p.Type == "" {
		p.Type = TypeAnthropic
	}
	if p.Type != TypeAnthropic && p.Type != TypeOpenAI {
		return nil, fmt.Errorf("provider %q: unknown type %q (want anthropic or openai)", p.Name, p.Type)
	}
	if p.weight == 0 {
		p.weight = 1
	}
	if p.weight < 0 || p.weight > MaxWeight {
		return nil, fmt.Errorf("provider %q: weight must be between 1 and %d", p.Name, MaxWeight)
	}

	modes := 0
	if cfg.APIKey != "" {
		modes++
		p.auth, p.secret = authAPIKey, repl.ReplaceKnown(cfg.APIKey, "")
	}
	if cfg.AuthToken != "" {
		modes++
		p.auth, p.secret = authToken, repl.ReplaceKnown(cfg.AuthToken, "")
	}
	if cfg.PassthroughAuth {
		modes++
		p.auth = authPassthrough
	}
	if cfg.OAuth != "" {
		modes++
		p.auth, p.Account = authOAuth, strings.ToLower(strings.TrimSpace(cfg.OAuth))
		if p.Type != TypeAnthropic {
			return nil, fmt.Errorf("provider %q: oauth accounts are Claude subscriptions and need type anthropic", p.Name)
		}
	}
	if modes > 1 {
		return nil, fmt.Errorf("provider %q: choose one of api_key, auth_token, passthrough_auth and oauth", p.Name)
	}
	if (p.auth == authAPIKey || p.auth == authToken) && p.secret == "" {
		return nil, fmt.Errorf("provider %q: credential is empty (is the environment variable set?)", p.Name)
	}

	base := strings.TrimSpace(repl.ReplaceKnown(cfg.BaseURL, ""))
	if base == "" && p.auth == authOAuth {
		base = DefaultAnthropicURL
	}
	if base == "" {
		return nil, fmt.Errorf("provider %q: base_url is required", p.Name)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("provider %q: base_url %q must be an absolute http(s) URL", p.Name, base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("provider %q: base_url must not have a query or fragment", p.Name)
	}
	p.BaseURL = strings.TrimRight(u.String(), "/")
	if p.Type == TypeAnthropic {
		p.messagesURL = p.BaseURL + "/v1/messages"
		p.countURL = p.BaseURL + "/v1/messages/count_tokens"
	} else {
		p.messagesURL = p.BaseURL + "/chat/completions"
	}

	if len(cfg.Headers) > 0 {
		p.headers = make(http.Header, len(cfg.Headers))
		for k, vs := range cfg.Headers {
			if isHopHeader(textproto.CanonicalMIMEHeaderKey(k)) || strings.EqualFold(k, "Host") || strings.EqualFold(k, "Content-Length") {
				return nil, fmt.Errorf("provider %q: header %q cannot be set", p.Name, k)
			}
			for _, v := range vs {
				p.headers.Add(k, repl.ReplaceKnown(v, ""))
			}
		}
	}

	if cfg.Proxy != "" {
		p.proxy = repl.ReplaceKnown(cfg.Proxy, "")
		pu, err := url.Parse(p.proxy)
		if err != nil || pu.Host == "" {
			return nil, fmt.Errorf("provider %q: invalid proxy URL %q", p.Name, redact.URL(cfg.Proxy))
		}
		switch pu.Scheme {
		case "http", "https", "socks5", "socks5h":
		default:
			return nil, fmt.Errorf("provider %q: proxy scheme %q not supported (http, https, socks5)", p.Name, pu.Scheme)
		}
	}

	for _, r := range cfg.Resolvers {
		r = strings.TrimSpace(r)
		if _, _, err := net.SplitHostPort(r); err != nil {
			r = net.JoinHostPort(r, "53")
		}
		if _, _, err := net.SplitHostPort(r); err != nil {
			return nil, fmt.Errorf("provider %q: invalid resolver %q", p.Name, r)
		}
		p.resolvers = append(p.resolvers, r)
	}

	p.connect, p.idle = DefaultConnectTimeout, DefaultIdleTimeout
	if t := cfg.Timeouts; t != nil {
		if t.Connect < 0 || t.FirstByte < 0 || t.Idle < 0 {
			return nil, fmt.Errorf("provider %q: timeouts must not be negative", p.Name)
		}
		if t.Connect > 0 {
			p.connect = time.Duration(t.Connect)
		}
		if t.FirstByte > 0 {
			p.firstByte, p.firstByteSet = time.Duration(t.FirstByte), true
		}
		if t.Idle > 0 {
			p.idle = time.Duration(t.Idle)
		}
	}
	if cfg.FoldSystem {
		if p.Type != TypeAnthropic {
			return nil, fmt.Errorf("provider %q: fold_system is for anthropic providers; an openai provider sends system messages as its inline_system option says", p.Name)
		}
		p.foldSystem = true
	}
	if cfg.OpenAI != nil {
		if p.Type != TypeOpenAI {
			return nil, fmt.Errorf("provider %q: openai options need type openai", p.Name)
		}
		p.openai = *cfg.OpenAI
		if err := p.openai.Validate(); err != nil {
			return nil, fmt.Errorf("provider %q: %w", p.Name, err)
		}
	}

	// The identity decides whether state carries over a reload: a provider
	// whose endpoint or credential changed starts fresh.
	h := sha256.New()
	for _, s := range []string{p.Name, p.Type, p.BaseURL, fmt.Sprint(p.auth), p.secret, p.Account} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	p.identity = hex.EncodeToString(h.Sum(nil)[:12])
	p.accountKey, p.scopePrefix = accountKeys(p)

	return p, nil
}

// transportKey names the provider's connection pool: providers of the same
// identity and connection settings share one across config reloads, so a
// reload neither drops warm connections nor strands them.
func (p *Provider) transportKey(balancer string) string {
	return fmt.Sprintf("transport/%s/%s/%s/%s/%s/%v", balancer, p.Name, p.identity, p.proxy, p.connect, p.resolvers)
}

// sharedTransport is a provider's connection pool, pooled across configs.
type sharedTransport struct {
	t *http.Transport
	// closed is set once no config uses the pool: requests still running
	// on an old config close their idle connections when they end, so
	// none is left open for nothing.
	closed atomic.Bool
}

// Destruct implements caddy.Destructor.
func (s *sharedTransport) Destruct() error {
	s.closed.Store(true)
	s.t.CloseIdleConnections()
	return nil
}

// done is called after each use of the pool.
func (s *sharedTransport) done() {
	if s.closed.Load() {
		s.t.CloseIdleConnections()
	}
}

func (p *Provider) newTransport() (*http.Transport, error) {
	dialer := &net.Dialer{Timeout: p.connect, KeepAlive: 30 * time.Second}
	if len(p.resolvers) > 0 {
		servers := p.resolvers
		var next atomic.Uint32
		dialer.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: p.connect}
			c, err := d.DialContext(ctx, network, servers[int(next.Add(1))%len(servers)])
			if err != nil {
				return nil, err
			}
			// The resolver waits for an answer until its own timeout (5s by
			// default), not until the lookup is cancelled: close the socket
			// when it is, so that a silent server holds nothing after the
			// request gave up.
			context.AfterFunc(ctx, func() { c.Close() })
			return c, nil
		}}
	}
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return newReadAhead(c), nil
		},
		TLSHandshakeTimeout:   p.connect,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
		// The module reads upstream streams itself, so it asks for them
		// uncompressed.
		DisableCompression: true,
		// A connection keeps its buffers while a stream lasts, and a
		// stream mostly waits: small ones keep an open stream's memory
		// down. A request body bypasses the write buffer; an answer is
		// read ahead, as much as has come at once (readAhead), so the
		// read buffer is filled from memory, not from the network.
		ReadBufferSize:  upstreamReadBuffer,
		WriteBufferSize: 2 << 10,
	}
	if p.dialContext != nil {
		t.DialContext = p.dialContext
	}
	if p.proxy != "" {
		pu, _ := url.Parse(p.proxy)
		t.Proxy = http.ProxyURL(pu)
	}
	return t, nil
}

// firstByteTimeout is the wait for the response to start.
func (p *Provider) firstByteTimeout(stream bool) time.Duration {
	if p.firstByteSet {
		return p.firstByte
	}
	if stream {
		return DefaultStreamFirstByteTimeout
	}
	return DefaultJSONFirstByteTimeout
}

// Weight is the provider's weight for the weighted strategy.
func (p *Provider) Weight() int { return p.weight }

// Enabled reports whether the provider takes traffic: not disabled in the
// config, nor by an operator at run time.
func (p *Provider) Enabled() bool {
	switch p.state.override.Load() {
	case overrideDisabled:
		return false
	case overrideEnabled:
		return true
	}
	return !p.disabled
}

// ConfigDisabled reports whether the config disables the provider.
func (p *Provider) ConfigDisabled() bool { return p.disabled }

// Health returns the provider's health for an endpoint class.
func (p *Provider) Health(class string) *Health {
	if class == ClassCountTokens {
		return &p.state.count
	}
	return &p.state.messages
}

// Latency returns the smoothed time to first content, or 0 if unknown.
func (p *Provider) Latency() time.Duration {
	return time.Duration(p.state.ewma.Load())
}

// observeLatency folds one time-to-first-content sample into the EWMA.
func (p *Provider) observeLatency(d time.Duration) {
	for {
		old := p.state.ewma.Load()
		next := int64(d)
		if old != 0 {
			next = old + (int64(d)-old)/5 // alpha 0.2
		}
		if p.state.ewma.CompareAndSwap(old, next) {
			return
		}
	}
}

// Run-time overrides set through the admin API.
const (
	overrideNone int32 = iota
	overrideDisabled
	overrideEnabled
)

// SetOverride sets (or with "" clears) an operator's enable/disable
// decision, which outlives config reloads.
func (p *Provider) SetOverride(state string) {
	switch state {
	case "disabled":
		p.state.override.Store(overrideDisabled)
	case "enabled":
		p.state.override.Store(overrideEnabled)
	default:
		p.state.override.Store(overrideNone)
	}
}

// Override returns the operator's decision: "", "disabled" or "enabled".
func (p *Provider) Override() string {
	switch p.state.override.Load() {
	case overrideDisabled:
		return "disabled"
	case overrideEnabled:
		return "enabled"
	}
	return ""
}

// Stats returns the provider's request counters.
func (p *Provider) Stats() (requests, failures int64) {
	return p.state.requests.Load(), p.state.failures.Load()
}

// Passthrough reports whether the provider is asked with each client's own
// credential.
func (p *Provider) Passthrough() bool { return p.auth == authPassthrough }

// CredentialRejected returns when the provider last refused its configured
// credential, or the zero time when it accepted it since.
func (p *Provider) CredentialRejected() time.Time {
	if n := p.state.credRejected.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// AuthMode describes how the provider authenticates, for status pages.
func (p *Provider) AuthMode() string {
	switch p.auth {
	case authAPIKey:
		return "api_key"
	case authToken:
		return "auth_token"
	case authPassthrough:
		return "passthrough"
	case authOAuth:
		return "oauth"
	}
	return "none"
}

// providerState is what a provider keeps across config reloads.
type providerState struct {
	messages Health
	count    Health
	ewma     atomic.Int64
	override atomic.Int32
	requests atomic.Int64
	failures atomic.Int64
	stats    rollingStats
	// scopes are the client credentials of a passthrough provider;
	// lastScope the one whose answer came last.
	scopes    scopeTable
	lastScope atomic.Pointer[credScope]
	// quota is what the provider's answers say about its own account's
	// quota windows.
	quota quota.Account
	// credRejected is when the provider's own credential was last rejected
	// (unix nanoseconds); 0 once an answer was accepted after it.
	credRejected atomic.Int64
	// models is what the provider lists at /v1/models, per credential.
	models modelCache
}

// Destruct implements caddy.Destructor.
func (*providerState) Destruct() error { return nil }

// codec returns the wire format of the provider.
func (p *Provider) codec() codec {
	if p.Type == TypeOpenAI {
		return openAICodec{opts: &p.openai}
	}
	return anthropicCodec{fold: p.foldSystem}
}
