package anthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// Synthesize returns the event stream the API would have sent for msg, a
// message JSON, one complete SSE event per element: message_start, then for
// every content block content_block_start, its deltas and content_block_stop,
// then message_delta and message_stop. Text, thinking (with its signature),
// tool inputs and citations travel in deltas; blocks that have no delta form
// (redacted thinking, server tool results, ...) arrive whole in their start
// event. Unknown members of the message and of its blocks are kept.
//
// Usage is sent whole in message_start and again in message_delta: both carry
// running totals, so a client that takes either, or lets the second replace
// the first, ends with the message's counts.
func Synthesize(msg []byte) ([][]byte, error) {
	fields, err := splitObject(msg)
	if err != nil {
		return nil, fmt.Errorf("anthropic: synthesize: %w", err)
	}
	if t, _ := lookup(fields, "type"); string(t) != `"message"` {
		return nil, fmt.Errorf("anthropic: synthesize: type is %s, not \"message\"", showRaw(t))
	}
	var blocks [][]byte
	if c, ok := lookup(fields, "content"); ok && !isNull(c) {
		if blocks, err = splitArray(c); err != nil {
			return nil, fmt.Errorf("anthropic: synthesize content: %w", err)
		}
	}

	events := make([][]byte, 0, 3*len(blocks)+3)
	var data []byte

	// message_start: the message as it stands before any output.
	start := make([]field, 0, len(fields))
	var delta []field
	usage := []byte("{}")
	for _, f := range fields {
		switch f.key {
		case "content":
			start = append(start, field{key: f.key, raw: []byte("[]")})
		case "stop_reason", "stop_sequence", "stop_details":
			start = append(start, field{key: f.key, raw: []byte("null")})
			delta = append(delta, f)
		case "container":
			start = append(start, f)
			delta = append(delta, f)
		case "usage":
			// Only an object is usage; anything else is left out rather
			// than relayed as a stream no client can assemble.
			if len(f.raw) > 0 && f.raw[0] == '{' {
				start = append(start, f)
				usage = f.raw
			}
		default:
			start = append(start, f)
		}
	}
	data = append(data[:0], `{"type":"message_start","message":`...)
	data = appendObject(data, start)
	data = append(data, '}')
	events = append(events, sse.Append(nil, "message_start", data))

	for i, raw := range blocks {
		be, err := blockEvents(i, raw)
		if err != nil {
			return nil, err
		}
		events = append(events, be...)
	}

	data = append(data[:0], `{"type":"message_delta","delta":`...)
	if _, ok := lookup(delta, "stop_reason"); !ok {
		delta = append(delta, field{key: "stop_reason", raw: []byte("null")})
	}
	if _, ok := lookup(delta, "stop_sequence"); !ok {
		delta = append(delta, field{key: "stop_sequence", raw: []byte("null")})
	}
	data = appendObject(data, delta)
	data = append(data, `,"usage":`...)
	data = append(data, usage...)
	data = append(data, '}')
	events = append(events, sse.Append(nil, "message_delta", data))
	events = append(events, sse.Append(nil, "message_stop", []byte(`{"type":"message_stop"}`)))
	return events, nil
}

// blockEvents returns the events of content block i.
func blockEvents(i int, raw []byte) ([][]byte, error) {
	fields, err := splitObject(raw)
	if err != nil {
		return nil, fmt.Errorf("anthropic: synthesize content block %d: %w", i, err)
	}
	var typ string
	if t, ok := lookup(fields, "type"); ok {
		_ = json.Unmarshal(t, &typ)
	}
	var deltas [][]byte
	startFields := fields
	emptyString := []byte(`""`)
	// deltaField looks up a field a delta carries: it must be a string (or
	// null), or no client can assemble the stream.
	deltaField := func(name string) ([]byte, bool, error) {
		v, ok := lookup(fields, name)
		if ok && !isNull(v) && (len(v) == 0 || v[0] != '"') {
			return nil, false, fmt.Errorf("anthropic: synthesize content block %d: %s is not a string", i, name)
		}
		return v, ok, nil
	}

	switch typ {
	case "text":
		t, hasText, err := deltaField("text")
		if err != nil {
			return nil, err
		}
		if c, ok := lookup(fields, "citations"); ok && !isNull(c) {
			cites, err := splitArray(c)
			if err != nil {
				return nil, fmt.Errorf("anthropic: synthesize citations of block %d: %w", i, err)
			}
			if len(cites) > 0 {
				startFields = replace(startFields, "citations", []byte("[]"))
				for _, c := range cites {
					deltas = append(deltas, deltaData(i, `{"type":"citations_delta","citation":`, c))
				}
			}
		}
		if hasText && !isEmptyString(t) {
			startFields = replace(startFields, "text", emptyString)
			deltas = append(deltas, deltaData(i, `{"type":"text_delta","text":`, t))
		}
	case "thinking":
		t, hasThinking, err := deltaField("thinking")
		if err != nil {
			return nil, err
		}
		s, hasSignature, err := deltaField("signature")
		if err != nil {
			return nil, err
		}
		if hasThinking && !isEmptyString(t) {
			startFields = replace(startFields, "thinking", emptyString)
			deltas = append(deltas, deltaData(i, `{"type":"thinking_delta","thinking":`, t))
		}
		if hasSignature && !isEmptyString(s) {
			startFields = replace(startFields, "signature", emptyString)
			deltas = append(deltas, deltaData(i, `{"type":"signature_delta","signature":`, s))
		}
	case "tool_use", "server_tool_use", "mcp_tool_use":
		if in, ok := lookup(fields, "input"); ok {
			var compact bytes.Buffer
			if err := json.Compact(&compact, in); err != nil {
				return nil, fmt.Errorf("anthropic: synthesize input of block %d: %w", i, err)
			}
			if compact.String() != "{}" {
				startFields = replace(startFields, "input", []byte("{}"))
				deltas = append(deltas, deltaData(i, `{"type":"input_json_delta","partial_json":`,
					appendString(nil, compact.String())))
			}
		}
	}

	idx := strconv.Itoa(i)
	events := make([][]byte, 0, len(deltas)+2)
	data := []byte(`{"type":"content_block_start","index":` + idx + `,"content_block":`)
	data = appendObject(data, startFields)
	data = append(data, '}')
	events = append(events, sse.Append(nil, "content_block_start", data))
	for _, d := range deltas {
		events = append(events, sse.Append(nil, "content_block_delta", d))
	}
	events = append(events, sse.Append(nil, "content_block_stop",
		[]byte(`{"type":"content_block_stop","index":`+idx+`}`)))
	return events, nil
}

// deltaData returns a content_block_delta payload: prefix opens the delta
// object and value completes its last member.
func deltaData(i int, prefix string, value []byte) []byte {
	data := make([]byte, 0, 64+len(prefix)+len(value))
	data = append(data, `{"type":"content_block_delta","index":`...)
	data = strconv.AppendInt(data, int64(i), 10)
	data = append(data, `,"delta":`...)
	data = append(data, prefix...)
	data = append(data, value...)
	return append(data, '}', '}')
}

// replace returns fields with key set to raw, leaving fields itself alone.
func replace(fields []field, key string, raw []byte) []field {
	out := make([]field, len(fields))
	copy(out, fields)
	return set(out, key, raw)
}

func isEmptyString(raw []byte) bool { return string(bytes.TrimSpace(raw)) == `""` }

func showRaw(raw []byte) string {
	if raw == nil {
		return "missing"
	}
	return string(raw)
}
