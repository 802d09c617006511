package balancer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

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

// PeekBody validates the body with the module's JSON grammar and extracts
// the model, the stream flag and the session id. Duplicate "model", "stream"
// or "metadata" keys are rejected, however they are spelled, because
// providers disagree on which one wins.
func PeekBody(body []byte) (Peek, error) {
	pb := NewPeekBuilder(body)
	i := rawjson.SkipSpace(body, 0)
	w, err := rawjson.WalkObject(body, i, 0)
	if err != nil {
		if i < len(body) && body[i] == '{' {
			return Peek{}, syntaxError(err)
		}
		return Peek{}, bodyErr("request body must be a JSON object")
	}
	for {
		key, ok, err := w.Key()
		if err != nil {
			return Peek{}, syntaxError(err)
		}
		if !ok {
			break
		}
		vs := w.At()
		if _, err := w.Value(); err != nil {
			return Peek{}, syntaxError(err)
		}
		pb.Field(key, vs, w.At())
	}
	if end := rawjson.SkipSpace(body, w.At()); end != len(body) {
		return Peek{}, bodyErr("request body is not valid JSON: unexpected data after the JSON object at offset %d", end)
	}
	return pb.Peek()
}

// syntaxError words a grammar error for the client.
func syntaxError(err error) error {
	var se *rawjson.SyntaxError
	if errors.As(err, &se) && se.Reason == "JSON nested too deeply" {
		return bodyErr("request body is nested too deeply")
	}
	return bodyErr("request body is not valid JSON: %v", err)
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
	key := quotedKey[1 : len(quotedKey)-1]
	if rawjson.HasBackslash(key) {
		key = rawjson.AppendUnescaped(nil, key)
	}
	switch string(key) {
	case "model":
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
	case "stream":
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
	case "metadata":
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

// unquote returns the value of a JSON string as JSON reads it.
func unquote(q []byte) (string, error) {
	if !rawjson.IsString(q) {
		return "", errors.New("not a string")
	}
	// Names end up in logs and metric labels, which want valid UTF-8.
	return strings.ToValidUTF8(rawjson.Str(q), "\uFFFD"), nil
}

// findTopLevel returns the raw value of a top-level member of a JSON object,
// or nil. It never fails on broken input: it reads what it can.
func findTopLevel(body []byte, key string) []byte { return rawjson.Field(body, key) }
