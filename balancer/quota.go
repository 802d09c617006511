package balancer

import (
	"time"

	"go.uber.org/zap"

	"github.com/claude-balancer/caddy-claude-balancer/internal/quota"
)

// A subscription account (OAuth, or a relay passing the headers on) says on
// every answer how full each of its quota windows is (README, "Subscription pools"). The
// balancer keeps the latest reading per account: the provider's own
// credential, or each client credential of a passthrough provider. A 429
// cools down exactly the rejected window's scope, and accounts near a
// window's limit are steered away from before any 429.

// account returns the quota account a request uses at p: the provider's own,
// or under passthrough_auth the one of the client's credential (nil when that
// credential has none yet and create is false).
func (p *Provider) account(req *Request, create bool) *quota.Account {
	if p.auth != authPassthrough {
		return &p.state.quota
	}
	sc := p.state.scopes.get(req.Credential(), create)
	if sc == nil {
		return nil
	}
	if create {
		p.state.lastScope.Store(sc)
	}
	return &sc.quota
}

// Quota returns the state of the provider's quota windows: its own
// account's, or for a passthrough provider the credential whose answer came
// last.
func (p *Provider) Quota() quota.Snapshot {
	if p.auth == authPassthrough {
		if sc := p.state.lastScope.Load(); sc != nil {
			return sc.quota.Snapshot(now())
		}
		return quota.Snapshot{}
	}
	return p.state.quota.Snapshot(now())
}

// upstreamModel is the model a candidate is asked for: the route's, else the
// client's.
func upstreamModel(t Target, req *Request) string {
	if t.Model != "" {
		return t.Model
	}
	return req.Peek.Model
}

// recordQuota folds what an attempt's answer said about its account into
// the account's state: the window readings of any answer, and for a quota
// answer the cooldown of the rejected window's scope. It tells the outcome
// whether the account cooled down (then the answer is not counted against
// the provider's health: the account said when to come back).
func (c *call) recordQuota(o *outcome) {
	if !c.hasReading && o.scope != ScopeQuota {
		return
	}
	p, b := c.p, c.b
	acct := p.account(c.req, true)
	model := upstreamModel(c.cand.Target, c.req)
	t := now()
	client := p.auth == authPassthrough
	defer b.shareQuota(acct)
	if c.hasReading {
		for _, ev := range acct.Observe(c.reading, model, t, b.nearLimit) {
			b.quotaEvent(p, client, ev)
		}
		if o.scope == ScopeNone {
			c.res.QuotaWindow = c.reading.Representative
		}
	}
	if o.scope != ScopeQuota || !o.counted {
		return
	}
	rej := acct.Reject(c.reading, c.hasReading, model, o.retryAt, t)
	if rej.Until.IsZero() {
		return
	}
	o.cooled = true
	c.res.QuotaWindow = rej.Window
	scope := "every model"
	if !rej.AccountWide {
		scope = "its models"
	}
	b.logger.Info("quota window rejected", zap.String("provider", p.Name), zap.String("window", rej.Window),
		zap.String("cools", scope), zap.Time("until", rej.Until), zap.Bool("client_credential", client))
	b.quotaEvent(p, client, quota.Event{Kind: quota.EventRejected, Window: rej.Window, Until: rej.Until})
}

func (b *Balancer) quotaEvent(p *Provider, client bool, ev quota.Event) {
	if b.observer != nil {
		b.observer.Quota(p, client, ev)
	}
}

// headroom is a target's remaining share of its fullest window that applies
// to the request's model: 1 with no reading.
func headroom(p *Provider, t Target, req *Request, at time.Time) float64 {
	acct := p.account(req, false)
	if acct == nil {
		return 1
	}
	util, _, known := acct.Fullest(upstreamModel(t, req), at)
	if !known {
		return 1
	}
	return 1 - util
}

// byHeadroom orders candidates by remaining share, highest first; ties keep
// the route's order.
func byHeadroom(list []candidate) {
	// An insertion sort: routes have a few candidates, and it is stable.
	for i := 1; i < len(list); i++ {
		for j := i; j > 0 && list[j].room > list[j-1].room; j-- {
			list[j], list[j-1] = list[j-1], list[j]
		}
	}
}

// demoteNearLimit moves the candidates at or above near in a window that
// applies to the request to the end, keeping the order within each part.
func demoteNearLimit(list []candidate, near float64) {
	n := 0
	for _, c := range list {
		if 1-c.room < near {
			n++
		}
	}
	if n == 0 || n == len(list) {
		return
	}
	// A stable partition, in place: few candidates, so a rotation each.
	for i, kept := 0, 0; kept < n; i++ {
		if 1-list[i].room < near {
			c := list[i]
			copy(list[kept+1:i+1], list[kept:i])
			list[kept] = c
			kept++
		}
	}
}

// QuotaCooldown returns when the provider's own account comes out of an
// account-wide quota cooldown, or the zero time when it is not in one (a
// passthrough provider's accounts are its clients').
func (p *Provider) QuotaCooldown() time.Time {
	if p.auth == authPassthrough {
		return time.Time{}
	}
	s := p.state.quota.Snapshot(now())
	return s.Until
}
