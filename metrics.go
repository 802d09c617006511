package claudebalancer

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
)

// metricSet holds the module's collectors. They are created once per
// process and registered into every config's registry, so their values
// survive reloads.
type metricSet struct {
	requests     *prometheus.CounterVec
	attempts     *prometheus.CounterVec
	failovers    *prometheus.CounterVec
	upstream     *prometheus.HistogramVec
	ttft         *prometheus.HistogramVec
	overhead     *prometheus.HistogramVec
	inFlight     *prometheus.GaugeVec
	tokens       *prometheus.CounterVec
	countSource  *prometheus.CounterVec
	oauthRefresh *prometheus.CounterVec
	// The clients': requests and tokens by client, model and provider, cost
	// where a price applies, and refusals by limit.
	clientRequests *prometheus.CounterVec
	clientTokens   *prometheus.CounterVec
	clientCost     *prometheus.CounterVec
	clientLimited  *prometheus.CounterVec
	state          stateCollector
}

var (
	metricsOnce sync.Once
	metrics     *metricSet
)

const ns = "claude_balancer"

func getMetrics() *metricSet {
	metricsOnce.Do(func() {
		latency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
		metrics = &metricSet{
			requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
				Help: "Client requests to /v1/messages by the provider that answered, route, model, status and mode."},
				[]string{"balancer", "provider", "route", "model", "status", "stream"}),
			attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "attempts_total",
				Help: "Upstream attempts by provider and outcome (success, request, credential, quota, provider, client; client_credential and client_quota for the credential a client passes through)."},
				[]string{"balancer", "provider", "outcome"}),
			failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "failovers_total",
				Help: "Moves of a request from one provider to the next, by the reason the first failed."},
				[]string{"balancer", "from", "to", "reason"}),
			upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "upstream_duration_seconds",
				Help: "Duration of upstream attempts, from sending the request to the end of the answer.", Buckets: latency},
				[]string{"balancer", "provider"}),
			ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "time_to_first_token_seconds",
				Help: "Time from sending a streamed request to its first content event.", Buckets: latency},
				[]string{"balancer", "provider"}),
			overhead: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "overhead_seconds",
				Help:    "Time the balancer itself spent before the first byte reached the client, not waiting on providers.",
				Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1}},
				[]string{"balancer"}),
			inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "requests_in_flight",
				Help: "Client requests being served."}, []string{"balancer"}),
			tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "tokens_total",
				Help: "Tokens providers reported, by type (input, output, cache_read, cache_write)."},
				[]string{"balancer", "provider", "model", "type"}),
			countSource: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "count_tokens_total",
				Help: "count_tokens answers by source (upstream, local)."}, []string{"balancer", "source"}),
			oauthRefresh: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "oauth_refreshes_total",
				Help: "OAuth token refreshes by result (success, failure)."}, []string{"balancer", "result"}),
			clientRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "client_requests_total",
				Help: "Answered requests by client (a named client, anonymous or local), model and provider."},
				[]string{"balancer", "client", "model", "provider"}),
			clientTokens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "client_tokens_total",
				Help: "Tokens of the clients' answers by kind (input, output, cache_read, cache_write), client, model and provider."},
				[]string{"balancer", "client", "model", "provider", "kind"}),
			clientCost: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "client_cost_usd_total",
				Help: "What the clients' answers cost in US dollars, where the client has a price for the model."},
				[]string{"balancer", "client", "model", "provider"}),
			clientLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "client_limited_total",
				Help: "Requests refused for being over a client's limit, by limit (rate, tokens)."},
				[]string{"balancer", "client", "limit"}),
		}
	})
	return metrics
}

// register adds the collectors to a config's registry.
func (m *metricSet) register(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.attempts, m.failovers, m.upstream, m.ttft, m.overhead,
		m.inFlight, m.tokens, m.countSource, m.oauthRefresh, m.clientRequests, m.clientTokens, m.clientCost, m.clientLimited, &m.state} {
		var already prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &already) {
			return err
		}
	}
	return nil
}

// metricModel bounds the model label to names the configuration knows: the
// route's target model, or the client's model when a route names it exactly;
// anything else is "other", so clients cannot create series at will.
func metricModel(b *balancer.Balancer, route, target, client string) string {
	if target != "" {
		return target
	}
	if r := b.MatchRoute(client); r != nil && r.ID == route {
		for _, p := range r.Patterns() {
			if p == lower(client) {
				return p
			}
		}
	}
	return "other"
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// tokenKinds are the token counts' "type" label values, in the order of
// tokenCounts.
var tokenKinds = [...]string{"input", "output", "cache_read", "cache_write"}

// tokenCounts lists a usage's counts in the order of tokenKinds.
func tokenCounts(input, output, cacheRead, cacheWrite int64) [4]int64 {
	return [4]int64{input, output, cacheRead, cacheWrite}
}

// seriesCache keeps the series a handler updates on every request, by their
// label values: finding one costs a map lookup instead of hashing and
// validating its labels again. The series are never deleted, and their
// labels come from the configuration and from fixed sets (a model outside
// the routes is counted as "other"), so the cache grows no larger than the
// metrics do.
type seriesCache struct {
	mu       sync.RWMutex
	requests map[requestSeries]prometheus.Counter
	attempts map[attemptSeries]prometheus.Counter
	provider map[string]*providerHandles
	usage    map[usageSeries]*[4]prometheus.Counter
	client   map[usageSeries]*clientHandles
	own      map[struct{}]*ownHandles
}

// ownHandles are the series of the balancer itself: requests in flight and
// its own time per request.
type ownHandles struct {
	inFlight prometheus.Gauge
	overhead prometheus.Observer
}

func (h *Handler) ownSeries() *ownHandles {
	m, name := getMetrics(), h.bal.Name
	return lookup(h.series, &h.series.own, struct{}{}, func() *ownHandles {
		return &ownHandles{inFlight: m.inFlight.WithLabelValues(name), overhead: m.overhead.WithLabelValues(name)}
	})
}

type requestSeries struct {
	provider, route, model string
	status                 int
	stream                 bool
}

type attemptSeries struct{ provider, outcome string }

type usageSeries struct{ client, provider, model string }

// providerHandles are one provider's histograms: upstream time and time to
// first token.
type providerHandles struct{ upstream, ttft prometheus.Observer }

func (h *Handler) providerSeries(provider string) *providerHandles {
	m, name := getMetrics(), h.bal.Name
	return lookup(h.series, &h.series.provider, provider, func() *providerHandles {
		return &providerHandles{upstream: m.upstream.WithLabelValues(name, provider), ttft: m.ttft.WithLabelValues(name, provider)}
	})
}

type clientHandles struct {
	requests prometheus.Counter
	tokens   [4]prometheus.Counter
}

// lookup finds k in *m, or adds what make returns.
func lookup[K comparable, V any](c *seriesCache, m *map[K]V, k K, make func() V) V {
	c.mu.RLock()
	v, ok := (*m)[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = make()
	c.mu.Lock()
	if *m == nil {
		*m = map[K]V{}
	}
	if old, ok := (*m)[k]; ok {
		v = old
	} else {
		(*m)[k] = v
	}
	c.mu.Unlock()
	return v
}

// observeResult records the metrics of one finished attempt loop.
func (h *Handler) observeResult(res *balancer.Result) {
	m := getMetrics()
	name := h.bal.Name
	c := h.series
	for i, at := range res.Attempts {
		lookup(c, &c.attempts, attemptSeries{at.Provider, at.Outcome}, func() prometheus.Counter {
			return m.attempts.WithLabelValues(name, at.Provider, at.Outcome)
		}).Inc()
		h.providerSeries(at.Provider).upstream.Observe(at.Duration.Seconds())
		if i > 0 {
			prev := res.Attempts[i-1]
			m.failovers.WithLabelValues(name, prev.Provider, at.Provider, prev.Outcome).Inc()
		}
	}
	if res.Provider != nil && res.Committed {
		provider := res.Provider.Name
		model := metricModel(h.bal, res.Route, res.Model, res.ClientModel)
		u := res.Usage
		tokens := lookup(c, &c.usage, usageSeries{provider: provider, model: model}, func() *[4]prometheus.Counter {
			var t [4]prometheus.Counter
			for i, kind := range tokenKinds {
				t[i] = m.tokens.WithLabelValues(name, provider, model, kind)
			}
			return &t
		})
		for i, n := range tokenCounts(u.InputTokens, u.OutputTokens, u.CacheReadTokens, u.CacheCreationTokens) {
			if n > 0 {
				tokens[i].Add(float64(n))
			}
		}
		if res.Stream {
			h.providerSeries(provider).ttft.Observe(res.TTFT.Seconds())
		}
		if own := res.FirstByte - res.UpstreamBeforeCommit; own >= 0 {
			h.ownSeries().overhead.Observe(own.Seconds())
		}
	}
}

// observeRequest counts one client request.
func (h *Handler) observeRequest(provider, route, model string, status int, stream bool) {
	c := h.series
	lookup(c, &c.requests, requestSeries{provider, route, model, status, stream}, func() prometheus.Counter {
		return getMetrics().requests.WithLabelValues(h.bal.Name, provider, route, model, strconv.Itoa(status), strconv.FormatBool(stream))
	}).Inc()
}

// stateCollector reports the state of every live balancer at scrape time,
// so removed providers leave no stale series behind.
type stateCollector struct{}

var (
	descHealthy = prometheus.NewDesc(ns+"_provider_healthy",
		"Whether the provider takes requests (1) or not (0), by endpoint class.", []string{"balancer", "provider", "endpoint"}, nil)
	descCooldown = prometheus.NewDesc(ns+"_provider_cooldown_seconds",
		"Seconds until the provider's cooldown ends.", []string{"balancer", "provider", "endpoint"}, nil)
	descErrors = prometheus.NewDesc(ns+"_provider_errors",
		"The provider's current count of errors against the threshold.", []string{"balancer", "provider", "endpoint"}, nil)
	descCredRejected = prometheus.NewDesc(ns+"_provider_credential_rejected",
		"Whether the provider refuses the credential configured for it (1) since its last accepted answer.", []string{"balancer", "provider"}, nil)
	descQuota = prometheus.NewDesc(ns+"_quota_utilization",
		"The latest utilization (a fraction, which may exceed 1) of a subscription account's quota window, as its answers report it; for a passthrough provider, of the credential heard from last.",
		[]string{"balancer", "provider", "window"}, nil)
	descDedupJoins = prometheus.NewDesc(ns+"_dedup_joins_total",
		"Requests that joined an identical one in flight instead of calling upstream.", []string{"balancer"}, nil)
	descDedupFanOut = prometheus.NewDesc(ns+"_dedup_fanout_total",
		"Chunks delivered to clients by shared answers.", []string{"balancer"}, nil)
	descDedupReplay = prometheus.NewDesc(ns+"_dedup_replay_hits_total",
		"Requests answered from a stored finished answer.", []string{"balancer"}, nil)
	descDedupSlow = prometheus.NewDesc(ns+"_dedup_slow_clients_total",
		"Clients ended for reading a shared answer too slowly.", []string{"balancer"}, nil)
	descDedupRuns = prometheus.NewDesc(ns+"_dedup_runs_in_flight",
		"Upstream calls in flight that clients may join.", []string{"balancer"}, nil)
)

func (*stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHealthy, descCooldown, descErrors, descCredRejected, descQuota, descDedupJoins, descDedupFanOut,
		descDedupReplay, descDedupSlow, descDedupRuns} {
		ch <- d
	}
}

func (*stateCollector) Collect(ch chan<- prometheus.Metric) {
	t := time.Now()
	for _, h := range liveHandlers() {
		b := h.bal
		for _, p := range b.Providers() {
			for _, class := range []string{balancer.ClassMessages, balancer.ClassCountTokens} {
				s := p.Health(class).Snapshot(b.PolicyFor(class))
				if until := p.QuotaCooldown(); class == balancer.ClassMessages && until.After(s.CooldownUntil) {
					s.Healthy, s.CooldownUntil = false, until
				}
				healthy := 0.0
				if s.Healthy && p.Enabled() {
					healthy = 1
				}
				cool := 0.0
				if d := s.CooldownUntil.Sub(t); d > 0 {
					cool = d.Seconds()
				}
				ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, healthy, b.Name, p.Name, class)
				ch <- prometheus.MustNewConstMetric(descCooldown, prometheus.GaugeValue, cool, b.Name, p.Name, class)
				ch <- prometheus.MustNewConstMetric(descErrors, prometheus.GaugeValue, float64(s.Errors), b.Name, p.Name, class)
			}
			rejected := 0.0
			if !p.CredentialRejected().IsZero() {
				rejected = 1
			}
			ch <- prometheus.MustNewConstMetric(descCredRejected, prometheus.GaugeValue, rejected, b.Name, p.Name)
			for _, w := range p.Quota().Windows {
				if w.HasUtilization {
					ch <- prometheus.MustNewConstMetric(descQuota, prometheus.GaugeValue, w.Utilization, b.Name, p.Name, w.Name)
				}
			}
		}
		ds := h.dedup.Stats()
		ch <- prometheus.MustNewConstMetric(descDedupJoins, prometheus.CounterValue, float64(ds.Joins), b.Name)
		ch <- prometheus.MustNewConstMetric(descDedupFanOut, prometheus.CounterValue, float64(ds.FanOut), b.Name)
		ch <- prometheus.MustNewConstMetric(descDedupReplay, prometheus.CounterValue, float64(ds.ReplayHits), b.Name)
		ch <- prometheus.MustNewConstMetric(descDedupSlow, prometheus.CounterValue, float64(ds.SlowEnded), b.Name)
		ch <- prometheus.MustNewConstMetric(descDedupRuns, prometheus.GaugeValue, float64(ds.Active), b.Name)
	}
}
