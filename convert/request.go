package convert

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// ErrInvalidRequest is wrapped by every error Request returns: the body is not
// an Anthropic Messages request, and the client should get a 400.
var ErrInvalidRequest = errors.New("invalid request")

// errJSON is the error for a body that is not JSON.
var errJSON = invalid("body is not valid JSON")

func invalid(format string, args ...any) error {
	return fmt.Errorf("convert: %w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))
}

// maxStop is the number of stop sequences OpenAI accepts; the rest are
// dropped.
const maxStop = 4

// maxUserLen is the longest metadata.user_id sent as "user" as it is; longer
// ones (Claude Code's JSON form) are sent as a hash.
const maxUserLen = 64

// billingHeaderPrefix starts a system block that Claude Code writes for
// Anthropic's billing, not for the model.
var billingHeaderPrefix = []byte("x-anthropic-billing-header:")

// Placeholder texts for what Chat Completions cannot carry.
const (
	missingResultText = "No result was provided for this tool call."
	emptyResultText   = "(empty result)"
	toolImageNote     = "[image attached in the next message]"
)

type role uint8

const (
	roleUser role = iota
	roleAssistant
	roleSystem
)

type message struct {
	role    role
	content []byte // raw string or array
	effort  []byte // output_config.effort of this message, raw
	// carry holds content parts (rendered, comma-separated) that tool results
	// handed over to this user message: their images.
	carry []byte
}

type request struct {
	out []byte
	opt Options
	// valid: the body is known valid and is read without being checked
	// (AppendValidRequest).
	valid bool
	msgs  []message
	// cut is where the messages the provider gets begin (see compaction).
	cut      cut
	tools    []tool
	firstMsg bool
	scratch  []byte
}

type tool struct {
	name        []byte // raw string content
	description []byte // raw
	schema      []byte // raw input_schema
	deferred    bool
	active      bool
}

// Request converts an Anthropic Messages request body into a Chat
// Completions request body for model. The error (wrapping ErrInvalidRequest)
// is only for a body that is not a Messages request at all; fields Chat
// Completions has no use for are dropped without one. See README.md for the
// mapping.
func Request(body []byte, model string, opt Options) ([]byte, error) {
	return AppendRequest(nil, body, model, opt)
}

// AppendRequest is Request appending to dst, so that a caller pooling its
// buffers converts without allocating the result. On error dst comes back
// unchanged.
func AppendRequest(dst, body []byte, model string, opt Options) ([]byte, error) {
	return appendRequest(dst, body, model, opt, false)
}

// AppendValidRequest is AppendRequest for a body known to be valid JSON
// under the module's grammar (internal/rawjson), as a Messages request that
// intake accepted is: it is read without being validated again. Given bytes
// that are not valid JSON after all, it fails or converts what it could
// read; it never panics.
func AppendValidRequest(dst, body []byte, model string, opt Options) ([]byte, error) {
	return appendRequest(dst, body, model, opt, true)
}

func appendRequest(dst, body []byte, model string, opt Options, valid bool) ([]byte, error) {
	var f struct {
		messages, system, toolChoice, maxTokens, temperature, topP, topK,
		stop, stream, metadata, thinking, outputConfig, outputFormat []byte
	}
	r := &request{opt: opt, valid: valid}
	o, ok := r.object(body, skipSpace(body, 0), 0)
	if !ok {
		if validJSON(body) {
			return dst, invalid("body is not a JSON object")
		}
		return dst, errJSON
	}
	// messages and tools are parsed as they are validated; every other
	// member is validated, then kept if it matters.
	for {
		k, more, err := o.key()
		if err != nil {
			return dst, errJSON
		}
		if !more {
			break
		}
		switch string(keyName(k)) {
		case "messages":
			start := o.at()
			end, err := r.parseMessages(body, start)
			if err != nil {
				return dst, err
			}
			f.messages = body[start:end]
			o.setEnd(end)
			continue
		case "tools":
			end, err := r.parseTools(body, o.at())
			if err != nil {
				return dst, errJSON
			}
			o.setEnd(end)
			continue
		}
		v, err := o.value()
		if err != nil {
			return dst, errJSON
		}
		switch string(keyName(k)) {
		case "system":
			f.system = v
		case "tool_choice":
			f.toolChoice = v
		case "max_tokens":
			f.maxTokens = v
		case "temperature":
			f.temperature = v
		case "top_p":
			f.topP = v
		case "top_k":
			f.topK = v
		case "stop_sequences":
			f.stop = v
		case "stream":
			f.stream = v
		case "metadata":
			f.metadata = v
		case "thinking":
			f.thinking = v
		case "output_config":
			f.outputConfig = v
		case "output_format":
			f.outputFormat = v
		}
	}
	if skipSpace(body, o.at()) != len(body) {
		return dst, errJSON
	}
	if f.messages == nil {
		return dst, invalid("messages: want an array")
	}
	r.out = slices.Grow(dst, len(body)+len(body)/8+512)

	r.out = append(r.out, `{"model":`...)
	r.out = appendString(r.out, model)
	r.out = append(r.out, `,"messages":[`...)
	r.firstMsg = true
	r.cut = r.compaction()
	r.writeSystem(f.system)
	r.writeMessages()
	r.out = append(r.out, ']')

	r.writeMaxTokens(f.maxTokens)
	if isNumber(f.temperature) {
		r.out = append(r.out, `,"temperature":`...)
		r.out = append(r.out, f.temperature...)
	}
	if isNumber(f.topP) {
		r.out = append(r.out, `,"top_p":`...)
		r.out = append(r.out, f.topP...)
	}
	if opt.TopK && isNumber(f.topK) {
		r.out = append(r.out, `,"top_k":`...)
		r.out = append(r.out, f.topK...)
	}
	r.writeStop(f.stop)
	if isTrue(f.stream) {
		r.out = append(r.out, `,"stream":true,"stream_options":{"include_usage":true}`...)
	}
	r.writeTools(f.toolChoice)
	r.writeReasoning(f.thinking, f.outputConfig)
	r.writeResponseFormat(f.outputConfig, f.outputFormat)
	r.writeUserID(field(f.metadata, "user_id"))
	if ex := trimSpace(opt.Extra); len(ex) > 2 && isObject(ex) && validJSON(ex) {
		if in := trimSpace(ex[1 : len(ex)-1]); len(in) > 0 {
			r.out = append(r.out, ',')
			r.out = appendCompact(r.out, in)
		}
	}
	r.out = append(r.out, '}')
	return r.out, nil
}

// object, array and check start a walk of the value at b[i], or validate
// it, as the request's body asks: validated as it is read, or read only,
// when it is known valid (AppendValidRequest).
func (r *request) object(b []byte, i, depth int) (vobject, bool) {
	if r.valid {
		return newValidVObject(b, i, depth)
	}
	return newVObject(b, i, depth)
}

func (r *request) array(b []byte, i, depth int) (varray, bool) {
	if r.valid {
		return newValidVArray(b, i, depth)
	}
	return newVArray(b, i, depth)
}

func (r *request) check(b []byte, i, depth int) (int, error) {
	return checkOrSkip(b, i, depth, r.valid)
}

// parseMessages validates and reads the messages array at body[i] and
// returns where it ends.
func (r *request) parseMessages(body []byte, i int) (int, error) {
	a, ok := r.array(body, i, 1)
	if !ok {
		if _, err := r.check(body, i, 1); err != nil {
			return 0, errJSON
		}
		return 0, invalid("messages: want an array")
	}
	r.msgs = r.msgs[:0]
	for n := 0; ; n++ {
		start, more, err := a.elem()
		if err != nil {
			return 0, errJSON
		}
		if !more {
			return a.at(), nil
		}
		o, isObj := r.object(body, start, 2)
		if !isObj {
			if _, err := a.value(); err != nil {
				return 0, errJSON
			}
			return 0, invalid("messages.%d: want an object", n)
		}
		var msg message
		var role []byte
		for {
			k, more, err := o.key()
			if err != nil {
				return 0, errJSON
			}
			if !more {
				break
			}
			v, err := o.value()
			if err != nil {
				return 0, errJSON
			}
			switch string(keyName(k)) {
			case "role":
				role = v
			case "content":
				msg.content = v
			case "output_config":
				msg.effort = field(v, "effort")
			}
		}
		a.setEnd(o.at())
		switch {
		case role == nil:
			return 0, invalid("messages.%d.role: missing", n)
		case strIs(role, "user"):
			msg.role = roleUser
		case strIs(role, "assistant"):
			msg.role = roleAssistant
		case strIs(role, "system"):
			msg.role = roleSystem
		default:
			return 0, invalid("messages.%d.role: unknown role %.40s", n, role)
		}
		switch {
		case isString(msg.content):
		case isArray(msg.content):
			b := newArray(msg.content)
			for blk, ok := b.next(); ok; blk, ok = b.next() {
				if !isObject(blk) {
					return 0, invalid("messages.%d.content: blocks must be objects", n)
				}
			}
		default:
			return 0, invalid("messages.%d.content: want a string or an array", n)
		}
		r.msgs = append(r.msgs, msg)
	}
}

// parseTools validates and reads the tools array at body[i] and returns
// where it ends. A tools value that is not an array is ignored.
func (r *request) parseTools(body []byte, i int) (int, error) {
	if k, n := lookupTools(body[i:], !r.valid); k != nil {
		// An array read before (see toolcache.go).
		r.tools = k.appendTools(r.tools[:0], body[i:])
		return i + n, nil
	}
	a, ok := r.array(body, i, 1)
	if !ok {
		return r.check(body, i, 1)
	}
	r.tools = r.tools[:0]
	for {
		start, more, err := a.elem()
		if err != nil {
			return a.at(), err
		}
		if !more {
			keepTools(body, i, a.at(), r.tools, !r.valid)
			return a.at(), nil
		}
		o, isObj := r.object(body, start, 2)
		if !isObj {
			if _, err := a.value(); err != nil {
				return 0, err
			}
			continue
		}
		var t tool
		var typ []byte
		for {
			k, more, err := o.key()
			if err != nil {
				return 0, err
			}
			if !more {
				break
			}
			v, err := o.value()
			if err != nil {
				return 0, err
			}
			toolField(&t, &typ, k, v)
		}
		a.setEnd(o.at())
		r.addTool(t, typ, false)
	}
}

// toolField records one member of a tool definition.
func toolField(t *tool, typ *[]byte, k, v []byte) {
	switch string(keyName(k)) {
	case "name":
		t.name = inner(v)
	case "description":
		t.description = v
	case "input_schema":
		t.schema = v
	case "type":
		*typ = v
	case "defer_loading":
		t.deferred = isTrue(v)
	}
}

// addTool registers a tool definition. Server tools (web search, code
// execution...) run at Anthropic and have no input_schema: they are dropped.
func (r *request) addTool(t tool, typ []byte, active bool) {
	if len(t.name) == 0 || typ != nil && !strIs(typ, "custom") && t.schema == nil {
		return
	}
	t.active = active || !t.deferred
	if active {
		// A definition added mid-conversation replaces one of the same name:
		// providers refuse duplicate function names.
		for i := range r.tools {
			if bytes.Equal(r.tools[i].name, t.name) {
				r.tools[i] = t
				return
			}
		}
	}
	r.tools = append(r.tools, t)
}

// setToolActive turns a tool on (a tool search loaded it) or off (a
// mid-conversation removal).
func (r *request) setToolActive(name []byte, on bool) {
	for i := range r.tools {
		if bytes.Equal(r.tools[i].name, name) {
			r.tools[i].active = on
		}
	}
}

// sep writes the comma between two messages.
func (r *request) sep() {
	if !r.firstMsg {
		r.out = append(r.out, ',')
	}
	r.firstMsg = false
}

// mark and undo let a writer take back a message that turned out empty.
type mark struct {
	n     int
	first bool
}

func (r *request) mark() mark  { return mark{len(r.out), r.firstMsg} }
func (r *request) undo(m mark) { r.out, r.firstMsg = r.out[:m.n], m.first }

func (r *request) writeSystem(system []byte) {
	m := r.mark()
	r.sep()
	r.out = append(r.out, `{"role":"system","content":"`...)
	textStart := len(r.out)
	r.appendSystemText(system, true)
	if r.opt.InlineSystem == "merge" {
		for _, msg := range r.msgs[r.cut.from:] {
			if msg.role == roleSystem {
				sep := len(r.out)
				if len(r.out) > textStart {
					r.out = append(r.out, `\n`...)
				}
				r.appendSystemText(msg.content, false)
				if len(r.out) == sep+2 && sep > textStart {
					// A message without text adds no separator either.
					r.out = r.out[:sep]
				}
			}
		}
	}
	if len(r.out) == textStart {
		r.undo(m)
		return
	}
	r.out = append(r.out, `"}`...)
}

// appendSystemText appends the text of a system prompt (string or text
// blocks, joined by newlines) as string content.
func (r *request) appendSystemText(v []byte, top bool) {
	if isString(v) {
		r.out = append(r.out, inner(v)...)
		return
	}
	start := len(r.out)
	bs := newBlocks(v)
	for b, ok := bs.next(); ok; b, ok = bs.next() {
		t := inner(b.text)
		if b.typ != blockText || len(t) == 0 || top && bytes.HasPrefix(t, billingHeaderPrefix) {
			continue
		}
		if len(r.out) > start {
			r.out = append(r.out, `\n`...)
		}
		r.out = append(r.out, t...)
	}
}

func (r *request) writeMessages() {
	c := r.cut
	if c.summary != nil {
		r.sep()
		r.out = append(r.out, `{"role":"user","content":`...)
		r.out = append(r.out, c.summary...)
		r.out = append(r.out, '}')
	}
	for i := c.from; i < len(r.msgs); i++ {
		m := &r.msgs[i]
		if i == c.from && c.rest != nil {
			m = c.rest
		}
		switch m.role {
		case roleSystem:
			r.writeInlineSystem(m)
		case roleAssistant:
			ids := r.writeAssistant(m)
			if len(ids) > 0 {
				r.writeToolResults(i, ids)
			}
		case roleUser:
			r.writeUser(m)
		}
	}
}

// cut is where the conversation the provider gets begins: at a compaction
// block's summary, or at the first message.
type cut struct {
	// from is the index of the first message written; rest, when set,
	// stands for that message: what follows its compaction block.
	from int
	rest *message
	// summary is the compaction block's summary (a JSON string), nil
	// without one.
	summary []byte
}

// compaction finds the last compaction block with a summary in an assistant
// message. The API reads nothing before such a block: the summary stands
// for the conversation so far. So the provider gets the summary as the
// first user message (some chat templates want a user message first), then
// the rest of that assistant message, then what follows it. What the
// dropped part did to the tools (a tool search's references, tools added
// or removed) still holds, as the API keeps the tools it loaded.
func (r *request) compaction() cut {
	for i := len(r.msgs) - 1; i >= 0; i-- {
		m := &r.msgs[i]
		// A compaction block's type is written so, escapes aside: the
		// check saves reading every other message's blocks.
		if m.role != roleAssistant || !isArray(m.content) || !bytes.Contains(m.content, []byte(`"compaction"`)) {
			continue
		}
		at, n := -1, 0
		var summary []byte
		bs := newBlocks(m.content)
		for b, ok := bs.next(); ok; b, ok = bs.next() {
			if b.typ == blockCompaction && nonEmptyString(b.text) {
				at, summary = n, b.text
			}
			n++
		}
		if at < 0 {
			continue
		}
		for j := range r.msgs[:i] {
			r.applyToolState(r.msgs[j].content, -1)
		}
		r.applyToolState(m.content, at)
		rest := append(make([]byte, 0, len(m.content)), '[')
		a := newArray(m.content)
		n = 0
		for v, ok := a.next(); ok; v, ok = a.next() {
			if n > at {
				if len(rest) > 1 {
					rest = append(rest, ',')
				}
				rest = append(rest, v...)
			}
			if isObject(v) {
				n++
			}
		}
		rest = append(rest, ']')
		c := *m
		c.content = rest
		return cut{from: i, rest: &c, summary: summary}
	}
	return cut{}
}

// applyToolState applies what a message left out of the provider's request
// did to the tools: its tool_addition and tool_removal blocks and the tool
// references in its tool results, among its first n blocks (all when n < 0).
func (r *request) applyToolState(content []byte, n int) {
	if !isArray(content) {
		return
	}
	bs := newBlocks(content)
	for b, ok := bs.next(); ok && n != 0; b, ok = bs.next() {
		n--
		switch b.typ {
		case blockToolAddition, blockToolRemoval:
			r.toolChange(b)
		case blockToolResult:
			r.scanToolReferences(b.content)
		}
	}
}

func (r *request) writeInlineSystem(m *message) {
	if r.opt.InlineSystem == "merge" {
		return
	}
	role := "system"
	if r.opt.InlineSystem == "user" {
		role = "user"
	}
	mk := r.mark()
	r.sep()
	r.out = append(r.out, `{"role":"`...)
	r.out = append(r.out, role...)
	r.out = append(r.out, `","content":"`...)
	textStart := len(r.out)
	r.appendSystemText(m.content, false)
	if len(r.out) == textStart {
		r.undo(mk)
		return
	}
	r.out = append(r.out, `"}`...)
}

// writeAssistant writes an assistant message and returns the raw ids of its
// tool calls, which the next messages must answer.
func (r *request) writeAssistant(m *message) [][]byte {
	if isString(m.content) {
		if len(inner(m.content)) > 0 {
			r.sep()
			r.out = append(r.out, `{"role":"assistant","content":`...)
			r.out = append(r.out, m.content...)
			r.out = append(r.out, '}')
		}
		return nil
	}
	var texts, thinking, calls int
	keepThinking := r.opt.ThinkingHistory == "reasoning_content" || r.opt.ThinkingHistory == "reasoning"
	bs := newBlocks(m.content)
	for b, ok := bs.next(); ok; b, ok = bs.next() {
		switch b.typ {
		case blockText:
			if nonEmptyString(b.text) {
				texts++
			}
		case blockThinking:
			if keepThinking && nonEmptyString(b.text) {
				thinking++
			}
		case blockToolUse:
			if isString(b.id) && nonEmptyString(b.name) {
				calls++
			}
		case blockToolAddition, blockToolRemoval:
			r.toolChange(b)
		}
	}
	if texts+thinking+calls == 0 {
		return nil
	}
	r.sep()
	r.out = append(r.out, `{"role":"assistant","content":`...)
	switch {
	case texts == 0 && calls > 0:
		r.out = append(r.out, "null"...)
	case texts == 0:
		// Only reasoning: providers take null content only beside tool calls.
		r.out = append(r.out, `""`...)
	default:
		r.out = append(r.out, '"')
		r.appendTexts(m.content, blockText)
		r.out = append(r.out, '"')
	}
	if thinking > 0 {
		r.out = append(r.out, `,"`...)
		r.out = append(r.out, r.opt.ThinkingHistory...)
		r.out = append(r.out, `":"`...)
		r.appendTexts(m.content, blockThinking)
		r.out = append(r.out, '"')
	}
	var ids [][]byte
	if calls > 0 {
		r.out = append(r.out, `,"tool_calls":[`...)
		bs = newBlocks(m.content)
		for b, ok := bs.next(); ok; b, ok = bs.next() {
			if b.typ != blockToolUse || !isString(b.id) || !nonEmptyString(b.name) || containsID(ids, inner(b.id)) {
				continue
			}
			if len(ids) > 0 {
				r.out = append(r.out, ',')
			}
			ids = append(ids, inner(b.id))
			r.out = append(r.out, `{"id":`...)
			r.appendToolID(b.id)
			r.out = append(r.out, `,"type":"function","function":{"name":`...)
			r.out = append(r.out, b.name...)
			r.out = append(r.out, `,"arguments":"`...)
			if len(b.input) == 0 || string(b.input) == "null" {
				r.out = append(r.out, "{}"...)
			} else {
				r.out = appendQuotedJSON(r.out, b.input)
			}
			r.out = append(r.out, `"}}`...)
		}
		r.out = append(r.out, ']')
	}
	r.out = append(r.out, '}')
	return ids
}

func containsID(ids [][]byte, id []byte) bool {
	for _, x := range ids {
		if bytes.Equal(x, id) {
			return true
		}
	}
	return false
}

// appendToolID writes a tool id (raw string) as the provider knows it.
func (r *request) appendToolID(id []byte) {
	if orig, ok := unwrapToolID(inner(id)); ok {
		r.out = appendString(r.out, orig)
		return
	}
	r.out = append(r.out, id...)
}

// appendTexts appends the non-empty texts of the blocks of type typ, joined
// by newlines, as string content.
func (r *request) appendTexts(content []byte, typ blockType) {
	start := len(r.out)
	bs := newBlocks(content)
	for b, ok := bs.next(); ok; b, ok = bs.next() {
		t := inner(b.text)
		if b.typ != typ || len(t) == 0 {
			continue
		}
		if len(r.out) > start {
			r.out = append(r.out, `\n`...)
		}
		r.out = append(r.out, t...)
	}
}

// writeToolResults writes one tool message per call of the assistant message
// at index i, in call order, taking the results from the next user message
// (system messages in between are skipped over). A call without a result
// gets a placeholder; results for other ids are dropped with the rest of
// that message's tool_result blocks.
func (r *request) writeToolResults(i int, ids [][]byte) {
	var next *message
	for j := i + 1; j < len(r.msgs); j++ {
		if r.msgs[j].role == roleSystem {
			continue
		}
		if r.msgs[j].role == roleUser {
			next = &r.msgs[j]
		}
		break
	}
	var results []block
	if next != nil && isArray(next.content) {
		bs := newBlocks(next.content)
		for b, ok := bs.next(); ok; b, ok = bs.next() {
			if b.typ == blockToolResult && isString(b.id) {
				results = append(results, b)
			}
		}
	}
	for _, id := range ids {
		r.sep()
		r.out = append(r.out, `{"role":"tool","tool_call_id":`...)
		r.scratch = append(append(append(r.scratch[:0], '"'), id...), '"')
		r.appendToolID(r.scratch)
		r.out = append(r.out, `,"content":"`...)
		found := false
		for k := range results {
			if bytes.Equal(inner(results[k].id), id) {
				next.carry = r.appendToolResult(results[k], next.carry)
				found = true
				break
			}
		}
		if !found {
			r.out = append(r.out, missingResultText...)
		}
		r.out = append(r.out, `"}`...)
	}
}

// appendToolResult appends the text of a tool_result block as string content
// and returns carry with the block's images appended as content parts.
func (r *request) appendToolResult(res block, carry []byte) []byte {
	start := len(r.out)
	if res.isError {
		r.out = append(r.out, "Error: "...)
	}
	textStart := len(r.out)
	line := func() {
		if len(r.out) > textStart {
			r.out = append(r.out, `\n`...)
		}
	}
	switch {
	case isString(res.content):
		r.out = append(r.out, inner(res.content)...)
	case isArray(res.content):
		bs := newBlocks(res.content)
		for c, ok := bs.next(); ok; c, ok = bs.next() {
			switch c.typ {
			case blockText:
				if txt := inner(c.text); len(txt) > 0 {
					line()
					r.out = append(r.out, txt...)
				}
			case blockImage:
				part := appendImagePart(nil, c.source)
				if part == nil {
					continue
				}
				if len(carry) > 0 {
					carry = append(carry, ',')
				}
				carry = append(carry, part...)
				line()
				r.out = append(r.out, toolImageNote...)
			case blockToolReference:
				if name := inner(c.name); len(name) > 0 {
					r.setToolActive(name, true)
					line()
					r.out = append(r.out, "Tool "...)
					r.out = append(r.out, name...)
					r.out = append(r.out, " loaded."...)
				}
			case blockDocument:
				if txt := documentText(c.source); len(txt) > 0 {
					line()
					r.out = append(r.out, txt...)
				}
			}
		}
	}
	if len(r.out) == textStart {
		r.out = r.out[:start]
		if res.isError {
			r.out = append(r.out, "Error"...)
		} else {
			r.out = append(r.out, emptyResultText...)
		}
	}
	return carry
}

// toolChange applies a tool_addition or tool_removal block.
func (r *request) toolChange(b block) {
	on := b.typ == blockToolAddition
	if on && strIs(field(b.tool, "type"), "tool_definition") {
		var t tool
		var typ []byte
		o := newObject(field(b.tool, "definition"))
		for k, v, ok := o.next(); ok; k, v, ok = o.next() {
			toolField(&t, &typ, k, v)
		}
		r.addTool(t, typ, true)
		return
	}
	name := field(b.tool, "name")
	if name == nil {
		name = field(b.tool, "tool_name")
	}
	if isString(name) {
		r.setToolActive(inner(name), on)
	}
}

// writeUser writes a user message: its text, images and documents, after
// the images its tool results handed over. tool_result blocks were written
// with the assistant message they answer.
func (r *request) writeUser(m *message) {
	if isString(m.content) {
		if len(m.carry) == 0 {
			if len(inner(m.content)) > 0 {
				r.sep()
				r.out = append(r.out, `{"role":"user","content":`...)
				r.out = append(r.out, m.content...)
				r.out = append(r.out, '}')
			}
			return
		}
		r.sep()
		r.out = append(r.out, `{"role":"user","content":[`...)
		r.out = append(r.out, m.carry...)
		if len(inner(m.content)) > 0 {
			r.out = append(r.out, `,{"type":"text","text":`...)
			r.out = append(r.out, m.content...)
			r.out = append(r.out, '}')
		}
		r.out = append(r.out, "]}"...)
		return
	}
	parts, texts := len(m.carry) > 0, 0
	bs := newBlocks(m.content)
	for b, ok := bs.next(); ok; b, ok = bs.next() {
		switch b.typ {
		case blockText, blockCompaction:
			if nonEmptyString(b.text) {
				texts++
			}
		case blockImage, blockDocument:
			parts = true
		case blockToolAddition, blockToolRemoval:
			r.toolChange(b)
		case blockToolResult:
			// A tool search loads its tools even when its call went
			// unanswered in Chat Completions terms.
			r.scanToolReferences(b.content)
		}
	}
	if !parts {
		if texts == 0 {
			return
		}
		r.sep()
		r.out = append(r.out, `{"role":"user","content":"`...)
		start := len(r.out)
		bs = newBlocks(m.content)
		for b, ok := bs.next(); ok; b, ok = bs.next() {
			if b.typ != blockText && b.typ != blockCompaction || !nonEmptyString(b.text) {
				continue
			}
			if len(r.out) > start {
				r.out = append(r.out, `\n`...)
			}
			r.out = append(r.out, inner(b.text)...)
		}
		r.out = append(r.out, `"}`...)
		return
	}
	mk := r.mark()
	r.sep()
	r.out = append(r.out, `{"role":"user","content":[`...)
	partsStart := len(r.out)
	r.out = append(r.out, m.carry...)
	bs = newBlocks(m.content)
	for b, ok := bs.next(); ok; b, ok = bs.next() {
		before := len(r.out)
		if len(r.out) > partsStart {
			r.out = append(r.out, ',')
		}
		partStart := len(r.out)
		switch b.typ {
		case blockImage:
			r.out = appendImagePart(r.out, b.source)
		case blockDocument:
			r.out = appendDocumentPart(r.out, b)
		case blockText, blockCompaction:
			if nonEmptyString(b.text) {
				r.out = append(r.out, `{"type":"text","text":`...)
				r.out = append(r.out, b.text...)
				r.out = append(r.out, '}')
			}
		}
		if len(r.out) == partStart {
			r.out = r.out[:before]
		}
	}
	if len(r.out) == partsStart {
		r.undo(mk)
		return
	}
	r.out = append(r.out, "]}"...)
}

func (r *request) scanToolReferences(content []byte) {
	if !isArray(content) {
		return
	}
	bs := newBlocks(content)
	for c, ok := bs.next(); ok; c, ok = bs.next() {
		if c.typ == blockToolReference && nonEmptyString(c.name) {
			r.setToolActive(inner(c.name), true)
		}
	}
}

// appendImagePart appends an image_url content part for an image source, or
// nothing when the source is neither base64 nor a URL.
func appendImagePart(dst, src []byte) []byte {
	var typ, mediaType, data, url []byte
	o := newObject(src)
	for k, v, ok := o.next(); ok; k, v, ok = o.next() {
		switch string(keyName(k)) {
		case "type":
			typ = v
		case "media_type":
			mediaType = v
		case "data":
			data = v
		case "url":
			url = v
		}
	}
	switch {
	case strIs(typ, "base64") && isString(data):
		dst = append(dst, `{"type":"image_url","image_url":{"url":"data:`...)
		dst = append(dst, inner(mediaType)...)
		dst = append(dst, ";base64,"...)
		dst = append(dst, inner(data)...)
		return append(dst, `"}}`...)
	case strIs(typ, "url") && isString(url):
		dst = append(dst, `{"type":"image_url","image_url":{"url":`...)
		dst = append(dst, url...)
		return append(dst, "}}"...)
	}
	return dst
}

// appendDocumentPart appends a content part for a document block: a PDF as a
// file part, a text document as text. Other sources are dropped.
func appendDocumentPart(dst []byte, b block) []byte {
	typ, data := field(b.source, "type"), field(b.source, "data")
	if strIs(typ, "base64") && isString(data) {
		dst = append(dst, `{"type":"file","file":{"filename":`...)
		if nonEmptyString(b.title) {
			dst = append(dst, b.title...)
		} else {
			dst = append(dst, `"document.pdf"`...)
		}
		dst = append(dst, `,"file_data":"data:`...)
		mt := inner(field(b.source, "media_type"))
		if len(mt) == 0 {
			mt = []byte("application/pdf")
		}
		dst = append(dst, mt...)
		dst = append(dst, ";base64,"...)
		dst = append(dst, inner(data)...)
		return append(dst, `"}}`...)
	}
	if txt := documentText(b.source); len(txt) > 0 {
		dst = append(dst, `{"type":"text","text":"`...)
		dst = append(dst, txt...)
		return append(dst, `"}`...)
	}
	return dst
}

// documentText returns the text of a plain-text document source (escaped
// content).
func documentText(src []byte) []byte {
	if strIs(field(src, "type"), "text") {
		return inner(field(src, "data"))
	}
	return nil
}

func (r *request) writeMaxTokens(v []byte) {
	n, ok := intValue(v)
	if !ok {
		return
	}
	if r.opt.MaxTokens > 0 && n > r.opt.MaxTokens {
		n = r.opt.MaxTokens
	}
	r.out = append(r.out, ',', '"')
	if r.opt.MaxTokensField == "max_completion_tokens" {
		r.out = append(r.out, "max_completion_tokens"...)
	} else {
		r.out = append(r.out, "max_tokens"...)
	}
	r.out = append(r.out, '"', ':')
	r.out = strconv.AppendInt(r.out, n, 10)
}

func (r *request) writeStop(v []byte) {
	a := newArray(v)
	n := 0
	for s, ok := a.next(); ok && n < maxStop; s, ok = a.next() {
		if !nonEmptyString(s) {
			continue
		}
		if n == 0 {
			r.out = append(r.out, `,"stop":[`...)
		} else {
			r.out = append(r.out, ',')
		}
		r.out = append(r.out, s...)
		n++
	}
	if n > 0 {
		r.out = append(r.out, ']')
	}
}

func (r *request) writeTools(choice []byte) {
	// A tool the client forces is offered even if it was deferred.
	if strIs(field(choice, "type"), "tool") {
		if name := field(choice, "name"); isString(name) {
			r.setToolActive(inner(name), true)
		}
	}
	n := 0
	for _, t := range r.tools {
		if !t.active {
			continue
		}
		if n == 0 {
			r.out = append(r.out, `,"tools":[`...)
		} else {
			r.out = append(r.out, ',')
		}
		n++
		r.out = append(r.out, `{"type":"function","function":{"name":"`...)
		r.out = append(r.out, t.name...)
		r.out = append(r.out, '"')
		if nonEmptyString(t.description) {
			r.out = append(r.out, `,"description":`...)
			r.out = append(r.out, t.description...)
		}
		r.out = append(r.out, `,"parameters":`...)
		if isObject(t.schema) {
			r.out = appendSchema(r.out, t.schema, r.opt.SanitizeSchema)
		} else {
			r.out = append(r.out, `{"type":"object","properties":{}}`...)
		}
		r.out = append(r.out, "}}"...)
	}
	if n == 0 {
		return
	}
	r.out = append(r.out, ']')
	switch t := field(choice, "type"); {
	case strIs(t, "auto"):
		r.out = append(r.out, `,"tool_choice":"auto"`...)
	case strIs(t, "any"):
		r.out = append(r.out, `,"tool_choice":"required"`...)
	case strIs(t, "none"):
		r.out = append(r.out, `,"tool_choice":"none"`...)
	case strIs(t, "tool"):
		if name := field(choice, "name"); isString(name) {
			r.out = append(r.out, `,"tool_choice":{"type":"function","function":{"name":`...)
			r.out = append(r.out, name...)
			r.out = append(r.out, "}}"...)
		}
	}
	if isTrue(field(choice, "disable_parallel_tool_use")) && !strIs(field(choice, "type"), "none") {
		r.out = append(r.out, `,"parallel_tool_calls":false`...)
	}
}

// effortLevel maps an Anthropic effort to a Chat Completions reasoning level.
func effortLevel(v []byte) string {
	switch {
	case strIs(v, "low"):
		return "low"
	case strIs(v, "medium"):
		return "medium"
	case strIs(v, "high"), strIs(v, "xhigh"), strIs(v, "max"):
		return "high"
	}
	return ""
}

// budgetLevel maps a thinking budget in tokens to a reasoning level.
func budgetLevel(n int64) string {
	switch {
	case n <= 2048:
		return "low"
	case n <= 8192:
		return "medium"
	}
	return "high"
}

func (r *request) writeReasoning(thinking, outputConfig []byte) {
	mode := r.opt.Reasoning
	if mode == "" || mode == "off" {
		return
	}
	typ := field(thinking, "type")
	if strIs(typ, "disabled") {
		return
	}
	var level string
	var budget int64
	if mode == "effort" {
		effort := field(outputConfig, "effort")
		for i := len(r.msgs) - 1; i >= 0; i-- {
			if r.msgs[i].effort != nil {
				effort = r.msgs[i].effort
				break
			}
		}
		level = effortLevel(effort)
		if level == "" && strIs(typ, "enabled") {
			if n, ok := intValue(field(thinking, "budget_tokens")); ok && n > 0 {
				level, budget = budgetLevel(n), n
			}
		}
	} else {
		level = mode
	}
	if level == "" {
		return
	}
	if r.opt.ReasoningFormat == "reasoning" {
		if budget > 0 {
			r.out = append(r.out, `,"reasoning":{"max_tokens":`...)
			r.out = strconv.AppendInt(r.out, budget, 10)
			r.out = append(r.out, '}')
			return
		}
		r.out = append(r.out, `,"reasoning":{"effort":"`...)
		r.out = append(r.out, level...)
		r.out = append(r.out, `"}`...)
		return
	}
	r.out = append(r.out, `,"reasoning_effort":"`...)
	r.out = append(r.out, level...)
	r.out = append(r.out, '"')
}

// writeResponseFormat maps structured outputs (output_config.format, or the
// older output_format) to response_format.
func (r *request) writeResponseFormat(outputConfig, outputFormat []byte) {
	f := field(outputConfig, "format")
	if f == nil {
		f = outputFormat
	}
	schema := field(f, "schema")
	if !strIs(field(f, "type"), "json_schema") || !isObject(schema) {
		return
	}
	r.out = append(r.out, `,"response_format":{"type":"json_schema","json_schema":{"name":"response","schema":`...)
	r.out = appendSchema(r.out, schema, r.opt.SanitizeSchema)
	r.out = append(r.out, "}}"...)
}

// writeUserID maps metadata.user_id to "user" (hashed when longer than OpenAI
// allows) and, when enabled, the session it names to prompt_cache_key.
func (r *request) writeUserID(v []byte) {
	if !nonEmptyString(v) {
		return
	}
	id := str(v)
	r.out = append(r.out, `,"user":`...)
	r.out = appendString(r.out, shortID(id))
	if r.opt.PromptCacheKey {
		r.out = append(r.out, `,"prompt_cache_key":`...)
		r.out = appendString(r.out, shortID(sessionOf(id)))
	}
}

// shortID returns id, or "u_" and a hash of it when it is too long.
func shortID(id string) string {
	if len(id) <= maxUserLen {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "u_" + hex.EncodeToString(sum[:16])
}

// sessionOf extracts the session id from a Claude Code user_id: a JSON
// object with "session_id" (current versions) or "..._session_<uuid>" (older
// ones). Other ids are their own session.
func sessionOf(id string) string {
	b := []byte(id)
	if validJSON(b) {
		if s := field(trimSpace(b), "session_id"); nonEmptyString(s) {
			return str(s)
		}
	}
	if i := bytes.LastIndex(b, []byte("_session_")); i >= 0 && i+9 < len(b) {
		return id[i+9:]
	}
	return id
}
