package balancer

import (
	"context"
	"mime"
	"net/http"
	"net/http/httptrace"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/quota"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
)

// call is one attempt: one candidate asked once (twice for an OAuth account
// whose token was refreshed), and its answer read. Like the response context
// of Caddy's reverse proxy, it holds what every step of the attempt needs.
type call struct {
	b    *Balancer
	ctx  context.Context // the request's, or its de-duplication group's
	cand candidate
	p    *Provider
	cd   codec
	req  *Request
	out  relay.Output
	res  *Result
	// start is when the attempt loop began, sent when this attempt did.
	start, sent time.Time
	wd          *watchdog
	// onCommit lets go of the request body once an answer is committed.
	onCommit func()
	// reading is what the answer's headers said about its account's quota
	// windows, when hasReading.
	reading    quota.Reading
	hasReading bool
	// conn is the connection a stream's answer came on, when it reads
	// ahead (a plain HTTP/1.1 connection): what it holds is read without
	// waiting.
	conn *readAhead
}

// attempt sends the request to the candidate and, if the answer is good,
// commits it to the output.
func (c *call) attempt() *outcome {
	p := c.p
	defer p.shared.done()
	body, err := c.cd.body(c.req, c.cand.Model)
	if err != nil {
		return &outcome{scope: ScopeRequest, status: http.StatusBadRequest, errType: apierr.InvalidRequest,
			message: err.Error(), body: apierr.Body(apierr.InvalidRequest, err.Error())}
	}
	actx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	c.wd = newWatchdog(cancel, p.firstByteTimeout(c.req.Peek.Stream), p.idle)
	defer c.wd.stop()

	target := p.messagesURL
	if c.req.RawQuery != "" && p.Type == TypeAnthropic {
		target += "?" + c.req.RawQuery
	}
	src := &bodySource{b: body, pooled: c.cd.ownsBody()}
	defer src.release()
	c.onCommit = func() {
		src.release()
		c.req.release()
	}
	resp, o := c.send(actx, target, src, len(body))
	if o != nil {
		return o
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.upstreamError(resp)
	}
	if isEventStream(resp.Header) {
		return c.relayStream(resp)
	}
	return c.relayJSON(resp)
}

// isEventStream reports whether an answer's content type is an SSE stream.
//
//go:noinline
func isEventStream(h http.Header) bool {
	ct, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return ct == "text/event-stream"
}

// send sends the request and returns the provider's answer, after one
// token refresh and retry when an OAuth account's token is refused. It is a
// function of its own so that what sending takes (the request, the trace)
// is off the stack while the answer is relayed: an idle stream's goroutine
// keeps the deepest stack it reached.
//
//go:noinline
func (c *call) send(actx context.Context, target string, src *bodySource, n int) (*http.Response, *outcome) {
	p := c.p
	rctx := actx
	if c.req.Peek.Stream {
		rctx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			c.conn, _ = info.Conn.(*readAhead)
		}})
	}
	for retried := false; ; {
		hreq, token, err := c.b.newUpstreamRequest(rctx, p, target, &upstreamBody{src: src}, n, c.req, c.cd)
		if err != nil {
			return nil, c.failed(err, "")
		}
		t0 := now()
		resp, err := p.transport.RoundTrip(hreq)
		c.res.Upstream += now().Sub(t0)
		if err != nil {
			return nil, c.failed(err, "")
		}
		if resp.StatusCode == http.StatusUnauthorized && p.auth == authOAuth && !retried {
			// One refresh and one retry on the same account before failing over.
			drain(resp)
			retried = true
			if _, err := c.b.tokens.Refresh(actx, p.Account, token); err != nil {
				return nil, &outcome{scope: ScopeCredential, counted: true, status: http.StatusUnauthorized,
					errType: apierr.Authentication, message: "token rejected and refresh failed: " + err.Error()}
			}
			continue
		}
		c.reading, c.hasReading = quota.Parse(resp.Header, now())
		return resp, nil
	}
}

// commit marks the answer as the one the client gets and starts the output.
func (c *call) commit(status int, header http.Header, stream bool) error {
	c.onCommit()
	if c.req.Committed != nil {
		c.req.Committed(stream)
	}
	res := c.res
	res.Committed, res.Provider, res.Model, res.Status = true, c.p, c.cand.Model, status
	res.FirstByte = now().Sub(c.start)
	res.UpstreamBeforeCommit = res.Upstream
	return c.out.Start(status, header, stream)
}

// credentialError is a failure to attach the provider's credential to a
// request (an OAuth account without a usable token).
type credentialError struct{ err error }

func (e *credentialError) Error() string { return e.err.Error() }
func (e *credentialError) Unwrap() error { return e.err }
