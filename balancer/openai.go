package balancer

import (
	"errors"
	"net/http"

	"github.com/claude-balancer/caddy-claude-balancer/convert"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// openAICodec converts between the Anthropic Messages API and OpenAI Chat
// Completions.
type openAICodec struct{ opts *convert.Options }

func (c openAICodec) body(req *Request, model string) ([]byte, error) {
	if model == "" {
		model = req.Peek.Model
	}
	return convert.Request(req.Body, model, *c.opts)
}

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
	return &openAIStream{s: convert.NewStream(req.Peek.Model, convert.StreamOptions{InputTokens: est})}
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
type openAIStream struct{ s *convert.Stream }

func (o *openAIStream) feed(dst []sse.Event, ev sse.Event) ([]sse.Event, error) {
	out, err := o.s.Feed(dst, ev)
	return out, streamErr(err, ev.Data)
}

func (o *openAIStream) close(dst []sse.Event) ([]sse.Event, error) {
	out, err := o.s.Close(dst)
	return out, streamErr(err, nil)
}

func streamErr(err error, data []byte) error {
	var ue *convert.UpstreamError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ue):
		return &inBandError{errType: ue.Type, message: ue.Message, body: data}
	case errors.Is(err, convert.ErrTruncated):
		return errTruncated
	}
	return err
}
