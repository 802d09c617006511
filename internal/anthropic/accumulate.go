package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// ErrIncomplete is returned by Message when the stream ended before
// message_stop.
var ErrIncomplete = errors.New("anthropic: stream ended before message_stop")

// StreamError is an "event: error" frame met in a stream: the API's way of
// failing a response after it started.
type StreamError struct {
	// Type is the Anthropic error type, e.g. "overloaded_error".
	Type string
	// Message is the error's message.
	Message string
	// Body is the frame's data: the error envelope as the upstream sent it.
	Body []byte
}

func (e *StreamError) Error() string {
	return fmt.Sprintf("anthropic: stream failed: %s: %s", e.Type, e.Message)
}

// Accumulator assembles the message an event stream describes. Feed it every
// event in order with Add, then call Message. The zero value is ready to use.
type Accumulator struct {
	msg     []field
	usage   []field
	blocks  []*block
	started bool
	stopped bool
	err     *StreamError
}

// block is one content block being assembled. The start event's members are
// kept in order; the streamed parts are collected apart and written over their
// members at the end.
type block struct {
	fields       []field
	text         []byte
	thinking     []byte
	signature    []byte
	input        []byte
	citations    [][]byte
	hasText      bool
	hasThinking  bool
	hasSignature bool
	hasInput     bool
	hasCitations bool
}

// streamEvent holds every member any stream event type uses.
type streamEvent struct {
	Type         string          `json:"type"`
	Index        *int            `json:"index"`
	Message      json.RawMessage `json:"message"`
	ContentBlock json.RawMessage `json:"content_block"`
	Delta        json.RawMessage `json:"delta"`
	Usage        json.RawMessage `json:"usage"`
	Error        *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

type blockDelta struct {
	Type        string          `json:"type"`
	Text        string          `json:"text"`
	Thinking    string          `json:"thinking"`
	Signature   string          `json:"signature"`
	PartialJSON string          `json:"partial_json"`
	Citation    json.RawMessage `json:"citation"`
}

// Add applies one event. name is the event's "event:" field (it may be
// empty); data is its data. Events after message_stop or an error are ignored.
// An error frame makes Add return a *StreamError, and so does every later call
// of Message.
func (a *Accumulator) Add(name string, data []byte) error {
	if a.stopped || a.err != nil {
		return nil
	}
	var ev streamEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		if name == "error" {
			a.err = &StreamError{Type: "api_error", Message: string(data), Body: bytes.Clone(data)}
			return a.err
		}
		return fmt.Errorf("anthropic: decode %s event: %w", name, err)
	}
	if name == "error" || ev.Type == "error" {
		a.err = &StreamError{Type: "api_error", Body: bytes.Clone(data)}
		if ev.Error != nil {
			a.err.Type, a.err.Message = ev.Error.Type, ev.Error.Message
		}
		return a.err
	}
	if !a.started && ev.Type != "message_start" && ev.Type != "ping" && ev.Type != "" {
		return fmt.Errorf("anthropic: %s event before message_start", ev.Type)
	}
	switch ev.Type {
	case "message_start":
		return a.start(ev.Message)
	case "content_block_start":
		return a.blockStart(ev.Index, ev.ContentBlock)
	case "content_block_delta":
		return a.blockDelta(ev.Index, ev.Delta)
	case "content_block_stop":
		if _, err := a.block(ev.Type, ev.Index); err != nil {
			return err
		}
	case "message_delta":
		return a.messageDelta(ev.Delta, ev.Usage)
	case "message_stop":
		a.stopped = true
	}
	return nil
}

// Done reports whether message_stop has arrived.
func (a *Accumulator) Done() bool { return a.stopped }

// Message returns the assembled message JSON: the message of message_start with
// its content, stop reason and usage filled in. It fails with a *StreamError
// when the stream carried an error frame and with ErrIncomplete when it ended
// before message_stop.
func (a *Accumulator) Message() ([]byte, error) {
	if a.err != nil {
		return nil, a.err
	}
	if !a.started || !a.stopped {
		return nil, ErrIncomplete
	}
	out := make([]byte, 0, a.size())
	out = append(out, '{')
	wroteContent := false
	for i, f := range a.msg {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendString(out, f.key)
		out = append(out, ':')
		switch f.key {
		case "content":
			out = a.appendContent(out)
			wroteContent = true
		case "usage":
			out = appendObject(out, a.usage)
		default:
			out = append(out, f.raw...)
		}
	}
	if !wroteContent {
		if len(a.msg) > 0 {
			out = append(out, ',')
		}
		out = append(out, `"content":`...)
		out = a.appendContent(out)
	}
	return append(out, '}'), nil
}

// Accumulate reads a whole event stream from r and returns the message it
// describes.
func Accumulate(r io.Reader) ([]byte, error) {
	var a Accumulator
	rd := sse.NewReader(r)
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("anthropic: read stream: %w", err)
		}
		if !ev.Empty() {
			if aerr := a.Add(ev.Name, ev.Data); aerr != nil {
				return nil, aerr
			}
		}
		if err != nil {
			break
		}
	}
	return a.Message()
}

func (a *Accumulator) start(msg []byte) error {
	if a.started {
		return errors.New("anthropic: second message_start")
	}
	fields, err := splitObject(msg)
	if err != nil {
		return fmt.Errorf("anthropic: message_start: %w", err)
	}
	if u, ok := lookup(fields, "usage"); ok && !isNull(u) {
		if a.usage, err = splitObject(u); err != nil {
			return fmt.Errorf("anthropic: message_start usage: %w", err)
		}
	}
	a.msg = fields
	a.started = true
	return nil
}

func (a *Accumulator) blockStart(index *int, cb []byte) error {
	if index == nil || *index != len(a.blocks) {
		return fmt.Errorf("anthropic: content_block_start for index %s, want %d", showIndex(index), len(a.blocks))
	}
	fields, err := splitObject(cb)
	if err != nil {
		return fmt.Errorf("anthropic: content_block_start %d: %w", *index, err)
	}
	b := &block{fields: fields}
	// Deltas extend what the start event carried, which is normally empty.
	for _, f := range fields {
		var s string
		switch f.key {
		case "text":
			if json.Unmarshal(f.raw, &s) == nil {
				b.text = append(b.text, s...)
			}
		case "thinking":
			if json.Unmarshal(f.raw, &s) == nil {
				b.thinking = append(b.thinking, s...)
			}
		case "signature":
			if json.Unmarshal(f.raw, &s) == nil {
				b.signature = append(b.signature, s...)
			}
		case "citations":
			if arr, err := splitArray(f.raw); err == nil {
				b.citations = arr
			}
		}
	}
	a.blocks = append(a.blocks, b)
	return nil
}

func (a *Accumulator) block(typ string, index *int) (*block, error) {
	if index == nil || *index < 0 || *index >= len(a.blocks) {
		return nil, fmt.Errorf("anthropic: %s for index %s with %d blocks started", typ, showIndex(index), len(a.blocks))
	}
	return a.blocks[*index], nil
}

func (a *Accumulator) blockDelta(index *int, raw []byte) error {
	b, err := a.block("content_block_delta", index)
	if err != nil {
		return err
	}
	var d blockDelta
	if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("anthropic: content_block_delta %d: %w", *index, err)
	}
	switch d.Type {
	case "text_delta":
		b.text = append(b.text, d.Text...)
		b.hasText = true
	case "thinking_delta":
		b.thinking = append(b.thinking, d.Thinking...)
		b.hasThinking = true
	case "signature_delta":
		b.signature = append(b.signature, d.Signature...)
		b.hasSignature = true
	case "input_json_delta":
		b.input = append(b.input, d.PartialJSON...)
		b.hasInput = true
	case "citations_delta":
		if len(d.Citation) > 0 {
			b.citations = append(b.citations, d.Citation)
			b.hasCitations = true
		}
	}
	return nil
}

func (a *Accumulator) messageDelta(delta, usage []byte) error {
	if len(delta) > 0 && !isNull(delta) {
		fields, err := splitObject(delta)
		if err != nil {
			return fmt.Errorf("anthropic: message_delta: %w", err)
		}
		// A null in a delta means "no news", as in the SDK's accumulator.
		for _, f := range fields {
			if !isNull(f.raw) {
				a.msg = set(a.msg, f.key, f.raw)
			}
		}
	}
	if len(usage) > 0 && !isNull(usage) {
		fields, err := splitObject(usage)
		if err != nil {
			return fmt.Errorf("anthropic: message_delta usage: %w", err)
		}
		// Usage counts are running totals: later values replace earlier ones.
		for _, f := range fields {
			if !isNull(f.raw) {
				a.usage = set(a.usage, f.key, f.raw)
			}
		}
		if _, ok := lookup(a.msg, "usage"); !ok {
			a.msg = append(a.msg, field{key: "usage"})
		}
	}
	return nil
}

func (a *Accumulator) appendContent(dst []byte) []byte {
	dst = append(dst, '[')
	for i, b := range a.blocks {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = b.appendJSON(dst)
	}
	return append(dst, ']')
}

func (b *block) appendJSON(dst []byte) []byte {
	fields := b.fields
	if b.hasText {
		fields = set(fields, "text", appendString(nil, string(b.text)))
	}
	if b.hasThinking {
		fields = set(fields, "thinking", appendString(nil, string(b.thinking)))
	}
	if b.hasSignature {
		fields = set(fields, "signature", appendString(nil, string(b.signature)))
	}
	if b.hasInput && len(bytes.TrimSpace(b.input)) > 0 {
		var compact bytes.Buffer
		if json.Compact(&compact, b.input) == nil {
			fields = set(fields, "input", compact.Bytes())
		} else {
			// A tool call cut off mid-way has no usable input.
			fields = set(fields, "input", []byte("{}"))
		}
	}
	if b.hasCitations {
		arr := []byte{'['}
		for i, c := range b.citations {
			if i > 0 {
				arr = append(arr, ',')
			}
			arr = append(arr, c...)
		}
		fields = set(fields, "citations", append(arr, ']'))
	}
	return appendObject(dst, fields)
}

func (a *Accumulator) size() int {
	n := 256
	for _, f := range a.msg {
		n += len(f.key) + len(f.raw) + 4
	}
	for _, b := range a.blocks {
		n += len(b.text) + len(b.thinking) + len(b.signature) + len(b.input) + 128
		for _, f := range b.fields {
			n += len(f.key) + len(f.raw) + 4
		}
	}
	return n
}

func showIndex(i *int) string {
	if i == nil {
		return "none"
	}
	return fmt.Sprint(*i)
}
