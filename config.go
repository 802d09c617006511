package claudebalancer

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/dedup"
	"github.com/claude-balancer/caddy-claude-balancer/oauth"
	"github.com/claude-balancer/caddy-claude-balancer/tokens"
)

// OAuthConfig tunes Claude subscription logins. Every field is optional:
// the defaults are Claude's own endpoints and Caddy's storage.
type OAuthConfig struct {
	// StorageRaw is a Caddy storage module (redis, consul, s3, ...) that
	// holds the accounts' tokens. Default: Caddy's configured storage, so
	// instances sharing it share logins and refresh them once.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=caddy.storage inline_key=module"`

	// RefreshBefore is how long before expiry a token is refreshed.
	// Default: 5m.
	RefreshBefore caddy.Duration `json:"refresh_before,omitempty"`

	// Proxy sends token calls through an HTTP(S) or SOCKS5 proxy.
	Proxy string `json:"proxy,omitempty"`

	// AuthorizeURL is the login page accounts are sent to. Default: Claude's.
	AuthorizeURL string `json:"authorize_url,omitempty"`

	// TokenURL exchanges codes and refresh tokens. Default: Claude's.
	TokenURL string `json:"token_url,omitempty"`

	// ClientID is the OAuth client. Default: Claude Code's.
	ClientID string `json:"client_id,omitempty"`

	// RedirectURI is where Claude shows the code to paste. Default: Claude's.
	RedirectURI string `json:"redirect_uri,omitempty"`

	// Scopes asked for at login. Default: Claude Code's.
	Scopes []string `json:"scopes,omitempty"`

	// TokenFormat encodes token requests as "json" (default, as Claude Code
	// does) or "form" (RFC 6749).
	TokenFormat string `json:"token_format,omitempty"`
}

// oauthManagers keeps one OAuth manager per balancer across reloads, so
// tokens, pending logins and refresh backoff survive them.
var oauthManagers = caddy.NewUsagePool()

type managerHolder struct{ m *oauth.Manager }

func (h *managerHolder) Destruct() error {
	h.m.Close()
	return nil
}

// provisionOAuth sets up the balancer's OAuth manager and returns it with
// the pool key to release in Cleanup.
func (h *Handler) provisionOAuth(ctx caddy.Context, name string) (*oauth.Manager, string, error) {
	cfg := oauth.Config{}
	var storage certmagic.Storage = ctx.Storage()
	if oc := h.OAuth; oc != nil {
		repl := caddy.NewReplacer()
		cfg = oauth.Config{
			AuthorizeURL:  oc.AuthorizeURL,
			TokenURL:      oc.TokenURL,
			ClientID:      oc.ClientID,
			RedirectURI:   oc.RedirectURI,
			Scopes:        oc.Scopes,
			RefreshBefore: time.Duration(oc.RefreshBefore),
			Proxy:         repl.ReplaceKnown(oc.Proxy, ""),
			TokenFormat:   oc.TokenFormat,
		}
		if len(oc.StorageRaw) > 0 {
			mod, err := ctx.LoadModule(oc, "StorageRaw")
			if err != nil {
				return nil, "", fmt.Errorf("oauth: loading storage module: %w", err)
			}
			st, err := mod.(caddy.StorageConverter).CertMagicStorage()
			if err != nil {
				return nil, "", fmt.Errorf("oauth: storage module: %w", err)
			}
			storage = st
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, "", fmt.Errorf("oauth: %w", err)
	}
	logger := h.logger.Named("oauth")
	key := "oauth/" + name
	v, loaded, err := oauthManagers.LoadOrNew(key, func() (caddy.Destructor, error) {
		return &managerHolder{m: oauth.NewManager(cfg, storage, logger)}, nil
	})
	if err != nil {
		return nil, "", err
	}
	m := v.(*managerHolder).m
	if loaded {
		m.Update(cfg, storage, logger)
	}
	var accounts []string
	for _, p := range h.Providers {
		if p.OAuth != "" {
			accounts = append(accounts, strings.ToLower(strings.TrimSpace(p.OAuth)))
		}
	}
	m.SetAccounts(accounts)
	return m, key, nil
}

// DedupConfig tunes the sharing of one upstream call among identical
// in-flight requests.
type DedupConfig struct {
	// Off turns de-duplication off.
	Off bool `json:"off,omitempty"`

	// Wait bounds how long an identical request waits for one in flight
	// that has sent nothing yet; then it makes its own call. Default: 3m.
	Wait caddy.Duration `json:"wait,omitempty"`

	// Replay keeps finished successful answers this long, so a client's
	// retry gets the stored answer instead of a new upstream call.
	// Default: 0 (off).
	Replay caddy.Duration `json:"replay,omitempty"`

	// Ignore lists the top-level request fields that do not make two
	// requests different (retry noise). Default: ["max_tokens"]. "stream" is
	// always ignored: each client gets the answer in its own mode.
	Ignore []string `json:"ignore,omitempty"`

	// MaxBuffer is how many bytes of an answer a group keeps for late
	// joiners. Default: 16 MiB.
	MaxBuffer int64 `json:"max_buffer,omitempty"`
}

// CountTokensConfig tunes POST /v1/messages/count_tokens.
type CountTokensConfig struct {
	// Local counts every request locally and never asks a provider.
	Local bool `json:"local,omitempty"`

	// FailureThreshold is the number of failed upstream counts after which a
	// provider's count endpoint cools down. Default: 2.
	FailureThreshold int `json:"failure_threshold,omitempty"`

	// Cooldown is how long a failing count endpoint is left alone; counts
	// are local meanwhile. Default: 5m.
	Cooldown caddy.Duration `json:"cooldown,omitempty"`

	// Timeout bounds one upstream count. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Encoding is the tiktoken encoding of local counts. Default: cl100k_base.
	Encoding string `json:"encoding,omitempty"`

	// Calibration multiplies local text counts towards Claude's tokenizer.
	// Default: 1.35, erring on over-counting so Claude Code compacts in time.
	Calibration float64 `json:"calibration,omitempty"`

	// CacheSize bounds the per-block count cache. Default: 65536 blocks.
	CacheSize int `json:"cache_size,omitempty"`
}

// registries keeps each balancer's in-flight groups across reloads, so a
// request arriving after a reload still joins an identical one in flight.
var registries = caddy.NewUsagePool()

type registryHolder struct{ r *dedup.Registry }

func (*registryHolder) Destruct() error { return nil }

// counters keeps each balancer's token counter, and its block cache, across
// reloads that leave its options unchanged.
var counters = caddy.NewUsagePool()

type counterHolder struct{ c *tokens.Counter }

func (*counterHolder) Destruct() error { return nil }

func (h *Handler) provisionDedup(name string) error {
	opts := dedup.Options{}
	h.dedupIgnore = dedup.DefaultIgnore
	if dc := h.Dedup; dc != nil {
		if dc.Wait < 0 || dc.Replay < 0 || dc.MaxBuffer < 0 {
			return fmt.Errorf("dedup: wait, replay and max_buffer must not be negative")
		}
		opts = dedup.Options{Off: dc.Off, Wait: time.Duration(dc.Wait), Replay: time.Duration(dc.Replay), MaxBuffer: dc.MaxBuffer}
		if len(dc.Ignore) > 0 {
			h.dedupIgnore = dc.Ignore
		}
	}
	key := "dedup/" + name
	v, loaded, err := registries.LoadOrNew(key, func() (caddy.Destructor, error) {
		return &registryHolder{r: dedup.New(opts)}, nil
	})
	if err != nil {
		return err
	}
	h.dedupKey = key
	h.dedup = v.(*registryHolder).r
	if loaded {
		h.dedup.SetOptions(opts)
	}
	h.dedupOff = opts.Off
	return nil
}

func (h *Handler) provisionCount(name string) (balancer.CountConfig, error) {
	cc := balancer.CountConfig{}
	topt := tokens.Options{}
	if c := h.CountTokens; c != nil {
		if c.FailureThreshold < 0 || c.Cooldown < 0 || c.Timeout < 0 || c.CacheSize < 0 || c.Calibration < 0 {
			return cc, fmt.Errorf("count_tokens: values must not be negative")
		}
		cc = balancer.CountConfig{Local: c.Local, Threshold: c.FailureThreshold,
			Cooldown: time.Duration(c.Cooldown), Timeout: time.Duration(c.Timeout)}
		topt = tokens.Options{Encoding: c.Encoding, Calibration: c.Calibration, CacheSize: c.CacheSize}
	}
	key := fmt.Sprintf("tokens/%s/%s/%g/%d", name, topt.Encoding, topt.Calibration, topt.CacheSize)
	v, _, err := counters.LoadOrNew(key, func() (caddy.Destructor, error) {
		c, err := tokens.New(topt)
		if err != nil {
			return nil, err
		}
		return &counterHolder{c: c}, nil
	})
	if err != nil {
		return cc, fmt.Errorf("count_tokens: %w", err)
	}
	h.counterKey = key
	h.counter = v.(*counterHolder).c
	return cc, nil
}
