package balancer

import (
	"net/http"

	"github.com/claude-balancer/caddy-claude-balancer/convert"
)

// Request is one client request to /v1/messages (or count_tokens), read and
// peeked.
type Request struct {
	// Body is the client's body, read once and never modified. It may be a
	// pooled buffer that the caller reuses once Serve returns: nothing keeps
	// it, or a slice of it, past the attempt loop (each attempt's readers are
	// released when it ends; see bodySource).
	Body []byte
	Peek Peek
	// Header holds the client's request headers.
	Header http.Header
	// RawQuery is the client's query string (Claude Code sends ?beta=true).
	RawQuery string
	// EstimateTokens, when set, estimates the input tokens of a body for
	// providers whose streams report them only at the end.
	EstimateTokens func(body []byte) int64
	// Committed, when set, is called once an answer is committed, after
	// the attempt loop has let go of Body: from then on the caller may reuse
	// Body's buffer, unless it holds it elsewhere. stream tells whether the
	// answer is an event stream. It is called in the attempt loop's
	// goroutine.
	Committed func(stream bool)

	// anthropic is the body for Anthropic providers, once made: the client's,
	// minus thinking blocks this module signed (see convert).
	anthropic     []byte
	anthropicPeek Peek
	// folded is the body for providers with fold_system, once made: the
	// Anthropic body with its system messages folded into user turns.
	folded     []byte
	foldedPeek Peek
	// credential is the fingerprint of the credential the client passes
	// through, once computed.
	credential string
}

// release drops the request's body once an answer is committed: no attempt
// needs it any more, and a long stream should not hold a large body.
func (r *Request) release() {
	r.Body, r.anthropic, r.folded = nil, nil, nil
}

// anthropicBody returns the body for Anthropic providers. Thinking blocks
// that this module made from OpenAI reasoning carry signatures Anthropic
// rejects; a conversation holding them is re-encoded without them, any other
// body passes untouched. Intake noted whether the body holds any.
func (r *Request) anthropicBody() ([]byte, Peek) {
	if r.anthropic == nil {
		r.anthropic, r.anthropicPeek = r.Body, r.Peek
		if r.Peek.ForeignThinking {
			if stripped, changed := convert.StripForeignThinking(r.Body); changed {
				if p, err := PeekBody(stripped); err == nil {
					r.anthropic, r.anthropicPeek = stripped, p
				}
			}
		}
	}
	return r.anthropic, r.anthropicPeek
}

// foldedBody returns the body for Anthropic providers with fold_system:
// the Anthropic body with its mid-conversation system messages folded into
// user turns (see foldSystemMessages). Only requests holding such messages,
// as intake noted, are re-encoded.
func (r *Request) foldedBody() ([]byte, Peek) {
	body, peek := r.anthropicBody()
	if !r.Peek.SystemMessages {
		return body, peek
	}
	if r.folded == nil {
		r.folded, r.foldedPeek = body, peek
		if folded, changed := foldSystemMessages(body); changed {
			if p, err := PeekBody(folded); err == nil {
				r.folded, r.foldedPeek = folded, p
			}
		}
	}
	return r.folded, r.foldedPeek
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

// Credential returns a fingerprint of the credential the client would pass
// through to a passthrough_auth provider.
func (r *Request) Credential() string {
	if r.credential == "" {
		r.credential = credentialFingerprint(r.Header)
	}
	return r.credential
}
