package tokens

import (
	"bytes"
	"hash/maphash"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// Kinds of cached values, folded into the cache key.
const (
	kindString = 1 // a message's or the system prompt's string content
	kindBlock  = 2 // a content block of a message or of the system prompt
	kindTool   = 3 // a tool definition
)

// walker carries the scratch buffers of one Count call.
type walker struct {
	c    *Counter
	buf  []byte // unescaped strings
	cbuf []byte // compacted JSON
}

func (w *walker) request(b []byte) (cost, error) {
	i := rawjson.SkipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		if err := rawjson.Check(b); err != nil {
			return cost{}, err
		}
		return cost{}, invalid("request body must be a JSON object")
	}
	var (
		messages, system, tools cost
		haveModel, haveMessages bool
		nMessages               int
	)
	end, err := eachMember(b, i, 0, func(key []byte, v int) (int, error) {
		switch string(key) {
		case "model":
			e, err := rawjson.CheckValue(b, v, 1)
			if err != nil {
				return e, err
			}
			if b[v] != '"' {
				return e, invalid("model: must be a string")
			}
			if e-v == 2 {
				return e, invalid("model: must not be empty")
			}
			haveModel = true
			return e, nil
		case "messages":
			haveMessages = true
			var e int
			var err error
			messages, nMessages, e, err = w.messages(b, v)
			return e, err
		case "system":
			var e int
			var err error
			system, e, err = w.system(b, v)
			return e, err
		case "tools":
			var e int
			var err error
			tools, e, err = w.tools(b, v)
			return e, err
		}
		return rawjson.CheckValue(b, v, 1)
	})
	if err != nil {
		return cost{}, err
	}
	if end = rawjson.SkipSpace(b, end); end != len(b) {
		return cost{}, &rawjson.SyntaxError{Offset: end, Reason: "unexpected data after the JSON value"}
	}
	switch {
	case !haveModel:
		return cost{}, invalid("model: field required")
	case !haveMessages:
		return cost{}, invalid("messages: field required")
	case nMessages == 0:
		return cost{}, invalid("messages: must contain at least one message")
	}
	total := cost{fixed: requestOverhead}
	total.add(messages)
	total.add(system)
	total.add(tools)
	if total.tool {
		total.fixed += toolSystemPrompt
	}
	return total, nil
}

func (w *walker) messages(b []byte, v int) (total cost, n int, end int, err error) {
	if b[v] != '[' {
		if end, err = rawjson.CheckValue(b, v, 1); err != nil {
			return total, 0, end, err
		}
		return total, 0, end, invalid("messages: must be an array")
	}
	end, err = eachElement(b, v, 1, func(m, e int) (int, error) {
		n++
		if b[e] != '{' {
			if end, err := rawjson.CheckValue(b, e, 2); err != nil {
				return end, err
			}
			return e, invalid("messages.%d: must be an object", m)
		}
		var content cost
		haveContent := false
		end, err := eachMember(b, e, 2, func(key []byte, v int) (int, error) {
			if string(key) != "content" {
				return rawjson.CheckValue(b, v, 3)
			}
			haveContent = true
			var end int
			var err error
			content, end, err = w.content(b, v, 3, m)
			return end, err
		})
		if err != nil {
			return end, err
		}
		if !haveContent {
			return end, invalid("messages.%d.content: field required", m)
		}
		total.add(content)
		total.fixed += messageOverhead
		return end, nil
	})
	return total, n, end, err
}

// content counts a message's content at b[v], at depth: a string, or an array of content blocks cached one by
// one.
func (w *walker) content(b []byte, v, depth, m int) (cost, int, error) {
	switch b[v] {
	case '"':
		return w.cached(b, v, kindString, depth, w.stringCost)
	case '[':
		return w.objects(b, v, depth, kindBlock, w.blockCost, func(k int) error {
			return invalid("messages.%d.content.%d: must be an object", m, k)
		})
	}
	end, err := rawjson.CheckValue(b, v, depth)
	if err != nil {
		return cost{}, end, err
	}
	return cost{}, end, invalid("messages.%d.content: must be a string or an array of content blocks", m)
}

func (w *walker) system(b []byte, v int) (cost, int, error) {
	switch b[v] {
	case '"':
		return w.cached(b, v, kindString, 1, w.stringCost)
	case '[':
		return w.objects(b, v, 1, kindBlock, w.blockCost, func(k int) error {
			return invalid("system.%d: must be an object", k)
		})
	case 'n': // null: no system prompt
		end, err := rawjson.CheckValue(b, v, 1)
		return cost{}, end, err
	}
	end, err := rawjson.CheckValue(b, v, 1)
	if err != nil {
		return cost{}, end, err
	}
	return cost{}, end, invalid("system: must be a string or an array of content blocks")
}

func (w *walker) tools(b []byte, v int) (cost, int, error) {
	switch b[v] {
	case '[':
		return w.objects(b, v, 1, kindTool, w.toolCost, func(k int) error {
			return invalid("tools.%d: must be an object", k)
		})
	case 'n': // null: no tools
		end, err := rawjson.CheckValue(b, v, 1)
		return cost{}, end, err
	}
	end, err := rawjson.CheckValue(b, v, 1)
	if err != nil {
		return cost{}, end, err
	}
	return cost{}, end, invalid("tools: must be an array")
}

// countFunc counts the value at b[v], at depth, validating it, and returns the offset past it.
type countFunc func(b []byte, v, depth int) (cost, int, error)

// objects counts the array at b[v], at depth, whose elements must be objects, caching each; notObject builds
// the error for the k-th element when it is not an object.
func (w *walker) objects(b []byte, v, depth int, kind uint64, fn countFunc, notObject func(k int) error) (cost, int, error) {
	var total cost
	end, err := eachElement(b, v, depth, func(k, e int) (int, error) {
		if b[e] != '{' {
			if end, err := rawjson.CheckValue(b, e, depth+1); err != nil {
				return end, err
			}
			return e, notObject(k)
		}
		c, end, err := w.cached(b, e, kind, depth+1, fn)
		total.add(c)
		return end, err
	})
	return total, end, err
}

// cached returns the cost of the value at b[v], at depth, from the cache, or counts it with fn (which validates
// it) and caches it. A hit only needs the value's end, found without validation: its bytes equal those of a
// value that was validated when it was cached. An unterminated value misses (no validated value is a prefix of
// it), so fn says where it breaks.
//
// The key of an object leaves out its closing brace and a trailing "cache_control" member: clients move that
// marker to the newest block on every turn, and it costs no tokens, so the block that loses it stays a hit.
func (w *walker) cached(b []byte, v int, kind uint64, depth int, fn countFunc) (cost, int, error) {
	end := rawjson.SkipValue(b, v)
	raw, marker := b[v:end], -1
	keyed := raw
	if raw[0] == '{' && raw[len(raw)-1] == '}' {
		cut := markerCut(raw)
		if cut < len(raw) {
			marker = v + cut + len(markerPrefix) - 1
		}
		keyed = raw[:min(cut, len(raw)-1)]
	}
	// The depth is in the key only so that a block validated where nesting was shallower never vouches for
	// the same bytes where they would pass rawjson.MaxDepth.
	key := cacheKey{sum: maphash.Bytes(w.c.seed, keyed) ^ (kind<<32|uint64(depth))*0x9e3779b97f4a7c15, n: len(keyed)}
	if c, ok := w.c.cache.get(key); ok {
		if marker >= 0 {
			// The rest was validated with the cached block; the marker was not.
			if e, err := rawjson.CheckValue(b, marker, depth+1); err != nil || e != end-1 {
				return w.miss(b, v, end, key, depth, fn)
			}
		}
		return c, end, nil
	}
	return w.miss(b, v, end, key, depth, fn)
}

func (w *walker) miss(b []byte, v, end int, key cacheKey, depth int, fn countFunc) (cost, int, error) {
	c, e, err := fn(b, v, depth)
	if err != nil {
		return cost{}, e, err
	}
	if e != end {
		return cost{}, e, &rawjson.SyntaxError{Offset: e, Reason: "unexpected data after the value"}
	}
	w.c.cache.put(key, c)
	return c, end, nil
}

const markerPrefix = `,"cache_control":{`

// markerCut returns where a trailing "cache_control" member starts in the object raw, or len(raw). It only
// recognises the compact form clients send, with a flat marker object: ,"cache_control":{"type":"ephemeral"}}.
// In a valid object such a suffix can only be a member of the object itself: a string cannot hold the
// unescaped quotes, and a nested object or array would add a closing bracket after it.
func markerCut(raw []byte) int {
	const window = 96
	start := max(0, len(raw)-window)
	// The last occurrence, found forward: bytes.Index is vectorised, and
	// bytes.LastIndex (Rabin-Karp) costs about ten instructions a byte.
	k := -1
	for i := start; ; {
		j := bytes.Index(raw[i:], []byte(markerPrefix))
		if j < 0 {
			break
		}
		k, i = i+j, i+j+1
	}
	if k < 0 {
		return len(raw)
	}
	if k < 2 {
		return len(raw) // "{" followed by a comma is no object
	}
	rest := raw[k+len(markerPrefix):]
	if len(rest) < 2 || string(rest[len(rest)-2:]) != "}}" || bytes.ContainsAny(rest[:len(rest)-2], "{}[]\\") {
		return len(raw)
	}
	return k
}

func (w *walker) stringCost(b []byte, v, _ int) (cost, int, error) {
	end, err := rawjson.CheckString(b, v)
	if err != nil {
		return cost{}, end, err
	}
	return cost{text: w.text(b[v:end])}, end, nil
}

// span is a value's offsets in the bytes being read; the zero span means absent.
type span struct{ start, end int }

func (s span) in(b []byte) []byte { return b[s.start:s.end] }

// fields holds the members of a content block, source or tool definition that counting looks at.
type fields struct {
	typ, text, thinking, data, name, input, content, source, title, context, description, schema, deferLoading, mediaType span
}

// readFields validates the object at b[i], at depth, and records the spans of the members counting needs (the
// last of duplicates, as encoding/json keeps).
func readFields(b []byte, i, depth int) (fields, int, error) {
	var f fields
	end, err := eachMember(b, i, depth, func(key []byte, v int) (int, error) {
		e, err := rawjson.CheckValue(b, v, depth+1)
		if err != nil {
			return e, err
		}
		s := span{v, e}
		switch string(key) {
		case "type":
			f.typ = s
		case "text":
			f.text = s
		case "thinking":
			f.thinking = s
		case "data":
			f.data = s
		case "name":
			f.name = s
		case "input":
			f.input = s
		case "content":
			f.content = s
		case "source":
			f.source = s
		case "title":
			f.title = s
		case "context":
			f.context = s
		case "description":
			f.description = s
		case "input_schema":
			f.schema = s
		case "defer_loading":
			f.deferLoading = s
		case "media_type":
			f.mediaType = s
		}
		return e, nil
	})
	return f, end, err
}

// is reports whether the span holds the JSON string lit.
func is(b []byte, s span, lit string) bool { return rawjson.StrIs(s.in(b), lit) }

// typeName returns what the "type" of f spells, or nothing when it is not a string.
func typeName(b []byte, f fields) []byte { return rawjson.KeyName(rawjson.Inner(f.typ.in(b))) }

// blockCost counts the content block at b[v], at depth, wherever it sits (message, system prompt, tool result,
// document).
func (w *walker) blockCost(b []byte, v, depth int) (cost, int, error) {
	f, end, err := readFields(b, v, depth)
	if err != nil {
		return cost{}, end, err
	}
	var c cost
	switch string(typeName(b, f)) {
	case "text":
		c.text = w.text(f.text.in(b))
	case "thinking":
		c.text = w.text(f.thinking.in(b))
	case "redacted_thinking":
		data := rawjson.Inner(f.data.in(b))
		c.fixed = (len(data) + redactedBytesPerToken - 1) / redactedBytesPerToken
	case "image":
		c.fixed = w.imageCost(b, f.source, depth)
	case "document":
		c = w.documentCost(b, f.source, depth)
		c.text += w.text(f.title.in(b)) + w.text(f.context.in(b))
	case "tool_use", "server_tool_use", "mcp_tool_use":
		c.text = w.text(f.name.in(b)) + w.text(f.input.in(b))
		c.fixed = toolUseOverhead
	case "tool_result", "mcp_tool_result":
		c = w.nested(b, f.content, depth)
		c.fixed += toolResultOverhead
	case "search_result":
		c = w.nested(b, f.content, depth)
		c.text += w.text(f.title.in(b)) + w.text(f.source.in(b))
	default:
		// Server tool results and block types added later: the whole block as JSON errs on the high side.
		c.text = w.objectText(b[v:end])
	}
	return c, end, nil
}

// nested counts validated content that is a string or an array of content blocks (a tool result's, a
// document's), a member of an object at depth.
func (w *walker) nested(b []byte, s span, depth int) cost {
	if s.end == 0 || b[s.start] != '[' {
		return cost{text: w.text(s.in(b))}
	}
	var total cost
	// The content was validated with its block, at the same depths, so no error can come back.
	_, _ = eachElement(b, s.start, depth+1, func(_, e int) (int, error) {
		if b[e] != '{' {
			end, err := rawjson.CheckValue(b, e, depth+2)
			total.text += w.text(b[e:end])
			return end, err
		}
		c, end, err := w.blockCost(b, e, depth+2)
		total.add(c)
		return end, err
	})
	return total
}

// source reads the validated source object of an image or document block at depth.
func source(b []byte, s span, depth int) (fields, bool) {
	if s.end == 0 || b[s.start] != '{' {
		return fields{}, false
	}
	f, _, err := readFields(b, s.start, depth+1)
	return f, err == nil
}

func (w *walker) imageCost(b []byte, s span, depth int) int {
	src, ok := source(b, s, depth)
	if !ok || !is(b, src.typ, "base64") {
		return w.c.imageTokens
	}
	data := rawjson.Inner(src.data.in(b))
	if data == nil {
		return w.c.imageTokens
	}
	width, height, ok := imageSize(data)
	if !ok {
		return w.c.imageTokens
	}
	return imageTokens(width, height, w.c.imageEdge, w.c.imageMax)
}

func (w *walker) documentCost(b []byte, s span, depth int) cost {
	unknown := cost{fixed: unknownDocumentPages * w.c.pageTokens}
	src, ok := source(b, s, depth)
	if !ok {
		return unknown
	}
	switch {
	case is(b, src.typ, "text"):
		return cost{text: w.text(src.data.in(b))}
	case is(b, src.typ, "content"):
		return w.nested(b, src.content, depth+1)
	case is(b, src.typ, "base64"):
		if data := rawjson.Inner(src.data.in(b)); data != nil {
			return cost{fixed: pdfPages(data) * w.c.pageTokens}
		}
	}
	return unknown
}

// toolCost counts the tool definition at b[v], at depth: name, description and input schema for a custom tool, the
// whole definition for a server tool. A deferred tool is not in the prompt until a tool search loads it.
func (w *walker) toolCost(b []byte, v, depth int) (cost, int, error) {
	f, end, err := readFields(b, v, depth)
	if err != nil {
		return cost{}, end, err
	}
	if string(f.deferLoading.in(b)) == "true" {
		return cost{}, end, nil
	}
	c := cost{fixed: toolDefOverhead, tool: true}
	if f.schema.end == 0 {
		c.text = w.objectText(b[v:end])
		return c, end, nil
	}
	c.text = w.text(f.name.in(b)) + w.text(f.description.in(b)) + w.text(f.schema.in(b))
	return c, end, nil
}

// objectText counts a validated object as compact JSON, without the trailing cache marker its cache key
// ignores, so that a block counts the same with or without it.
func (w *walker) objectText(raw []byte) int {
	cut := markerCut(raw)
	if cut == len(raw) {
		return w.text(raw)
	}
	w.cbuf = append(rawjson.AppendCompact(w.cbuf[:0], raw[:cut]), '}')
	return w.c.enc.count(w.cbuf)
}

// text counts the tokens of a validated JSON value: a string's decoded text, nothing for null, and the compact
// JSON text of anything else (tool inputs, schemas), which is what the model is shown.
func (w *walker) text(v []byte) int {
	switch {
	case len(v) == 0 || string(v) == "null":
		return 0
	case v[0] == '"':
		s := v[1 : len(v)-1]
		if rawjson.HasBackslash(s) {
			w.buf = rawjson.AppendDecoded(w.buf[:0], s)
			s = w.buf
		}
		return w.c.enc.count(s)
	}
	w.cbuf = rawjson.AppendCompact(w.cbuf[:0], v)
	return w.c.enc.count(w.cbuf)
}
