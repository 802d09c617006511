// Package intake reads a Messages request body once: one walk over its bytes
// validates it with the module's grammar (internal/rawjson), finds what the
// balancer needs (model, stream, session, this module's own thinking
// signatures) and, for de-duplication, a digest that identical bodies share
// and, when asked (Options.Sign), the signature too (a hash of the body in
// canonical form, Read); otherwise the signature is left for when a request
// with the same digest is in flight (Prepare, ticket.go), or for the
// handler, which signs a stream before its body goes back to the pool. The
// balancer walks a body again only to change it (this module's own thinking
// blocks taken out, a provider's fold_system). Large top-level
// values a client sent before (its tools and system prompt) are recognised
// by their bytes and not walked again (cache.go).
package intake

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/zeebo/xxh3"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// Error is a request body the balancer cannot accept.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

func errorf(format string, a ...any) error { return &Error{msg: fmt.Sprintf(format, a...)} }

// grammarError words a grammar error for the client.
func grammarError(err error) error {
	var se *rawjson.SyntaxError
	if errors.As(err, &se) && se.Reason == "JSON nested too deeply" {
		return errorf("request body is nested too deeply")
	}
	return errorf("request body is not valid JSON: %v", err)
}

// Key identifies a group of identical requests: a request's client
// identity and anthropic-beta flags, compared as they are, and a 128-bit hash
// of its canonical body. Two clients never share a key, whatever their
// bodies: a collision of the hash could only ever join a client's request
// with another of its own. Keys are comparable, and are only meaningful
// within one process.
type Key struct {
	sum      [16]byte
	identity string
	beta     string
}

// String returns the hash of the body in hex, followed by a short hash of
// the identity and beta flags (which may hold credentials, so they are never
// written out).
func (k Key) String() string {
	who := xxh3.HashString128Seed(k.identity+"\x00"+k.beta, seed)
	var tag [4]byte
	binary.BigEndian.PutUint32(tag[:], uint32(who.Lo))
	return hex.EncodeToString(k.sum[:]) + "-" + hex.EncodeToString(tag[:])
}

// Peek is what the balancer needs from a Messages request body.
type Peek struct {
	// Model is the requested model.
	Model string
	// Stream is the value of "stream".
	Stream bool
	// Session is the session id from metadata.user_id, if any.
	Session string
	// ForeignThinking reports a thinking block this module signed (made from
	// an OpenAI-compatible provider's reasoning), which an Anthropic provider
	// would reject.
	ForeignThinking bool
	// SystemMessages reports a message of role "system" in "messages" (a
	// mid-conversation system message), which some providers refuse.
	SystemMessages bool
	// modelStart and modelEnd locate the model's JSON string, quotes
	// included, so it can be replaced in place.
	modelStart, modelEnd int
	// valid is set by the walk that validated the body (see Valid).
	valid bool
}

// Valid reports whether p was read from a body that the walk validated
// whole: that body is valid JSON under the module's grammar, and a reader of
// it (a converter) may walk it without validating it again. A Peek made any
// other way reports false.
func (p Peek) Valid() bool { return p.valid }

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

// Options say what Read makes besides the Peek.
type Options struct {
	// Sign asks for the de-duplication signature.
	Sign bool
	// Ignore lists the top-level fields the signature leaves out ("stream"
	// always).
	Ignore []string
	// Identity is the client's identity, so that two clients never share a
	// signature.
	Identity string
	// Owner names who sent the body, for the values a walk keeps to skip
	// when they come again (see cache.go): only bodies of the same owner
	// meet them, so how long a request takes says nothing about what
	// another client sent. Without an owner nothing is kept or reused.
	Owner string
	// Beta is the anthropic-beta header, values joined with commas; its flags
	// are compared as a set.
	Beta string
}

// Read validates body and peeks at it, and with opt.Sign signs it, in one
// walk. Duplicate "model", "stream" or "metadata" keys are refused, however
// they are spelled, because providers disagree on which one wins, and so are
// keys that only differ from them in case, which some decoders fold.
func Read(body []byte, opt Options) (Peek, Key, error) {
	p, k, _, err := read(body, opt, false)
	return p, k, err
}

// read is the one walk of Read and Prepare; with digest it also gathers the
// digest of a Pre (see ticket.go).
func read(body []byte, opt Options, digest bool) (p Peek, k Key, d uint64, err error) {
	w := walkers.Get().(*walker)
	defer w.release()
	w.reset(body, opt)
	w.digesting = digest
	if err := w.document(); err != nil {
		return Peek{}, Key{}, 0, err
	}
	if p, err = w.peek(); err != nil {
		return Peek{}, Key{}, 0, err
	}
	p.valid = true
	if opt.Sign {
		k = w.sign(opt.Identity, opt.Beta)
	}
	return p, k, w.digest, nil
}

// field takes one top-level member: its key as spelled (escapes resolved)
// and its value's place in the body.
func (w *walker) field(key []byte, start, end int) error {
	val := w.src[start:end]
	switch string(key) {
	case "model":
		if w.seenModel {
			return errorf("duplicate \"model\" key in request body")
		}
		w.seenModel = true
		if !rawjson.IsString(val) {
			return errorf("model: expected a string")
		}
		// Names end up in logs and metric labels, which want valid UTF-8.
		w.p.Model = strings.ToValidUTF8(rawjson.Str(val), "\uFFFD")
		w.p.modelStart, w.p.modelEnd = start, end
	case "stream":
		if w.seenStream {
			return errorf("duplicate \"stream\" key in request body")
		}
		w.seenStream = true
		switch string(val) {
		case "true":
			w.p.Stream = true
		case "false", "null":
		default:
			return errorf("stream: expected a boolean")
		}
	case "metadata":
		if w.seenMeta {
			return errorf("duplicate \"metadata\" key in request body")
		}
		w.seenMeta = true
		w.p.Session, w.tmp = sessionFromMetadata(val, w.tmp)
	default:
		// JSON keys are case-sensitive, but decoders that fold case (Go's
		// encoding/json, ASP.NET's) read "Model" or "ſtream" as the field: a
		// provider would run what the balancer did not route or allow.
		if len(key) >= len("model") && len(key) <= 2*len("metadata") {
			for _, name := range [...]string{"model", "stream", "metadata"} {
				if strings.EqualFold(string(key), name) {
					return errorf("%q key in request body: keys are case-sensitive, and some providers would read it as %q", key, name)
				}
			}
		}
	}
	return nil
}

func (w *walker) peek() (Peek, error) {
	if !w.seenModel || w.p.Model == "" {
		return Peek{}, errorf("model: field required")
	}
	w.p.ForeignThinking = w.foreign
	w.p.SystemMessages = w.systemMsg
	return w.p, nil
}

// sessionFromMetadata extracts Claude Code's session id from
// metadata.user_id, which is either a JSON document
// ({"device_id":…,"session_id":…}) or the older
// "user_<hash>_account_<uuid>_session_<uuid>" form. user_id is unescaped
// into scratch, which is returned for the next use.
func sessionFromMetadata(meta, scratch []byte) (string, []byte) {
	raw := rawjson.Field(meta, "user_id")
	if !rawjson.IsString(raw) {
		return "", scratch
	}
	userID := rawjson.AppendUnescaped(scratch[:0], rawjson.Inner(raw))
	if len(userID) == 0 {
		return "", userID
	}
	if userID[0] == '{' {
		if !rawjson.Valid(userID) {
			return "", userID
		}
		sid := rawjson.Field(userID, "session_id")
		if !rawjson.IsString(sid) {
			return "", userID
		}
		return rawjson.Str(sid), userID
	}
	if i := bytes.LastIndex(userID, []byte("_session_")); i >= 0 {
		return string(userID[i+len("_session_"):]), userID
	}
	return "", userID
}
