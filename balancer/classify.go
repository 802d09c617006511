package balancer

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// Limits on what the module reads from a provider.
const (
	maxErrorBody    = 1 << 20
	maxResponseBody = 64 << 20
)

var errTruncated = errors.New("the stream ended before the message was complete")

var errBadEvent = errors.New("the stream sent an event whose data is not JSON")

// inBandError is an error event read from a stream, or an error body of a
// 2xx answer.
type inBandError struct {
	errType, message string
	body             []byte
}

func (e *inBandError) Error() string { return e.errType + ": " + e.message }

// failed is the one verdict on an attempt that could not go on: the client
// left (no verdict on the provider), the watchdog fired, the provider's
// credential could not be attached, the stream broke, or the network failed.
// what says what was being done, for the message.
func (c *call) failed(err error, what string) *outcome {
	if c.ctx.Err() != nil {
		return &outcome{scope: ScopeClient, message: "client went away"}
	}
	if r := c.wd.fired(); r != "" {
		return &outcome{scope: ScopeProvider, counted: true, errType: apierr.Timeout, message: r}
	}
	var (
		ce *credentialError
		ie *inBandError
	)
	switch {
	case errors.As(err, &ce):
		return &outcome{scope: ScopeCredential, message: ce.Error()}
	case errors.As(err, &ie):
		scope, status := c.b.classifyInBand(ie.errType, ie.body)
		return &outcome{scope: scope, counted: scope != ScopeRequest, status: status, errType: ie.errType,
			message: "error event in the stream: " + ie.errType + ": " + ie.message, body: apierr.Body(ie.errType, ie.message)}
	case errors.Is(err, errTruncated), err == io.EOF:
		return &outcome{scope: ScopeProvider, counted: true, message: errTruncated.Error()}
	case errors.Is(err, sse.ErrEventTooLarge):
		return &outcome{scope: ScopeProvider, counted: true, message: "the stream sent an oversized event"}
	case errors.Is(err, errBadEvent):
		return &outcome{scope: ScopeProvider, counted: true, message: errBadEvent.Error()}
	}
	return &outcome{scope: ScopeProvider, counted: true, errType: apierr.API, message: what + describeNetError(err)}
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

// upstreamError classifies a non-2xx answer.
func (c *call) upstreamError(resp *http.Response) *outcome {
	t0 := now()
	body, err := readBody(c.wd, resp.Body, resp.ContentLength, maxErrorBody)
	c.res.Upstream += now().Sub(t0)
	if err != nil && c.ctx.Err() != nil {
		return &outcome{scope: ScopeClient, message: "client went away"}
	}
	o := &outcome{status: resp.StatusCode, header: resp.Header, body: body, retryAt: retryAt(resp.Header, now())}
	typ, msg, ok := c.cd.errorInfo(resp.StatusCode, body)
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
	o.scope, o.counted = c.b.classifyStatus(resp.StatusCode, body)
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

// inBand makes the error of an error event, as the classifier reads it.
func inBand(info anthropic.EventInfo, data []byte) *inBandError {
	typ, msg := info.ErrorType, info.ErrorMessage
	if typ == "" {
		typ = apierr.API
	}
	if msg == "" {
		msg = string(truncate(data, 200))
	}
	return &inBandError{errType: typ, message: msg, body: data}
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
