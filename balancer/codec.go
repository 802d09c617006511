package balancer

import (
	"net/http"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// codec is the wire format of a provider type: how a client's Anthropic
// request becomes an upstream request and how the answer comes back.
type codec interface {
	// body returns the upstream request body for the target model
	// (model == "" keeps the client's).
	body(req *Request, model string) ([]byte, error)
	// header sets the format's own request headers on h, which already holds
	// the forwarded client headers.
	header(h http.Header, req *Request)
	// json turns a successful JSON answer into the Anthropic message the
	// client gets.
	json(body []byte, req *Request) ([]byte, error)
	// stream returns a decoder turning upstream events into Anthropic events.
	stream(req *Request) streamDecoder
	// errorInfo extracts an error type and message from an error body.
	errorInfo(status int, body []byte) (errType, message string, ok bool)
	// clientHeaders reports whether client headers are forwarded upstream.
	clientHeaders() bool
	// ownsBody reports whether the bodies body makes are the codec's own,
	// lent by the buffer pool: the attempt gives each back once nothing
	// can read it (bodySource.release).
	ownsBody() bool
}

// streamDecoder turns upstream SSE events into Anthropic events, each read
// once: what it learns travels with the event. It keeps nothing of an
// upstream event past the feed that reads it (the relay lends them), and
// the events it appends may be lent too: valid until its next feed or
// close.
type streamDecoder interface {
	// feed appends the Anthropic events completed by ev to dst.
	feed(dst []relay.Event, ev sse.Event) ([]relay.Event, error)
	// close is called at the end of the upstream stream; it appends any
	// closing events and reports a stream that ended too early.
	close(dst []relay.Event) ([]relay.Event, error)
}

// anthropicCodec passes requests and answers through byte for byte; only the
// model is replaced when a route asks for it, and, for a provider with
// fold_system, mid-conversation system messages are folded into user turns.
type anthropicCodec struct{ fold bool }

// ownsBody is false: the body is the client's, or made from it once per
// request and kept with it.
func (anthropicCodec) ownsBody() bool { return false }

func (c anthropicCodec) body(req *Request, model string) ([]byte, error) {
	body, peek := req.anthropicBody()
	if c.fold {
		body, peek = req.foldedBody()
	}
	if model == "" || model == peek.Model {
		return body, nil
	}
	return peek.WithModel(body, model), nil
}

func (anthropicCodec) header(h http.Header, req *Request) {
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	if h.Get("Anthropic-Version") == "" {
		h.Set("Anthropic-Version", "2023-06-01")
	}
}

func (anthropicCodec) json(body []byte, _ *Request) ([]byte, error) { return body, nil }

func (anthropicCodec) stream(*Request) streamDecoder { return &anthropicStream{} }

func (anthropicCodec) errorInfo(_ int, body []byte) (string, string, bool) { return apierr.Parse(body) }

func (anthropicCodec) clientHeaders() bool { return true }

// anthropicStream relays events unchanged: it reads each one once, with the
// module's grammar, and notes whether the stream ended properly.
type anthropicStream struct{ stopped bool }

func (s *anthropicStream) feed(dst []relay.Event, ev sse.Event) ([]relay.Event, error) {
	if ev.Data == nil {
		// A comment (a keep-alive) or an event without data: nothing to read.
		return append(dst, relay.Event{Raw: ev.Raw, Info: anthropic.EventInfo{Type: anthropic.TypeOf(ev.Name)}}), nil
	}
	dst = append(dst, relay.Event{Raw: ev.Raw, Data: ev.Data})
	out := &dst[len(dst)-1]
	if err := anthropic.InspectInto(&out.Info, ev.Name, ev.Data); err != nil {
		// A client cannot parse a corrupt event: it fails the stream like a
		// broken connection, before the commit point as after it.
		return dst[:len(dst)-1], errBadEvent
	}
	if out.Info.Type == anthropic.EventMessageStop {
		s.stopped = true
	}
	return dst, nil
}

func (s *anthropicStream) close(dst []relay.Event) ([]relay.Event, error) {
	if !s.stopped {
		return dst, errTruncated
	}
	return dst, nil
}
