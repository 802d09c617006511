package balancer

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/claude-balancer/caddy-claude-balancer/convert"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// Limits on what the module reads from a provider.
const (
	maxErrorBody    = 1 << 20
	maxResponseBody = 64 << 20
)

var errTruncated = errors.New("the stream ended before the message was complete")

var errBadEvent = errors.New("the stream sent an event whose data is not JSON")

// Request is one client request to /v1/messages, read and peeked.
type Request struct {
	// Body is the client's body, read once and never modified.
	Body []byte
	Peek Peek
	// Header holds the client's request headers.
	Header http.Header
	// RawQuery is the client's query string (Claude Code sends ?beta=true).
	RawQuery string
	// EstimateTokens, when set, estimates the input tokens of a body for
	// providers whose streams report them only at the end.
	EstimateTokens func(body []byte) int64

	// anthropic is the body for Anthropic providers, once made: the client's,
	// minus thinking blocks this module signed (see convert).
	anthropic     []byte
	anthropicPeek Peek
	// credential is the fingerprint of the credential the client passes
	// through, once computed.
	credential string
}

// Credential returns a fingerprint of the credential the client would pass
// through to a passthrough_auth provider.
func (r *Request) Credential() string {
	if r.credential == "" {
		r.credential = credentialFingerprint(r.Header)
	}
	return r.credential
}

// release drops the request's body once an answer is committed: no attempt
// needs it any more, and a long stream should not hold a large body.
func (r *Request) release() {
	r.Body, r.anthropic = nil, nil
}

// anthropicBody returns the body for Anthropic providers. Thinking blocks
// that this module made from OpenAI reasoning carry signatures Anthropic
// rejects; a conversation holding them is re-encoded without them, any other
// body passes untouched.
func (r *Request) anthropicBody() ([]byte, Peek) {
	if r.anthropic == nil {
		r.anthropic, r.anthropicPeek = r.Body, r.Peek
		if stripped, changed := convert.StripForeignThinking(r.Body); changed {
			if p, err := PeekBody(stripped); err == nil {
				r.anthropic, r.anthropicPeek = stripped, p
			}
		}
	}
	return r.anthropic, r.anthropicPeek
}

// Session returns the request's session: Claude Code's
// x-claude-code-session-id header, else the session id in
// metadata.user_id.
func (r *Request) Session() string {
	if s := r.Header.Get("X-Claude-Code-Session-Id"); s != "" {
		return s
	}
	return r.Peek.Session
}

// Usage is the token usage a provider reported.
type Usage struct {
	InputTokens         int64 `json:"input_tokens,omitempty"`
	OutputTokens        int64 `json:"output_tokens,omitempty"`
	CacheReadTokens     int64 `json:"cache_read_input_tokens,omitempty"`
	CacheCreationTokens int64 `json:"cache_creation_input_tokens,omitempty"`
}

// Attempt records one try of one provider.
type Attempt struct {
	Provider string        `json:"provider"`
	Model    string        `json:"model,omitempty"`
	Outcome  string        `json:"outcome"`
	Status   int           `json:"status,omitempty"`
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Result describes how a request went, for logs and metrics.
type Result struct {
	// Route is the ID of the route that served the model ("" if none).
	Route string
	// Provider answered the request (nil if none did).
	Provider *Provider
	// Model is the model the provider was asked for ("" when the client's
	// model was passed through).
	Model string
	// ClientModel is the model the client asked for.
	ClientModel string
	// TTFT is the time from sending the answering attempt to its first
	// content event (streams).
	TTFT time.Duration
	// Status is the status sent to the client.
	Status int
	// Stream reports an SSE answer.
	Stream bool
	// Committed reports that a provider's answer reached the output.
	Committed bool
	Attempts  []Attempt
	// FirstByte is the time from the start of the loop to the commit.
	FirstByte time.Duration
	// Upstream is the time spent waiting on providers.
	Upstream time.Duration
	// UpstreamBeforeCommit is the part of Upstream before the commit point:
	// FirstByte minus it is the time the module itself took.
	UpstreamBeforeCommit time.Duration
	Usage                Usage
	// Failure is the error response when the loop ended before commit; the
	// caller sends it.
	Failure *relay.Failure
	// StreamError says why a committed stream ended with an error frame.
	StreamError string
	// ClientGone reports that the reader went away.
	ClientGone bool

	// attemptStart is when the current attempt began.
	attemptStart time.Time
	// onCommit runs at the commit point.
	onCommit func()
}

// outcome is the verdict on one attempt.
type outcome struct {
	scope     Scope
	counted   bool
	status    int // upstream HTTP status; 0 for transport failures
	errType   string
	message   string
	header    http.Header
	body      []byte
	retryAt   time.Time
	committed bool
	// detail is the provider's own error message, for the client.
	detail string
	// clientCred marks a credential or quota failure that belongs to the
	// credential the client passed through, not to the provider.
	clientCred bool
}

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
	for _, c := range cands {
		p := c.Provider
		h := p.Health(ClassMessages)
		if !h.Acquire(b.policy) {
			// Another request holds the half-open trial.
			if ok, at := h.Available(b.policy); !ok && (why.retryAt.IsZero() || at.Before(why.retryAt)) {
				why.retryAt = at
			}
			continue
		}
		if last := fails.last; prev != nil && last != nil {
			b.logger.Info("failover", zap.String("from", prev.Name), zap.String("to", p.Name), zap.String("reason", last.message))
			if b.observer != nil {
				b.observer.Failover(prev, p, last.scope.String())
			}
		}
		p.state.requests.Add(1)
		t0 := now()
		res.attemptStart = t0
		o := b.attempt(ctx, c, req, out, res, start)
		if p.auth == authPassthrough && (o.scope == ScopeCredential || o.scope == ScopeQuota) {
			o.clientCred = true
		}
		at := Attempt{Provider: p.Name, Model: c.Model, Outcome: o.outcomeName(), Status: o.status, Duration: now().Sub(t0)}
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
				b.state.sticky.set(stickyKey(session, route.ID), c.index, p.Name, b.stickyTTL)
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

// outcomeName names an attempt's outcome in logs and metrics: the scope, with
// the client's own credential told apart from the provider's.
func (o *outcome) outcomeName() string {
	if o.clientCred {
		return "client_" + o.scope.String()
	}
	return o.scope.String()
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
		if o.scope == ScopeQuota && o.counted {
			sc.health.RecordFailure(b.policy, o.message, o.retryAt)
		} else {
			sc.health.NoteFailure(o.message)
		}
		sc.health.mu.Lock()
		if o.scope == ScopeCredential {
			sc.rejected = now()
		}
		sc.health.mu.Unlock()
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
	if !o.counted {
		h.NoteFailure(o.message)
		b.logger.Info("provider error not counted", zap.String("provider", p.Name), zap.String("endpoint", class),
			zap.String("scope", o.scope.String()), zap.String("reason", o.message))
		return
	}
	var at time.Time
	if o.scope == ScopeQuota {
		at = o.retryAt
	}
	n, t := h.RecordFailure(b.policy, o.message, at)
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

// setAuth sets the provider's credential on an upstream request. For OAuth
// accounts it returns the access token used.
func (b *Balancer) setAuth(ctx context.Context, p *Provider, h http.Header, client http.Header) (token string, err error) {
	switch p.auth {
	case authAPIKey:
		if p.Type == TypeOpenAI {
			h.Set("Authorization", "Bearer "+p.secret)
		} else {
			h.Set("X-Api-Key", p.secret)
		}
	case authToken:
		h.Set("Authorization", "Bearer "+p.secret)
	case authPassthrough:
		key, authz := client.Get("X-Api-Key"), client.Get("Authorization")
		if p.Type == TypeOpenAI {
			if key != "" {
				h.Set("Authorization", "Bearer "+key)
			} else if authz != "" {
				h.Set("Authorization", authz)
			}
			break
		}
		if key != "" {
			h.Set("X-Api-Key", key)
		}
		if authz != "" {
			h.Set("Authorization", authz)
		}
	case authOAuth:
		tok, err := b.tokens.Token(ctx, p.Account)
		if err != nil {
			return "", err
		}
		h.Set("Authorization", "Bearer "+tok)
		mergeBeta(h, "oauth-2025-04-20")
		return tok, nil
	}
	return "", nil
}

// attempt sends req to one candidate and, if the answer is good, commits it
// to out.
func (b *Balancer) attempt(ctx context.Context, c candidate, req *Request, out relay.Output, res *Result, start time.Time) *outcome {
	p := c.Provider
	defer p.shared.done()
	cd := p.codec()
	body, err := cd.body(req, c.Model)
	if err != nil {
		return &outcome{scope: ScopeRequest, status: http.StatusBadRequest, errType: apierr.InvalidRequest,
			message: err.Error(), body: apierr.Body(apierr.InvalidRequest, err.Error())}
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	wd := newWatchdog(cancel, p.firstByteTimeout(req.Peek.Stream), p.idle)
	defer wd.stop()

	target := p.messagesURL
	if req.RawQuery != "" && p.Type == TypeAnthropic {
		target += "?" + req.RawQuery
	}
	var (
		resp    *http.Response
		token   string
		retried bool
	)
	for {
		ub := &upstreamBody{b: body}
		hreq, err := http.NewRequestWithContext(actx, http.MethodPost, target, ub)
		if err != nil {
			return &outcome{scope: ScopeProvider, message: err.Error()}
		}
		hreq.ContentLength = int64(len(body))
		hreq.GetBody = ub.reopen
		res.onCommit = func() {
			ub.release()
			req.release()
		}
		if cd.clientHeaders() {
			forwardRequestHeaders(hreq.Header, req.Header)
		}
		cd.header(hreq.Header, req)
		for k, vs := range p.headers {
			hreq.Header[k] = vs
		}
		if token, err = b.setAuth(actx, p, hreq.Header, req.Header); err != nil {
			if ctx.Err() != nil {
				return &outcome{scope: ScopeClient, message: "client went away"}
			}
			return &outcome{scope: ScopeCredential, message: err.Error()}
		}
		t0 := now()
		resp, err = p.transport.RoundTrip(hreq)
		res.Upstream += now().Sub(t0)
		if err != nil {
			return b.transportFailure(ctx, wd, err)
		}
		if resp.StatusCode == http.StatusUnauthorized && p.auth == authOAuth && !retried {
			// One refresh and one retry on the same account before failing over.
			drain(resp)
			retried = true
			if _, err := b.tokens.Refresh(actx, p.Account, token); err != nil {
				return &outcome{scope: ScopeCredential, counted: true, status: http.StatusUnauthorized,
					errType: apierr.Authentication, message: "token rejected and refresh failed: " + err.Error()}
			}
			continue
		}
		break
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return b.upstreamError(ctx, wd, cd, resp, res)
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if ct == "text/event-stream" {
		return b.relayStream(ctx, wd, c, cd, req, resp, out, res, start)
	}
	return b.relayJSON(ctx, wd, c, cd, req, resp, out, res, start)
}

// transportFailure classifies an error from sending the request.
func (b *Balancer) transportFailure(ctx context.Context, wd *watchdog, err error) *outcome {
	if ctx.Err() != nil {
		return &outcome{scope: ScopeClient, message: "client went away"}
	}
	if r := wd.fired(); r != "" {
		return &outcome{scope: ScopeProvider, counted: true, errType: apierr.Timeout, message: r}
	}
	return &outcome{scope: ScopeProvider, counted: true, errType: apierr.API, message: describeNetError(err)}
}

// describeNetError shortens a transport error to what an operator needs.
func describeNetError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	switch {
	case errors.As(err, &dnsErr):
		// Not dnsErr.Error(): it names the DNS server, an internal address
		// the client has no business seeing.
		why := dnsErr.Err
		if dnsErr.IsNotFound {
			why = "no such host"
		} else if dnsErr.IsTimeout {
			why = "timed out"
		}
		return "cannot resolve host " + dnsErr.Name + ": " + why
	case errors.As(err, &certErr):
		return "TLS certificate rejected: " + certErr.Error()
	case errors.As(err, &recErr):
		return "TLS handshake failed: " + err.Error()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before a response: " + err.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "connection timed out: " + err.Error()
	}
	return "connection failed: " + err.Error()
}

// readBody reads a response body under the watchdog and a size limit.
func readBody(wd *watchdog, r io.Reader, limit int64) ([]byte, error) {
	wd.streaming()
	ir := &idleReader{r: io.LimitReader(r, limit+1), w: wd, active: true}
	b, err := io.ReadAll(ir)
	if err == nil && int64(len(b)) > limit {
		return nil, fmt.Errorf("response body larger than %d bytes", limit)
	}
	return b, err
}

// upstreamError classifies a non-2xx answer.
func (b *Balancer) upstreamError(ctx context.Context, wd *watchdog, cd codec, resp *http.Response, res *Result) *outcome {
	t0 := now()
	body, err := readBody(wd, resp.Body, maxErrorBody)
	res.Upstream += now().Sub(t0)
	if err != nil && ctx.Err() != nil {
		return &outcome{scope: ScopeClient, message: "client went away"}
	}
	o := &outcome{status: resp.StatusCode, header: resp.Header, body: body, retryAt: retryAt(resp.Header, now())}
	typ, msg, ok := cd.errorInfo(resp.StatusCode, body)
	if !ok {
		msg = strings.TrimSpace(string(truncate(body, 200)))
	}
	o.errType, o.detail = typ, msg
	if o.errType == "" {
		o.errType = apierr.TypeForStatus(resp.StatusCode)
	}
	o.message = fmt.Sprintf("HTTP %d", resp.StatusCode)
	if msg != "" {
		if typ != "" {
			o.message += ": " + typ + ": " + msg
		} else {
			o.message += ": " + msg
		}
	}
	o.scope, o.counted = b.classifyStatus(resp.StatusCode, body)
	return o
}

// quotaPatterns recognise "out of credits" answers that some providers send
// with a status that would otherwise be the request's fault.
var quotaPatterns = []string{
	"credit balance is too low", "insufficient credit", "insufficient_quota", "insufficient balance",
	"exceeded your current quota", "quota exceeded", "payment required",
}

// classifyStatus decides the scope of an upstream error status and whether
// it counts against the provider's health.
func (b *Balancer) classifyStatus(status int, body []byte) (Scope, bool) {
	lower := bytes.ToLower(body)
	for _, q := range quotaPatterns {
		if bytes.Contains(lower, []byte(q)) {
			return ScopeQuota, true
		}
	}
	for _, re := range b.patterns {
		if re.Match(body) {
			return ScopeProvider, true
		}
	}
	counted := b.counted[status]
	switch {
	case !counted && status < 500:
		return ScopeRequest, false
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return ScopeCredential, counted
	case status == http.StatusPaymentRequired || status == http.StatusTooManyRequests:
		return ScopeQuota, counted
	}
	return ScopeProvider, counted
}

// classifyInBand decides the scope of an error event inside a 2xx stream or
// body, from its Anthropic error type.
func (b *Balancer) classifyInBand(errType string, body []byte) (Scope, int) {
	lower := bytes.ToLower(body)
	for _, q := range quotaPatterns {
		if bytes.Contains(lower, []byte(q)) {
			return ScopeQuota, http.StatusTooManyRequests
		}
	}
	for _, re := range b.patterns {
		if re.Match(body) {
			return ScopeProvider, http.StatusBadGateway
		}
	}
	switch errType {
	case apierr.InvalidRequest, apierr.RequestTooLarge, apierr.NotFound:
		return ScopeRequest, apierr.StatusForType(errType)
	case apierr.RateLimit, apierr.Billing:
		return ScopeQuota, apierr.StatusForType(errType)
	case apierr.Authentication, apierr.Permission:
		return ScopeCredential, apierr.StatusForType(errType)
	case apierr.Overloaded:
		return ScopeProvider, 529
	}
	return ScopeProvider, http.StatusBadGateway
}

// responseHeader builds the headers the client gets with a committed answer.
func responseHeader(p *Provider, upstream http.Header, stream bool) http.Header {
	h := make(http.Header, len(upstream)+2)
	if p.Type == TypeAnthropic {
		copyResponseHeaders(h, upstream)
	} else {
		for _, k := range []string{"X-Request-Id", "Retry-After"} {
			if v := upstream.Get(k); v != "" {
				h.Set(k, v)
			}
		}
	}
	if stream {
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("X-Claude-Balancer-Provider", p.Name)
	return h
}

// relayJSON reads a complete JSON answer and commits it.
func (b *Balancer) relayJSON(ctx context.Context, wd *watchdog, c candidate, cd codec, req *Request, resp *http.Response, out relay.Output, res *Result, start time.Time) *outcome {
	t0 := now()
	body, err := readBody(wd, resp.Body, maxResponseBody)
	res.Upstream += now().Sub(t0)
	if err != nil {
		if ctx.Err() != nil {
			return &outcome{scope: ScopeClient, message: "client went away"}
		}
		if r := wd.fired(); r != "" {
			return &outcome{scope: ScopeProvider, counted: true, errType: apierr.Timeout, message: r}
		}
		return &outcome{scope: ScopeProvider, counted: true, message: "reading the response failed: " + describeNetError(err)}
	}
	if !json.Valid(body) {
		return &outcome{scope: ScopeProvider, counted: true, status: resp.StatusCode,
			message: fmt.Sprintf("HTTP %d with a body that is not JSON: %q", resp.StatusCode, truncate(body, 120))}
	}
	if typ, msg, ok := errorBody(cd, resp.StatusCode, body); ok {
		scope, status := b.classifyInBand(typ, body)
		if typ == "" {
			typ = apierr.TypeForStatus(status)
		}
		o := &outcome{scope: scope, counted: scope != ScopeRequest, status: status, errType: typ, body: body,
			header: resp.Header, message: fmt.Sprintf("HTTP %d with an error body: %s: %s", resp.StatusCode, typ, msg)}
		if scope == ScopeRequest {
			o.body = apierr.Body(typ, msg)
		}
		return o
	}
	out2, err := cd.json(body, req)
	if err != nil {
		var ie *inBandError
		if errors.As(err, &ie) {
			scope, status := b.classifyInBand(ie.errType, ie.body)
			return &outcome{scope: scope, counted: scope != ScopeRequest, status: status, errType: ie.errType, header: resp.Header,
				body: apierr.Body(ie.errType, ie.message), message: "HTTP 200 with an error body: " + ie.errType + ": " + ie.message}
		}
		return &outcome{scope: ScopeProvider, counted: true, status: resp.StatusCode, message: "converting the response failed: " + err.Error()}
	}
	res.onCommit()
	h := responseHeader(c.Provider, resp.Header, false)
	h.Set("Content-Length", strconv.Itoa(len(out2)))
	res.Committed, res.Provider, res.Model, res.Status = true, c.Provider, c.Model, resp.StatusCode
	res.FirstByte = now().Sub(start)
	res.UpstreamBeforeCommit = res.Upstream
	res.Usage = usageOf(out2)
	if err := out.Start(resp.StatusCode, h, false); err != nil {
		return &outcome{scope: ScopeNone, committed: true}
	}
	// The provider did its job even if the client left during the write.
	_ = out.Write(out2)
	return &outcome{scope: ScopeNone, committed: true}
}

// relayStream holds a stream's opening events until the first content event
// (the commit point), then relays everything as it arrives.
func (b *Balancer) relayStream(ctx context.Context, wd *watchdog, c candidate, cd codec, req *Request, resp *http.Response, out relay.Output, res *Result, start time.Time) *outcome {
	p := c.Provider
	idle := &idleReader{r: resp.Body, w: wd}
	rd := sse.NewReader(idle)
	defer rd.Release()
	dec := cd.stream(req)
	var (
		buf   []sse.Event
		held  []sse.Event
		usage Usage
	)
	// next returns the Anthropic events completed by the next upstream
	// event(s); io.EOF marks the clean end, after any closing events.
	next := func() ([]sse.Event, error) {
		t0 := now()
		defer func() { res.Upstream += now().Sub(t0) }()
		for {
			ev, err := rd.Next()
			if err == io.EOF {
				evs, cerr := dec.close(buf[:0])
				if cerr == nil {
					cerr = io.EOF
				}
				return evs, cerr
			}
			if err != nil {
				if err == io.ErrUnexpectedEOF {
					err = errTruncated
				}
				return nil, err
			}
			if !idle.active {
				// The response has started; from now on silence is bounded
				// by the idle timeout.
				idle.active = true
				wd.streaming()
			}
			evs, err := dec.feed(buf[:0], ev)
			buf = evs
			if err != nil || len(evs) > 0 {
				return evs, err
			}
		}
	}
	fail := func(err error) *outcome {
		if ctx.Err() != nil {
			return &outcome{scope: ScopeClient, message: "client went away"}
		}
		if r := wd.fired(); r != "" {
			return &outcome{scope: ScopeProvider, counted: true, errType: apierr.Timeout, message: r}
		}
		var ie *inBandError
		if errors.As(err, &ie) {
			scope, status := b.classifyInBand(ie.errType, ie.body)
			return &outcome{scope: scope, counted: scope != ScopeRequest, status: status, errType: ie.errType,
				message: "error event in the stream: " + ie.errType + ": " + ie.message, body: apierr.Body(ie.errType, ie.message)}
		}
		if errors.Is(err, errTruncated) || err == io.EOF {
			return &outcome{scope: ScopeProvider, counted: true, message: errTruncated.Error()}
		}
		if errors.Is(err, sse.ErrEventTooLarge) {
			return &outcome{scope: ScopeProvider, counted: true, message: "the stream sent an oversized event"}
		}
		if errors.Is(err, errBadEvent) {
			return &outcome{scope: ScopeProvider, counted: true, message: errBadEvent.Error()}
		}
		return &outcome{scope: ScopeProvider, counted: true, message: "reading the stream failed: " + describeNetError(err)}
	}

	// Before the commit point: hold message_start and pings; an error event
	// or an early end fails over, invisibly to the client.
	var pendingErr error
	for committed := false; !committed; {
		evs, err := next()
		for i, ev := range evs {
			switch eventType(ev) {
			case "message_start", "ping", "":
				held = append(held, ev)
				continue
			case "error":
				return fail(parseErrorEvent(ev))
			}
			held = append(held, evs[i:]...)
			committed = true
			break
		}
		if err != nil {
			if !committed {
				return fail(err)
			}
			pendingErr = err
		}
	}

	res.onCommit()
	h := responseHeader(p, resp.Header, true)
	res.Committed, res.Provider, res.Model, res.Status = true, p, c.Model, resp.StatusCode
	res.FirstByte = now().Sub(start)
	res.UpstreamBeforeCommit = res.Upstream
	ttft := now().Sub(res.attemptStart)
	res.TTFT = ttft
	p.observeLatency(ttft)
	p.state.stats.recordTTFT(ttft)
	defer func() { res.Usage = usage }()
	gone := &outcome{scope: ScopeClient, committed: true, message: "client went away"}
	if err := out.Start(resp.StatusCode, h, true); err != nil {
		return gone
	}
	batcher, _ := out.(relay.Batcher)
	// stopped is set by message_stop: the answer is complete, whether or not
	// the provider closes the connection.
	stopped := false
	write := func(evs []sse.Event) *outcome {
		if len(evs) == 0 {
			return nil
		}
		// A client slower than the provider holds the relay here; the
		// provider is not idle meanwhile.
		wd.pause()
		defer wd.resume()
		for i, ev := range evs {
			typ := eventType(ev)
			usage.add(ev, typ)
			var err error
			if batcher != nil && (i < len(evs)-1 || rd.Ready()) {
				// More is already here: send it all with one flush, which
				// comes before the relay next waits on the network.
				err = batcher.WriteBuffered(ev.Raw)
			} else {
				err = out.Write(ev.Raw)
			}
			if err != nil {
				return gone
			}
			if typ == "message_stop" {
				stopped = true
			}
			if typ == "error" {
				ie := parseErrorEvent(ev)
				res.StreamError = ie.Error()
				scope, _ := b.classifyInBand(ie.errType, ie.body)
				if scope == ScopeRequest {
					scope = ScopeProvider
				}
				return &outcome{scope: scope, counted: true, committed: true, message: "error event after the stream started: " + ie.message}
			}
		}
		return nil
	}
	if o := write(held); o != nil {
		return o
	}
	for err := pendingErr; ; {
		if stopped {
			return &outcome{scope: ScopeNone, committed: true}
		}
		if err == nil {
			var evs []sse.Event
			evs, err = next()
			if o := write(evs); o != nil {
				return o
			}
		}
		if err == nil {
			continue
		}
		if err == io.EOF {
			return &outcome{scope: ScopeNone, committed: true}
		}
		o := fail(err)
		o.committed = true
		if o.scope == ScopeClient {
			return o
		}
		if o.scope == ScopeRequest {
			o.scope = ScopeProvider
		}
		res.StreamError = o.message
		typ := apierr.API
		if o.errType == apierr.Timeout {
			typ = apierr.Timeout
		}
		_ = out.Write(apierr.Frame(typ, "the provider's stream failed: "+o.message))
		return o
	}
}

// errorBody recognises a 2xx body that carries an error instead of an
// answer. Only bodies with a top-level "error" are decoded, so answers pass
// with one quick scan.
func errorBody(cd codec, status int, body []byte) (string, string, bool) {
	if findTopLevel(body, "error") == nil {
		return "", "", false
	}
	return cd.errorInfo(status, body)
}

// upstreamBody is a request body the relay lets go of at the commit point,
// although the transport keeps the request until the answer ends.
type upstreamBody struct {
	mu  sync.Mutex
	b   []byte
	off int
}

var errBodyReleased = errors.New("request body already released")

func (u *upstreamBody) Read(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.off >= len(u.b) {
		return 0, io.EOF
	}
	n := copy(p, u.b[u.off:])
	u.off += n
	return n, nil
}

func (u *upstreamBody) Close() error { return nil }

func (u *upstreamBody) release() {
	u.mu.Lock()
	u.b, u.off = nil, 0
	u.mu.Unlock()
}

// reopen is the request's GetBody, for the transport's retries on a reused
// connection that died.
func (u *upstreamBody) reopen() (io.ReadCloser, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.b == nil {
		return nil, errBodyReleased
	}
	return &upstreamBody{b: u.b}, nil
}

// inBandError is an error event read from a stream.
type inBandError struct {
	errType, message string
	body             []byte
}

func (e *inBandError) Error() string { return e.errType + ": " + e.message }

func parseErrorEvent(ev sse.Event) *inBandError {
	typ, msg, ok := apierr.Parse(ev.Data)
	if !ok {
		msg = string(truncate(ev.Data, 200))
	}
	if typ == "" {
		typ = apierr.API
	}
	return &inBandError{errType: typ, message: msg, body: ev.Data}
}

// add folds the usage of a message_start or message_delta event into u.
func (u *Usage) add(ev sse.Event, typ string) {
	switch typ {
	case "message_start":
		var v struct {
			Message struct {
				Usage Usage `json:"usage"`
			} `json:"message"`
		}
		if json.Unmarshal(ev.Data, &v) == nil {
			*u = v.Message.Usage
		}
	case "message_delta":
		var v struct {
			Usage *Usage `json:"usage"`
		}
		if json.Unmarshal(ev.Data, &v) == nil && v.Usage != nil {
			// message_delta carries cumulative counts; fields it omits keep
			// the values from message_start.
			if v.Usage.OutputTokens > 0 {
				u.OutputTokens = v.Usage.OutputTokens
			}
			if v.Usage.InputTokens > 0 {
				u.InputTokens = v.Usage.InputTokens
			}
			if v.Usage.CacheReadTokens > 0 {
				u.CacheReadTokens = v.Usage.CacheReadTokens
			}
			if v.Usage.CacheCreationTokens > 0 {
				u.CacheCreationTokens = v.Usage.CacheCreationTokens
			}
		}
	}
}

// usageOf reads the usage of a complete Anthropic message.
func usageOf(body []byte) Usage {
	raw := findTopLevel(body, "usage")
	if raw == nil {
		return Usage{}
	}
	return Usage{
		InputTokens:         intField(raw, "input_tokens"),
		OutputTokens:        intField(raw, "output_tokens"),
		CacheReadTokens:     intField(raw, "cache_read_input_tokens"),
		CacheCreationTokens: intField(raw, "cache_creation_input_tokens"),
	}
}

// intField reads a non-negative integer member of a JSON object; 0 when it is
// absent or not such a number.
func intField(obj []byte, key string) int64 {
	v := findTopLevel(obj, key)
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
