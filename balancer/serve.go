package balancer

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
)

// Serve runs the attempt loop for req and writes the committed answer to
// out. ctx bounds the upstream calls: it is the client's context (or that
// of a de-duplication group), never a config's.
func (b *Balancer) Serve(ctx context.Context, req *Request, out relay.Output) *Result {
	start := now()
	res := &Result{Stream: req.Peek.Stream, ClientModel: req.Peek.Model}
	route := b.routes.Match(req.Peek.Model)
	if route == nil {
		res.Failure = relay.NewFailure(http.StatusNotFound, apierr.NotFound,
			fmt.Sprintf("no route serves model %q", req.Peek.Model))
		res.Status = http.StatusNotFound
		return res
	}
	res.Route = route.ID
	session := req.Session()
	cands, why := b.candidates(route, session, ClassMessages, req)
	var (
		reasons []string
		fails   failures
		prev    *Provider
	)
	for _, cand := range cands {
		p := cand.Provider
		h := p.Health(ClassMessages)
		if !h.Acquire(b.policy) {
			// Another request holds the half-open trial.
			if ok, at := h.Available(b.policy); !ok && (why.retryAt.IsZero() || at.Before(why.retryAt)) {
				why.retryAt = at
			}
			continue
		}
		if last := fails.last; prev != nil && last != nil {
			b.failover(prev, p, last)
		}
		p.state.requests.Add(1)
		c := &call{b: b, ctx: ctx, cand: cand, p: p, cd: p.codec(), req: req, out: out, res: res, start: start, sent: now()}
		o := c.attempt()
		if p.auth == authPassthrough && (o.scope == ScopeCredential || o.scope == ScopeQuota) {
			o.clientCred = true
		}
		c.recordQuota(o)
		at := Attempt{Provider: p.Name, Model: cand.Model, Outcome: o.outcomeName(), Status: o.status, Duration: now().Sub(c.sent)}
		if o.scope != ScopeNone {
			at.Error = o.message
		}
		res.Attempts = append(res.Attempts, at)
		if o.scope != ScopeClient && o.scope != ScopeRequest {
			var u Usage
			if o.scope == ScopeNone {
				u = res.Usage
			}
			p.state.stats.record(o.scope != ScopeNone && !o.clientCred, u)
		}
		switch o.scope {
		case ScopeNone:
			b.recordSuccess(p, ClassMessages, req)
			if b.stickyTTL > 0 && (session != "" || b.strategy == StrategyPriority) {
				b.state.sticky.set(stickyKey(session, route.ID), cand.index, p.Name, b.stickyTTL)
			}
			return res
		case ScopeClient:
			h.Release()
			res.ClientGone = true
			if !res.Committed {
				res.Status = 499
			}
			return res
		case ScopeRequest:
			h.Release()
			if !o.committed {
				res.Failure = requestFailure(o)
				res.Status = res.Failure.Status
			}
			return res
		}
		b.recordFailure(p, ClassMessages, o, req)
		if o.committed {
			return res
		}
		reasons = append(reasons, p.Name+": "+o.message)
		fails.add(o, p)
		prev = p
	}
	if fails.last == nil {
		res.Failure = b.unavailable(req.Peek.Model, why)
	} else {
		res.Failure = fails.answer(req.Peek.Model, reasons)
	}
	res.Status = res.Failure.Status
	return res
}

// failover logs and reports a move from one provider to the next. It is a
// function of its own, not inline in Serve, so that its log fields do not
// take room in Serve's frame: an idle stream's goroutine keeps the deepest
// stack it reached, and Serve is on it.
//
//go:noinline
func (b *Balancer) failover(from, to *Provider, last *outcome) {
	b.logger.Info("failover", zap.String("from", from.Name), zap.String("to", to.Name), zap.String("reason", last.message))
	if b.observer != nil {
		b.observer.Failover(from, to, last.scope.String())
	}
}

// Probe sends req to one provider, whatever the routes and its health say,
// and writes its answer to out: the conformance check's way of asking each
// provider what Claude Code would get from it, through the same conversion
// and relay. model, when set, replaces the request's model. A probe's outcome
// is not recorded in the provider's health.
func (b *Balancer) Probe(ctx context.Context, provider, model string, req *Request, out relay.Output) *Result {
	res := &Result{Stream: req.Peek.Stream, ClientModel: req.Peek.Model, Route: "probe"}
	p := b.byName[provider]
	if p == nil {
		res.Failure = relay.NewFailure(http.StatusNotFound, apierr.NotFound, fmt.Sprintf("no provider named %q", provider))
		res.Status = res.Failure.Status
		return res
	}
	c := &call{b: b, ctx: ctx, cand: candidate{Target: Target{Provider: p, Model: model}}, p: p, cd: p.codec(),
		req: req, out: out, res: res, start: now(), sent: now()}
	o := c.attempt()
	res.Attempts = append(res.Attempts, Attempt{Provider: p.Name, Model: model, Outcome: o.outcomeName(),
		Status: o.status, Error: o.message, Duration: now().Sub(c.sent)})
	if o.scope != ScopeNone && !o.committed && o.scope != ScopeClient {
		if o.scope == ScopeRequest || o.scope == ScopeCredential && p.auth == authPassthrough {
			res.Failure = requestFailure(o)
		} else {
			var f failures
			f.add(o, p)
			res.Failure = f.answer(req.Peek.Model, []string{p.Name + ": " + o.message})
		}
		res.Status = res.Failure.Status
	}
	if o.committed && o.scope != ScopeNone && o.scope != ScopeClient {
		res.StreamError = o.message
	}
	return res
}

// recordSuccess heals a provider after an accepted answer: its health, its
// own credential's standing and the scope of the client's credential.
func (b *Balancer) recordSuccess(p *Provider, class string, req *Request) {
	b.transition(p, class, p.Health(class).RecordSuccess(), 0, "request succeeded")
	switch p.auth {
	case authPassthrough:
		if sc := p.state.scopes.get(req.Credential(), false); sc != nil {
			sc.health.RecordSuccess()
		}
	default:
		p.state.credRejected.Store(0)
	}
}

// recordFailure updates health after a failed attempt, in the scope of
// whoever caused it: the client's credential, or the provider.
func (b *Balancer) recordFailure(p *Provider, class string, o *outcome, req *Request) {
	h := p.Health(class)
	if o.clientCred {
		// No verdict on the provider: release a half-open trial.
		h.Release()
		sc := p.state.scopes.get(req.Credential(), true)
		if o.scope == ScopeQuota && o.counted && !o.cooled {
			sc.health.RecordFailure(b.policy, o.message)
		} else {
			sc.health.NoteFailure(o.message)
		}
		if o.scope == ScopeCredential {
			sc.health.mu.Lock()
			sc.rejected = now()
			sc.health.mu.Unlock()
		}
		b.logger.Info("client credential refused", zap.String("provider", p.Name), zap.String("endpoint", class),
			zap.String("scope", o.scope.String()), zap.String("credential", req.Credential()[:8]), zap.String("reason", o.message))
		return
	}
	p.state.failures.Add(1)
	if o.scope == ScopeCredential {
		if p.state.credRejected.Swap(now().UnixNano()) == 0 && b.observer != nil {
			b.observer.CredentialRejected(p, o.status, o.message)
		}
		b.logger.Warn("provider rejected its configured credential", zap.String("provider", p.Name),
			zap.String("auth", p.AuthMode()), zap.Int("status", o.status), zap.String("reason", o.message))
	}
	if !o.counted || o.cooled {
		h.NoteFailure(o.message)
		b.logger.Info("provider error not counted", zap.String("provider", p.Name), zap.String("endpoint", class),
			zap.String("scope", o.scope.String()), zap.String("reason", o.message))
		return
	}
	n, t := h.RecordFailure(b.policy, o.message)
	b.logger.Info("provider error", zap.String("provider", p.Name), zap.String("endpoint", class),
		zap.String("scope", o.scope.String()), zap.String("count", countString(n, b.policy.Threshold)),
		zap.String("reason", o.message))
	b.transition(p, class, t, n, o.message)
}

// unavailable answers a request for which no provider could be tried.
func (b *Balancer) unavailable(model string, why unavailability) *relay.Failure {
	status, typ := http.StatusServiceUnavailable, apierr.Overloaded
	msg := fmt.Sprintf("no provider is available for model %q", model)
	if why.allQuota {
		status, typ = http.StatusTooManyRequests, apierr.RateLimit
		msg += ": every provider is rate limited"
	} else if !why.retryAt.IsZero() {
		msg += ": every provider is cooling down after errors"
		if len(why.credential) > 0 {
			msg += fmt.Sprintf(" (the configured credential of %s was rejected)", strings.Join(why.credential, ", "))
		}
	} else if why.disabled > 0 {
		msg += ": every provider is disabled"
	}
	f := relay.NewFailure(status, typ, msg)
	if !why.retryAt.IsZero() {
		f.Header = http.Header{"Retry-After": {retryAfter(why.retryAt)}}
	}
	return f
}

// failures collects the failed attempts of a request, to choose what the
// client gets when every candidate failed.
type failures struct {
	// own is a rejection of the credential the client passed through: it
	// wins, unchanged, so that the client re-authenticates.
	own *outcome
	// quota is the quota answer that allows a retry soonest.
	quota *outcome
	// last is the last failure, and lastProvider its provider.
	last         *outcome
	lastProvider *Provider
}

func (f *failures) add(o *outcome, p *Provider) {
	f.last, f.lastProvider = o, p
	switch {
	case o.clientCred && o.scope == ScopeCredential:
		if f.own == nil {
			f.own = o
		}
	case o.scope == ScopeQuota:
		if f.quota == nil || (!o.retryAt.IsZero() && (f.quota.retryAt.IsZero() || o.retryAt.Before(f.quota.retryAt))) {
			f.quota = o
		}
	}
}

// answer is what the client gets when every candidate failed: its own
// credential's rejection, else a quota answer, else the last failure. It names
// every provider tried and why it failed. A rejection of a credential the
// operator configured becomes a 502: the client cannot fix it, and a 401
// would make Claude Code ask its user to log in again.
func (f *failures) answer(model string, reasons []string) *relay.Failure {
	if f.own != nil {
		return requestFailure(f.own)
	}
	msg := fmt.Sprintf("all providers failed for model %q: %s", model, strings.Join(reasons, "; "))
	if q := f.quota; q != nil {
		status, typ := q.status, q.errType
		if status != http.StatusPaymentRequired {
			status, typ = http.StatusTooManyRequests, apierr.RateLimit
		}
		if typ == "" {
			typ = apierr.TypeForStatus(status)
		}
		fl := relay.NewFailure(status, typ, msg)
		if !q.retryAt.IsZero() {
			fl.Header = http.Header{"Retry-After": {retryAfter(q.retryAt)}}
		} else if v := q.header.Get("Retry-After"); v != "" {
			fl.Header = http.Header{"Retry-After": {v}}
		}
		return fl
	}
	last := f.last
	if last.scope == ScopeCredential {
		return relay.NewFailure(http.StatusBadGateway, apierr.API, fmt.Sprintf("%s (the configured credential of provider %q was rejected)", msg, f.lastProvider.Name))
	}
	status, typ := last.status, last.errType
	if status == 0 || status < 400 {
		status = http.StatusBadGateway
		if last.errType == apierr.Timeout {
			status = http.StatusGatewayTimeout
		}
	}
	if typ == "" {
		typ = apierr.TypeForStatus(status)
	}
	fl := relay.NewFailure(status, typ, msg)
	if v := last.header.Get("Retry-After"); v != "" {
		fl.Header = http.Header{"Retry-After": {v}}
	}
	return fl
}

// retryAfter formats a time to come back as a Retry-After value: whole
// seconds from now, rounded up, at least one.
func retryAfter(at time.Time) string {
	return strconv.Itoa(max(1, int((at.Sub(now())+time.Second-1)/time.Second)))
}

// requestFailure returns a request-scoped upstream error to the client as
// the provider sent it (an Anthropic envelope), with its headers.
func requestFailure(o *outcome) *relay.Failure {
	f := &relay.Failure{Status: o.status, Header: http.Header{}}
	if o.status == 0 {
		f.Status = http.StatusBadRequest
	}
	copyResponseHeaders(f.Header, o.header)
	f.Header.Del("Content-Type")
	if isAnthropicError(o.body) {
		f.Body = o.body
	} else {
		typ := o.errType
		if typ == "" {
			typ = apierr.TypeForStatus(f.Status)
		}
		msg := o.detail
		if msg == "" {
			msg = o.message
		}
		f.Body = apierr.Body(typ, msg)
	}
	return f
}

// isAnthropicError reports whether b is an Anthropic error envelope, which
// goes to the client byte for byte.
func isAnthropicError(b []byte) bool {
	if string(findTopLevel(b, "type")) != `"error"` {
		return false
	}
	_, _, ok := apierr.Parse(b)
	return ok
}
