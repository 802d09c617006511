package balancer

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/quota"
)

// maxScopes bounds the credential scopes a passthrough provider keeps; past
// it the least recently used is dropped.
const maxScopes = 10_000

// A passthrough_auth provider is asked with each client's own credential, so
// a 401, 403 or 429 is a verdict on that credential, not on the provider:
// it is recorded in the credential's scope, which no other credential sees
// (README, "Security"). Faults that are the provider's whoever asks (network,
// timeouts, 5xx) stay provider-wide.

// credScope is what a provider's answers said about one client credential.
type credScope struct {
	fingerprint string
	// health counts the credential's quota answers that gave no time to
	// come back. Rejections (401, 403) are noted but never cool it down: the
	// upstream judges each new request, and the client's next try may carry
	// a refreshed token.
	health Health
	// quota is what the answers said about the credential's quota windows,
	// and its cooldowns.
	quota quota.Account
	// rejected is when the credential was last refused, for the status page.
	rejected time.Time
	elem     *list.Element
}

// scopeTable holds a provider's credential scopes, least recently used last.
type scopeTable struct {
	mu  sync.Mutex
	m   map[string]*credScope
	lru list.List
}

// get returns the scope of a credential fingerprint, making one when create
// is set; nil when there is none. It marks the scope as recently used.
func (t *scopeTable) get(fp string, create bool) *credScope {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.m[fp]; s != nil {
		t.lru.MoveToFront(s.elem)
		return s
	}
	if !create {
		return nil
	}
	if t.m == nil {
		t.m = make(map[string]*credScope)
	}
	if len(t.m) >= maxScopes {
		oldest := t.lru.Back()
		t.lru.Remove(oldest)
		delete(t.m, oldest.Value.(*credScope).fingerprint)
	}
	s := &credScope{fingerprint: fp}
	s.elem = t.lru.PushFront(s)
	t.m[fp] = s
	return s
}

// all returns every scope.
func (t *scopeTable) all() []*credScope {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*credScope, 0, len(t.m))
	for _, s := range t.m {
		out = append(out, s)
	}
	return out
}

// ScopeStats summarises a provider's credential scopes.
type ScopeStats struct {
	// Tracked is the number of client credentials with a scope.
	Tracked int
	// CoolingDown is the number of them cooling down after quota answers.
	CoolingDown int
	// Rejected is the number refused (401/403) in the last 15 minutes.
	Rejected int
}

func (t *scopeTable) stats(pol HealthPolicy) ScopeStats {
	t.mu.Lock()
	scopes := make([]*credScope, 0, len(t.m))
	for _, s := range t.m {
		scopes = append(scopes, s)
	}
	t.mu.Unlock()
	st := ScopeStats{Tracked: len(scopes)}
	since := now().Add(-statsMinutes * time.Minute)
	at := now()
	for _, s := range scopes {
		ok, _ := s.health.Available(pol)
		if qok, _, _ := s.quota.Available("", at); !ok || !qok {
			st.CoolingDown++
		}
		s.health.mu.Lock()
		if s.rejected.After(since) {
			st.Rejected++
		}
		s.health.mu.Unlock()
	}
	return st
}

// Credentials returns the state of a passthrough provider's client
// credentials; zero for other providers.
func (p *Provider) Credentials(pol HealthPolicy) ScopeStats {
	if p.auth != authPassthrough {
		return ScopeStats{}
	}
	return p.state.scopes.stats(pol)
}

// credentialFingerprint identifies the credential a client passes through,
// without keeping it: a digest of the headers that carry it.
func credentialFingerprint(h interface{ Get(string) string }) string {
	sum := sha256.New()
	sum.Write([]byte(h.Get("X-Api-Key")))
	sum.Write([]byte{0})
	sum.Write([]byte(h.Get("Authorization")))
	return hex.EncodeToString(sum.Sum(nil)[:16])
}
