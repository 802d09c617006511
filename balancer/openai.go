package balancer

import (
	"bytes"
	"errors"
	"net/http"

	"github.com/claude-balancer/caddy-claude-balancer/convert"
	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/bufpool"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// openAICodec converts between the Anthropic Messages API and OpenAI Chat
// Completions.
type openAICodec struct{ opts *convert.Options }

func (c openAICodec) body(req *Request, model string) ([]byte, error) {
	if model == "" {
		model = req.Peek.Model
	}
	// The converted body is about as large as the client's: a buffer lent
	// by the pool, given back once the attempt lets go of it.
	buf := bufpool.Get(len(req.Body) + len(req.Body)/8 + 512)
	var out []byte
	var err error
	if req.Peek.Valid() {
		// Intake validated the body: the converter reads it once.
		out, err = convert.AppendValidRequest(buf, req.Body, model, *c.opts)
	} else {
		out, err = convert.AppendRequest(buf, req.Body, model, *c.opts)
	}
	if err != nil {
		bufpool.Put(buf)
	}
	return out, err
}

// ownsBody is true: body converts into a buffer lent by the pool.
func (openAICodec) ownsBody() bool { return true }

func (openAICodec) header(h http.Header, req *Request) {
	h.Set("Content-Type", "application/json")
	if req.Peek.Stream {
		h.Set("Accept", "text/event-stream")
	} else {
		h.Set("Accept", "application/json")
	}
	h.Set("User-Agent", "claude_balancer")
}

func (openAICodec) json(body []byte, req *Request) ([]byte, error) {
	out, err := convert.Response(body, req.Peek.Model)
	var ue *convert.UpstreamError
	if errors.As(err, &ue) {
		return nil, &inBandError{errType: ue.Type, message: ue.Message, body: body}
	}
	return out, err
}

func (openAICodec) stream(req *Request) streamDecoder {
	var est int64
	if req.EstimateTokens != nil {
		est = req.EstimateTokens(req.Body)
	}
	s := convert.NewStream(req.Peek.Model, convert.StreamOptions{InputTokens: est})
	// The relay hands each event on before the next feed.
	s.Borrow()
	return &openAIStream{s: s}
}

func (openAICodec) errorInfo(status int, body []byte) (string, string, bool) {
	if _, _, ok := apierr.Parse(body); !ok {
		return "", "", false
	}
	typ, msg := convert.ErrorFromOpenAI(status, body)
	return typ, msg, true
}

func (openAICodec) clientHeaders() bool { return false }

// openAIStream translates Chat Completions chunks into Anthropic events.
// The converter names every event it makes; only the two that carry usage
// are read for it.
type openAIStream struct {
	s   *convert.Stream
	tmp []sse.Event
}

func (o *openAIStream) feed(dst []relay.Event, ev sse.Event) ([]relay.Event, error) {
	out, err := o.s.Feed(o.tmp[:0], ev)
	o.tmp = out
	return o.events(dst, out), streamErr(err, ev.Data)
}

func (o *openAIStream) close(dst []relay.Event) ([]relay.Event, error) {
	out, err := o.s.Close(o.tmp[:0])
	o.tmp = out
	return o.events(dst, out), streamErr(err, nil)
}

func (o *openAIStream) events(dst []relay.Event, evs []sse.Event) []relay.Event {
	for _, ev := range evs {
		info := anthropic.EventInfo{Type: anthropic.TypeOf(ev.Name)}
		switch info.Type {
		case anthropic.EventMessageStart, anthropic.EventMessageDelta, anthropic.EventError:
			if in, err := anthropic.Inspect(ev.Name, ev.Data); err == nil {
				info = in
			}
		}
		dst = append(dst, relay.Event{Raw: ev.Raw, Data: ev.Data, Info: info})
	}
	return dst
}

func streamErr(err error, data []byte) error {
	if err == nil {
		// Before the errors.As below: its target would be allocated for
		// every chunk.
		return nil
	}
	var ue *convert.UpstreamError
	switch {
	case errors.As(err, &ue):
		// The upstream event is lent: the error keeps a copy.
		return &inBandError{errType: ue.Type, message: ue.Message, body: bytes.Clone(data)}
	case errors.Is(err, convert.ErrTruncated):
		return errTruncated
	}
	return err
}
