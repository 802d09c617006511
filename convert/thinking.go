package convert

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// OwnSignaturePrefix starts the signature of every thinking block this
// package makes from OpenAI reasoning. The full signature is the prefix and 32
// hex digits: the first 16 bytes of the SHA-256 of the thinking text. The
// colons cannot occur in the standard or URL-safe base64 of a genuine
// Anthropic signature, so the two never mix up.
const OwnSignaturePrefix = "claude-balancer:v1:"

// IsOwnSignature reports whether sig was made by this package rather than by
// Anthropic.
func IsOwnSignature(sig string) bool { return strings.HasPrefix(sig, OwnSignaturePrefix) }

// ThinkingSignature returns the signature this package gives a thinking block
// holding thinking.
func ThinkingSignature(thinking string) string {
	sum := sha256.Sum256([]byte(thinking))
	return signatureFromSum(sum[:])
}

func signatureFromSum(sum []byte) string {
	var b [len(OwnSignaturePrefix) + 32]byte
	copy(b[:], OwnSignaturePrefix)
	hex.Encode(b[len(OwnSignaturePrefix):], sum[:16])
	return string(b[:])
}

var ownSignatureBytes = []byte(OwnSignaturePrefix)

// ownSignatureProbe is the part of the prefix StripForeignThinking looks
// for first: it starts with a rarer byte than "c", which makes the search of
// every request going to Anthropic several times faster.
var ownSignatureProbe = ownSignatureBytes[len("claude-"):]

// StripForeignThinking prepares a request for an Anthropic provider: it drops
// the thinking blocks whose signature this package made (the provider would
// reject the turn with "Invalid signature in thinking block"). Genuine
// Anthropic thinking and redacted_thinking blocks stay as they are.
//
// An assistant message left empty is removed. When the last assistant message
// lost the thinking block that led its tool calls, the request's "thinking"
// is removed as well (with any clear_thinking context-management edit, which
// requires thinking): the API wants such a message to start with a thinking
// block whenever thinking is on, and no valid one exists.
//
// A body without such blocks comes back unchanged (the same slice, and
// false), so only requests that hold them are re-encoded. So does a body that
// is not valid JSON: the provider answers it.
func StripForeignThinking(body []byte) ([]byte, bool) {
	if !bytes.Contains(body, ownSignatureProbe) || !validJSON(body) {
		return body, false
	}
	orig := body
	body = trimSpace(body)
	messages := field(body, "messages")
	if !isObject(body) || !isArray(messages) {
		return orig, false
	}

	// One pass over the messages: rewrite those that lose blocks.
	var (
		newMsgs   = make([]byte, 0, len(messages))
		changed   bool
		lastCut   bool // the last assistant message lost a leading thinking block
		lastTools bool // and holds tool calls
		lastFirst []byte
	)
	newMsgs = append(newMsgs, '[')
	msgs := newArray(messages)
	n := 0
	for m, ok := msgs.next(); ok; m, ok = msgs.next() {
		out := m
		if strIs(field(m, "role"), "assistant") {
			kept, removed, tools, first := stripBlocks(field(m, "content"))
			lastCut, lastTools, lastFirst = removed && firstWasOwn(field(m, "content")), tools, first
			if removed {
				changed = true
				if kept == nil {
					continue // nothing left in the message
				}
				out = replaceMember(m, "content", kept)
			}
		}
		if n > 0 {
			newMsgs = append(newMsgs, ',')
		}
		newMsgs = append(newMsgs, out...)
		n++
	}
	newMsgs = append(newMsgs, ']')
	if !changed {
		return orig, false
	}

	disable := lastCut && lastTools && !startsWithThinking(lastFirst)
	th := field(body, "thinking")
	if disable && (th == nil || strIs(field(th, "type"), "disabled")) {
		disable = false
	}

	out := make([]byte, 0, len(body))
	out = append(out, '{')
	first := true
	o := newObject(body)
	for k, v, ok := o.next(); ok; k, v, ok = o.next() {
		switch {
		case keyIs(k, "messages"):
			v = newMsgs
		case disable && keyIs(k, "thinking"):
			continue
		case disable && keyIs(k, "context_management"):
			if v = withoutClearThinking(v); v == nil {
				continue
			}
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, '"')
		out = append(out, k...)
		out = append(out, '"', ':')
		out = append(out, v...)
	}
	out = append(out, '}')
	return out, true
}

func isOwnThinking(block []byte) bool {
	if !strIs(field(block, "type"), "thinking") {
		return false
	}
	return bytes.HasPrefix(inner(field(block, "signature")), ownSignatureBytes)
}

// stripBlocks returns content without own thinking blocks (nil when nothing
// is left), whether any were removed, whether a tool_use block remains, and
// the first remaining block.
func stripBlocks(content []byte) (kept []byte, removed, tools bool, first []byte) {
	if !isArray(content) {
		return content, false, false, nil
	}
	a := newArray(content)
	var buf []byte
	for b, ok := a.next(); ok; b, ok = a.next() {
		if isOwnThinking(b) {
			removed = true
			continue
		}
		if strIs(field(b, "type"), "tool_use") {
			tools = true
		}
		if first == nil {
			first = b
			buf = append(buf, '[')
		} else {
			buf = append(buf, ',')
		}
		buf = append(buf, b...)
	}
	if first == nil {
		return nil, removed, tools, nil
	}
	return append(buf, ']'), removed, tools, first
}

func firstWasOwn(content []byte) bool {
	a := newArray(content)
	b, ok := a.next()
	return ok && isOwnThinking(b)
}

func startsWithThinking(block []byte) bool {
	t := field(block, "type")
	return strIs(t, "thinking") || strIs(t, "redacted_thinking")
}

// replaceMember returns object obj with the value of key replaced.
func replaceMember(obj []byte, key string, val []byte) []byte {
	out := make([]byte, 0, len(obj)+len(val))
	out = append(out, '{')
	o := newObject(obj)
	first := true
	for k, v, ok := o.next(); ok; k, v, ok = o.next() {
		if keyIs(k, key) {
			v = val
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, '"')
		out = append(out, k...)
		out = append(out, '"', ':')
		out = append(out, v...)
	}
	return append(out, '}')
}

// withoutClearThinking removes clear_thinking edits from a context_management
// value; nil means nothing is left of it.
func withoutClearThinking(cm []byte) []byte {
	edits := field(cm, "edits")
	if !isArray(edits) {
		return cm
	}
	var kept []byte
	a := newArray(edits)
	for e, ok := a.next(); ok; e, ok = a.next() {
		if strings.HasPrefix(str(field(e, "type")), "clear_thinking") {
			continue
		}
		if kept == nil {
			kept = append(kept, '[')
		} else {
			kept = append(kept, ',')
		}
		kept = append(kept, e...)
	}
	if kept == nil {
		return nil
	}
	return replaceMember(cm, "edits", append(kept, ']'))
}
