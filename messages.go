package claudebalancer

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/dedup"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/bufpool"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
	"github.com/claude-balancer/caddy-claude-balancer/team"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func (h *Handler) serveMessages(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sender, body, ok := h.admit(w, r)
	if !ok {
		return
	}
	// The body's buffer goes back to its pool when this handler ends, or
	// at the commit point when nothing holds it any more (a long stream
	// should not keep it). The attempt loop runs in this goroutine (dedup
	// runs a group's loop in its leader's) and lets go of the body at the
	// commit point and before it returns; dedup drops the request's Ticket
	// before Serve returns.
	buf := &pooledBody{b: body}
	defer buf.giveBack()
	peek, ticket, err := h.peek(body, r, sender)
	if err != nil {
		apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, err.Error())
		return
	}
	if !h.admitClient(w, sender, peek.Model, true) {
		return
	}
	inFlight := h.ownSeries().inFlight
	inFlight.Inc()
	defer inFlight.Dec()
	req := &balancer.Request{Body: body, Peek: peek, Header: upstreamHeader(r, sender.keyHeader), RawQuery: r.URL.RawQuery}
	req.EstimateTokens = h.estimateTokens
	req.Committed = func(bool) {
		// A signed Ticket (or none) keeps no reference to the body.
		if h.dedupOff || ticket.Signed() {
			buf.giveBack()
		}
	}
	// De-duplication decides who runs the attempt loop: this request, alone
	// (dedup off) or as the leader of a group, or an identical one in flight.
	runRole := dedup.Leader.String()
	if h.dedupOff {
		runRole = ""
	}
	var done atomic.Pointer[balancer.Result]
	dres := h.dedup.Serve(w, r, ticket, peek.Stream, func(ctx context.Context, out relay.Output) *relay.Failure {
		// A group's run may outlive the leading client: it logs and
		// measures the upstream side itself.
		res := h.bal.Serve(ctx, req, out)
		h.finishRun(req, res, runRole, time.Since(start))
		done.Store(res)
		if k, ok := out.(dedup.Keeper); ok {
			// Every client that shares the answer is accounted with it.
			k.Keep(res)
		}
		return res.Failure
	})
	h.finishMessages(r, req, sender, dres, done.Load(), start)
}

// finishMessages logs and accounts a request once its answer is sent. It is
// a function of its own so that its record is off the stack while the
// answer is relayed: an idle stream's goroutine keeps the deepest stack it
// reached, and serveMessages is on it.
//
//go:noinline
func (h *Handler) finishMessages(r *http.Request, req *balancer.Request, sender who, dres dedup.Result, res *balancer.Result, start time.Time) {
	rec := requestRecord{status: dres.Status, role: dres.Role.String(), client: sender.label}
	if res != nil {
		rec.route, rec.attempts = res.Route, len(res.Attempts)
	} else if kept, ok := dres.Kept.(*balancer.Result); ok {
		res = kept
	}
	if res != nil {
		rec.provider, rec.quotaWindow = providerOf(res), res.QuotaWindow
	} else if dres.Header != nil {
		rec.provider = dres.Header.Get("X-Claude-Balancer-Provider")
	}
	switch dres.Role {
	case dedup.Direct:
		rec.role = ""
	case dedup.Joined, dedup.Replayed:
		h.logShared(req, dres, rec.provider, time.Since(start))
	}
	h.finishClient(r, req, rec)
	h.chargeClient(sender, req, res)
}

// admitClient refuses a named client's request for a model outside its
// list (403) or over one of its limits (429, with when to come back), and
// counts it against its rate when messages is set. It answers the client
// itself when it returns false.
func (h *Handler) admitClient(w http.ResponseWriter, sender who, model string, messages bool) bool {
	c := sender.client
	if c == nil {
		return true
	}
	if !c.Allows(model) {
		apierr.Write(w, http.StatusForbidden, apierr.Permission, fmt.Sprintf("client %q may not use model %q", c.Name, model))
		return false
	}
	if !messages {
		return true
	}
	v := c.Admit(time.Now())
	if !v.OK {
		secs := max(1, int(math.Ceil(time.Until(v.RetryAt).Seconds())))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		apierr.Write(w, http.StatusTooManyRequests, apierr.RateLimit,
			fmt.Sprintf("client %q is over its %s limit; retry in %d seconds", c.Name, v.Limit, secs))
		getMetrics().clientLimited.WithLabelValues(h.bal.Name, c.Name, v.Limit).Inc()
		return false
	}
	h.teamBoard.Changed(false)
	return true
}

// chargeClient accounts a client's answer: its usage by model and provider
// on the metrics and, for a named client, in its usage and tokens window.
// An answer that never started costs nothing; a stream that failed after it
// started costs what its events reported.
func (h *Handler) chargeClient(sender who, req *balancer.Request, res *balancer.Result) {
	if res == nil || !res.Committed || res.Provider == nil {
		return
	}
	model := metricModel(h.bal, res.Route, res.Model, req.Peek.Model)
	u := team.Usage{Input: res.Usage.InputTokens, Output: res.Usage.OutputTokens,
		CacheRead: res.Usage.CacheReadTokens, CacheWrite: res.Usage.CacheCreationTokens}
	m := getMetrics()
	provider := res.Provider.Name
	c := h.series
	ch := lookup(c, &c.client, usageSeries{sender.label, provider, model}, func() *clientHandles {
		ch := &clientHandles{requests: m.clientRequests.WithLabelValues(h.bal.Name, sender.label, model, provider)}
		for i, kind := range tokenKinds {
			ch.tokens[i] = m.clientTokens.WithLabelValues(h.bal.Name, sender.label, model, provider, kind)
		}
		return ch
	})
	ch.requests.Inc()
	for i, n := range tokenCounts(u.Input, u.Output, u.CacheRead, u.CacheWrite) {
		if n > 0 {
			ch.tokens[i].Add(float64(n))
		}
	}
	if sender.client == nil {
		return
	}
	if cost, priced := sender.client.Charge(time.Now(), req.Peek.Model, model, provider, u); priced {
		m.clientCost.WithLabelValues(h.bal.Name, sender.label, model, provider).Add(cost)
	}
	h.teamBoard.Changed(false)
}

// requestRecord is what one client's request is recorded with.
type requestRecord struct {
	route, provider string
	status          int
	attempts        int
	// role is the request's part in de-duplication ("" when off).
	role string
	// quotaWindow is the subscription quota window that bound the answer.
	quotaWindow string
	// client labels who sent it: a client's name, "anonymous" or "local".
	client string
}

func providerOf(res *balancer.Result) string {
	if res.Provider != nil {
		return res.Provider.Name
	}
	return ""
}

// finishClient records one client's request: the request counter, the
// access log fields and the placeholders other directives may use.
func (h *Handler) finishClient(r *http.Request, req *balancer.Request, rec requestRecord) {
	if rec.route == "" {
		if rt := h.bal.MatchRoute(req.Peek.Model); rt != nil {
			rec.route = rt.ID
		}
	}
	model := metricModel(h.bal, rec.route, "", req.Peek.Model)
	h.observeRequest(rec.provider, rec.route, model, rec.status, req.Peek.Stream)
	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.String("claude_balancer_provider", rec.provider))
		extra.Add(zap.Int("claude_balancer_attempts", rec.attempts))
		if rec.role != "" {
			extra.Add(zap.String("claude_balancer_dedup", rec.role))
		}
		if rec.quotaWindow != "" {
			extra.Add(zap.String("quota_window", rec.quotaWindow))
		}
		extra.Add(zap.String("client", rec.client))
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.claude_balancer.provider", rec.provider)
		repl.Set("http.claude_balancer.route", rec.route)
		repl.Set("http.claude_balancer.model", req.Peek.Model)
		repl.Set("http.claude_balancer.attempts", rec.attempts)
		repl.Set("http.claude_balancer.dedup", rec.role)
		repl.Set("http.claude_balancer.quota_window", rec.quotaWindow)
		repl.Set("http.claude_balancer.client", rec.client)
	}
}

// estimateTokens counts a request locally: OpenAI streams report input
// tokens only at their end, and Claude Code reads the context size from
// message_start.
func (h *Handler) estimateTokens(body []byte) int64 {
	n, err := h.counter.Count(body)
	if err != nil {
		return 0
	}
	return int64(n)
}

// finishRun measures an attempt loop and writes its log line: one per
// upstream call, which is the request's line for a leader.
func (h *Handler) finishRun(req *balancer.Request, res *balancer.Result, role string, d time.Duration) {
	h.observeResult(res)
	provider := providerOf(res)
	level := zapcore.InfoLevel
	if res.Failure != nil || res.StreamError != "" {
		level = zapcore.WarnLevel
	}
	ce := h.logger.Check(level, "request")
	if ce == nil {
		return
	}
	model := res.Model
	if model == "" {
		model = req.Peek.Model
	}
	fields := []zap.Field{
		zap.String("model", req.Peek.Model),
		zap.String("upstream_model", model),
		zap.String("route", res.Route),
		zap.String("provider", provider),
		zap.Bool("stream", req.Peek.Stream),
		zap.Int("status", res.Status),
		zap.Int("attempts", len(res.Attempts)),
		zap.Array("tries", attemptsMarshaler(res.Attempts)),
		zap.Duration("first_byte", res.FirstByte),
		zap.Duration("duration", d),
		zap.Int64("input_tokens", res.Usage.InputTokens),
		zap.Int64("output_tokens", res.Usage.OutputTokens),
		zap.Int64("cache_read_tokens", res.Usage.CacheReadTokens),
		zap.Int64("cache_write_tokens", res.Usage.CacheCreationTokens),
	}
	if res.Failure != nil {
		fields = append(fields, zap.String("error", res.Failure.Message()))
	}
	if res.StreamError != "" {
		fields = append(fields, zap.String("stream_error", res.StreamError))
	}
	if res.ClientGone {
		fields = append(fields, zap.Bool("client_gone", true))
	}
	if res.QuotaWindow != "" {
		fields = append(fields, zap.String("quota_window", res.QuotaWindow))
	}
	if role != "" {
		fields = append(fields, zap.String("dedup", role))
	}
	ce.Write(fields...)
}

// logShared logs a request that got the answer of an identical one.
func (h *Handler) logShared(req *balancer.Request, res dedup.Result, provider string, d time.Duration) {
	level := zapcore.InfoLevel
	if res.Failure != nil || res.Err != nil {
		level = zapcore.WarnLevel
	}
	ce := h.logger.Check(level, "request")
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("model", req.Peek.Model),
		zap.String("provider", provider),
		zap.Bool("stream", req.Peek.Stream),
		zap.Int("status", res.Status),
		zap.String("dedup", res.Role.String()),
		zap.Int64("bytes", res.Bytes),
		zap.Duration("duration", d),
	}
	if res.Failure != nil {
		fields = append(fields, zap.String("error", res.Failure.Message()))
	}
	if res.Err != nil {
		fields = append(fields, zap.String("client_error", res.Err.Error()))
	}
	ce.Write(fields...)
}

type attemptsMarshaler []balancer.Attempt

func (a attemptsMarshaler) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, at := range a {
		_ = enc.AppendObject(zapcore.ObjectMarshalerFunc(func(o zapcore.ObjectEncoder) error {
			o.AddString("provider", at.Provider)
			if at.Model != "" {
				o.AddString("model", at.Model)
			}
			o.AddString("outcome", at.Outcome)
			if at.Status != 0 {
				o.AddInt("status", at.Status)
			}
			if at.Error != "" {
				o.AddString("error", at.Error)
			}
			o.AddDuration("duration", at.Duration)
			return nil
		}))
	}
	return nil
}

// pooledBody is a request body in a pooled buffer, given back once.
type pooledBody struct {
	b    []byte
	gone bool
}

func (p *pooledBody) giveBack() {
	if !p.gone {
		p.gone = true
		bufpool.Put(p.b)
		p.b = nil
	}
}
