package balancer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/quota"
)

// Facts about accounts (quota cooldowns, window readings) are shared with the
// other instances on the same Caddy storage (README, "More than one instance"): each instance
// writes its own document, reads the others' in the background, and merges
// them into its accounts. Network-level health stays per instance: it is
// about each instance's own path to the provider.

// Bounds on the client credentials' accounts a document carries.
const (
	maxSharedScopes = 2000
	sharedScopeAge  = time.Hour
)

// quotaDoc is the document an instance writes: accounts by key.
type quotaDoc struct {
	Accounts map[string]quota.Snapshot `json:"accounts"`
}

// accountKeys names a provider's own account and its client credentials'
// for sharing: by provider URL and credential, never by balancer or provider
// name (two balancers, or two instances, reaching one account share it), and
// never holding a credential: a digest of it.
func accountKeys(p *Provider) (own, scopes string) {
	cred := ""
	switch p.auth {
	case authAPIKey, authToken:
		cred = "key:" + p.secret
	case authOAuth:
		cred = "oauth:" + p.Account
	case authNone:
		cred = "none"
	}
	sum := sha256.Sum256([]byte("claude_balancer/quota\x00" + p.BaseURL + "\x00" + cred))
	base := sha256.Sum256([]byte("claude_balancer/quota\x00" + p.BaseURL))
	return hex.EncodeToString(sum[:16]), "pt" + hex.EncodeToString(base[:6]) + ":"
}

// exportQuota is this balancer's document: its providers' own accounts, and
// the client credentials' that cool down or were heard from lately.
func (b *Balancer) exportQuota() []byte {
	t := now()
	doc := quotaDoc{Accounts: map[string]quota.Snapshot{}}
	for _, p := range b.providers {
		if p.auth != authPassthrough {
			if p.state.quota.Known() {
				doc.Accounts[p.accountKey] = p.state.quota.Snapshot(t)
			}
			continue
		}
		type entry struct {
			key string
			s   quota.Snapshot
		}
		var scopes []entry
		for _, sc := range p.state.scopes.all() {
			s := sc.quota.Snapshot(t)
			if s.Until.After(t) || t.Sub(s.Observed) < sharedScopeAge || coolingWindow(s, t) {
				scopes = append(scopes, entry{p.scopePrefix + sc.fingerprint, s})
			}
		}
		sort.Slice(scopes, func(i, j int) bool { return scopes[i].s.Observed.After(scopes[j].s.Observed) })
		for i, e := range scopes {
			if i >= maxSharedScopes {
				break
			}
			doc.Accounts[e.key] = e.s
		}
	}
	out, _ := json.Marshal(doc)
	return out
}

func coolingWindow(s quota.Snapshot, t time.Time) bool {
	for _, w := range s.Windows {
		if w.Until.After(t) {
			return true
		}
	}
	return false
}

// importQuota merges the other instances' documents into this balancer's
// accounts. A client credential unknown here gets a scope only when another
// instance saw it cool down, so that the cooldown holds here too.
func (b *Balancer) importQuota(docs [][]byte) {
	t := now()
	for _, raw := range docs {
		var doc quotaDoc
		if json.Unmarshal(raw, &doc) != nil {
			continue
		}
		for key, s := range doc.Accounts {
			for _, p := range b.providers {
				switch {
				case p.auth != authPassthrough && key == p.accountKey:
					p.state.quota.Merge(s, t)
				case p.auth == authPassthrough && strings.HasPrefix(key, p.scopePrefix):
					fp := key[len(p.scopePrefix):]
					cooling := s.Until.After(t) || coolingWindow(s, t)
					if sc := p.state.scopes.get(fp, cooling); sc != nil {
						sc.quota.Merge(s, t)
					}
				}
			}
		}
	}
}

// shareQuota tells the board an account changed: at once for a transition.
func (b *Balancer) shareQuota(acct *quota.Account) {
	if b.board == nil {
		return
	}
	if changed, transition := acct.Changed(); changed {
		b.board.Changed(transition)
	}
}
