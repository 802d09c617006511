package balancer

import (
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// candidate is a target that may be tried for a request.
type candidate struct {
	Target
	index int // position in the route
	// room is the remaining share of the fullest quota window that applies
	// to the request's model (1 without a reading), read once per request.
	room float64
}

// balancerState is what a balancer keeps across config reloads.
type balancerState struct {
	sticky  *stickyTable
	cursors sync.Map // route ID -> *atomic.Uint64
}

func newBalancerState() *balancerState { return &balancerState{sticky: newStickyTable()} }

// Destruct implements caddy.Destructor.
func (*balancerState) Destruct() error { return nil }

func (s *balancerState) cursor(route string) *atomic.Uint64 {
	if c, ok := s.cursors.Load(route); ok {
		return c.(*atomic.Uint64)
	}
	c, _ := s.cursors.LoadOrStore(route, new(atomic.Uint64))
	return c.(*atomic.Uint64)
}

// unavailability explains why a route had no candidate.
type unavailability struct {
	retryAt  time.Time // soonest recovery
	allQuota bool      // every provider is cooling down for quota
	disabled int       // providers disabled by config or operator
	// credential names the providers cooling down because their configured
	// credential was rejected.
	credential []string
}

// candidates returns the route's targets that may be tried now, in the order
// to try them: the strategy's order, then the session's bound target first,
// or without one, the accounts near a quota window's limit last. A target
// whose account cools down for the request's model (the provider's own, or
// under passthrough_auth the client credential's) is left out for it.
func (b *Balancer) candidates(route *Route, session, class string, req *Request) ([]candidate, unavailability) {
	var (
		list []candidate
		why  = unavailability{allQuota: true}
		t    = now()
		pol  = b.policyFor(class)
	)
	for i, tg := range route.Targets {
		p := tg.Provider
		if !p.Enabled() {
			why.disabled++
			continue
		}
		ok, at := p.Health(class).Available(pol)
		quota := false
		if !ok && !p.CredentialRejected().IsZero() {
			why.credential = append(why.credential, p.Name)
		}
		if ok && class == ClassMessages {
			if acct := p.account(req, false); acct != nil {
				ok, at, quota = acct.Available(upstreamModel(tg, req), t)
			}
		}
		if ok && p.auth == authPassthrough {
			// Quota answers of this credential that gave no time to come
			// back are counted in its own scope.
			if sc := p.state.scopes.get(req.Credential(), false); sc != nil {
				ok, at = sc.health.Available(b.policy)
				quota = !ok
			}
		}
		if !ok {
			if why.retryAt.IsZero() || at.Before(why.retryAt) {
				why.retryAt = at
			}
			if !quota {
				why.allQuota = false
			}
			continue
		}
		list = append(list, candidate{Target: tg, index: i, room: 1})
		if class == ClassMessages {
			list[len(list)-1].room = headroom(p, tg, req, t)
		}
	}
	if len(list) == 0 {
		if why.retryAt.IsZero() {
			why.allQuota = false
		}
		return nil, why
	}
	if len(list) > 1 {
		b.order(route, list)
	}
	bound := false
	if b.stickyTTL > 0 && (session != "" || b.strategy == StrategyPriority) {
		if bd, ok := b.state.sticky.get(stickyKey(session, route.ID), b.stickyTTL); ok {
			for i, c := range list {
				if c.index != bd.target || c.Provider.Name != bd.provider {
					continue
				}
				// A session stays where its prompt cache is warm until the
				// account's window is full.
				if c.room > 0 {
					moveToFront(list, i)
					bound = true
				}
				break
			}
		}
	}
	if !bound && class == ClassMessages && len(list) > 1 {
		demoteNearLimit(list, b.nearLimit)
	}
	return list, why
}

// order arranges candidates per the strategy. The order after the first is
// the failover order.
func (b *Balancer) order(route *Route, list []candidate) {
	switch b.strategy {
	case StrategyHeadroom:
		byHeadroom(list)
	case StrategyRoundRobin:
		n := uint64(len(list))
		k := int((b.state.cursor(route.ID).Add(1) - 1) % n)
		rotate(list, k)
	case StrategyRandom:
		moveToFront(list, rand.IntN(len(list)))
	case StrategyWeighted:
		total := 0
		for _, c := range list {
			total += c.Provider.Weight()
		}
		r := rand.IntN(total)
		for i, c := range list {
			if r -= c.Provider.Weight(); r < 0 {
				moveToFront(list, i)
				break
			}
		}
	case StrategyLeastLatency:
		// Providers without a sample yet sort first so they get one.
		sort.SliceStable(list, func(i, j int) bool {
			return list[i].Provider.Latency() < list[j].Provider.Latency()
		})
	}
}

func moveToFront(list []candidate, i int) {
	if i == 0 {
		return
	}
	c := list[i]
	copy(list[1:i+1], list[:i])
	list[0] = c
}

func rotate(list []candidate, k int) {
	if k == 0 {
		return
	}
	tmp := make([]candidate, len(list))
	copy(tmp, list[k:])
	copy(tmp[len(list)-k:], list[:k])
	copy(list, tmp)
}
