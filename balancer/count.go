package balancer

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Defaults of count_tokens.
const (
	DefaultCountThreshold = 2
	DefaultCountCooldown  = 5 * time.Minute
	DefaultCountTimeout   = 10 * time.Second
)

// CountConfig configures POST /v1/messages/count_tokens.
type CountConfig struct {
	// Local counts every request locally, never asking a provider.
	Local bool
	// Threshold is the number of failures after which a provider's count
	// endpoint cools down.
	Threshold int
	// Cooldown is how long a failing count endpoint is left alone.
	Cooldown time.Duration
	// Timeout bounds one upstream count.
	Timeout time.Duration
}

// CountResult is the outcome of an upstream count. When Upstream is false
// the caller counts locally; Reason says why.
type CountResult struct {
	Upstream bool
	Provider *Provider
	Status   int
	Header   http.Header
	Body     []byte
	Reason   string
}

func (b *Balancer) countPolicy() HealthPolicy {
	return HealthPolicy{Threshold: b.count.Threshold, Cooldown: b.count.Cooldown, ResetAfter: b.policy.ResetAfter}
}

// policyFor returns the health settings of an endpoint class.
func (b *Balancer) policyFor(class string) HealthPolicy {
	if class == ClassCountTokens {
		return b.countPolicy()
	}
	return b.policy
}

// CountTokens asks the first healthy Anthropic candidate of the model's route
// for an exact count. Failures count against the provider's count_tokens
// health only: messages never notice them.
func (b *Balancer) CountTokens(ctx context.Context, req *Request) CountResult {
	if b.count.Local {
		return CountResult{Reason: "local counting is configured"}
	}
	route := b.routes.Match(req.Peek.Model)
	if route == nil {
		return CountResult{Reason: "no route serves the model"}
	}
	cands, _ := b.candidates(route, req.Session(), ClassCountTokens, req)
	if len(cands) == 0 {
		return CountResult{Reason: "no provider's count endpoint is available"}
	}
	if cands[0].Provider.Type != TypeAnthropic {
		return CountResult{Reason: "the route's first candidate is not an Anthropic provider"}
	}
	pol := b.countPolicy()
	for _, c := range cands {
		p := c.Provider
		if p.Type != TypeAnthropic {
			continue
		}
		h := p.Health(ClassCountTokens)
		if !h.Acquire(pol) {
			continue
		}
		res, o := b.countOnce(ctx, c, req)
		switch {
		case o == nil:
			b.transition(p, ClassCountTokens, h.RecordSuccess(), 0, "count succeeded")
			return res
		case o.scope == ScopeClient || o.scope == ScopeRequest:
			h.Release()
		case o.clientCred:
			// The client's own credential was refused: no verdict on the
			// provider, and the count is made locally.
			h.Release()
		default:
			n, t := h.RecordFailure(pol, o.message)
			b.logger.Info("count_tokens error", zap.String("provider", p.Name),
				zap.String("count", countString(n, pol.Threshold)), zap.String("reason", o.message))
			b.transition(p, ClassCountTokens, t, n, o.message)
		}
		return CountResult{Provider: p, Reason: p.Name + ": " + o.message}
	}
	return CountResult{Reason: "no provider's count endpoint is available"}
}

func (b *Balancer) countOnce(ctx context.Context, cand candidate, req *Request) (CountResult, *outcome) {
	p := cand.Provider
	defer p.shared.done()
	cd := anthropicCodec{fold: p.foldSystem}
	body, _ := cd.body(req, cand.Model)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &call{b: b, ctx: ctx, cand: cand, p: p, cd: cd, req: req, sent: now()}
	// One bound on the whole count: the watchdog's first phase covers the
	// wait for the answer, and reading it is bounded by the same timeout.
	c.wd = newWatchdog(cancel, b.count.Timeout, b.count.Timeout)
	defer c.wd.stop()
	target := p.countURL
	if req.RawQuery != "" {
		target += "?" + req.RawQuery
	}
	hreq, _, err := b.newUpstreamRequest(cctx, p, target, bytes.NewReader(body), len(body), req, cd)
	if err != nil {
		return CountResult{}, c.failed(err, "")
	}
	resp, err := p.transport.RoundTrip(hreq)
	if err != nil {
		return CountResult{}, c.failed(err, "")
	}
	defer resp.Body.Close()
	data, err := readBody(c.wd, resp.Body, resp.ContentLength, maxErrorBody)
	if err != nil {
		return CountResult{}, c.failed(err, "reading the answer failed: ")
	}
	if resp.StatusCode != http.StatusOK {
		scope, clientCred := ScopeProvider, false
		switch resp.StatusCode {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			scope = ScopeRequest
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
			// Under passthrough_auth these are about the client's credential.
			clientCred = p.auth == authPassthrough
		}
		_, msg, _ := cd.errorInfo(resp.StatusCode, data)
		return CountResult{}, &outcome{scope: scope, clientCred: clientCred, status: resp.StatusCode, message: fmt.Sprintf("HTTP %d %s", resp.StatusCode, msg)}
	}
	if findTopLevel(data, "input_tokens") == nil {
		return CountResult{}, &outcome{scope: ScopeProvider, status: resp.StatusCode, message: "answer without input_tokens"}
	}
	h := http.Header{}
	copyResponseHeaders(h, resp.Header)
	h.Set("Content-Type", "application/json")
	return CountResult{Upstream: true, Provider: p, Status: resp.StatusCode, Header: h, Body: data}, nil
}
