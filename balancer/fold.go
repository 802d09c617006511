package balancer

import (
	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// foldSystemMessages prepares a request for a provider with fold_system: an
// Anthropic-compatible relay that refuses messages of role "system" inside
// "messages" (Claude Code's mid-conversation system messages). Each one
// becomes one user text block in place: the text of its text blocks (or of
// its string content) joined by newlines, with the cache_control of the last
// block that had one, so that a cache breakpoint stays where Claude Code put
// it. Other blocks are dropped, and a system message without text is dropped
// whole.
//
// The block joins a neighbouring user turn rather than standing as a user
// message of its own, so that no two user messages follow each other that
// the client did not send that way (the Messages API merges such turns, but
// relays that validate roles refuse them): it goes to the end of the user
// message before it; with an assistant message (or nothing) before it, to
// the start of the user message after it, behind that message's tool_result
// blocks, which must come first; with none after either, it stands as a user
// message of its own. A string content it joins becomes one text block.
//
// Only those spans change: every other byte of the body, the messages the
// folded text joins included, passes as the client sent it. changed is false,
// and body returned as it is, when there is nothing to fold or the body is
// not a valid request.
func foldSystemMessages(body []byte) (out []byte, changed bool) {
	top, err := rawjson.WalkObject(body, rawjson.SkipSpace(body, 0), 0)
	if err != nil {
		return body, false
	}
	var edits []edit
	for {
		k, ok, err := top.Key()
		if err != nil {
			return body, false
		}
		if !ok {
			break
		}
		start := top.At()
		v, err := top.Value()
		if err != nil {
			return body, false
		}
		if rawjson.KeyIs(k[1:len(k)-1], "messages") && rawjson.IsArray(v) {
			e, ok := foldMessages(body, start)
			if !ok {
				return body, false
			}
			edits = append(edits, e...)
		}
	}
	if len(edits) == 0 || rawjson.SkipSpace(body, top.At()) != len(body) {
		return body, false
	}
	return applyEdits(body, edits), true
}

// edit replaces body[start:end] with text.
type edit struct {
	start, end int
	text       []byte
}

func applyEdits(body []byte, edits []edit) []byte {
	n := len(body)
	for _, e := range edits {
		n += len(e.text) - (e.end - e.start)
	}
	out := make([]byte, 0, n)
	at := 0
	for _, e := range edits {
		out = append(out, body[at:e.start]...)
		out = append(out, e.text...)
		at = e.end
	}
	return append(out, body[at:]...)
}

// foldMsg is one element of "messages".
type foldMsg struct {
	start, end int    // the element
	role       []byte // raw
	content    []byte // raw
	cStart     int    // where content starts in the body
	block      []byte // a system message's folded block (nil: no text)
	// before and after are folded blocks that join this user message:
	// before its own blocks (behind its tool results) or after them.
	before, after [][]byte
	drop          bool
}

func (m *foldMsg) isUser() bool {
	return rawjson.StrIs(m.role, "user") && (rawjson.IsString(m.content) || rawjson.IsArray(m.content))
}

func (m *foldMsg) isSystem() bool { return rawjson.StrIs(m.role, "system") }

// foldMessages folds the system messages of the array at body[start] and
// returns the edits that do it, in order.
func foldMessages(body []byte, start int) ([]edit, bool) {
	arr, err := rawjson.WalkArray(body, start, 1)
	if err != nil {
		return nil, false
	}
	var msgs []foldMsg
	for {
		at, ok, err := arr.Next()
		if err != nil {
			return nil, false
		}
		if !ok {
			break
		}
		v, err := arr.Value()
		if err != nil {
			return nil, false
		}
		m := foldMsg{start: at, end: at + len(v)}
		if rawjson.IsObject(v) {
			o, err := rawjson.WalkObject(body, at, 2)
			if err != nil {
				return nil, false
			}
			for {
				k, ok, err := o.Key()
				if err != nil {
					return nil, false
				}
				if !ok {
					break
				}
				vs := o.At()
				val, err := o.Value()
				if err != nil {
					return nil, false
				}
				switch {
				case rawjson.KeyIs(k[1:len(k)-1], "role"):
					m.role = val
				case rawjson.KeyIs(k[1:len(k)-1], "content"):
					m.content, m.cStart = val, vs
				}
			}
		}
		msgs = append(msgs, m)
	}
	// Decide where each system message's text goes.
	target := -1      // the user message a folded block joins at its end
	var pending []int // system messages waiting for the next message
	standalone := func() {
		// The first pending message becomes a user message holding the
		// blocks of all of them.
		if len(pending) == 0 {
			return
		}
		var blocks [][]byte
		for _, i := range pending {
			if msgs[i].block != nil {
				blocks = append(blocks, msgs[i].block)
			}
			msgs[i].drop = true
		}
		if len(blocks) > 0 {
			first := &msgs[pending[0]]
			first.drop = false
			first.after = blocks
		}
		pending = pending[:0]
	}
	found := false
	for i := range msgs {
		m := &msgs[i]
		switch {
		case m.isSystem():
			found = true
			m.block = foldedBlock(m.content)
			m.drop = true
			if target >= 0 {
				if m.block != nil {
					msgs[target].after = append(msgs[target].after, m.block)
				}
				continue
			}
			pending = append(pending, i)
		case m.isUser():
			for _, p := range pending {
				if msgs[p].block != nil {
					m.before = append(m.before, msgs[p].block)
				}
				msgs[p].drop = true
			}
			pending = pending[:0]
			target = i
		default:
			standalone()
			target = -1
		}
	}
	standalone()
	if !found {
		return nil, true
	}
	var edits []edit
	kept := false // an element before this one stays
	for i := range msgs {
		m := &msgs[i]
		switch {
		case m.drop:
			// Remove the element with the separator before it; before the
			// first element that stays, with the separator after it.
			s, e := m.start, m.end
			if kept {
				s = msgs[i-1].end
			} else if i+1 < len(msgs) {
				e = msgs[i+1].start
			}
			edits = append(edits, edit{s, e, nil})
			continue
		case m.isSystem():
			// Stands as a user message of its own.
			edits = append(edits, edit{m.start, m.end, userMessage(m.after)})
		case len(m.before) > 0 || len(m.after) > 0:
			edits = append(edits, edit{m.cStart, m.cStart + len(m.content), joinedContent(m.content, m.before, m.after)})
		}
		kept = true
	}
	return edits, true
}

// foldedBlock returns the text block a system message's content folds into,
// or nil when it holds no text.
func foldedBlock(content []byte) []byte {
	var text []byte
	var cc []byte
	switch {
	case rawjson.IsString(content):
		text = append(text, rawjson.Inner(content)...)
	case rawjson.IsArray(content):
		a := rawjson.NewArray(content)
		for b, ok := a.Next(); ok; b, ok = a.Next() {
			if !rawjson.IsObject(b) {
				continue
			}
			typ, t, c := rawjson.Field(b, "type"), rawjson.Field(b, "text"), rawjson.Field(b, "cache_control")
			if c != nil && string(c) != "null" {
				cc = c
			}
			if !rawjson.StrIs(typ, "text") || !rawjson.IsString(t) || len(t) == 2 {
				continue
			}
			if len(text) > 0 {
				text = append(text, `\n`...)
			}
			text = append(text, rawjson.Inner(t)...)
		}
	}
	if len(text) == 0 {
		return nil
	}
	out := make([]byte, 0, len(text)+len(cc)+48)
	out = append(out, `{"type":"text","text":"`...)
	out = append(out, text...)
	out = append(out, '"')
	if cc != nil {
		out = append(out, `,"cache_control":`...)
		out = append(out, cc...)
	}
	return append(out, '}')
}

// userMessage is a user message holding blocks.
func userMessage(blocks [][]byte) []byte {
	out := []byte(`{"role":"user","content":[`)
	out = appendBlocks(out, blocks)
	return append(out, "]}"...)
}

func appendBlocks(out []byte, blocks [][]byte) []byte {
	for i, b := range blocks {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
	}
	return out
}

// joinedContent returns a user message's content with blocks before its own
// (behind its leading tool_result blocks) and after them. Its own blocks keep
// their bytes, and the space between them; string content becomes one text
// block (none when empty).
func joinedContent(content []byte, before, after [][]byte) []byte {
	if rawjson.IsString(content) {
		blocks := before
		if len(content) > 2 {
			blocks = append(blocks[:len(blocks):len(blocks)], append(append([]byte(`{"type":"text","text":`), content...), '}'))
		}
		out := append([]byte{'['}, appendBlocks(nil, append(blocks[:len(blocks):len(blocks)], after...))...)
		return append(out, ']')
	}
	// Where the blocks go: behind the leading tool results, and before
	// the closing bracket.
	a, err := rawjson.WalkArray(content, 0, 0)
	if err != nil {
		return content
	}
	ins, last, n := -1, 1, 0
	for {
		at, ok, err := a.Next()
		if err != nil || !ok {
			break
		}
		v, err := a.Value()
		if err != nil {
			return content
		}
		if ins < 0 && !rawjson.StrIs(rawjson.Field(v, "type"), "tool_result") {
			ins = at
		}
		last, n = at+len(v), n+1
	}
	out := make([]byte, 0, len(content)+64)
	switch {
	case n == 0:
		out = append(out, '[')
		out = appendBlocks(out, append(before[:len(before):len(before)], after...))
		return append(out, content[1:]...)
	case ins < 0:
		// Only tool results: everything goes after them.
		out = append(out, content[:last]...)
		for _, b := range append(before[:len(before):len(before)], after...) {
			out = append(append(out, ','), b...)
		}
		return append(out, content[last:]...)
	}
	out = append(out, content[:ins]...)
	for _, b := range before {
		out = append(append(out, b...), ',')
	}
	out = append(out, content[ins:last]...)
	for _, b := range after {
		out = append(append(out, ','), b...)
	}
	return append(out, content[last:]...)
}
