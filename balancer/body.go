package balancer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxDepth bounds JSON nesting; deeper bodies are rejected rather than
// walked.
const maxDepth = 512

// Peek holds what the balancer needs from a Messages request body. It is
// found by one pass over the bytes, without decoding the body.
type Peek struct {
	// Model is the requested model.
	Model string
	// Stream is the value of "stream".
	Stream bool
	// Session is the session id from metadata.user_id, if any.
	Session string
	// modelStart and modelEnd locate the model's JSON string, quotes
	// included, so it can be replaced in place.
	modelStart, modelEnd int
}

// BodyError is a request body the balancer cannot accept.
type BodyError struct{ msg string }

func (e *BodyError) Error() string { return e.msg }

func bodyErr(format string, a ...any) error { return &BodyError{msg: fmt.Sprintf(format, a...)} }

// PeekBody validates the body's JSON structure and extracts the model, the
// stream flag and the session id. Duplicate "model", "stream" or "metadata"
// keys are rejected, because providers disagree on which one wins.
func PeekBody(body []byte) (Peek, error) {
	pb := NewPeekBuilder(body)
	s := scanner{b: body}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return Peek{}, bodyErr("request body must be a JSON object")
	}
	s.i++
	for first := true; ; first = false {
		s.ws()
		if s.i >= len(s.b) {
			return Peek{}, errUnexpectedEnd
		}
		if s.b[s.i] == '}' && first {
			s.i++
			break
		}
		ks := s.i
		if err := s.str(); err != nil {
			return Peek{}, err
		}
		key := s.b[ks:s.i]
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return Peek{}, s.syntax("expected ':'")
		}
		s.i++
		s.ws()
		vs := s.i
		if err := s.value(1); err != nil {
			return Peek{}, err
		}
		pb.Field(key, vs, s.i)
		s.ws()
		if s.i >= len(s.b) {
			return Peek{}, errUnexpectedEnd
		}
		if s.b[s.i] == ',' {
			s.i++
			continue
		}
		if s.b[s.i] == '}' {
			s.i++
			break
		}
		return Peek{}, s.syntax("expected ',' or '}'")
	}
	s.ws()
	if s.i != len(s.b) {
		return Peek{}, s.syntax("unexpected data after the JSON object")
	}
	return pb.Peek()
}

// PeekBuilder builds a Peek from the top-level members of a body that a
// scanner (PeekBody's own, or another that validated the body) reports one
// by one.
type PeekBuilder struct {
	body                        []byte
	p                           Peek
	seenModel, seenStream, seen bool
	err                         error
}

// NewPeekBuilder starts a Peek of body.
func NewPeekBuilder(body []byte) *PeekBuilder { return &PeekBuilder{body: body} }

// Field takes one top-level member: its key as written (quotes included) and
// the position of its value in the body.
func (b *PeekBuilder) Field(quotedKey []byte, start, end int) {
	if b.err != nil {
		return
	}
	val := b.body[start:end]
	switch string(quotedKey) {
	case `"model"`:
		if b.seenModel {
			b.err = bodyErr("duplicate \"model\" key in request body")
			return
		}
		b.seenModel = true
		if len(val) == 0 || val[0] != '"' {
			b.err = bodyErr("model: expected a string")
			return
		}
		m, err := unquote(val)
		if err != nil {
			b.err = bodyErr("model: %v", err)
			return
		}
		b.p.Model, b.p.modelStart, b.p.modelEnd = m, start, end
	case `"stream"`:
		if b.seenStream {
			b.err = bodyErr("duplicate \"stream\" key in request body")
			return
		}
		b.seenStream = true
		switch string(val) {
		case "true":
			b.p.Stream = true
		case "false", "null":
		default:
			b.err = bodyErr("stream: expected a boolean")
		}
	case `"metadata"`:
		if b.seen {
			b.err = bodyErr("duplicate \"metadata\" key in request body")
			return
		}
		b.seen = true
		b.p.Session = sessionFromMetadata(val)
	}
}

// Peek returns the result, or why the body cannot be served.
func (b *PeekBuilder) Peek() (Peek, error) {
	if b.err != nil {
		return Peek{}, b.err
	}
	if !b.seenModel || b.p.Model == "" {
		return Peek{}, bodyErr("model: field required")
	}
	return b.p, nil
}

// WithModel returns body with the model replaced by model. The original body
// is not modified; everything but the model's value stays byte for byte.
func (p Peek) WithModel(body []byte, model string) []byte {
	if p.modelEnd == 0 {
		return body
	}
	q, _ := json.Marshal(model)
	out := make([]byte, 0, len(body)-(p.modelEnd-p.modelStart)+len(q))
	out = append(out, body[:p.modelStart]...)
	out = append(out, q...)
	return append(out, body[p.modelEnd:]...)
}

// sessionFromMetadata extracts Claude Code's session id from
// metadata.user_id, which is either a JSON document
// ({"device_id":…,"session_id":…}) or the older
// "user_<hash>_account_<uuid>_session_<uuid>" form.
func sessionFromMetadata(meta []byte) string {
	raw := findTopLevel(meta, "user_id")
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	userID, err := unquote(raw)
	if err != nil || userID == "" {
		return ""
	}
	if strings.HasPrefix(userID, "{") {
		sid := findTopLevel([]byte(userID), "session_id")
		if len(sid) < 2 || sid[0] != '"' {
			return ""
		}
		s, err := unquote(sid)
		if err != nil {
			return ""
		}
		return s
	}
	if i := strings.LastIndex(userID, "_session_"); i >= 0 {
		return userID[i+len("_session_"):]
	}
	return ""
}

func unquote(q []byte) (string, error) {
	inner := q[1 : len(q)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		if !utf8.Valid(inner) {
			return string(bytes.ToValidUTF8(inner, []byte("\uFFFD"))), nil
		}
		return string(inner), nil
	}
	// JSON escapes are not Go's: "\/" and lone surrogates are JSON only.
	var out string
	err := json.Unmarshal(q, &out)
	return out, err
}

// scanner walks JSON without building values. It checks structure
// (brackets, quotes, separators, literals) but not every detail of numbers
// and escapes: the provider is the final judge of the body.
type scanner struct {
	b []byte
	i int
}

var errUnexpectedEnd = &BodyError{msg: "request body is not valid JSON: unexpected end"}

func (s *scanner) syntax(what string) error {
	return bodyErr("request body is not valid JSON: %s at offset %d", what, s.i)
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str skips a string starting at s.i: its end is the first quote not
// preceded by an odd run of backslashes, found with the runtime's vectorised
// search.
func (s *scanner) str() error {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return s.syntax("expected a string")
	}
	start := s.i + 1
	end := start
	for {
		q := bytes.IndexByte(s.b[end:], '"')
		if q < 0 {
			return errUnexpectedEnd
		}
		end += q
		n := 0
		for end-n-1 >= start && s.b[end-n-1] == '\\' {
			n++
		}
		if n%2 == 0 {
			s.i = end + 1
			return nil
		}
		end++
	}
}

func (s *scanner) value(depth int) error {
	if depth > maxDepth {
		return bodyErr("request body is nested too deeply")
	}
	if s.i >= len(s.b) {
		return errUnexpectedEnd
	}
	switch c := s.b[s.i]; c {
	case '"':
		return s.str()
	case '{':
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '}' {
			s.i++
			return nil
		}
		for {
			s.ws()
			if err := s.str(); err != nil {
				return err
			}
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] != ':' {
				return s.syntax("expected ':'")
			}
			s.i++
			s.ws()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.i >= len(s.b) {
				return errUnexpectedEnd
			}
			if s.b[s.i] == ',' {
				s.i++
				continue
			}
			if s.b[s.i] == '}' {
				s.i++
				return nil
			}
			return s.syntax("expected ',' or '}'")
		}
	case '[':
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return nil
		}
		for {
			s.ws()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.i >= len(s.b) {
				return errUnexpectedEnd
			}
			if s.b[s.i] == ',' {
				s.i++
				continue
			}
			if s.b[s.i] == ']' {
				s.i++
				return nil
			}
			return s.syntax("expected ',' or ']'")
		}
	case 't':
		return s.lit("true")
	case 'f':
		return s.lit("false")
	case 'n':
		return s.lit("null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			start := s.i
			for s.i < len(s.b) {
				switch d := s.b[s.i]; {
				case d >= '0' && d <= '9', d == '-', d == '+', d == '.', d == 'e', d == 'E':
					s.i++
					continue
				}
				break
			}
			if s.i == start+1 && c == '-' {
				return s.syntax("invalid number")
			}
			return nil
		}
		return s.syntax(fmt.Sprintf("unexpected character %q", c))
	}
}

func (s *scanner) lit(want string) error {
	if !bytes.HasPrefix(s.b[s.i:], []byte(want)) {
		return s.syntax("invalid literal")
	}
	s.i += len(want)
	return nil
}

// findTopLevel returns the raw value of a top-level key of a JSON object, or
// nil.
func findTopLevel(body []byte, key string) []byte {
	s := scanner{b: body}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return nil
	}
	s.i++
	for {
		s.ws()
		ks := s.i
		if s.str() != nil {
			return nil
		}
		k := s.b[ks+1 : s.i-1]
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return nil
		}
		s.i++
		s.ws()
		vs := s.i
		if s.value(1) != nil {
			return nil
		}
		if string(k) == key {
			return s.b[vs:s.i]
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ',' {
			return nil
		}
		s.i++
	}
}
