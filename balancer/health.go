package balancer

import (
	"fmt"

	"sync"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/clock"
)

// clk is the package's clock: health, stickiness and cooldowns read it, and
// tests move it instead of sleeping.
var clk = clock.System

func now() time.Time { return clk.Now() }

// Endpoint classes keep separate health: a provider whose count_tokens
// endpoint is broken still serves messages.
const (
	ClassMessages    = "messages"
	ClassCountTokens = "count_tokens"
)

// Scope says who an attempt's failure belongs to (README, "Failover and the commit point").
type Scope int

const (
	// ScopeNone is a success.
	ScopeNone Scope = iota
	// ScopeRequest failures belong to the request (400, 413, 422...): they go
	// back to the client and cost the provider nothing.
	ScopeRequest
	// ScopeCredential failures (401, 403) fail over and are counted.
	ScopeCredential
	// ScopeQuota failures (402, 429, insufficient credits) fail over and cool
	// the account down until the time the provider gave (in the scope of the
	// rejected window), else count.
	ScopeQuota
	// ScopeProvider failures (connection errors, timeouts, 5xx, in-band
	// errors, truncated streams) fail over and are counted.
	ScopeProvider
	// ScopeClient means the client went away; no verdict on the provider.
	ScopeClient
)

func (s Scope) String() string {
	switch s {
	case ScopeNone:
		return "success"
	case ScopeRequest:
		return "request"
	case ScopeCredential:
		return "credential"
	case ScopeQuota:
		return "quota"
	case ScopeProvider:
		return "provider"
	case ScopeClient:
		return "client"
	}
	return "unknown"
}

// HealthPolicy holds the effective health settings of a balancer.
type HealthPolicy struct {
	Threshold  int
	Cooldown   time.Duration
	ResetAfter time.Duration
}

// Health is the passive health of one provider for one endpoint class. It
// lives in state shared across config reloads, so everything is kept as
// timestamps: no timers or goroutines tied to a config.
type Health struct {
	mu          sync.Mutex
	errors      int       // counted errors since the last success
	lastError   time.Time // time of the last counted error
	lastMessage string    // why the last attempt failed
	lastSuccess time.Time
	until       time.Time // end of the cooldown; zero when not marked
	marked      bool      // out of rotation (cooling down or half-open)
	trial       bool      // the half-open trial request is in flight
}

// Transition reports a change of a provider's availability.
type Transition int

// Transitions returned by the Record methods.
const (
	NoTransition Transition = iota
	BecameUnhealthy
	BecameHealthy
)

// HealthSnapshot is a read-only copy of a Health for status pages.
type HealthSnapshot struct {
	Healthy       bool
	State         string // "healthy", "cooldown", "half_open"
	Errors        int
	CooldownUntil time.Time
	LastError     time.Time
	LastMessage   string
	LastSuccess   time.Time
}

// decay forgets a sub-threshold error count that saw no error for resetAfter.
// The caller holds h.mu.
func (h *Health) decay(t time.Time, p HealthPolicy) {
	if !h.marked && h.errors > 0 && p.ResetAfter > 0 && t.Sub(h.lastError) >= p.ResetAfter {
		h.errors = 0
	}
}

// Available reports whether a request may be sent now. When it may not, the
// second result says when the provider may be tried again.
func (h *Health) Available(p HealthPolicy) (bool, time.Time) {
	t := now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.decay(t, p)
	if !h.marked {
		return true, time.Time{}
	}
	if t.Before(h.until) {
		return false, h.until
	}
	if h.trial {
		// One trial at a time; the next chance is after it ends, which we
		// cannot know: suggest a short wait.
		return false, t.Add(time.Second)
	}
	return true, time.Time{}
}

// Acquire claims the right to send an attempt now. For a half-open provider
// only one attempt at a time is allowed: the trial. Every successful Acquire
// must be followed by exactly one Record* or Release call.
func (h *Health) Acquire(p HealthPolicy) bool {
	t := now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.decay(t, p)
	if !h.marked {
		return true
	}
	if t.Before(h.until) || h.trial {
		return false
	}
	h.trial = true
	return true
}

// Release ends an attempt that produced no verdict (the client left, or the
// request itself was at fault).
func (h *Health) Release() {
	h.mu.Lock()
	h.trial = false
	h.mu.Unlock()
}

// RecordSuccess heals the provider and clears its error count.
func (h *Health) RecordSuccess() Transition {
	t := now()
	h.mu.Lock()
	defer h.mu.Unlock()
	was := h.marked
	h.errors = 0
	h.marked, h.trial = false, false
	h.until = time.Time{}
	h.lastSuccess = t
	if was {
		return BecameHealthy
	}
	return NoTransition
}

// RecordFailure counts an error. A failed half-open trial restarts the
// cooldown; reaching the threshold starts one. (A quota answer that says when
// to come back cools down the account instead: see internal/quota.) It
// returns the new count and the transition.
func (h *Health) RecordFailure(p HealthPolicy, message string) (int, Transition) {
	t := now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.decay(t, p)
	was := h.marked
	h.errors++
	h.lastError = t
	h.lastMessage = message
	if h.trial || h.errors >= p.Threshold {
		h.marked = true
		if until := t.Add(p.Cooldown); until.After(h.until) || h.trial {
			h.until = until
		}
	}
	h.trial = false
	if h.marked && !was {
		return h.errors, BecameUnhealthy
	}
	return h.errors, NoTransition
}

// NoteFailure remembers why an attempt failed without counting it.
func (h *Health) NoteFailure(message string) {
	h.mu.Lock()
	h.lastMessage = message
	h.trial = false
	h.mu.Unlock()
}

// Reset clears errors and any cooldown (an operator's action).
func (h *Health) Reset() Transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	was := h.marked
	h.errors = 0
	h.marked, h.trial = false, false
	h.until = time.Time{}
	if was {
		return BecameHealthy
	}
	return NoTransition
}

// Snapshot returns the current state.
func (h *Health) Snapshot(p HealthPolicy) HealthSnapshot {
	t := now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.decay(t, p)
	s := HealthSnapshot{
		Healthy:     !h.marked || !t.Before(h.until),
		State:       "healthy",
		Errors:      h.errors,
		LastError:   h.lastError,
		LastMessage: h.lastMessage,
		LastSuccess: h.lastSuccess,
	}
	if h.marked {
		s.CooldownUntil = h.until
		if t.Before(h.until) {
			s.State = "cooldown"
		} else {
			s.State = "half_open"
		}
	}
	return s
}

// countString formats an error count the way the logs show it: "count=1/2".
func countString(n, threshold int) string {
	return fmt.Sprintf("%d/%d", n, threshold)
}
