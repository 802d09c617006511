// Package anthropic converts a Messages API answer between its two shapes: the
// event stream a streaming request gets (message_start, content blocks,
// message_delta, message_stop) and the message JSON a non-streaming request
// gets. Accumulate folds a stream into a message; Synthesize unfolds a message
// into a stream. Both keep fields they do not know, and keep thinking
// signatures, tool inputs and usage intact, so a client cannot tell a converted
// answer from one the API produced in its own mode.
//
// It also reads what the relay needs of each stream event (event.go): its
// type, usage, stop reason and error (Inspect, EventInfo), and the runs of
// plain text deltas a burst is mostly made of (PlainDeltas).
package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// field is one member of a JSON object, in source order, with its value kept
// as raw JSON so that members we do not interpret pass through untouched.
type field struct {
	key string
	raw []byte
}

// splitObject returns the members of the JSON object b in order.
func splitObject(b []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("read object: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	var fields []field
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("read object key: %w", err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("read value of %q: %w", key, err)
		}
		fields = append(fields, field{key: key, raw: raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("read object end: %w", err)
	}
	return fields, nil
}

// splitArray returns the elements of the JSON array b.
func splitArray(b []byte) ([][]byte, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(b, &elems); err != nil {
		return nil, fmt.Errorf("read array: %w", err)
	}
	out := make([][]byte, len(elems))
	for i, e := range elems {
		out[i] = e
	}
	return out, nil
}

func lookup(fields []field, key string) ([]byte, bool) {
	for _, f := range fields {
		if f.key == key {
			return f.raw, true
		}
	}
	return nil, false
}

// set replaces the value of key, or appends the member when it is absent.
func set(fields []field, key string, raw []byte) []field {
	for i := range fields {
		if fields[i].key == key {
			fields[i].raw = raw
			return fields
		}
	}
	return append(fields, field{key: key, raw: raw})
}

func isNull(raw []byte) bool { return string(bytes.TrimSpace(raw)) == "null" }

// appendObject writes fields as a JSON object.
func appendObject(dst []byte, fields []field) []byte {
	dst = append(dst, '{')
	for i, f := range fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, f.key)
		dst = append(dst, ':')
		dst = append(dst, f.raw...)
	}
	return append(dst, '}')
}

// appendString writes s as a JSON string. Unlike encoding/json it leaves <, >
// and & alone, as the API does, so text keeps its bytes.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				dst = append(dst, s[start:i]...)
				dst = append(dst, `\ufffd`...)
				i++
				start = i
			case r == '\u2028' || r == '\u2029':
				dst = append(dst, s[start:i]...)
				dst = append(dst, `\u202`...)
				dst = append(dst, hex[r&0xf])
				i += size
				start = i
			default:
				i += size
			}
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
