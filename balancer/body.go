package balancer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
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
	var p Peek
	s := scanner{b: body}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return p, bodyErr("request body must be a JSON object")
	}
	s.i++
	var seenModel, seenStream, seenMeta bool
	for first := true; ; first = false {
		s.ws()
		if s.i >= len(s.b) {
			return p, bodyErr("request body is not valid JSON: unexpected end")
		}
		if s.b[s.i] == '}' && first {
			s.i++
			break
		}
		ks := s.i
		if err := s.str(); err != nil {
			return p, err
		}
		key := s.b[ks+1 : s.i-1]
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return p, s.syntax("expected ':'")
		}
		s.i++
		s.ws()
		vs := s.i
		if err := s.value(1); err != nil {
			return p, err
		}
		val := s.b[vs:s.i]
		switch string(key) {
		case "model":
			if seenModel {
				return p, bodyErr("duplicate \"model\" key in request body")
			}
			seenModel = true
			if val[0] != '"' {
				return p, bodyErr("model: expected a string")
			}
			m, err := unquote(val)
			if err != nil {
				return p, bodyErr("model: %v", err)
			}
			p.Model, p.modelStart, p.modelEnd = m, vs, s.i
		case "stream":
			if seenStream {
				return p, bodyErr("duplicate \"stream\" key in request body")
			}
			seenStream = true
			switch string(val) {
			case "true":
				p.Stream = true
			case "false", "null":
			default:
				return p, bodyErr("stream: expected a boolean")
			}
		case "metadata":
			if seenMeta {
				return p, bodyErr("duplicate \"metadata\" key in request body")
			}
			seenMeta = true
			p.Session = sessionFromMetadata(val)
		}
		s.ws()
		if s.i >= len(s.b) {
			return p, bodyErr("request body is not valid JSON: unexpected end")
		}
		if s.b[s.i] == ',' {
			s.i++
			continue
		}
		if s.b[s.i] == '}' {
			s.i++
			break
		}
		return p, s.syntax("expected ',' or '}'")
	}
	s.ws()
	if s.i != len(s.b) {
		return p, s.syntax("unexpected data after the JSON object")
	}
	if !seenModel || p.Model == "" {
		return p, bodyErr("model: field required")
	}
	return p, nil
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
	var m struct {
		UserID string `json:"user_id"`
	}
	if meta[0] != '{' || json.Unmarshal(meta, &m) != nil || m.UserID == "" {
		return ""
	}
	if strings.HasPrefix(m.UserID, "{") {
		var u struct {
			SessionID string `json:"session_id"`
		}
		if json.Unmarshal([]byte(m.UserID), &u) == nil {
			return u.SessionID
		}
		return ""
	}
	if i := strings.LastIndex(m.UserID, "_session_"); i >= 0 {
		return m.UserID[i+len("_session_"):]
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
	return strconv.Unquote(string(q))
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

// str skips a string starting at s.i.
func (s *scanner) str() error {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return s.syntax("expected a string")
	}
	s.i++
	for {
		j := bytes.IndexByte(s.b[s.i:], '"')
		if j < 0 {
			return errUnexpectedEnd
		}
		seg := s.b[s.i : s.i+j]
		if k := bytes.IndexByte(seg, '\\'); k >= 0 {
			// Step past the escape and look again.
			s.i += k + 2
			if s.i > len(s.b) {
				return errUnexpectedEnd
			}
			continue
		}
		s.i += j + 1
		return nil
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
