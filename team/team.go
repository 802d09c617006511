// Package team knows the named clients of a balancer (README, "Teams"): who each
// key belongs to, the limits each client has (requests and tokens per sliding
// window), the models each may ask for, and what each used, by model and
// provider. Its state lives across config reloads, and windows are shared
// approximately with the instances on the same Caddy storage.
package team

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/claude-balancer/caddy-claude-balancer/internal/glob"
)

// ClientConfig names one client of the balancer: a person or a service.
type ClientConfig struct {
	// Name names the client in logs, metrics labels, placeholders and the
	// status endpoints (never its keys). Names are unique; "anonymous" and
	// "local" are taken by the clients without a name.
	Name string `json:"name"`

	// Keys identify the client: any of them does, presented like a
	// client_keys key. Write them as placeholders such as "{env.ALICE_KEY}".
	Keys []string `json:"keys"`

	// Rate bounds the client's POST /v1/messages requests per sliding
	// window; joined and replayed requests count, count_tokens and model
	// listings do not. Default: no bound.
	Rate *Limit `json:"rate,omitempty"`

	// Tokens bounds the input, cache-write and output tokens of the client's
	// answers per sliding window (cache reads are reported, not counted).
	// Default: no bound.
	Tokens *Limit `json:"tokens,omitempty"`

	// Models are the model patterns (with "*") the client may ask for.
	// Default: every model.
	Models []string `json:"models,omitempty"`

	// Pricing prices the client's usage, by the model it asked for: the
	// first price whose pattern matches applies.
	Pricing []Price `json:"pricing,omitempty"`
}

// Limit is a count per sliding window.
type Limit struct {
	// Count is the most the window may hold.
	Count int64 `json:"count"`
	// Window is the span of the sliding window.
	Window caddy.Duration `json:"window"`
}

func (l *Limit) String() string {
	if l == nil {
		return ""
	}
	return fmt.Sprintf("%d/%s", l.Count, shortDuration(time.Duration(l.Window)))
}

func shortDuration(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	s = strings.TrimSuffix(s, "0m")
	if s == "" {
		return "0s"
	}
	return s
}

// Price is what a million tokens of each kind cost, in US dollars, for the
// models that match Model.
type Price struct {
	Model      string  `json:"model"`
	Input      float64 `json:"input"`
	Output     float64 `json:"output"`
	CacheRead  float64 `json:"cache_read"`
	CacheWrite float64 `json:"cache_write"`
}

// Labels of the requests of no named client.
const (
	Anonymous = "anonymous"
	Local     = "local"
)

// Team is the compiled set of a balancer's clients.
type Team struct {
	// balancer names the balancer the clients belong to: what instances
	// share is about one balancer's clients.
	balancer string
	clients  []*Client
	byName   map[string]*Client
	keys     []keyEntry
}

type keyEntry struct {
	digest [32]byte
	client *Client
}

// Client is one named client.
type Client struct {
	Name    string
	rate    *Limit
	tokens  *Limit
	models  []glob.Pattern
	pricing []price
	state   *state
	// rateW and tokensW are the windows of the state the limits count in,
	// nil without the limit.
	rateW, tokensW *window
}

type price struct {
	pattern glob.Pattern
	Price
}

// Compile checks the clients' configuration, expands the placeholders in
// their keys with repl and takes their state, kept across reloads under the
// balancer's name in pool. release gives the state back (Cleanup).
func Compile(cfg []ClientConfig, balancer string, expand func(string) string) (*Team, func(), error) {
	t := &Team{balancer: balancer, byName: map[string]*Client{}}
	var keys []string
	release := func() {
		for _, k := range keys {
			_, _ = pool.Delete(k)
		}
	}
	for _, cc := range cfg {
		if cc.Name == "" || strings.ContainsAny(cc.Name, " \t{}\"") || len(cc.Name) > 64 {
			release()
			return nil, nil, fmt.Errorf("client %q: a name is one word of at most 64 characters", cc.Name)
		}
		if cc.Name == Anonymous || cc.Name == Local {
			release()
			return nil, nil, fmt.Errorf("client %q: the name is reserved for requests of no named client", cc.Name)
		}
		if t.byName[cc.Name] != nil {
			release()
			return nil, nil, fmt.Errorf("client %q is declared twice", cc.Name)
		}
		if len(cc.Keys) == 0 {
			release()
			return nil, nil, fmt.Errorf("client %q: no key", cc.Name)
		}
		for _, l := range []*Limit{cc.Rate, cc.Tokens} {
			if l != nil && (l.Count <= 0 || l.Window <= 0 || time.Duration(l.Window) < time.Second) {
				release()
				return nil, nil, fmt.Errorf("client %q: a limit is a positive count per window of at least a second", cc.Name)
			}
		}
		c := &Client{Name: cc.Name, rate: cc.Rate, tokens: cc.Tokens}
		for _, m := range cc.Models {
			if strings.TrimSpace(m) == "" {
				release()
				return nil, nil, fmt.Errorf("client %q: empty model pattern", cc.Name)
			}
			c.models = append(c.models, glob.Compile(m))
		}
		for _, p := range cc.Pricing {
			if p.Model == "" || p.Input < 0 || p.Output < 0 || p.CacheRead < 0 || p.CacheWrite < 0 {
				release()
				return nil, nil, fmt.Errorf("client %q: a price needs a model pattern and four prices that are not negative", cc.Name)
			}
			c.pricing = append(c.pricing, price{pattern: glob.Compile(p.Model), Price: p})
		}
		for _, k := range cc.Keys {
			k = expand(k)
			if k == "" {
				release()
				return nil, nil, fmt.Errorf("client %q: a key is empty (is the environment variable set?)", cc.Name)
			}
			d := sha256.Sum256([]byte(k))
			if other := t.Owner(d); other != nil && other != c {
				release()
				return nil, nil, fmt.Errorf("client %q: a key is also client %q's: a key identifies one client", cc.Name, other.Name)
			}
			t.keys = append(t.keys, keyEntry{digest: d, client: c})
		}
		key := "team/" + balancer + "/" + cc.Name
		v, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) { return newState(), nil })
		if err != nil {
			release()
			return nil, nil, err
		}
		keys = append(keys, key)
		c.state = v.(*state)
		c.rateW, c.tokensW = c.state.windowFor("rate", c.rate), c.state.windowFor("tokens", c.tokens)
		t.clients = append(t.clients, c)
		t.byName[c.Name] = c
	}
	return t, release, nil
}

// pool keeps the clients' windows and usage across config reloads.
var pool = caddy.NewUsagePool()

// Len returns the number of named clients.
func (t *Team) Len() int { return len(t.clients) }

// Clients returns the clients in declaration order.
func (t *Team) Clients() []*Client { return t.clients }

// Match returns the client a presented key belongs to, or nil. Every key is
// compared, as SHA-256 digests and in constant time, so that timing tells
// neither which key matched nor how long it is.
func (t *Team) Match(presented string) *Client {
	sum := sha256.Sum256([]byte(presented))
	var found *Client
	for _, k := range t.keys {
		if subtle.ConstantTimeCompare(sum[:], k.digest[:]) == 1 {
			found = k.client
		}
	}
	return found
}

// Owner returns the client whose key has the SHA-256 digest d, or nil: for
// configuration checks (Match compares presented keys).
func (t *Team) Owner(d [32]byte) *Client {
	for _, k := range t.keys {
		if k.digest == d {
			return k.client
		}
	}
	return nil
}

// Allows reports whether the client may ask for model.
func (c *Client) Allows(model string) bool {
	return len(c.models) == 0 || glob.Any(c.models, model)
}

// Models returns the client's model patterns; nil means every model.
func (c *Client) Models() []glob.Pattern { return c.models }

// Verdict is the answer of Admit.
type Verdict struct {
	// OK is set when the request may go on.
	OK bool
	// Limit names the limit that refused it ("rate" or "tokens"), RetryAt is
	// when enough of its window frees up.
	Limit   string
	RetryAt time.Time
}

// Admit counts a messages request against the client's limits, or refuses
// it: nothing is counted then. A request admitted under the limits finishes,
// whatever it costs: tokens are charged when the answer ends (Charge).
func (c *Client) Admit(t time.Time) Verdict {
	if c.tokens != nil {
		if ok, at := c.tokensW.take(t, c.tokens.Count, 0); !ok {
			return Verdict{Limit: "tokens", RetryAt: at}
		}
	}
	if c.rate != nil {
		if ok, at := c.rateW.take(t, c.rate.Count, 1); !ok {
			return Verdict{Limit: "rate", RetryAt: at}
		}
	}
	return Verdict{OK: true}
}

// Usage is what one answer used.
type Usage struct {
	Input, Output, CacheRead, CacheWrite int64
}

// Counted is what the tokens limit counts: input, cache writes and output.
func (u Usage) Counted() int64 { return u.Input + u.CacheWrite + u.Output }

// Charge records an answer the client got: for the model it asked for
// (label is the model's metrics label) and the provider that answered. It
// returns what the answer cost, when a price applies.
func (c *Client) Charge(t time.Time, model, label, provider string, u Usage) (cost float64, priced bool) {
	for _, p := range c.pricing {
		if glob.Any([]glob.Pattern{p.pattern}, model) {
			cost = (float64(u.Input)*p.Input + float64(u.Output)*p.Output +
				float64(u.CacheRead)*p.CacheRead + float64(u.CacheWrite)*p.CacheWrite) / 1e6
			priced = true
			break
		}
	}
	c.state.record(t, label, provider, u, cost)
	if c.tokensW != nil && u.Counted() > 0 {
		c.tokensW.add(t, u.Counted())
	}
	return cost, priced
}

// Status is a client's usage and windows, for the status endpoints.
type Status struct {
	Name          string  `json:"name"`
	Requests      int64   `json:"requests"`
	InputTokens   int64   `json:"input_tokens"`
	OutputTokens  int64   `json:"output_tokens"`
	CacheRead     int64   `json:"cache_read_input_tokens"`
	CacheCreation int64   `json:"cache_creation_input_tokens"`
	CostUSD       float64 `json:"cost_usd,omitempty"`
	// Limits are the client's limits, as configured ("60/1m").
	Limits map[string]string `json:"limits"`
	// WindowUsed is what each limited window holds now.
	WindowUsed map[string]int64 `json:"window_used"`
	// Reset is when each limited window next has more room.
	Reset map[string]*time.Time `json:"reset"`
	// Models lists the model patterns the client may use (empty: all).
	Models []string `json:"models,omitempty"`
	// ByModel is the usage by model and provider.
	ByModel []ModelUsage `json:"by_model,omitempty"`
}

// ModelUsage is a client's usage of one model at one provider.
type ModelUsage struct {
	Model         string  `json:"model"`
	Provider      string  `json:"provider"`
	Requests      int64   `json:"requests"`
	InputTokens   int64   `json:"input_tokens"`
	OutputTokens  int64   `json:"output_tokens"`
	CacheRead     int64   `json:"cache_read_input_tokens"`
	CacheCreation int64   `json:"cache_creation_input_tokens"`
	CostUSD       float64 `json:"cost_usd,omitempty"`
}

// Status returns the client's usage and windows at t.
func (c *Client) Status(t time.Time) Status {
	st := Status{Name: c.Name, Limits: map[string]string{}, WindowUsed: map[string]int64{}, Reset: map[string]*time.Time{}}
	for _, p := range c.models {
		st.Models = append(st.Models, p.String())
	}
	for _, lw := range [...]struct {
		name string
		l    *Limit
		w    *window
	}{{"rate", c.rate, c.rateW}, {"tokens", c.tokens, c.tokensW}} {
		name, l, w := lw.name, lw.l, lw.w
		if l == nil {
			continue
		}
		st.Limits[name] = l.String()
		st.WindowUsed[name] = w.used(t)
		if r := w.resetAt(t); !r.IsZero() {
			r = r.UTC()
			st.Reset[name] = &r
		} else {
			st.Reset[name] = nil
		}
	}
	c.state.mu.Lock()
	defer c.state.mu.Unlock()
	for k, u := range c.state.usage {
		mu := ModelUsage{Model: k.model, Provider: k.provider, Requests: u.requests, InputTokens: u.Input,
			OutputTokens: u.Output, CacheRead: u.CacheRead, CacheCreation: u.CacheWrite, CostUSD: u.cost}
		st.ByModel = append(st.ByModel, mu)
		st.Requests += u.requests
		st.InputTokens += u.Input
		st.OutputTokens += u.Output
		st.CacheRead += u.CacheRead
		st.CacheCreation += u.CacheWrite
		st.CostUSD += u.cost
	}
	sort.Slice(st.ByModel, func(i, j int) bool {
		a, b := st.ByModel[i], st.ByModel[j]
		return a.Model < b.Model || a.Model == b.Model && a.Provider < b.Provider
	})
	return st
}

// state is what a client keeps across reloads: its windows and usage.
type state struct {
	mu sync.Mutex
	// windows are the client's sliding windows by limit and span. A config
	// counts in the ones its limits name, taken when it is compiled: a
	// config that changes a window's span starts a window of its own, and
	// loading one (even one refused later) never touches the windows the
	// running config counts in.
	windows map[windowKey]*window
	usage   map[usageKey]*usage
}

type windowKey struct {
	limit string
	span  time.Duration
}

type usageKey struct{ model, provider string }

type usage struct {
	Usage
	requests int64
	cost     float64
}

func newState() *state {
	return &state{windows: map[windowKey]*window{}, usage: map[usageKey]*usage{}}
}

// Destruct implements caddy.Destructor.
func (*state) Destruct() error { return nil }

// windowFor returns the window the limit l (named limit) counts in: the
// one of its span, made empty the first time; nil without a limit.
func (s *state) windowFor(limit string, l *Limit) *window {
	if l == nil {
		return nil
	}
	k := windowKey{limit, time.Duration(l.Window)}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.windows[k]
	if w == nil {
		if len(s.windows) >= maxWindows {
			// Spans tried and left long ago: start over.
			clear(s.windows)
		}
		w = newWindow(k.span)
		s.windows[k] = w
	}
	return w
}

// maxWindows bounds the windows a client keeps across reloads: a window
// per limit and span configured so far.
const maxWindows = 16

func (s *state) record(t time.Time, model, provider string, u Usage, cost float64) {
	s.mu.Lock()
	k := usageKey{model, provider}
	e := s.usage[k]
	if e == nil {
		e = &usage{}
		s.usage[k] = e
	}
	e.requests++
	e.Input += u.Input
	e.Output += u.Output
	e.CacheRead += u.CacheRead
	e.CacheWrite += u.CacheWrite
	e.cost += cost
	s.mu.Unlock()
}

// shareDoc is what an instance shares of its clients' windows.
type shareDoc struct {
	// Balancer names whose clients these are: a storage may hold several
	// balancers' documents, and a client name means something in one only.
	Balancer string                   `json:"balancer"`
	Clients  map[string]sharedWindows `json:"clients"`
}

type sharedWindows struct {
	Rate   []bucket `json:"rate,omitempty"`
	Tokens []bucket `json:"tokens,omitempty"`
}

// Export returns this instance's clients' windows, to share.
func (t *Team) Export(at time.Time) []byte {
	doc := shareDoc{Balancer: t.balancer, Clients: map[string]sharedWindows{}}
	for _, c := range t.clients {
		sw := sharedWindows{}
		if c.rateW != nil {
			sw.Rate = c.rateW.export(at)
		}
		if c.tokensW != nil {
			sw.Tokens = c.tokensW.export(at)
		}
		if len(sw.Rate) > 0 || len(sw.Tokens) > 0 {
			doc.Clients[c.Name] = sw
		}
	}
	out, _ := json.Marshal(doc)
	return out
}

// Import takes in the other instances' windows of the same balancer: each
// client's windows then count what the others counted too.
func (t *Team) Import(docs [][]byte) {
	rates, tokens := map[string][][]bucket{}, map[string][][]bucket{}
	for _, raw := range docs {
		var doc shareDoc
		if json.Unmarshal(raw, &doc) != nil || doc.Balancer != t.balancer {
			continue
		}
		for name, sw := range doc.Clients {
			rates[name] = append(rates[name], sw.Rate)
			tokens[name] = append(tokens[name], sw.Tokens)
		}
	}
	for _, c := range t.clients {
		if c.rateW != nil {
			c.rateW.setRemote(rates[c.Name])
		}
		if c.tokensW != nil {
			c.tokensW.setRemote(tokens[c.Name])
		}
	}
}
