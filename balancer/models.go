package balancer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"
)

// What providers list at their /v1/models is kept for a while per provider
// and credential, so that Claude Code's start-up listing costs no upstream
// call most of the time and a provider that cannot list is not asked again
// at once.
const (
	ModelsTTL        = 5 * time.Minute
	modelsFailureTTL = 30 * time.Second
	modelsTimeout    = 5 * time.Second
	// maxModelPages bounds the pages followed in one provider's listing.
	maxModelPages = 10
	// maxModelListings bounds the listings a passthrough provider keeps, one
	// per client credential; past it expired and then the oldest go.
	maxModelListings = 1000
	// maxModelListBytes bounds one page of a provider's listing.
	maxModelListBytes = 4 << 20
)

// ListedModel is one model a provider lists.
type ListedModel struct {
	ID          string `json:"id"`
	DisplayName string `json:"display_name,omitempty"`
	CreatedAt   string `json:"created_at,omitempty"`
}

// modelListing is one provider's listing for one credential.
type modelListing struct {
	ready   chan struct{} // closed when the fetch ends
	models  []ListedModel
	err     error
	expires time.Time
	used    time.Time
}

// modelCache holds a provider's listings by credential fingerprint ("" for
// the provider's own credential).
type modelCache struct {
	mu sync.Mutex
	m  map[string]*modelListing
}

// ProviderModels returns what the enabled Anthropic-type providers list, each
// provider's models in its order, providers in declaration order; a provider
// that cannot list (or has no credential to list with) is skipped. client
// holds the requesting client's headers, whose credential a passthrough_auth
// provider is asked with. Providers are asked concurrently, each at most
// once per ModelsTTL and credential.
func (b *Balancer) ProviderModels(ctx context.Context, client http.Header) [][]ListedModel {
	out := make([][]ListedModel, len(b.providers))
	var wg sync.WaitGroup
	for i, p := range b.providers {
		if p.Type != TypeAnthropic || !p.Enabled() {
			continue
		}
		fp := ""
		if p.auth == authPassthrough {
			if client.Get("X-Api-Key") == "" && client.Get("Authorization") == "" {
				continue
			}
			fp = credentialFingerprint(client)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			models, err := b.providerModels(ctx, p, fp, client)
			if err != nil {
				b.logger.Debug("model listing failed", zap.String("provider", p.Name), zap.Error(err))
				return
			}
			out[i] = models
		}()
	}
	wg.Wait()
	return out
}

// providerModels returns a provider's listing for a credential, from the
// cache or from one fetch shared by every concurrent caller.
func (b *Balancer) providerModels(ctx context.Context, p *Provider, fp string, client http.Header) ([]ListedModel, error) {
	c := &p.state.models
	t := now()
	c.mu.Lock()
	l := c.m[fp]
	if l != nil {
		select {
		case <-l.ready:
			if t.After(l.expires) {
				l = nil
			}
		default:
		}
	}
	if l == nil {
		if c.m == nil {
			c.m = map[string]*modelListing{}
		}
		c.evict(t)
		l = &modelListing{ready: make(chan struct{})}
		c.m[fp] = l
		go func() {
			// The fetch is not the request's: a client that leaves does
			// not cancel it for the others waiting on it.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), modelsTimeout)
			defer cancel()
			models, err := b.fetchModels(fctx, p, client)
			ttl := ModelsTTL
			if err != nil {
				ttl = modelsFailureTTL
			}
			c.mu.Lock()
			l.models, l.err, l.expires = models, err, now().Add(ttl)
			c.mu.Unlock()
			close(l.ready)
		}()
	}
	l.used = t
	c.mu.Unlock()
	select {
	case <-l.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return l.models, l.err
}

// evict drops expired listings and, past the bound, the least recently
// used. The caller holds c.mu.
func (c *modelCache) evict(t time.Time) {
	if len(c.m) < maxModelListings {
		return
	}
	var oldest string
	var oldestUsed time.Time
	for fp, l := range c.m {
		select {
		case <-l.ready:
			if t.After(l.expires) {
				delete(c.m, fp)
				continue
			}
		default:
			continue
		}
		if oldest == "" || l.used.Before(oldestUsed) {
			oldest, oldestUsed = fp, l.used
		}
	}
	if len(c.m) >= maxModelListings && oldest != "" {
		delete(c.m, oldest)
	}
}

// fetchModels reads a provider's /v1/models, following its pages.
func (b *Balancer) fetchModels(ctx context.Context, p *Provider, client http.Header) ([]ListedModel, error) {
	var all []ListedModel
	after := ""
	for range maxModelPages {
		q := url.Values{"limit": {"1000"}}
		if after != "" {
			q.Set("after_id", after)
		}
		hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, p.BaseURL+"/v1/models?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		version := client.Get("Anthropic-Version")
		if version == "" {
			version = "2023-06-01"
		}
		hreq.Header.Set("Anthropic-Version", version)
		hreq.Header.Set("Accept", "application/json")
		for k, vs := range p.headers {
			hreq.Header[k] = vs
		}
		if _, err := b.setAuth(ctx, p, hreq.Header, client); err != nil {
			return nil, err
		}
		resp, err := p.transport.RoundTrip(hreq)
		if err != nil {
			return nil, err
		}
		// The context bounds the time; the size is bounded here.
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxModelListBytes+1))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if len(data) > maxModelListBytes {
			return nil, fmt.Errorf("model list larger than %d bytes", maxModelListBytes)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		var page struct {
			Data []struct {
				Type        string `json:"type"`
				ID          string `json:"id"`
				DisplayName string `json:"display_name"`
				CreatedAt   string `json:"created_at"`
			} `json:"data"`
			HasMore bool   `json:"has_more"`
			LastID  string `json:"last_id"`
		}
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, fmt.Errorf("not a model list: %v", err)
		}
		for _, m := range page.Data {
			if m.ID == "" || (m.Type != "" && m.Type != "model") {
				continue
			}
			all = append(all, ListedModel{ID: m.ID, DisplayName: m.DisplayName, CreatedAt: m.CreatedAt})
		}
		if !page.HasMore || page.LastID == "" || page.LastID == after {
			break
		}
		after = page.LastID
	}
	return all, nil
}
