package convert

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// ErrTruncated is returned by Stream.Close when the upstream stream ended
// before it finished: no [DONE] and no finish_reason.
var ErrTruncated = errors.New("convert: upstream stream ended before it finished")

// errInterleaved reports arguments for a tool call whose block was already
// closed: Anthropic streams have one open block at a time, so they cannot be
// delivered.
var errInterleaved = fmt.Errorf("convert: %w: arguments for a tool call after the next block started", ErrMalformed)

// StreamOptions tune a Stream.
type StreamOptions struct {
	// InputTokens is the caller's estimate of the prompt's tokens, reported in
	// message_start until the provider's own count arrives with the last
	// chunk (Claude Code reads the context size from message_start).
	InputTokens int64
}

type openKind uint8

const (
	openNone openKind = iota
	openText
	openThinking
	openToolUse
)

type toolCall struct {
	index      int64  // the upstream tool_calls[].index
	upstreamID []byte // the provider's id, decoded
	id         string // the tool_use id
	name       []byte // raw JSON string, copied
	block      int    // Anthropic block index, -1 until the block started
	pending    []byte // argument text (escaped) received before the name
	closed     bool
}

// Stream translates a Chat Completions SSE stream into an Anthropic Messages
// SSE stream, event by event, without batching: each upstream chunk yields
// the Anthropic events it completes, ready to relay and flush.
//
// The first events are always message_start and then, with the first content
// block, content_block_start and ping. Blocks get consecutive indexes and are
// opened one at a time: reasoning becomes a thinking block (closed with a
// signature_delta carrying this package's own signature), content a text
// block, each tool call a tool_use block whose arguments stream as
// input_json_delta. message_delta, with the stop reason and the usage from
// the last chunk, and message_stop follow [DONE] (or the end of the stream
// after a finish_reason).
//
// A Stream is not safe for concurrent use.
type Stream struct {
	model  string
	opt    StreamOptions
	ids    toolIDs
	buf    []byte   // the bytes of the events made by the current call
	marks  []evMark // where each of them starts in buf
	events []sse.Event

	started, pinged, done bool
	err                   error

	next      int // index of the next block
	open      openKind
	openIndex int
	openTool  *toolCall
	tools     []*toolCall
	anyTool   bool

	thinkHash hash.Hash
	unesc     []byte

	finish    []byte // finish_reason, raw
	matched   []byte // stop string reported by vLLM or SGLang, raw
	usage     usage
	usageSeen bool
	outBytes  int64 // content bytes relayed, for an output estimate
}

// NewStream returns a Stream reporting clientModel as the message's model.
func NewStream(clientModel string, opt StreamOptions) *Stream {
	return &Stream{model: clientModel, opt: opt}
}

var doneData = []byte("[DONE]")

// Feed translates one upstream event and appends the Anthropic events it
// completes (each with Raw set) to dst. An error chunk from the provider
// comes back as an *UpstreamError, a chunk that is not JSON as an error
// wrapping ErrMalformed; after an error the stream is over and every call
// returns it again.
func (s *Stream) Feed(dst []sse.Event, ev sse.Event) ([]sse.Event, error) {
	if s.err != nil {
		return dst, s.err
	}
	if s.done {
		return dst, nil
	}
	data := trimSpace(ev.Data)
	if len(data) == 0 {
		return dst, nil // keep-alive or comment
	}
	s.begin(dst)
	if string(data) == string(doneData) {
		s.finishMessage()
		return s.flush(), nil
	}
	if ev.Name == "error" {
		return dst, s.fail(parseError(http.StatusOK, data))
	}
	if !validJSON(data) || !isObject(data) {
		return dst, s.fail(fmt.Errorf("convert: %w: stream chunk is not a JSON object", ErrMalformed))
	}
	rp := parseReply(data)
	if e := rp.upstreamError(data); e != nil {
		return dst, s.fail(e)
	}
	if err := s.chunk(data, rp); err != nil {
		return dst, s.fail(err)
	}
	return s.flush(), nil
}

// Close ends the translation when the upstream stream ended and appends the
// closing events to dst. It returns ErrTruncated if the stream stopped before
// a finish_reason or [DONE] (nothing is appended then), or the error Feed
// returned.
func (s *Stream) Close(dst []sse.Event) ([]sse.Event, error) {
	if s.err != nil {
		return dst, s.err
	}
	if s.done {
		return dst, nil
	}
	if s.finish == nil {
		return dst, s.fail(ErrTruncated)
	}
	s.begin(dst)
	s.finishMessage()
	return s.flush(), nil
}

func (s *Stream) fail(err error) error {
	s.err = err
	s.events = nil
	s.marks = s.marks[:0]
	return err
}

// evMark locates one event in Stream.buf.
type evMark struct {
	name       string
	start, end int
}

func (s *Stream) begin(dst []sse.Event) {
	s.events = dst
	s.buf = s.buf[:0]
	s.marks = s.marks[:0]
}

// flush copies the events built in s.buf to memory of their own, one
// allocation for all of them, and appends them to the caller's slice.
func (s *Stream) flush() []sse.Event {
	out := s.events
	s.events = nil
	if len(s.marks) == 0 {
		return out
	}
	own := make([]byte, len(s.buf))
	copy(own, s.buf)
	for _, m := range s.marks {
		raw := own[m.start:m.end:m.end]
		dataStart := len("event: ") + len(m.name) + len("\ndata: ")
		out = append(out, sse.Event{Name: m.name, Data: raw[dataStart : len(raw)-2 : len(raw)-2], Raw: raw})
	}
	return out
}

// chunk handles one parsed chunk.
func (s *Stream) chunk(data []byte, rp reply) error {
	if u, ok := parseUsage(rp.usage); ok {
		s.usage, s.usageSeen = u, true
	}
	if !s.started {
		s.messageStart()
	}
	ch, ok := firstChoice(rp.choices, true)
	if !ok {
		return nil
	}
	if strIs(ch.finish, "error") {
		return parseError(http.StatusOK, data)
	}
	if err := s.delta(ch.msg); err != nil {
		return err
	}
	if isString(ch.finish) {
		// Kept past this call: copied, since the caller owns ev.Data.
		s.finish = append(s.finish[:0], ch.finish...)
		s.matched = append(s.matched[:0], ch.matched...)
		s.closeOpen()
	}
	return nil
}

func (s *Stream) delta(d []byte) error {
	if !isObject(d) {
		return nil
	}
	var content, reasoning, reasoningAlt, calls []byte
	o := newObject(d)
	for k, v, ok := o.next(); ok; k, v, ok = o.next() {
		switch string(keyName(k)) {
		case "content":
			content = v
		case "reasoning_content":
			reasoning = v
		case "reasoning":
			reasoningAlt = v
		case "tool_calls":
			calls = v
		}
	}
	if !nonEmptyString(reasoning) {
		reasoning = reasoningAlt
	}
	if nonEmptyString(reasoning) {
		s.thinking(reasoning)
	}
	if nonEmptyString(content) {
		s.text(content)
	}
	a := newArray(calls)
	pos := 0
	for c, ok := a.next(); ok; c, ok = a.next() {
		if err := s.toolDelta(c, pos); err != nil {
			return err
		}
		pos++
	}
	return nil
}

func (s *Stream) text(v []byte) {
	if s.open != openText {
		s.closeOpen()
		s.startBlock(openText, `{"type":"text","text":""}`, nil)
	}
	s.outBytes += int64(len(v) - 2)
	s.deltaEvent(`{"type":"text_delta","text":`, v)
}

func (s *Stream) thinking(v []byte) {
	if s.open != openThinking {
		s.closeOpen()
		s.startBlock(openThinking, `{"type":"thinking","thinking":"","signature":""}`, nil)
		if s.thinkHash == nil {
			s.thinkHash = sha256.New()
		} else {
			s.thinkHash.Reset()
		}
	}
	in := inner(v)
	if hasBackslash(in) {
		s.unesc = appendUnescaped(s.unesc[:0], in)
		s.thinkHash.Write(s.unesc)
	} else {
		s.thinkHash.Write(in)
	}
	s.outBytes += int64(len(in))
	s.deltaEvent(`{"type":"thinking_delta","thinking":`, v)
}

// toolDelta handles one tool_calls entry; pos is its place in the chunk's
// list.
func (s *Stream) toolDelta(c []byte, pos int) error {
	var idV, fn []byte
	index, hasIndex := int64(0), false
	o := newObject(c)
	for k, v, ok := o.next(); ok; k, v, ok = o.next() {
		switch string(keyName(k)) {
		case "index":
			index, hasIndex = intValue(v)
		case "id":
			idV = v
		case "function":
			fn = v
		}
	}
	var name, args []byte
	o = newObject(fn)
	for k, v, ok := o.next(); ok; k, v, ok = o.next() {
		switch string(keyName(k)) {
		case "name":
			name = v
		case "arguments":
			args = v
		}
	}
	if !hasIndex {
		index = s.unindexed(pos, idV, name)
	}
	t := s.findTool(index)
	if t == nil {
		t = &toolCall{index: index, block: -1}
		if nonEmptyString(idV) {
			t.upstreamID = appendUnescaped(nil, inner(idV))
			t.id = s.ids.assign(t.upstreamID)
		}
		s.tools = append(s.tools, t)
	}
	if t.name == nil && nonEmptyString(name) {
		t.name = append([]byte(nil), name...)
	}
	argText := inner(args)
	if isObject(args) {
		// A provider that sends the arguments as an object sends them whole.
		argText = appendQuotedJSON(nil, args)
	}
	switch {
	case t.block < 0:
		t.pending = append(t.pending, argText...)
		if t.name != nil {
			s.startTool(t)
		}
	case len(argText) == 0:
	case t.closed || s.openTool != t:
		return errInterleaved
	default:
		s.argsEvent(argText)
	}
	return nil
}

// unindexed picks the index of a tool call entry that has none (Gemini sends
// each call whole, without index or id). Entries listed after the first in a
// chunk, and entries with a new id or a name when the last call already has
// one, are new calls; others continue the last call.
func (s *Stream) unindexed(pos int, idV, name []byte) int64 {
	last := s.lastTool()
	switch {
	case last == nil:
		return 0
	case pos > 0,
		nonEmptyString(idV) && string(last.upstreamID) != string(appendUnescaped(nil, inner(idV))),
		nonEmptyString(name) && last.name != nil:
		return s.maxToolIndex() + 1
	}
	return last.index
}

func (s *Stream) lastTool() *toolCall {
	if len(s.tools) == 0 {
		return nil
	}
	return s.tools[len(s.tools)-1]
}

func (s *Stream) findTool(index int64) *toolCall {
	for _, t := range s.tools {
		if t.index == index {
			return t
		}
	}
	return nil
}

func (s *Stream) maxToolIndex() int64 {
	m := int64(-1)
	for _, t := range s.tools {
		m = max(m, t.index)
	}
	return m
}

// startTool opens the block of a tool call whose name is known and sends
// the arguments that came before it. A call whose name never comes is
// dropped: a tool_use without a name cannot be run.
func (s *Stream) startTool(t *toolCall) {
	s.closeOpen()
	if t.id == "" {
		t.id = newID("toolu_")
	}
	name := t.name
	t.block = s.next
	s.startBlock(openToolUse, "", func(b []byte) []byte {
		b = append(b, `{"type":"tool_use","id":`...)
		b = appendString(b, t.id)
		b = append(b, `,"name":`...)
		b = append(b, name...)
		return append(b, `,"input":{}}`...)
	})
	s.openTool = t
	s.anyTool = true
	if len(t.pending) > 0 {
		s.argsEvent(t.pending)
		t.pending = nil
	}
}

func (s *Stream) argsEvent(argText []byte) {
	s.outBytes += int64(len(argText))
	start := s.eventHead("content_block_delta")
	s.buf = append(s.buf, `{"type":"content_block_delta","index":`...)
	s.buf = strconv.AppendInt(s.buf, int64(s.openIndex), 10)
	s.buf = append(s.buf, `,"delta":{"type":"input_json_delta","partial_json":"`...)
	s.buf = append(s.buf, argText...)
	s.buf = append(s.buf, `"}}`...)
	s.eventTail("content_block_delta", start)
}

func (s *Stream) messageStart() {
	s.started = true
	input := s.opt.InputTokens
	if s.usageSeen && s.usage.prompt > 0 {
		input = s.usage.input()
	}
	start := s.eventHead("message_start")
	s.buf = append(s.buf, `{"type":"message_start","message":{"id":"`...)
	s.buf = append(s.buf, newID("msg_")...)
	s.buf = append(s.buf, `","type":"message","role":"assistant","model":`...)
	s.buf = appendString(s.buf, s.model)
	s.buf = append(s.buf, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":`...)
	s.buf = strconv.AppendInt(s.buf, max(input, 0), 10)
	s.buf = append(s.buf, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}}`...)
	s.eventTail("message_start", start)
}

// startBlock opens a block described by the JSON in cb (or written by
// write) and sends the stream's one ping after the first.
func (s *Stream) startBlock(kind openKind, cb string, write func([]byte) []byte) {
	s.open, s.openIndex = kind, s.next
	s.next++
	start := s.eventHead("content_block_start")
	s.buf = append(s.buf, `{"type":"content_block_start","index":`...)
	s.buf = strconv.AppendInt(s.buf, int64(s.openIndex), 10)
	s.buf = append(s.buf, `,"content_block":`...)
	if write != nil {
		s.buf = write(s.buf)
	} else {
		s.buf = append(s.buf, cb...)
	}
	s.buf = append(s.buf, '}')
	s.eventTail("content_block_start", start)
	if !s.pinged {
		s.pinged = true
		start = s.eventHead("ping")
		s.buf = append(s.buf, `{"type":"ping"}`...)
		s.eventTail("ping", start)
	}
}

// deltaEvent sends a content_block_delta for the open block: prefix, the raw
// JSON string v, and the closing braces.
func (s *Stream) deltaEvent(prefix string, v []byte) {
	start := s.eventHead("content_block_delta")
	s.buf = append(s.buf, `{"type":"content_block_delta","index":`...)
	s.buf = strconv.AppendInt(s.buf, int64(s.openIndex), 10)
	s.buf = append(s.buf, `,"delta":`...)
	s.buf = append(s.buf, prefix...)
	s.buf = append(s.buf, v...)
	s.buf = append(s.buf, "}}"...)
	s.eventTail("content_block_delta", start)
}

// closeOpen closes the open block; a thinking block gets its signature first.
func (s *Stream) closeOpen() {
	if s.open == openNone {
		return
	}
	if s.open == openThinking {
		var sum [sha256.Size]byte
		s.deltaEvent(`{"type":"signature_delta","signature":`,
			appendString(nil, signatureFromSum(s.thinkHash.Sum(sum[:0]))))
	}
	if s.open == openToolUse && s.openTool != nil {
		s.openTool.closed = true
		s.openTool = nil
	}
	start := s.eventHead("content_block_stop")
	s.buf = append(s.buf, `{"type":"content_block_stop","index":`...)
	s.buf = strconv.AppendInt(s.buf, int64(s.openIndex), 10)
	s.buf = append(s.buf, '}')
	s.eventTail("content_block_stop", start)
	s.open = openNone
}

// finishMessage sends what ends the message: the open block's stop,
// message_delta and message_stop.
func (s *Stream) finishMessage() {
	if !s.started {
		s.messageStart()
	}
	s.closeOpen()
	s.done = true
	reason, seq := stopReason(s.finish, s.anyTool, s.matched)
	start := s.eventHead("message_delta")
	s.buf = append(s.buf, `{"type":"message_delta","delta":{"stop_reason":"`...)
	s.buf = append(s.buf, reason...)
	s.buf = append(s.buf, `","stop_sequence":`...)
	if seq != nil {
		s.buf = append(s.buf, seq...)
	} else {
		s.buf = append(s.buf, "null"...)
	}
	s.buf = append(s.buf, `},"usage":{`...)
	if s.usageSeen {
		s.buf = s.usage.appendUsage(s.buf)
	} else {
		// No usage came: report the estimate the caller gave and about four
		// bytes of output per token.
		if s.opt.InputTokens > 0 {
			s.buf = append(s.buf, `"input_tokens":`...)
			s.buf = strconv.AppendInt(s.buf, s.opt.InputTokens, 10)
			s.buf = append(s.buf, ',')
		}
		s.buf = append(s.buf, `"output_tokens":`...)
		s.buf = strconv.AppendInt(s.buf, (s.outBytes+3)/4, 10)
	}
	s.buf = append(s.buf, "}}"...)
	s.eventTail("message_delta", start)
	start = s.eventHead("message_stop")
	s.buf = append(s.buf, `{"type":"message_stop"}`...)
	s.eventTail("message_stop", start)
}

// eventHead starts an event in s.buf and returns where it starts.
func (s *Stream) eventHead(name string) int {
	start := len(s.buf)
	s.buf = append(s.buf, "event: "...)
	s.buf = append(s.buf, name...)
	s.buf = append(s.buf, "\ndata: "...)
	return start
}

// eventTail ends the event begun at start and records it.
func (s *Stream) eventTail(name string, start int) {
	s.buf = append(s.buf, '\n', '\n')
	s.marks = append(s.marks, evMark{name: name, start: start, end: len(s.buf)})
}
