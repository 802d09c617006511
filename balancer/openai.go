package balancer

import (
	"errors"
	"net/http"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// openAICodec converts between the Anthropic Messages API and OpenAI Chat
// Completions.
type openAICodec struct{ opts OpenAIOptions }

var errNoConverter = errors.New("openai providers are not supported by this build")

func (openAICodec) body(*Request, string) ([]byte, error)        { return nil, errNoConverter }
func (openAICodec) header(http.Header, *Request)                 {}
func (openAICodec) json([]byte, *Request) ([]byte, error)        { return nil, errNoConverter }
func (openAICodec) stream(*Request) streamDecoder                { return nil }
func (openAICodec) errorInfo(int, []byte) (string, string, bool) { return "", "", false }
func (openAICodec) clientHeaders() bool                          { return false }

var _ = sse.Event{}
