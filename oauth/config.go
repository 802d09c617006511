// Package oauth logs Claude subscription accounts in with PKCE, keeps their
// tokens in Caddy's storage and refreshes them before they expire.
//
// One Manager serves one balancer and lives across config reloads. Tokens are
// read from storage lazily, kept in memory, and written back only when they
// change (login, refresh, logout), so instances that share a storage backend
// share tokens, and a refresh happens once across all of them: in process it is
// single-flight per account, across processes it runs under the storage lock
// and re-reads storage before calling the token endpoint.
package oauth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/redact"
)

// Claude's OAuth endpoints and client, as used by Claude Code.
const (
	DefaultAuthorizeURL  = "https://claude.ai/oauth/authorize"
	DefaultTokenURL      = "https://console.anthropic.com/v1/oauth/token"
	DefaultClientID      = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
	DefaultRedirectURI   = "https://console.anthropic.com/oauth/code/callback"
	DefaultRefreshBefore = 5 * time.Minute
)

// Token request body encodings for Config.TokenFormat.
const (
	FormatJSON = "json"
	FormatForm = "form"
)

// DefaultScopes returns the scopes Claude Code asks for.
func DefaultScopes() []string {
	return []string{"org:create_api_key", "user:profile", "user:inference"}
}

// tokenTimeout bounds one call to the token endpoint, as the original did.
const tokenTimeout = 30 * time.Second

// Config says where and how accounts log in. The zero value means Claude's
// own endpoints; tests point the URLs at a mock server.
type Config struct {
	// AuthorizeURL is the page the user logs in on. Default: Claude's.
	AuthorizeURL string
	// TokenURL exchanges codes and refresh tokens. Default: Claude's.
	TokenURL string
	// ClientID is the OAuth client. Default: Claude Code's.
	ClientID string
	// RedirectURI is where the authorize page sends the code; Claude's shows
	// it as "code#state" for the user to copy. Default: Claude's.
	RedirectURI string
	// Scopes requested at login. Default: DefaultScopes().
	Scopes []string
	// RefreshBefore is how long before expiry a token is refreshed. Default 5m.
	RefreshBefore time.Duration
	// Proxy is an optional http, https or socks5 proxy URL for token calls
	// (Claude's token endpoint refuses some regions).
	Proxy string
	// TokenFormat is the body encoding of token requests: "json" (default,
	// what Claude Code sends) or "form" (RFC 6749).
	TokenFormat string
	// HTTPClient overrides the client for token calls (tests); Proxy is then
	// ignored.
	HTTPClient *http.Client
}

// withDefaults fills the empty fields with Claude's values.
func (c Config) withDefaults() Config {
	if c.AuthorizeURL == "" {
		c.AuthorizeURL = DefaultAuthorizeURL
	}
	if c.TokenURL == "" {
		c.TokenURL = DefaultTokenURL
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.RedirectURI == "" {
		c.RedirectURI = DefaultRedirectURI
	}
	if len(c.Scopes) == 0 {
		c.Scopes = DefaultScopes()
	}
	if c.RefreshBefore <= 0 {
		c.RefreshBefore = DefaultRefreshBefore
	}
	if c.TokenFormat == "" {
		c.TokenFormat = FormatJSON
	}
	return c
}

// Validate reports configuration errors, so that a bad URL fails at config
// load rather than at the first login.
func (c Config) Validate() error {
	c = c.withDefaults()
	for _, u := range []struct{ name, val string }{
		{"authorize URL", c.AuthorizeURL}, {"token URL", c.TokenURL}, {"redirect URI", c.RedirectURI},
	} {
		p, err := url.Parse(u.val)
		if err != nil {
			return fmt.Errorf("oauth %s: %w", u.name, err)
		}
		if p.Scheme != "https" && p.Scheme != "http" || p.Host == "" {
			return fmt.Errorf("oauth %s %q: want an absolute http(s) URL", u.name, u.val)
		}
	}
	if c.TokenFormat != FormatJSON && c.TokenFormat != FormatForm {
		return fmt.Errorf("oauth token format %q: want %q or %q", c.TokenFormat, FormatJSON, FormatForm)
	}
	if _, err := proxyURL(c.Proxy); err != nil {
		return err
	}
	return nil
}

func proxyURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Error repeats the URL, password included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("oauth proxy %q: %w", redact.URL(s), err)
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return nil, fmt.Errorf("oauth proxy %q: want an http, https or socks5 URL", u.Redacted())
	}
	if u.Host == "" {
		return nil, errors.New("oauth proxy: missing host")
	}
	return u, nil
}

// client returns the HTTP client for token calls.
func (c Config) client() (*http.Client, error) {
	if c.HTTPClient != nil {
		return c.HTTPClient, nil
	}
	p, err := proxyURL(c.Proxy)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if p != nil {
		tr.Proxy = http.ProxyURL(p)
	}
	return &http.Client{Transport: tr, Timeout: tokenTimeout}, nil
}
