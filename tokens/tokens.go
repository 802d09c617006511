// Package tokens counts the input tokens of an Anthropic Messages request locally, as
// POST /v1/messages/count_tokens would: when no upstream can answer it, and for the input
// tokens of an OpenAI-compatible provider's stream, which reports them only at its end.
//
// Text is counted with a tiktoken encoding (loaded from the tables embedded in tiktoken-go-loader, never
// downloaded) and scaled by a calibration factor towards Claude's own tokenizer; images are estimated from their
// pixel size with Anthropic's published rule; framing costs are small documented constants. Counts of content
// blocks are cached by a hash of their raw bytes, so a conversation that grows by one message costs only the
// new message on the next count.
package tokens

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// Defaults of Options; README.md says how each was chosen.
const (
	DefaultEncoding           = EncodingCL100K
	DefaultCalibration        = 1.35
	DefaultCacheSize          = 1 << 16
	DefaultDocumentPageTokens = 3000
)

// Framing costs, in Claude tokens (not scaled by the calibration). Anthropic does not publish them; they are
// set from its count_tokens examples (a system prompt and one short user message count 7 more than their text)
// and round up where unsure, since a low count makes a client compact too late.
const (
	requestOverhead = 4 // start of the prompt and the assistant turn it ends with
	messageOverhead = 3 // each message's role marker
	// toolSystemPrompt is the system prompt the API adds when tools are defined: 346 tokens for tool_choice
	// auto or none, 313 for any or tool on current models; the larger is always used.
	toolSystemPrompt   = 346
	toolDefOverhead    = 10 // wrapping of each tool definition
	toolUseOverhead    = 12 // wrapping of each tool call
	toolResultOverhead = 8  // wrapping of each tool result
	// unknownDocumentPages is assumed for a document given by URL or file id, whose pages cannot be counted.
	unknownDocumentPages = 10
	// redactedBytesPerToken estimates redacted thinking from its encrypted payload, which is a little larger
	// than the text it hides: about four characters of text make a token.
	redactedBytesPerToken = 4
)

// Options configures a Counter. The zero value gives the defaults.
type Options struct {
	// Encoding is the tiktoken encoding that counts text: "cl100k_base" (default, with a fast built-in
	// implementation) or another encoding tiktoken-go knows, such as "o200k_base" (counted by tiktoken-go
	// itself, about 15 times slower).
	Encoding string
	// Calibration scales text tokens towards Claude's tokenizer, which needs more tokens than cl100k_base for
	// the same English text and code. Default 1.35; it must be positive.
	Calibration float64
	// CacheSize bounds the number of content blocks whose counts are kept (least recently used are dropped).
	// Default 65536, about 60 conversations of 200k tokens; it must not be negative.
	CacheSize int
	// ImageTokens is the count of an image whose size cannot be read: a URL or file image, or data that is not
	// PNG, JPEG, GIF or WebP. Default: ImageMaxTokens, the most any image costs.
	ImageTokens int
	// ImageMaxLongEdge is the long edge in pixels beyond which the API scales an image down. Default 1568.
	ImageMaxLongEdge int
	// ImageMaxTokens is the cost of the largest image after scaling. Default 1600.
	ImageMaxTokens int
	// DocumentPageTokens is the cost of one PDF page (its text and its image). Default 3000, the top of
	// Anthropic's published 1,500 to 3,000 per page.
	DocumentPageTokens int
}

// Counter counts request tokens. It is safe for concurrent use.
type Counter struct {
	enc         encoder
	calibration float64
	imageTokens int
	imageEdge   int
	imageMax    int
	pageTokens  int
	cache       *lru
	seed        maphash.Seed
}

// New returns a Counter for opt, loading its encoding if no Counter has yet (the tables are shared).
func New(opt Options) (*Counter, error) {
	if opt.Encoding == "" {
		opt.Encoding = DefaultEncoding
	}
	switch {
	case opt.Calibration < 0 || math.IsNaN(opt.Calibration) || math.IsInf(opt.Calibration, 0):
		return nil, fmt.Errorf("calibration %v: must be a positive number", opt.Calibration)
	case opt.CacheSize < 0:
		return nil, fmt.Errorf("cache size %d: must not be negative", opt.CacheSize)
	case opt.ImageTokens < 0 || opt.ImageMaxLongEdge < 0 || opt.ImageMaxTokens < 0 || opt.DocumentPageTokens < 0:
		return nil, errors.New("image and document costs must not be negative")
	}
	enc, err := loadEncoder(opt.Encoding)
	if err != nil {
		return nil, err
	}
	c := &Counter{
		enc:         enc,
		calibration: or(opt.Calibration, DefaultCalibration),
		imageEdge:   or(opt.ImageMaxLongEdge, DefaultImageMaxLongEdge),
		imageMax:    or(opt.ImageMaxTokens, DefaultImageMaxTokens),
		pageTokens:  or(opt.DocumentPageTokens, DefaultDocumentPageTokens),
		cache:       newLRU(or(opt.CacheSize, DefaultCacheSize)),
		seed:        maphash.MakeSeed(),
	}
	c.imageTokens = or(opt.ImageTokens, c.imageMax)
	return c, nil
}

func or[T int | float64](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// ErrInvalidRequest is matched (errors.Is) by every error Count returns for a body the API would reject with
// 400 invalid_request_error; any other error is an internal failure.
var ErrInvalidRequest = errors.New("invalid request")

// InvalidRequestError describes what is wrong with a count_tokens body. Message is meant for the client, as the
// message of an invalid_request_error.
type InvalidRequestError struct {
	Message string
}

func (e *InvalidRequestError) Error() string { return e.Message }

// Is makes errors.Is(err, ErrInvalidRequest) true.
func (e *InvalidRequestError) Is(target error) bool { return target == ErrInvalidRequest }

func invalid(format string, args ...any) error {
	return &InvalidRequestError{Message: fmt.Sprintf(format, args...)}
}

// Count returns the input tokens of body, an Anthropic /v1/messages/count_tokens (or /v1/messages) request.
// The body must be a JSON object with a non-empty string model and a non-empty messages array; otherwise the
// error matches ErrInvalidRequest. Fields that do not count (max_tokens, metadata, stream, ...) are ignored.
func (c *Counter) Count(body []byte) (int, error) {
	w := walker{c: c}
	total, err := w.request(body)
	if err != nil {
		var se *rawjson.SyntaxError
		if errors.As(err, &se) {
			return 0, &InvalidRequestError{Message: "invalid JSON: " + se.Error()}
		}
		return 0, err
	}
	text := int(math.Ceil(float64(total.text) * c.calibration))
	return text + total.fixed, nil
}
