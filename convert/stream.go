package convert

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// ErrTruncated is returned by Stream.Close when the upstream stream ended
// before it finished: no [DONE] and no finish_reason.
var ErrTruncated = errors.New("convert: upstream stream ended before it finished")

// Bounds on what a Stream holds back: content that cannot be sent yet
// because the open block (a tool call whose arguments are not complete) must
// close first. A stream past either bound fails with an error wrapping
// ErrMalformed.
const (
	// maxHeldPerCall bounds the arguments held for one tool call: four times
	// the text of the longest turn a model writes (128K tokens, about 0.5 MB,
	// twice that once escaped).
	maxHeldPerCall = 4 << 20
	// maxHeldPerStream bounds everything held by one stream: the size of the
	// largest upstream event the balancer reads.
	maxHeldPerStream = 8 << 20
)

// errLateArguments reports arguments for a tool call whose block was closed
// by the finish_reason before its arguments were complete.
var errLateArguments = fmt.Errorf("convert: %w: arguments for a tool call after its block was closed", ErrMalformed)

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
	args       []byte // argument text (escaped) held until the block starts
	scan       argScan
	queued     bool // named, waiting in Stream.held for its turn
	closed     bool
}

// heldBlock is a block waiting for the open one to close: text or thinking
// (escaped, as received) or a named tool call, whose arguments it holds.
type heldBlock struct {
	kind openKind
	text []byte
	tool *toolCall
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
// A tool call's block stays open until its arguments form a complete JSON
// object or the provider finishes; what arrives for other blocks meanwhile
// (another call interleaved with it, text between its pieces) is held and
// sent, in the order it came, as soon as the open block is done.
//
// A Stream is not safe for concurrent use.
type Stream struct {
	model  string
	opt    StreamOptions
	ids    toolIDs
	buf    []byte   // the bytes of the events made by the current call
	marks  []evMark // where each of them starts in buf
	events []sse.Event
	borrow bool // see Borrow
	// head is the start of the last chunk read in full (see chunkHead).
	head chunkHead

	started, pinged, done bool
	err                   error

	next      int // index of the next block
	open      openKind
	openIndex int
	openTool  *toolCall
	tools     []*toolCall
	anyTool   bool

	// held are the blocks waiting for the open tool call to complete, in
	// arrival order; heldHead is the first not yet sent. Never empty unless
	// the open block is a tool call whose arguments are incomplete.
	held      []heldBlock
	heldHead  int
	heldBytes int    // bytes held: held blocks, unstarted calls, blank
	blank     []byte // whitespace-only text after a tool call, held

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
// comes back as an *UpstreamError; a chunk that is not JSON, or content held
// back past the bounds, as an error wrapping ErrMalformed. After an error the
// stream is over and every call returns it again.
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
	rp, ch, found, ok := readChunk(data, true, &s.head)
	if !ok {
		return dst, s.fail(fmt.Errorf("convert: %w: stream chunk is not a JSON object", ErrMalformed))
	}
	if e := rp.upstreamError(data); e != nil {
		return dst, s.fail(e)
	}
	if err := s.chunk(data, rp, ch, found); err != nil {
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
	s.held, s.heldHead, s.blank, s.tools = nil, 0, nil, nil
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

// Borrow makes the stream lend the events it returns instead of copying
// them: their Raw and Data are valid only until the next call to Feed or
// Close. A relay that hands each event on before it feeds the next, and
// copies the few it keeps, saves an allocation per chunk.
func (s *Stream) Borrow() { s.borrow = true }

// flush appends the events built in s.buf to the caller's slice: lent in
// place (Borrow), or copied to memory of their own, one allocation for all
// of them.
func (s *Stream) flush() []sse.Event {
	out := s.events
	s.events = nil
	if len(s.marks) == 0 {
		return out
	}
	own := s.buf
	if !s.borrow {
		own = make([]byte, len(s.buf))
		copy(own, s.buf)
	}
	for _, m := range s.marks {
		raw := own[m.start:m.end:m.end]
		dataStart := len("event: ") + len(m.name) + len("\ndata: ")
		out = append(out, sse.Event{Name: m.name, Data: raw[dataStart : len(raw)-2 : len(raw)-2], Raw: raw})
	}
	return out
}

// chunk handles one chunk, read by readChunk: its top-level members and its
// first choice, if found.
func (s *Stream) chunk(data []byte, rp reply, ch choice, found bool) error {
	if u, ok := parseUsage(rp.usage); ok {
		s.usage, s.usageSeen = u, true
	}
	if !s.started {
		s.messageStart()
	}
	if !found {
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
		s.closeAll()
	}
	return nil
}

func (s *Stream) delta(d []byte) error {
	if !isObject(d) {
		return nil
	}
	var content, reasoning, reasoningAlt, refusal, calls []byte
	o := newObject(d)
	for k, v, ok := o.next(); ok; k, v, ok = o.next() {
		if hasBackslash(k) {
			k = keyName(k) // an escaped key: compare what it spells
		}
		switch string(k) {
		case "content":
			content = v
		case "reasoning_content":
			reasoning = v
		case "reasoning":
			reasoningAlt = v
		case "refusal":
			refusal = v
		case "tool_calls":
			calls = v
		}
	}
	if !nonEmptyString(reasoning) {
		reasoning = reasoningAlt
	}
	if nonEmptyString(reasoning) {
		if err := s.thinking(reasoning); err != nil {
			return err
		}
	}
	switch {
	case nonEmptyString(content):
		if err := s.text(content); err != nil {
			return err
		}
	case isArray(content):
		a := newArray(content)
		for p, ok := a.next(); ok; p, ok = a.next() {
			if t := partText(p); nonEmptyString(t) {
				if err := s.text(t); err != nil {
					return err
				}
			}
		}
	}
	if nonEmptyString(refusal) {
		if err := s.text(refusal); err != nil {
			return err
		}
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

// partText returns the text of a content part as a raw JSON string: a text
// part's text or a refusal part's refusal; nil for other parts.
func partText(p []byte) []byte {
	var typ, text, refusal []byte
	o := newObject(p)
	for k, v, ok := o.next(); ok; k, v, ok = o.next() {
		if hasBackslash(k) {
			k = keyName(k) // an escaped key: compare what it spells
		}
		switch string(k) {
		case "type":
			typ = v
		case "text":
			text = v
		case "refusal":
			refusal = v
		}
	}
	switch {
	case typ == nil || strIs(typ, "text"):
		return text
	case strIs(typ, "refusal"):
		return refusal
	}
	return nil
}

// blocked reports whether the open block must stay open while other content
// arrives: a tool call whose arguments are not complete yet.
func (s *Stream) blocked() bool {
	return s.open == openToolUse && !s.openTool.scan.complete()
}

// text handles content text, a raw JSON string. Text that would open a
// block while it is only whitespace is held until text with something else
// follows, and dropped if none does: providers put "\n\n" before, between
// and inside tool calls, and Anthropic refuses whitespace-only text blocks in
// a conversation.
func (s *Stream) text(v []byte) error {
	if s.open == openText {
		s.textDelta(v)
		return nil
	}
	in := inner(v)
	if !s.heldTail(openText) {
		if isBlank(in) {
			return s.holdBlank(in)
		}
		if len(s.blank) > 0 {
			in = append(s.blank, in...)
			s.heldBytes -= len(s.blank)
			s.blank = nil
			v = nil
		}
	}
	if s.blocked() {
		return s.hold(openText, in)
	}
	s.closeOpen()
	s.startBlock(openText, `{"type":"text","text":""}`, nil)
	if v == nil {
		s.outBytes += int64(len(in))
		s.deltaEvent(`{"type":"text_delta","text":`, in)
	} else {
		s.textDelta(v)
	}
	return nil
}

// textDelta sends text, a raw JSON string.
func (s *Stream) textDelta(v []byte) {
	s.outBytes += int64(len(v) - 2)
	s.rawDeltaEvent(`{"type":"text_delta","text":`, v)
}

// thinking handles reasoning text, a raw JSON string.
func (s *Stream) thinking(v []byte) error {
	s.dropBlank()
	if s.open != openThinking {
		if s.blocked() {
			return s.hold(openThinking, inner(v))
		}
		s.closeOpen()
		s.startThinking()
	}
	in := inner(v)
	s.hashThinking(in)
	s.outBytes += int64(len(in))
	s.rawDeltaEvent(`{"type":"thinking_delta","thinking":`, v)
	return nil
}

func (s *Stream) startThinking() {
	s.startBlock(openThinking, `{"type":"thinking","thinking":"","signature":""}`, nil)
	if s.thinkHash == nil {
		s.thinkHash = sha256.New()
	} else {
		s.thinkHash.Reset()
	}
}

// hashThinking adds escaped thinking text to the signature's hash.
func (s *Stream) hashThinking(in []byte) {
	if hasBackslash(in) {
		s.unesc = appendUnescaped(s.unesc[:0], in)
		s.thinkHash.Write(s.unesc)
	} else {
		s.thinkHash.Write(in)
	}
}

// heldTail reports whether the last held block is of kind k.
func (s *Stream) heldTail(k openKind) bool {
	return s.heldHead < len(s.held) && s.held[len(s.held)-1].kind == k
}

// hold queues text or thinking (escaped) behind the open tool call, joined
// to the last held block when it is of the same kind.
func (s *Stream) hold(kind openKind, in []byte) error {
	if err := s.grow(len(in)); err != nil {
		return err
	}
	if s.heldTail(kind) {
		h := &s.held[len(s.held)-1]
		h.text = append(h.text, in...)
		return nil
	}
	s.held = append(s.held, heldBlock{kind: kind, text: append([]byte(nil), in...)})
	return nil
}

func (s *Stream) holdBlank(in []byte) error {
	if err := s.grow(len(in)); err != nil {
		return err
	}
	s.blank = append(s.blank, in...)
	return nil
}

func (s *Stream) dropBlank() {
	if len(s.blank) > 0 {
		s.heldBytes -= len(s.blank)
		s.blank = s.blank[:0]
	}
}

// grow counts n more bytes held by the stream.
func (s *Stream) grow(n int) error {
	if s.heldBytes+n > maxHeldPerStream {
		return fmt.Errorf("convert: %w: more than %d MiB of content held while a tool call's block stays open", ErrMalformed, maxHeldPerStream>>20)
	}
	s.heldBytes += n
	return nil
}

// toolDelta handles one tool_calls entry; pos is its place in the chunk's
// list.
func (s *Stream) toolDelta(c []byte, pos int) error {
	s.dropBlank()
	var idV, fn []byte
	index, hasIndex := int64(0), false
	o := newObject(c)
	for k, v, ok := o.next(); ok; k, v, ok = o.next() {
		if hasBackslash(k) {
			k = keyName(k) // an escaped key: compare what it spells
		}
		switch string(k) {
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
		if hasBackslash(k) {
			k = keyName(k) // an escaped key: compare what it spells
		}
		switch string(k) {
		case "name":
			name = v
		case "arguments":
			args = v
		}
	}
	var t *toolCall
	if hasIndex {
		t = s.findTool(index)
		// The same index with another id or another name is another call
		// (vLLM and SGLang number every call 0, Ollama too).
		if t != nil && (t.otherID(idV) || t.otherName(name)) {
			t = nil
		}
	} else {
		index = s.unindexed(pos, idV, name)
		t = s.findTool(index)
	}
	if t == nil {
		t = &toolCall{index: index, block: -1}
		s.tools = append(s.tools, t)
	}
	if t.upstreamID == nil && t.block < 0 && nonEmptyString(idV) {
		t.upstreamID = appendUnescaped(nil, inner(idV))
		t.id = s.ids.assign(t.upstreamID)
	}
	argText := inner(args)
	if isObject(args) {
		// A provider that sends the arguments as an object sends them whole.
		argText = appendQuotedJSON(nil, args)
	}
	if t.scan.complete() {
		// The arguments are a whole JSON object: what follows can only be
		// blank or a repetition.
		argText = nil
	}
	switch {
	case t == s.openTool:
		if len(argText) > 0 {
			t.scan.feed(argText)
			s.argsEvent(argText)
			if t.scan.complete() && s.heldHead < len(s.held) {
				s.release()
			}
		}
		return nil
	case t.closed:
		if len(argText) > 0 && !isBlank(argText) {
			return errLateArguments
		}
		return nil
	}
	if len(argText) > 0 {
		if len(t.args)+len(argText) > maxHeldPerCall {
			return fmt.Errorf("convert: %w: more than %d MiB of arguments held for a tool call while another block stays open", ErrMalformed, maxHeldPerCall>>20)
		}
		if err := s.grow(len(argText)); err != nil {
			return err
		}
		t.args = append(t.args, argText...)
		t.scan.feed(argText)
	}
	if t.name == nil && nonEmptyString(name) {
		t.name = append([]byte(nil), name...)
	}
	if t.name == nil || t.queued {
		return nil
	}
	if s.blocked() {
		t.queued = true
		s.held = append(s.held, heldBlock{kind: openToolUse, tool: t})
		return nil
	}
	s.closeOpen()
	s.startTool(t)
	return nil
}

// otherID reports whether idV names another call than t.
func (t *toolCall) otherID(idV []byte) bool {
	in := inner(idV)
	if len(in) == 0 || t.upstreamID == nil {
		return false
	}
	if hasBackslash(in) {
		return string(appendUnescaped(nil, in)) != string(t.upstreamID)
	}
	return string(in) != string(t.upstreamID)
}

// otherName reports whether name (raw) is another function than t's.
func (t *toolCall) otherName(name []byte) bool {
	return nonEmptyString(name) && t.name != nil && string(name) != string(t.name)
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

// findTool returns the latest call with the index.
func (s *Stream) findTool(index int64) *toolCall {
	for i := len(s.tools) - 1; i >= 0; i-- {
		if s.tools[i].index == index {
			return s.tools[i]
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
// the arguments held for it. A call whose name never comes is dropped: a
// tool_use without a name cannot be run.
func (s *Stream) startTool(t *toolCall) {
	if t.id == "" {
		t.id = newID("toolu_")
	}
	name := t.name
	t.block = s.next
	t.queued = false
	s.startBlock(openToolUse, "", func(b []byte) []byte {
		b = append(b, `{"type":"tool_use","id":`...)
		b = appendString(b, t.id)
		b = append(b, `,"name":`...)
		b = append(b, name...)
		return append(b, `,"input":{}}`...)
	})
	s.openTool = t
	s.anyTool = true
	if len(t.args) > 0 {
		s.argsEvent(t.args)
		s.heldBytes -= len(t.args)
		t.args = nil
	}
}

func (s *Stream) argsEvent(argText []byte) {
	s.outBytes += int64(len(argText))
	s.deltaEvent(`{"type":"input_json_delta","partial_json":`, argText)
}

// release sends the held blocks in order while the open block allows it:
// each but the last is closed at once, its content being all there is yet;
// a tool call whose arguments are incomplete stays open and holds back the
// rest.
func (s *Stream) release() {
	for s.heldHead < len(s.held) && !s.blocked() {
		h := s.held[s.heldHead]
		s.held[s.heldHead] = heldBlock{}
		s.heldHead++
		s.closeOpen()
		switch h.kind {
		case openText:
			s.heldBytes -= len(h.text)
			s.startBlock(openText, `{"type":"text","text":""}`, nil)
			s.outBytes += int64(len(h.text))
			s.deltaEvent(`{"type":"text_delta","text":`, h.text)
		case openThinking:
			s.heldBytes -= len(h.text)
			s.startThinking()
			s.hashThinking(h.text)
			s.outBytes += int64(len(h.text))
			s.deltaEvent(`{"type":"thinking_delta","thinking":`, h.text)
		case openToolUse:
			s.startTool(h.tool)
		}
	}
	if s.heldHead == len(s.held) {
		s.held, s.heldHead = s.held[:0], 0
	}
}

// closeAll closes the open block and sends every held block, closed: the
// provider has finished.
func (s *Stream) closeAll() {
	s.dropBlank()
	for {
		s.closeOpen()
		if s.heldHead == len(s.held) {
			break
		}
		s.release()
	}
	s.held, s.heldHead = s.held[:0], 0
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

// rawDeltaEvent sends a content_block_delta for the open block: prefix, the
// raw JSON string v, and the closing braces.
func (s *Stream) rawDeltaEvent(prefix string, v []byte) {
	start := s.eventHead("content_block_delta")
	s.buf = append(s.buf, `{"type":"content_block_delta","index":`...)
	s.buf = strconv.AppendInt(s.buf, int64(s.openIndex), 10)
	s.buf = append(s.buf, `,"delta":`...)
	s.buf = append(s.buf, prefix...)
	s.buf = append(s.buf, v...)
	s.buf = append(s.buf, "}}"...)
	s.eventTail("content_block_delta", start)
}

// deltaEvent sends a content_block_delta for the open block: prefix, the
// escaped string content in between quotes, and the closing braces.
func (s *Stream) deltaEvent(prefix string, in []byte) {
	start := s.eventHead("content_block_delta")
	s.buf = append(s.buf, `{"type":"content_block_delta","index":`...)
	s.buf = strconv.AppendInt(s.buf, int64(s.openIndex), 10)
	s.buf = append(s.buf, `,"delta":`...)
	s.buf = append(s.buf, prefix...)
	s.buf = append(s.buf, '"')
	s.buf = append(s.buf, in...)
	s.buf = append(s.buf, `"}}`...)
	s.eventTail("content_block_delta", start)
}

// closeOpen closes the open block; a thinking block gets its signature first.
func (s *Stream) closeOpen() {
	if s.open == openNone {
		return
	}
	if s.open == openThinking {
		var sum [sha256.Size]byte
		s.deltaEvent(`{"type":"signature_delta","signature":`, []byte(signatureFromSum(s.thinkHash.Sum(sum[:0]))))
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

// finishMessage sends what ends the message: the open and held blocks,
// message_delta and message_stop.
func (s *Stream) finishMessage() {
	if !s.started {
		s.messageStart()
	}
	s.closeAll()
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

// isBlank reports whether escaped string content is only JSON whitespace.
func isBlank(in []byte) bool {
	for i := 0; i < len(in); i++ {
		switch in[i] {
		case ' ':
		case '\\':
			if i+1 < len(in) && (in[i+1] == 'n' || in[i+1] == 't' || in[i+1] == 'r') {
				i++
				continue
			}
			return false
		default:
			return false
		}
	}
	return true
}

// argScan follows the structure of a tool call's arguments as their pieces
// arrive, to tell when they form a complete JSON object: the block can close
// then without losing anything.
type argScan struct {
	depth int32
	state uint8
}

const (
	scanStart  uint8 = iota // before the first character that is not blank
	scanValue               // inside the object, outside strings
	scanString              // inside a string
	scanEscape              // after a backslash inside a string
	scanDone                // the object is complete
	scanOther               // the arguments are not an object
)

func (a *argScan) complete() bool { return a.state == scanDone }

// feed reads a piece of argument text, escaped as in a JSON string. Inside
// strings only quotes and backslashes matter, and most of the text of
// arguments is inside strings.
func (a *argScan) feed(in []byte) {
	for i := 0; i < len(in) && a.state < scanDone; i++ {
		if a.state == scanString {
			// Only an escape can end the string here: its quote is \".
			k := bytes.IndexByte(in[i:], '\\')
			if k < 0 {
				return
			}
			i += k
		}
		c := in[i]
		if c == '\\' && i+1 < len(in) {
			// An escape of the JSON string carrying the arguments.
			i++
			switch in[i] {
			case 'n', 't', 'r':
				c = ' '
			case 'u':
				c = 0x80 // a character no structure depends on
				if r, ok := rawjson.Hex4(in[i-1:]); ok && r < 0x80 {
					c = byte(r)
				}
				i += 4
			case '"', '\\', '/':
				c = in[i]
			default: // \b, \f
				c = 0x80
			}
		}
		switch a.state {
		case scanStart:
			switch {
			case c == '{':
				a.state, a.depth = scanValue, 1
			case !isSpace(c):
				a.state = scanOther
			}
		case scanValue:
			switch c {
			case '"':
				a.state = scanString
			case '{', '[':
				a.depth++
			case '}', ']':
				a.depth--
				if a.depth == 0 {
					a.state = scanDone
				}
			}
		case scanString:
			switch c {
			case '\\':
				a.state = scanEscape
			case '"':
				a.state = scanValue
			}
		case scanEscape:
			a.state = scanString
		}
	}
}
