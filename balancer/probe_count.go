package balancer

import (
	"context"
	"fmt"
)

// ProbeCount asks one provider's count endpoint for an exact count, whatever
// the routes, its health and the count_tokens settings say: the conformance
// check's way of learning whether count_tokens would be answered upstream or
// locally. model, when set, replaces the request's model. When the answer is
// not an upstream count, Reason says why (the provider's own error when it
// gave one) and Status is the provider's status, if any. The outcome is not
// recorded in the provider's health.
func (b *Balancer) ProbeCount(ctx context.Context, provider, model string, req *Request) CountResult {
	p := b.byName[provider]
	if p == nil {
		return CountResult{Reason: fmt.Sprintf("no provider named %q", provider)}
	}
	if p.Type != TypeAnthropic {
		return CountResult{Provider: p, Reason: "OpenAI-compatible providers are counted locally"}
	}
	res, o := b.countOnce(ctx, candidate{Target: Target{Provider: p, Model: model}}, req)
	if o != nil {
		return CountResult{Provider: p, Status: o.status, Reason: o.message}
	}
	return res
}
