package balancer

import (
	"net/http"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
)

// Usage is the token usage a provider reported.
type Usage = anthropic.Usage

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
	// StopReason is the answer's stop reason, when it gave one.
	StopReason string
	// Failure is the error response when the loop ended before commit; the
	// caller sends it.
	Failure *relay.Failure
	// StreamError says why a committed stream ended with an error frame.
	StreamError string
	// ClientGone reports that the reader went away.
	ClientGone bool
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

// success is the outcome of an answer that reached the output.
var success = &outcome{scope: ScopeNone, committed: true}

// outcomeName names an attempt's outcome in logs and metrics: the scope, with
// the client's own credential told apart from the provider's.
func (o *outcome) outcomeName() string {
	if o.clientCred {
		return "client_" + o.scope.String()
	}
	return o.scope.String()
}
