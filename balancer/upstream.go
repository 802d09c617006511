package balancer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/bufpool"
)

// isHopHeader reports whether a header, named in canonical form (as
// http.Header keys are), is meaningful for one connection only and never
// forwarded (RFC 9110 §7.6.1).
func isHopHeader(name string) bool {
	switch name {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// forwardRequestHeaders copies the client's headers that a provider should
// see into dst: everything but hop-by-hop, transport, address and credential
// headers. The server hands keys over in canonical form.
func forwardRequestHeaders(dst, src http.Header) {
	conn := src["Connection"]
	for k, vs := range src {
		switch k {
		// The transport sets length and host; the module reads answers
		// itself, so it asks for them uncompressed, and sends the body it
		// decoded; client addresses and cookies stay with the client;
		// hop-by-hop and credential headers never pass.
		case "Host", "Content-Length", "Accept-Encoding", "Content-Encoding", "Cookie", "Forwarded", "X-Forwarded-For",
			"X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Via", "Expect",
			"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
			"Te", "Trailer", "Transfer-Encoding", "Upgrade", "X-Api-Key", "Authorization":
			continue
		}
		if strings.HasPrefix(k, "X-Claude-Balancer-") || (len(conn) > 0 && namedIn(conn, k)) {
			continue
		}
		dst[k] = vs
	}
}

// namedIn reports whether a Connection header lists name.
func namedIn(conn []string, name string) bool {
	for _, v := range conn {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(textproto.TrimString(f), name) {
				return true
			}
		}
	}
	return false
}

// copyResponseHeaders copies a provider's response headers that the client
// should see (request-id, anthropic-ratelimit-*, retry-after, content type,
// ...) into dst.
func copyResponseHeaders(dst, src http.Header) {
	for k, vs := range src {
		if !forwardedResponseHeader(k) {
			continue
		}
		dst[k] = vs
	}
}

// keepResponseHeaders removes, in place, what copyResponseHeaders would not
// copy: a provider's answer's own header map becomes the client's, with no
// map made for it. The response is the caller's, as Caddy's reverse proxy
// treats it too.
func keepResponseHeaders(h http.Header) {
	for k := range h {
		if !forwardedResponseHeader(k) {
			delete(h, k)
		}
	}
}

// forwardedResponseHeader reports whether a response header, named in
// canonical form, goes on to the client.
func forwardedResponseHeader(k string) bool {
	return !isHopHeader(k) && k != "Content-Length" && k != "Content-Encoding" && k != "Alt-Svc"
}

// mergeBeta appends a flag to the anthropic-beta header unless present.
func mergeBeta(h http.Header, flag string) {
	cur := h.Values("Anthropic-Beta")
	for _, v := range cur {
		for _, f := range strings.Split(v, ",") {
			if strings.TrimSpace(f) == flag {
				return
			}
		}
	}
	if len(cur) == 0 {
		h.Set("Anthropic-Beta", flag)
		return
	}
	h.Set("Anthropic-Beta", strings.Join(cur, ",")+","+flag)
}

// newUpstreamRequest builds a request to a provider: the client's headers a
// provider should see (when the codec forwards them), the codec's own, the
// provider's configured ones and its credential. It returns the OAuth access
// token it used, if any, for a refresh after a 401. An error attaching the
// credential is a *credentialError.
func (b *Balancer) newUpstreamRequest(ctx context.Context, p *Provider, target string, body io.Reader, length int, req *Request, cd codec) (*http.Request, string, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, target, body)
	if err != nil {
		return nil, "", err
	}
	hreq.ContentLength = int64(length)
	if ub, ok := body.(*upstreamBody); ok {
		hreq.GetBody = ub.src.reopen
	}
	if cd.clientHeaders() {
		// Made at its size, instead of grown header by header.
		hreq.Header = make(http.Header, len(req.Header)+len(p.headers)+2)
		forwardRequestHeaders(hreq.Header, req.Header)
	}
	cd.header(hreq.Header, req)
	for k, vs := range p.headers {
		hreq.Header[k] = vs
	}
	token, err := b.setAuth(ctx, p, hreq.Header, req.Header)
	if err != nil {
		return nil, "", &credentialError{err: err}
	}
	return hreq, token, nil
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

// bodySource lends an attempt's body to the transport, which may hold a
// request (read its body, or reopen it for a retry on a connection that
// died) after the attempt has moved on. Once released, its readers read
// nothing more: the relay lets go of the body at the commit point, and every
// attempt releases its source when it ends, so that the client's body can go
// back to its pool once the attempt loop returns (see Request.Body).
type bodySource struct {
	mu sync.Mutex
	b  []byte
	// pooled: b is lent by the buffer pool (codec.ownsBody), and goes back
	// on release.
	pooled bool
}

var errBodyReleased = errors.New("request body already released")

func (s *bodySource) release() {
	s.mu.Lock()
	if s.pooled && s.b != nil {
		// Readers copy from b under the lock, and read nothing once it is
		// released: nobody holds it now.
		bufpool.Put(s.b)
	}
	s.b = nil
	s.mu.Unlock()
}

// reopen is the request's GetBody.
func (s *bodySource) reopen() (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b == nil {
		return nil, errBodyReleased
	}
	return &upstreamBody{src: s}, nil
}

// upstreamBody is one reading of a bodySource.
type upstreamBody struct {
	src *bodySource
	off int
}

func (u *upstreamBody) Read(p []byte) (int, error) {
	u.src.mu.Lock()
	defer u.src.mu.Unlock()
	if u.off >= len(u.src.b) {
		return 0, io.EOF
	}
	n := copy(p, u.src.b[u.off:])
	u.off += n
	return n, nil
}

func (u *upstreamBody) Close() error { return nil }

// watchdog bounds an attempt in time: until the answer starts, the wait for
// it (first_byte); then each wait on the provider inside the answer (idle),
// counted only while the relay waits on a read, so that time spent on a slow
// client or on the relay's own work is never the provider's silence; and,
// once the answer is complete, what is left of it (drain). Reads cost it two
// clock readings and two atomic stores, events nothing.
type watchdog struct {
	timer  *time.Timer
	reason atomic.Pointer[string]
	cancel context.CancelFunc
	idle   time.Duration
	phase  atomic.Pointer[string]
	// inAnswer is set once the answer has started: from then on the timer
	// measures silence (idle) instead of the whole wait.
	inAnswer atomic.Bool
	// waiting is when the pending read on the provider began, in
	// nanoseconds on the watchdog's monotonic clock; 0 when no read is
	// pending.
	waiting atomic.Int64
	// draining is set once the answer is complete: the drain bound holds,
	// whatever the reads.
	draining atomic.Bool
}

// wdEpoch is the origin of the watchdogs' monotonic clock.
var wdEpoch = time.Now()

func wdNow() int64 { return int64(time.Since(wdEpoch)) + 1 }

func newWatchdog(cancel context.CancelFunc, firstByte, idle time.Duration) *watchdog {
	w := &watchdog{cancel: cancel, idle: idle}
	msg := "no response within the first_byte timeout (" + firstByte.String() + ")"
	w.phase.Store(&msg)
	w.timer = time.AfterFunc(firstByte, w.fire)
	return w
}

func (w *watchdog) fire() {
	if w.inAnswer.Load() && !w.draining.Load() {
		since := w.waiting.Load()
		if since == 0 {
			// The relay is not waiting on the provider: it is busy, or
			// writing to a slow client. Look again a full period later.
			w.timer.Reset(w.idle)
			return
		}
		if silent := time.Duration(wdNow() - since); silent < w.idle {
			w.timer.Reset(w.idle - silent)
			return
		}
	}
	w.reason.Store(w.phase.Load())
	w.cancel()
}

// streaming switches the watchdog to the idle timeout: from now on only the
// time spent waiting on a read counts.
func (w *watchdog) streaming() {
	msg := "no data from the provider within the idle timeout (" + w.idle.String() + ")"
	w.phase.Store(&msg)
	w.inAnswer.Store(true)
	w.timer.Reset(w.idle)
}

// drain bounds what is left of the attempt, reading the end of a complete
// answer, to d in all.
func (w *watchdog) drain(d time.Duration) {
	msg := "the provider did not end the response after its last event"
	w.phase.Store(&msg)
	w.draining.Store(true)
	w.timer.Reset(d)
}

func (w *watchdog) stop() { w.timer.Stop() }

// fired returns why the watchdog cancelled the attempt, or "".
func (w *watchdog) fired() string {
	if r := w.reason.Load(); r != nil {
		return *r
	}
	return ""
}

// idleReader reads the provider's answer for the watchdog: each read is a
// wait on the provider, which the watchdog bounds once the answer has
// started. spent, when set, adds up the time the reads took.
type idleReader struct {
	r     io.Reader
	w     *watchdog
	spent *time.Duration
	// held, when set, reports that the connection has read ahead the end
	// of an event (readAhead.EventAhead): everything before it is in
	// memory, so the next read returns without waiting on the provider,
	// and is neither bounded nor timed. In a burst most reads are.
	held func() bool
}

func (ir *idleReader) Read(p []byte) (int, error) {
	if ir.held != nil && ir.held() {
		return ir.r.Read(p)
	}
	t0 := wdNow()
	ir.w.waiting.Store(t0)
	n, err := ir.r.Read(p)
	ir.w.waiting.Store(0)
	if ir.spent != nil {
		*ir.spent += time.Duration(wdNow() - t0)
	}
	return n, err
}

// retryAt reads when a rate-limited provider said to come back: Retry-After
// (seconds or an HTTP date) or, failing that, the latest
// anthropic-ratelimit-*-reset of an API limit whose remaining count is zero.
// It returns the zero time when the answer gives no such hint. A
// subscription's unified windows are read by internal/quota.
func retryAt(h http.Header, t time.Time) time.Time {
	if v := h.Get("Retry-After"); v != "" {
		if secs, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && secs >= 0 {
			return t.Add(time.Duration(secs * float64(time.Second)))
		}
		if d, err := http.ParseTime(v); err == nil {
			return d
		}
	}
	var latest time.Time
	for k, vs := range h {
		lk := strings.ToLower(k)
		if !strings.HasPrefix(lk, "anthropic-ratelimit-") || !strings.HasSuffix(lk, "-reset") || len(vs) == 0 {
			continue
		}
		if strings.HasPrefix(lk, "anthropic-ratelimit-unified-") {
			// A subscription's windows: internal/quota reads them, and
			// cools down the rejected window's scope.
			continue
		}
		limit := strings.TrimSuffix(lk, "-reset")
		if rem := h.Get(limit + "-remaining"); rem != "" && rem != "0" {
			continue
		}
		if rem := h.Get(limit + "-status"); rem == "allowed" {
			continue
		}
		var at time.Time
		if ts, err := time.Parse(time.RFC3339, strings.TrimSpace(vs[0])); err == nil {
			at = ts
		} else if unix, err := strconv.ParseInt(strings.TrimSpace(vs[0]), 10, 64); err == nil {
			at = time.Unix(unix, 0)
		}
		if at.After(latest) {
			latest = at
		}
	}
	// A reset more than a day away is a misreading, not a cooldown.
	if latest.After(t.Add(24 * time.Hour)) {
		return t.Add(24 * time.Hour)
	}
	return latest
}
