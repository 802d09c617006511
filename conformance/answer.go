package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// answer is a successful reply assembled into the message Claude Code would
// build from it.
type answer struct {
	msg message
	// blocks are the message's content blocks as JSON, to send back.
	blocks []json.RawMessage
	// pieces are the input_json_delta pieces of each block, by index.
	pieces map[int][]string
	// stream reports that the answer was an event stream.
	stream bool
}

type message struct {
	Content    []block                    `json:"content"`
	StopReason string                     `json:"stop_reason"`
	Usage      map[string]json.RawMessage `json:"usage"`
}

type block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	Thinking  string          `json:"thinking"`
	Signature string          `json:"signature"`
	Data      string          `json:"data"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
}

// text returns the message's text blocks joined.
func (m *message) text() string {
	var b strings.Builder
	for _, c := range m.Content {
		if c.Type == "text" {
			b.WriteString(c.Text)
		}
	}
	return b.String()
}

// find returns the index of the first block of a type, or -1.
func (m *message) find(typ string) int {
	for i, c := range m.Content {
		if c.Type == typ {
			return i
		}
	}
	return -1
}

// failure describes a reply that is not a usable answer.
type failure struct {
	status int
	detail string
	err    string
}

// read assembles a reply. It fails on an error status, a stream that ended
// in an error or early, and anything the client could not assemble.
func read(r Reply) (*answer, *failure) {
	if r.Status < 200 || r.Status > 299 {
		msg := r.Error
		if msg == "" {
			msg = errorMessage(r.Body)
		}
		if r.Status == 0 {
			return nil, &failure{detail: "no answer", err: msg}
		}
		return nil, &failure{status: r.Status, detail: fmt.Sprintf("HTTP %d", r.Status), err: msg}
	}
	if r.StreamError != "" {
		return nil, &failure{status: r.Status, detail: "the stream failed after it started", err: r.StreamError}
	}
	a := &answer{pieces: map[int][]string{}, stream: r.Stream}
	raw := r.Body
	if r.Stream {
		var err error
		if raw, err = a.assemble(r.Body); err != nil {
			return nil, &failure{status: r.Status, detail: "the stream does not assemble into a message", err: err.Error()}
		}
	}
	var shape struct {
		Content []json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(raw, &a.msg); err != nil {
		return nil, &failure{status: r.Status, detail: "the answer is not a message", err: err.Error()}
	}
	if err := json.Unmarshal(raw, &shape); err != nil {
		return nil, &failure{status: r.Status, detail: "the answer is not a message", err: err.Error()}
	}
	a.blocks = shape.Content
	return a, nil
}

// assemble reads an event stream as Claude Code's SDK would, noting the
// tool argument pieces, and returns the message it describes.
func (a *answer) assemble(stream []byte) ([]byte, error) {
	var acc anthropic.Accumulator
	rd := sse.NewReader(bytes.NewReader(stream))
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return nil, err
		}
		if !ev.Empty() {
			if aerr := acc.Add(ev.Name, ev.Data); aerr != nil {
				return nil, aerr
			}
			a.notePiece(ev.Data)
		}
		if err != nil {
			break
		}
	}
	return acc.Message()
}

func (a *answer) notePiece(data []byte) {
	var ev struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
		Delta struct {
			Type        string `json:"type"`
			PartialJSON string `json:"partial_json"`
		} `json:"delta"`
	}
	if json.Unmarshal(data, &ev) != nil || ev.Type != "content_block_delta" || ev.Delta.Type != "input_json_delta" {
		return
	}
	a.pieces[ev.Index] = append(a.pieces[ev.Index], ev.Delta.PartialJSON)
}

// errorMessage reads the message of an Anthropic error envelope, or returns
// the body itself, shortened.
func errorMessage(body []byte) string {
	var env struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error.Message != "" {
		return env.Error.Type + ": " + env.Error.Message
	}
	return shorten(strings.TrimSpace(string(body)), 200)
}

// shorten cuts s to at most n runes, marking the cut.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// isObject reports whether b is one valid JSON object.
func isObject(b []byte) bool {
	var v map[string]json.RawMessage
	return json.Unmarshal(b, &v) == nil && v != nil
}
