package claudebalancer

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/dedup"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func (h *Handler) serveMessages(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	keyHeader, body, ok := h.admit(w, r)
	if !ok {
		return
	}
	peek, key, err := h.peek(body, r)
	if err != nil {
		apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, err.Error())
		return
	}
	inFlight := getMetrics().inFlight.WithLabelValues(h.bal.Name)
	inFlight.Inc()
	defer inFlight.Dec()
	// The attempt loop may outlive this handler when other clients share
	// its answer, so it gets its own copy of the headers.
	req := &balancer.Request{Body: body, Peek: peek, Header: upstreamHeader(r, keyHeader, !h.dedupOff), RawQuery: r.URL.RawQuery}
	req.EstimateTokens = h.estimateTokens
	// De-duplication decides who runs the attempt loop: this request, alone
	// (dedup off) or as the leader of a group, or an identical one in flight.
	runRole := dedup.Leader.String()
	if h.dedupOff {
		runRole = ""
	}
	var done atomic.Pointer[balancer.Result]
	dres := h.dedup.Serve(w, r, key, peek.Stream, func(ctx context.Context, out relay.Output) *relay.Failure {
		// A group's run may outlive the leading client: it logs and
		// measures the upstream side itself.
		res := h.bal.Serve(ctx, req, out)
		h.finishRun(req, res, runRole, time.Since(start))
		done.Store(res)
		return res.Failure
	})
	provider, route, attempts := "", "", 0
	if res := done.Load(); res != nil {
		provider, route, attempts = providerOf(res), res.Route, len(res.Attempts)
	} else if dres.Header != nil {
		provider = dres.Header.Get("X-Claude-Balancer-Provider")
	}
	role := dres.Role.String()
	switch dres.Role {
	case dedup.Direct:
		role = ""
	case dedup.Joined, dedup.Replayed:
		h.logShared(req, dres, provider, time.Since(start))
	}
	h.finishClient(r, req, route, provider, dres.Status, attempts, role)
}

func providerOf(res *balancer.Result) string {
	if res.Provider != nil {
		return res.Provider.Name
	}
	return ""
}

// finishClient records one client's request: the request counter, the
// access log fields and the placeholders other directives may use.
func (h *Handler) finishClient(r *http.Request, req *balancer.Request, route, provider string, status, attempts int, role string) {
	if route == "" {
		if rt := h.bal.MatchRoute(req.Peek.Model); rt != nil {
			route = rt.ID
		}
	}
	model := metricModel(h.bal, route, "", req.Peek.Model)
	h.observeRequest(provider, route, model, status, req.Peek.Stream)
	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.String("claude_balancer_provider", provider))
		extra.Add(zap.Int("claude_balancer_attempts", attempts))
		if role != "" {
			extra.Add(zap.String("claude_balancer_dedup", role))
		}
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.claude_balancer.provider", provider)
		repl.Set("http.claude_balancer.route", route)
		repl.Set("http.claude_balancer.model", req.Peek.Model)
		repl.Set("http.claude_balancer.attempts", attempts)
		repl.Set("http.claude_balancer.dedup", role)
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

// clientIdentity names who is asking, so that two clients never share an
// answer: the client key that let them in and the credential they would
// pass through.
func clientIdentity(r *http.Request) string {
	var id strings.Builder
	for _, k := range []string{"X-Claude-Balancer-Key", "X-Api-Key", "Authorization"} {
		id.WriteString(r.Header.Get(k))
		id.WriteByte(0)
	}
	sum := sha256.Sum256([]byte(id.String()))
	return string(sum[:])
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
