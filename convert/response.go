package convert

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// ErrMalformed is wrapped by the errors for upstream replies that are not
// Chat Completions: not JSON, no choices, a stream chunk that is not an
// object, arguments for a tool call after the finish closed its block, a
// stream holding back more than its bounds allow.
var ErrMalformed = errors.New("malformed upstream reply")

// usage holds the token counts of a Chat Completions reply.
type usage struct {
	prompt, completion, cached, cacheWrite int64
}

// parseUsage reads a usage object. Cached prompt tokens come from
// prompt_tokens_details.cached_tokens (OpenAI, OpenRouter, vLLM...),
// prompt_cache_hit_tokens (DeepSeek) or cached_tokens (Moonshot); cache
// writes from prompt_tokens_details.cache_write_tokens (OpenRouter).
func parseUsage(v []byte) (u usage, ok bool) {
	if !isObject(v) {
		return u, false
	}
	o := newObject(v)
	for k, val, ok := o.next(); ok; k, val, ok = o.next() {
		switch {
		case keyIs(k, "prompt_tokens"):
			u.prompt, _ = intValue(val)
		case keyIs(k, "completion_tokens"):
			u.completion, _ = intValue(val)
		case keyIs(k, "prompt_cache_hit_tokens"), keyIs(k, "cached_tokens"):
			if u.cached == 0 {
				u.cached, _ = intValue(val)
			}
		case keyIs(k, "prompt_tokens_details"):
			if n, ok := intValue(field(val, "cached_tokens")); ok && n > 0 {
				u.cached = n
			}
			u.cacheWrite, _ = intValue(field(val, "cache_write_tokens"))
		}
	}
	return u, true
}

// input returns the prompt tokens that were neither read from nor written to
// a cache: Anthropic counts those three apart, OpenAI's prompt_tokens holds
// them all.
func (u usage) input() int64 { return max(u.prompt-u.cached-u.cacheWrite, 0) }

// appendUsage appends the members of an Anthropic usage object.
func (u usage) appendUsage(dst []byte) []byte {
	dst = append(dst, `"input_tokens":`...)
	dst = strconv.AppendInt(dst, u.input(), 10)
	dst = append(dst, `,"cache_creation_input_tokens":`...)
	dst = strconv.AppendInt(dst, max(u.cacheWrite, 0), 10)
	dst = append(dst, `,"cache_read_input_tokens":`...)
	dst = strconv.AppendInt(dst, max(u.cached, 0), 10)
	dst = append(dst, `,"output_tokens":`...)
	return strconv.AppendInt(dst, max(u.completion, 0), 10)
}

// stopReason maps a finish_reason (raw) to an Anthropic stop_reason. matched
// is the stop string vLLM ("stop_reason") or SGLang ("matched_stop") report;
// with it, "stop" becomes "stop_sequence". A turn that called tools ends in
// "tool_use" whatever the provider says, since Claude Code runs the tools
// only then.
func stopReason(finish []byte, tools bool, matched []byte) (reason string, seq []byte) {
	switch {
	case tools && !strIs(finish, "length"):
		return "tool_use", nil
	case strIs(finish, "length"), strIs(finish, "max_tokens"):
		return "max_tokens", nil
	case strIs(finish, "tool_calls"), strIs(finish, "function_call"), strIs(finish, "tool_use"):
		return "tool_use", nil
	case strIs(finish, "content_filter"), strIs(finish, "refusal"):
		return "refusal", nil
	case strIs(finish, "stop_sequence"):
		if isString(matched) {
			return "stop_sequence", matched
		}
	case strIs(finish, "stop"):
		if nonEmptyString(matched) {
			return "stop_sequence", matched
		}
	}
	return "end_turn", nil
}

// reply holds the top-level members of a reply or stream chunk.
type reply struct {
	choices, usage, err, object []byte
}

// member records one top-level member; k is the key as written.
func (rp *reply) member(k, v []byte) {
	// An escaped key is compared by what it spells.
	switch string(keyName(k)) {
	case "choices":
		rp.choices = v
	case "usage":
		rp.usage = v
	case "error":
		rp.err = v
	case "object":
		rp.object = v
	}
}

// upstreamError returns the error body reports in place of a reply, or nil:
// {"error":...} (OpenAI and most) or {"object":"error"} (vLLM).
func (rp reply) upstreamError(body []byte) *UpstreamError {
	if (rp.err != nil && string(rp.err) != "null") || strIs(rp.object, "error") {
		return parseError(http.StatusOK, body)
	}
	return nil
}

// readChunk validates a reply or a stream chunk and reads it in the same
// walk: its top-level members (the last of a name counts) and its first
// choice, the one with index 0 or, when strict is false and there is none,
// the first listed. Streams are strict: a chunk may carry only the other
// choices of an n>1 request. ok is false when data is not one valid JSON
// object. Only the choice's message or delta is walked again, with the
// plain iterators.
//
// With head, the chunks of a stream are read together: head keeps the start
// of a chunk, up to its "choices", and a chunk that starts with the same
// bytes is read from there on (see chunkHead).
func readChunk(data []byte, strict bool, head *chunkHead) (rp reply, ch choice, found, ok bool) {
	o, ok := newVObject(data, 0, 0)
	if !ok {
		return rp, ch, false, false
	}
	resumed := head.matches(data)
	if resumed {
		o.w = rawjson.ResumeObject(data, len(head.b)-1, 0)
		rp = head.reply(data)
	}
	members := 0
	for {
		at := o.at()
		k, more, err := o.key()
		if err != nil {
			return rp, ch, false, false
		}
		if !more {
			break
		}
		start := o.at()
		choices := keyIs(k, "choices")
		if choices && start < len(data) && data[start] == '[' {
			if !resumed && head != nil && members > 0 {
				// The first "choices" of a chunk whose start is new.
				head.keep(data, at, rp)
				resumed = true
			}
			var end int
			if ch, found, end, ok = readChoices(data, start, o.w.Depth(), strict); !ok {
				return rp, ch, false, false
			}
			o.setEnd(end)
			rp.choices = data[start:end]
			members++
			continue
		}
		v, err := o.value()
		if err != nil {
			return rp, ch, false, false
		}
		rp.member(k, v)
		if choices {
			ch, found = choice{}, false
		}
		members++
	}
	if skipSpace(data, o.at()) != len(data) {
		return rp, ch, false, false
	}
	return rp, ch, found, true
}

// chunkHead is the start of a stream's chunk, up to its first "choices"
// member: the chunks of one stream repeat their id, object, created, model
// and fingerprint byte for byte, and make most of its bytes. A chunk that
// starts with the same bytes is read on from where they end, as a walk of
// them would read them again, to the same result: a walk's state between
// two members of the top-level object is only where it stands. The byte
// after the last value counts too, since it ends a number or a literal.
type chunkHead struct {
	b []byte
	// The members of the reply read in b, as spans of it.
	usage, err, object span
}

// matches reports whether data starts with the head; a nil or empty head
// matches nothing.
func (h *chunkHead) matches(data []byte) bool {
	return h != nil && len(h.b) > 0 && len(data) > len(h.b) && string(data[:len(h.b)]) == string(h.b)
}

// keep makes the head data's start: its bytes up to and including data[at],
// the byte after the value of the member before "choices", and the members
// of rp read there, all slices of data.
func (h *chunkHead) keep(data []byte, at int, rp reply) {
	if at >= len(data) {
		h.b = h.b[:0]
		return
	}
	head := data[:at+1]
	all := true
	in := func(v []byte) span {
		s, ok := spanOf(head, v)
		all = all && ok
		return s
	}
	h.usage, h.err, h.object = in(rp.usage), in(rp.err), in(rp.object)
	h.b = h.b[:0]
	if all {
		h.b = append(h.b, head...)
	}
}

// reply returns the members read in the head, as slices of data.
func (h *chunkHead) reply(data []byte) reply {
	return reply{usage: h.usage.of(data), err: h.err.of(data), object: h.object.of(data)}
}

// readChoices validates the choices array at b[i], which depth objects and
// arrays enclose, and returns the first choice as readChunk picks it, and
// where the array ends.
func readChoices(b []byte, i, depth int, strict bool) (ch choice, found bool, end int, ok bool) {
	a, ok := newVArray(b, i, depth)
	if !ok {
		return ch, false, 0, false
	}
	zero := false // ch has index 0
	for {
		start, more, err := a.elem()
		if err != nil {
			return ch, false, 0, false
		}
		if !more {
			return ch, found, a.at(), true
		}
		if b[start] != '{' {
			if _, err := a.value(); err != nil {
				return ch, false, 0, false
			}
			continue
		}
		c, cend, ok := readChoice(b, start, a.w.Depth())
		if !ok {
			return ch, false, 0, false
		}
		a.setEnd(cend)
		switch {
		case zero:
		case c.index == nil || string(c.index) == "0":
			ch, found, zero = c, true, true
		case !found && !strict:
			ch, found = c, true
		}
	}
}

// readChoice validates the choice at b[i] and reads it; it returns where
// the choice ends.
func readChoice(b []byte, i, depth int) (c choice, end int, ok bool) {
	o, ok := newVObject(b, i, depth)
	if !ok {
		return c, 0, false
	}
	var r choiceReader
	for {
		k, more, err := o.key()
		if err != nil {
			return c, 0, false
		}
		if !more {
			return r.choice(), o.at(), true
		}
		v, err := o.value()
		if err != nil {
			return c, 0, false
		}
		r.member(k, v)
	}
}

// choice holds the members of one choice that matter.
type choice struct {
	index []byte
	// msg is the "delta" of a stream chunk or the "message" of a reply.
	msg    []byte
	finish []byte
	// matched is the stop string vLLM ("stop_reason") or SGLang
	// ("matched_stop") report having hit.
	matched []byte
}

// choiceReader gathers a choice from its members.
type choiceReader struct {
	c            choice
	vllm, sglang []byte
}

// member records one member; k is the key as written.
func (r *choiceReader) member(k, v []byte) {
	// An escaped key is compared by what it spells.
	switch string(keyName(k)) {
	case "index":
		r.c.index = v
	case "delta", "message":
		r.c.msg = v
	case "finish_reason":
		r.c.finish = v
	case "stop_reason":
		r.vllm = v
	case "matched_stop":
		r.sglang = v
	}
}

func (r *choiceReader) choice() choice {
	switch {
	case isString(r.vllm):
		r.c.matched = r.vllm
	case isString(r.sglang):
		r.c.matched = r.sglang
	}
	return r.c
}

// replyMessage holds the members of a reply's message that matter, read in one
// pass.
type replyMessage struct {
	// reasoning is reasoning_content (DeepSeek, vLLM, Qwen, Kimi) or
	// reasoning (OpenRouter, Ollama).
	reasoning, content, refusal, toolCalls []byte
}

func parseMessage(msg []byte) replyMessage {
	var m replyMessage
	var alt []byte
	o := newObject(msg)
	for k, v, ok := o.next(); ok; k, v, ok = o.next() {
		if hasBackslash(k) {
			k = keyName(k) // an escaped key: compare what it spells
		}
		switch string(k) {
		case "reasoning_content":
			m.reasoning = v
		case "reasoning":
			alt = v
		case "content":
			m.content = v
		case "refusal":
			m.refusal = v
		case "tool_calls":
			m.toolCalls = v
		}
	}
	if !nonEmptyString(m.reasoning) {
		m.reasoning = alt
	}
	return m
}

// Response converts a Chat Completions reply body into an Anthropic Message
// body reporting clientModel. An error object in place of the reply comes
// back as an *UpstreamError; a body that is no reply at all as an error
// wrapping ErrMalformed.
func Response(body []byte, clientModel string) ([]byte, error) {
	body = trimSpace(body)
	rp, ch, found, ok := readChunk(body, false, nil)
	switch {
	case !ok && validJSON(body):
		return nil, fmt.Errorf("convert: %w: reply is not a JSON object", ErrMalformed)
	case !ok:
		return nil, fmt.Errorf("convert: %w: reply is not valid JSON", ErrMalformed)
	}
	if e := rp.upstreamError(body); e != nil {
		return nil, e
	}
	if !found {
		return nil, fmt.Errorf("convert: %w: reply has no choices", ErrMalformed)
	}
	msg := parseMessage(ch.msg)
	u, _ := parseUsage(rp.usage)

	out := make([]byte, 0, len(body)+256)
	out = append(out, `{"id":"`...)
	out = append(out, newID("msg_")...)
	out = append(out, `","type":"message","role":"assistant","model":`...)
	out = appendString(out, clientModel)
	out = append(out, `,"content":[`...)
	n := 0
	sep := func() {
		if n > 0 {
			out = append(out, ',')
		}
		n++
	}
	if r := msg.reasoning; nonEmptyString(r) {
		sep()
		text := appendUnescaped(nil, inner(r))
		sum := sha256.Sum256(text)
		out = append(out, `{"type":"thinking","thinking":`...)
		out = append(out, r...)
		out = append(out, `,"signature":"`...)
		out = append(out, signatureFromSum(sum[:])...)
		out = append(out, `"}`...)
	}
	// One text block: the content (a string or text parts) and the refusal,
	// in the order a stream delivers them.
	mark, before := len(out), n
	sep()
	out = append(out, `{"type":"text","text":"`...)
	start := len(out)
	out = appendContentText(out, msg.content)
	if nonEmptyString(msg.refusal) {
		out = append(out, inner(msg.refusal)...)
	}
	if isBlank(out[start:]) {
		// Anthropic refuses whitespace-only text blocks in a conversation.
		out, n = out[:mark], before
	} else {
		out = append(out, `"}`...)
	}
	var ids toolIDs
	tools := false
	a := newArray(msg.toolCalls)
	for tc, ok := a.next(); ok; tc, ok = a.next() {
		fn := field(tc, "function")
		name := field(fn, "name")
		if !nonEmptyString(name) {
			continue
		}
		tools = true
		sep()
		out = append(out, `{"type":"tool_use","id":`...)
		out = appendString(out, ids.assign(appendUnescaped(nil, inner(field(tc, "id")))))
		out = append(out, `,"name":`...)
		out = append(out, name...)
		out = append(out, `,"input":`...)
		out = appendToolInput(out, field(fn, "arguments"))
		out = append(out, '}')
	}
	reason, seq := stopReason(ch.finish, tools, ch.matched)
	out = append(out, `],"stop_reason":"`...)
	out = append(out, reason...)
	out = append(out, `","stop_sequence":`...)
	if seq != nil {
		out = append(out, seq...)
	} else {
		out = append(out, "null"...)
	}
	out = append(out, `,"usage":{`...)
	out = u.appendUsage(out)
	out = append(out, "}}"...)
	return out, nil
}

// appendContentText appends the text of a message's content, escaped: a
// string, or the text of its text (and refusal) parts, other parts left out.
func appendContentText(dst, content []byte) []byte {
	if isString(content) {
		return append(dst, inner(content)...)
	}
	a := newArray(content)
	for p, ok := a.next(); ok; p, ok = a.next() {
		dst = append(dst, inner(partText(p))...)
	}
	return dst
}

// appendToolInput appends the input object for tool call arguments: a JSON
// string holding an object (the norm), an object (some providers), or a
// string holding that string once more. Empty arguments are {}; anything
// else is kept, as text, under "invalid_arguments" so the tool reports the
// problem to the model instead of the turn failing.
func appendToolInput(dst, args []byte) []byte {
	if isObject(args) {
		return appendCompact(dst, args)
	}
	if !isString(args) {
		return append(dst, "{}"...)
	}
	text := trimSpace(appendUnescaped(nil, inner(args)))
	if len(text) == 0 {
		return append(dst, "{}"...)
	}
	if validJSON(text) {
		if isString(text) {
			if again := trimSpace(appendUnescaped(nil, inner(text))); isObject(again) && validJSON(again) {
				return appendCompact(dst, again)
			}
		}
		if isObject(text) {
			return appendCompact(dst, text)
		}
	}
	dst = append(dst, `{"invalid_arguments":`...)
	dst = append(dst, args...)
	return append(dst, '}')
}
