// Package claudebalancer is a Caddy HTTP handler that puts one endpoint in
// front of many Claude-capable providers for Claude Code and other clients of
// the Anthropic Messages API: routing by model, failover before the first
// byte, passive health, session stickiness and the status endpoints.
package claudebalancer

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/dedup"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
	"github.com/claude-balancer/caddy-claude-balancer/oauth"
	"github.com/claude-balancer/caddy-claude-balancer/tokens"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// DefaultMaxRequestBody is the largest request body accepted by default.
const DefaultMaxRequestBody = 32 << 20

// Handler balances Anthropic Messages API requests across providers. It
// serves POST /v1/messages and /v1/messages/count_tokens, GET /health and
// GET / (liveness and readiness), GET /providers (state, for operators) and
// answers other paths with an Anthropic-format 404.
type Handler struct {
	// Name identifies this balancer's state (health, cooldowns, session
	// bindings) across config reloads when a config holds several balancers.
	// Default: "default".
	Name string `json:"name,omitempty"`

	// Providers are the upstreams requests can go to.
	Providers []balancer.ProviderConfig `json:"providers,omitempty"`

	// Routes map model names to candidate providers. Without routes, every
	// enabled provider serves every model, in declaration order.
	Routes []balancer.RouteConfig `json:"routes,omitempty"`

	// Strategy orders the healthy candidates of a route: "priority" (the
	// default: as listed), "round_robin", "random", "weighted" (by provider
	// weight) or "least_latency" (lowest smoothed time to first token).
	// The first is tried first; the rest are the failover order.
	Strategy string `json:"strategy,omitempty"`

	// Sticky is how long a Claude Code session keeps going back to the
	// provider that last answered it (sliding), so its prompt cache stays
	// warm. 0 turns stickiness off. Default: 5m.
	Sticky *caddy.Duration `json:"sticky,omitempty"`

	// Health tunes passive health checking.
	Health *balancer.HealthConfig `json:"health,omitempty"`

	// ClientKeys are the keys clients must present, in "x-api-key",
	// "Authorization: Bearer" or "x-claude-balancer-key". With none, only
	// clients on the loopback interface are served. Use placeholders such as
	// "{env.BALANCER_KEY}".
	ClientKeys []string `json:"client_keys,omitempty"`

	// AdminKey protects the management endpoints served on the site
	// (/providers and its reload, /oauth/). With none, only loopback clients
	// may use them. Present it as "Authorization: Bearer", "x-admin-key" or
	// the password of HTTP basic auth.
	AdminKey string `json:"admin_key,omitempty"`

	// MaxRequestBody is the largest request body accepted, in bytes; larger
	// bodies get 413. Default: 32 MiB.
	MaxRequestBody int64 `json:"max_request_body,omitempty"`

	// OAuth tunes the login and token refresh of Claude subscription
	// accounts (providers with "oauth").
	OAuth *OAuthConfig `json:"oauth,omitempty"`

	// Dedup tunes the sharing of one upstream call among identical
	// in-flight requests. It is on by default.
	Dedup *DedupConfig `json:"dedup,omitempty"`

	// CountTokens tunes POST /v1/messages/count_tokens: exact counts from
	// the model's Anthropic provider when it can, local counts otherwise.
	CountTokens *CountTokensConfig `json:"count_tokens,omitempty"`

	bal         *balancer.Balancer
	oauth       *oauth.Manager
	oauthPage   http.Handler
	oauthKey    string
	dedup       *dedup.Registry
	dedupKey    string
	dedupOff    bool
	dedupIgnore []string
	counter     *tokens.Counter
	counterKey  string
	logger      *zap.Logger
	clientKeys  [][32]byte
	adminKey    [32]byte
	hasAdmin    bool
	maxBody     int64
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.claude_balancer",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision builds the balancer. It expands placeholders in secrets, takes
// references on the state shared with earlier configs, and touches no
// network.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	cfg := balancer.Config{
		Name:      h.Name,
		Providers: h.Providers,
		Routes:    h.Routes,
		Strategy:  h.Strategy,
		Sticky:    balancer.DefaultSticky,
	}
	if h.Sticky != nil {
		cfg.Sticky = time.Duration(*h.Sticky)
	}
	if h.Health != nil {
		cfg.Health = *h.Health
	}
	for _, k := range h.ClientKeys {
		k = repl.ReplaceKnown(k, "")
		if k == "" {
			return fmt.Errorf("client_keys: a key is empty (is the environment variable set?)")
		}
		h.clientKeys = append(h.clientKeys, sha256.Sum256([]byte(k)))
	}
	if h.AdminKey != "" {
		k := repl.ReplaceKnown(h.AdminKey, "")
		if k == "" {
			return fmt.Errorf("admin_key is empty (is the environment variable set?)")
		}
		h.adminKey, h.hasAdmin = sha256.Sum256([]byte(k)), true
	}
	h.maxBody = h.MaxRequestBody
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxRequestBody
	}
	if h.maxBody < 0 {
		return fmt.Errorf("max_request_body must not be negative")
	}
	name := h.Name
	if name == "" {
		name = "default"
	}
	m, key, err := h.provisionOAuth(ctx, name)
	if err != nil {
		return err
	}
	h.oauth, h.oauthKey, h.oauthPage = m, key, m.Handler("/oauth")
	if err := h.provisionDedup(name); err != nil {
		return err
	}
	if cfg.Count, err = h.provisionCount(name); err != nil {
		return err
	}
	evApp, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("getting events app: %w", err)
	}
	obs := &observer{ctx: ctx, events: evApp.(*caddyevents.App), name: name}
	m.SetObserver(obs.oauthRefreshed(h.logger))
	b, err := balancer.New(cfg, balancer.Options{
		Logger:   h.logger,
		Replacer: repl,
		Tokens:   m,
		Observer: obs,
	})
	if err != nil {
		return err
	}
	h.bal = b
	if err := getMetrics().register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	register(h)
	return nil
}

// Cleanup releases the shared state this config held. Requests still being
// served by it finish normally.
func (h *Handler) Cleanup() error {
	if h.bal != nil {
		unregister(h)
		h.bal.Close()
	}
	if h.oauthKey != "" {
		_, _ = oauthManagers.Delete(h.oauthKey)
	}
	if h.dedupKey != "" {
		_, _ = registries.Delete(h.dedupKey)
	}
	if h.counterKey != "" {
		_, _ = counters.Delete(h.counterKey)
	}
	return nil
}

// ServeHTTP dispatches by path.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	switch path := r.URL.Path; path {
	case "/v1/messages":
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, http.MethodPost)
		}
		h.serveMessages(w, r)
	case "/v1/messages/count_tokens":
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, http.MethodPost)
		}
		h.serveCount(w, r)
	case "/health", "/":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed(w, http.MethodGet)
		}
		h.serveHealth(w, r)
	case "/providers/reload":
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, http.MethodPost)
		}
		if h.management(w, r) {
			h.serveReload(w, r)
		}
	case "/providers", "/providers/":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed(w, http.MethodGet)
		}
		if h.management(w, r) {
			h.serveProviders(w, r)
		}
	default:
		if path == "/oauth" || strings.HasPrefix(path, "/oauth/") {
			if h.management(w, r) {
				h.oauthPage.ServeHTTP(w, r)
			}
			return nil
		}
		apierr.Write(w, http.StatusNotFound, apierr.NotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, path))
	}
	return nil
}

func methodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	apierr.Write(w, http.StatusMethodNotAllowed, apierr.InvalidRequest, "method not allowed; use "+allow)
	return nil
}

// clientIP returns the client's address as Caddy sees it (honouring the
// server's trusted_proxies).
func clientIP(r *http.Request) netip.Addr {
	if s, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		if a, err := netip.ParseAddr(s); err == nil {
			return a
		}
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

func isLoopback(r *http.Request) bool {
	a := clientIP(r)
	return a.IsValid() && a.Unmap().IsLoopback()
}

// keyMatches compares a presented key with a stored digest in constant time.
func keyMatches(presented string, digest [32]byte) bool {
	sum := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(sum[:], digest[:]) == 1
}

// authorizeClient checks the client's key. It returns the name of the header
// that carried the key (so it is not forwarded upstream), and false after
// answering the client itself.
func (h *Handler) authorizeClient(w http.ResponseWriter, r *http.Request) (string, bool) {
	if len(h.clientKeys) == 0 {
		if isLoopback(r) {
			return "", true
		}
		apierr.Write(w, http.StatusForbidden, apierr.Permission,
			"this balancer serves only local clients; set client_keys in its configuration to serve others")
		return "", false
	}
	candidates := [][2]string{
		{"X-Claude-Balancer-Key", r.Header.Get("X-Claude-Balancer-Key")},
		{"X-Api-Key", r.Header.Get("X-Api-Key")},
		{"Authorization", bearer(r.Header.Get("Authorization"))},
	}
	for _, c := range candidates {
		if c[1] == "" {
			continue
		}
		ok := false
		for _, d := range h.clientKeys {
			// Compare against every key so timing does not tell which matched.
			if keyMatches(c[1], d) {
				ok = true
			}
		}
		if ok {
			return c[0], true
		}
	}
	apierr.Write(w, http.StatusUnauthorized, apierr.Authentication, "missing or invalid client key")
	return "", false
}

func bearer(v string) string {
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

// management authorizes a management request: admin_key, or loopback when
// none is set. It answers the client itself when it returns false.
func (h *Handler) management(w http.ResponseWriter, r *http.Request) bool {
	if !h.hasAdmin {
		if isLoopback(r) {
			return true
		}
		apierr.Write(w, http.StatusForbidden, apierr.Permission,
			"management endpoints are served only to local clients; set admin_key to reach them remotely")
		return false
	}
	for _, v := range []string{bearer(r.Header.Get("Authorization")), r.Header.Get("X-Admin-Key")} {
		if v != "" && keyMatches(v, h.adminKey) {
			return true
		}
	}
	if _, pass, ok := r.BasicAuth(); ok && keyMatches(pass, h.adminKey) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="claude_balancer", charset="UTF-8"`)
	apierr.Write(w, http.StatusUnauthorized, apierr.Authentication, "missing or invalid admin key")
	return false
}

// readBody reads the request body once, under the size limit. It answers
// the client itself when it returns false.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength > h.maxBody {
		apierr.Write(w, http.StatusRequestEntityTooLarge, apierr.RequestTooLarge,
			fmt.Sprintf("request body is larger than %d bytes", h.maxBody))
		return nil, false
	}
	var buf []byte
	if r.ContentLength > 0 {
		buf = make([]byte, 0, r.ContentLength+1)
	} else {
		buf = make([]byte, 0, 32<<10)
	}
	lr := http.MaxBytesReader(w, r.Body, h.maxBody)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				apierr.Write(w, http.StatusRequestEntityTooLarge, apierr.RequestTooLarge,
					fmt.Sprintf("request body is larger than %d bytes", h.maxBody))
				return nil, false
			}
			apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, "reading the request body failed: "+err.Error())
			return nil, false
		}
	}
}

// admit checks the client's key and reads the body. It answers the client
// itself when it returns false.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) (keyHeader string, body []byte, ok bool) {
	if keyHeader, ok = h.authorizeClient(w, r); !ok {
		return "", nil, false
	}
	body, ok = h.readBody(w, r)
	return keyHeader, body, ok
}

// upstreamHeader returns the client's headers for the providers: without
// the one that carried the client key, and a copy when clone is set (for
// attempt loops that may outlive the request).
func upstreamHeader(r *http.Request, keyHeader string, clone bool) http.Header {
	if keyHeader == "" && !clone {
		return r.Header
	}
	hdr := r.Header.Clone()
	hdr.Del(keyHeader)
	return hdr
}

func (h *Handler) serveMessages(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	keyHeader, body, ok := h.admit(w, r)
	if !ok {
		return
	}
	// With de-duplication on, one pass over the body both signs it and
	// finds what the balancer needs; without it, a lighter pass does.
	var (
		peek balancer.Peek
		key  dedup.Key
		err  error
	)
	if h.dedupOff {
		peek, err = balancer.PeekBody(body)
	} else {
		pb := balancer.NewPeekBuilder(body)
		key, err = dedup.SignatureWith(body, h.dedupIgnore, clientIdentity(r), strings.Join(r.Header.Values("Anthropic-Beta"), ","), pb.Field)
		if err != nil {
			err = fmt.Errorf("request body: %w", errors.Unwrap(err))
		} else {
			peek, err = pb.Peek()
		}
	}
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
	if h.dedupOff {
		res := h.bal.Serve(r.Context(), req, relay.NewClientOutput(w))
		if res.Failure != nil {
			res.Failure.WriteTo(w)
		}
		h.finishRun(req, res, "", time.Since(start))
		h.finishClient(r, req, res.Route, providerOf(res), res.Status, len(res.Attempts), "")
		return
	}
	var done atomic.Pointer[balancer.Result]
	dres := h.dedup.Serve(w, r, key, peek.Stream, func(ctx context.Context, out relay.Output) *relay.Failure {
		// This runs once per group, possibly after the leading client left:
		// it logs and measures the upstream side itself.
		res := h.bal.Serve(ctx, req, out)
		h.finishRun(req, res, dedup.Leader.String(), time.Since(start))
		done.Store(res)
		return res.Failure
	})
	provider, route, attempts := "", "", 0
	if res := done.Load(); res != nil {
		provider, route, attempts = providerOf(res), res.Route, len(res.Attempts)
	} else if dres.Header != nil {
		provider = dres.Header.Get("X-Claude-Balancer-Provider")
	}
	if dres.Role != dedup.Leader {
		h.logShared(req, dres, provider, time.Since(start))
	}
	h.finishClient(r, req, route, provider, dres.Status, attempts, dres.Role.String())
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

// serveCount answers count_tokens: the provider's exact count when the
// model's route has a healthy Anthropic provider, else a local count.
func (h *Handler) serveCount(w http.ResponseWriter, r *http.Request) {
	keyHeader, body, ok := h.admit(w, r)
	if !ok {
		return
	}
	peek, err := balancer.PeekBody(body)
	if err != nil {
		apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, err.Error())
		return
	}
	req := &balancer.Request{Body: body, Peek: peek, Header: upstreamHeader(r, keyHeader, false), RawQuery: r.URL.RawQuery}
	res := h.bal.CountTokens(r.Context(), req)
	if res.Upstream {
		getMetrics().countSource.WithLabelValues(h.bal.Name, "upstream").Inc()
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		w.Header().Set("X-Claude-Balancer-Count-Source", "upstream")
		w.Header().Set("X-Claude-Balancer-Provider", res.Provider.Name)
		w.Header().Set("Content-Length", strconv.Itoa(len(res.Body)))
		w.WriteHeader(res.Status)
		_, _ = w.Write(res.Body)
		return
	}
	n, err := h.counter.Count(body)
	if err != nil {
		var bad *tokens.InvalidRequestError
		if errors.As(err, &bad) {
			apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, bad.Message)
			return
		}
		apierr.Write(w, http.StatusInternalServerError, apierr.API, "counting tokens failed: "+err.Error())
		return
	}
	getMetrics().countSource.WithLabelValues(h.bal.Name, "local").Inc()
	h.logger.Debug("count_tokens answered locally", zap.String("model", peek.Model), zap.String("reason", res.Reason), zap.Int("input_tokens", n))
	out := strconv.AppendInt([]byte(`{"input_tokens":`), int64(n), 10)
	out = append(out, '}')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Claude-Balancer-Count-Source", "local")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
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

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
