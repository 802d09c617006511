package tokens

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
)

// synth builds a deterministic Claude Code-like conversation: a long system prompt, tool definitions, and turns
// of prose, thinking, tool calls (Read, Bash, Edit, Grep) and their results (numbered source files, shell and
// test output, diffs).
type synth struct {
	rng      *rand.Rand
	system   []any
	tools    []any
	messages []any
	texts    []string // every string the count covers, for the baseline encode
	bytes    int
	turn     int
}

func newSynth(seed uint64) *synth {
	s := &synth{rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
	s.system = []any{
		s.textBlock("x-anthropic-billing-header: cc_version=2.1.332; cc_entrypoint=cli;"),
		s.textBlock("You are Claude Code, Anthropic's official CLI for Claude."),
		s.textBlock(s.prose(120)),
	}
	for _, name := range []string{"Bash", "Read", "Edit", "Write", "Grep", "Glob", "Agent", "WebFetch", "TodoWrite", "NotebookEdit"} {
		desc := s.prose(12 + s.rng.IntN(30))
		s.note(name, desc)
		schema := map[string]any{
			"type": "object",
			"properties": map[string]any{
				"command":     map[string]any{"type": "string", "description": s.sentence()},
				"file_path":   map[string]any{"type": "string", "description": s.sentence()},
				"timeout":     map[string]any{"type": "number", "description": s.sentence()},
				"run_in_back": map[string]any{"type": "boolean"},
			},
			"required":             []string{"command"},
			"additionalProperties": false,
			"$schema":              "http://json-schema.org/draft-07/schema#",
		}
		raw, _ := json.Marshal(schema)
		s.note(string(raw))
		s.tools = append(s.tools, map[string]any{"name": name, "description": desc, "input_schema": schema})
	}
	return s
}

var words = strings.Fields(`the a to of and in is that for it with as on be this are by file function test
request server client token count cache block message conversation provider upstream error response stream
handler config route model health cooldown failure retry timeout context value return string slice map
struct interface pointer method package import build run check update change add remove fix refactor read
write open close parse encode decode buffer byte length index offset range loop branch condition variable
constant default option flag argument parameter result output input log metric counter gauge histogram
latency throughput memory allocation goroutine channel mutex lock race deadline cancel signal process
directory path name type field key list queue heap tree graph node edge weight score limit bound size
should would could will can must may might also only just then when where which because although however
therefore instead first next last before after during while until since unless whether either neither`)

var idents = strings.Fields(`ctx req resp err buf n i j k id name cfg opts state cache key val count total
handler client server conn stream msg block tok enc dec parser walker shard entry node list item result`)

func (s *synth) word() string { return words[s.rng.IntN(len(words))] }

func (s *synth) sentence() string {
	n := 6 + s.rng.IntN(16)
	var b strings.Builder
	for i := range n {
		w := s.word()
		if i == 0 {
			w = strings.ToUpper(w[:1]) + w[1:]
		} else {
			b.WriteByte(' ')
		}
		b.WriteString(w)
		if i > 0 && i < n-1 && s.rng.IntN(9) == 0 {
			b.WriteByte(',')
		}
	}
	b.WriteString([]string{".", ".", ".", "?", ":"}[s.rng.IntN(5)])
	return b.String()
}

func (s *synth) prose(sentences int) string {
	var b strings.Builder
	for i := range sentences {
		if i > 0 {
			if s.rng.IntN(5) == 0 {
				b.WriteString("\n\n")
			} else {
				b.WriteByte(' ')
			}
		}
		b.WriteString(s.sentence())
	}
	return b.String()
}

func (s *synth) ident() string {
	a, b := idents[s.rng.IntN(len(idents))], idents[s.rng.IntN(len(idents))]
	return a + strings.ToUpper(b[:1]) + b[1:]
}

func (s *synth) goCode(funcs int) string {
	var b strings.Builder
	b.WriteString("package tokens\n\nimport (\n\t\"errors\"\n\t\"fmt\"\n\t\"sync\"\n)\n\n")
	for range funcs {
		fn := s.ident()
		fmt.Fprintf(&b, "// %s %s\n", fn, strings.ToLower(s.sentence()))
		fmt.Fprintf(&b, "func (c *Counter) %s(%s []byte, %s int) (int, error) {\n", fn, s.ident(), s.ident())
		for range 3 + s.rng.IntN(8) {
			switch s.rng.IntN(5) {
			case 0:
				fmt.Fprintf(&b, "\tif %s == nil {\n\t\treturn 0, fmt.Errorf(\"%s %%s: %%w\", %s, errors.ErrUnsupported)\n\t}\n", s.ident(), s.word(), s.ident())
			case 1:
				fmt.Fprintf(&b, "\tfor %s := range %s {\n\t\t%s += len(%s[%s])\n\t}\n", s.ident(), s.ident(), s.ident(), s.ident(), s.ident())
			case 2:
				fmt.Fprintf(&b, "\t%s := make(map[string]int, %d)\n", s.ident(), s.rng.IntN(4096))
			case 3:
				fmt.Fprintf(&b, "\t// %s\n\t%s.mu.Lock()\n\tdefer %s.mu.Unlock()\n", s.sentence(), s.ident(), s.ident())
			default:
				fmt.Fprintf(&b, "\t%s, err := c.%s(%s, %d)\n\tif err != nil {\n\t\treturn 0, err\n\t}\n", s.ident(), s.ident(), s.ident(), s.rng.IntN(100))
			}
		}
		b.WriteString("\treturn 0, nil\n}\n\n")
	}
	return b.String()
}

func (s *synth) pyCode(funcs int) string {
	var b strings.Builder
	b.WriteString("import json\nimport os\nfrom typing import Any, Optional\n\n")
	for range funcs {
		fmt.Fprintf(&b, "def %s(%s: dict[str, Any], %s: Optional[int] = None) -> list[str]:\n", strings.ToLower(s.ident()), s.ident(), s.ident())
		fmt.Fprintf(&b, "    \"\"\"%s\"\"\"\n", s.sentence())
		for range 2 + s.rng.IntN(6) {
			fmt.Fprintf(&b, "    %s = [x for x in %s if x.get(%q) is not None]\n", strings.ToLower(s.ident()), s.ident(), s.word())
		}
		fmt.Fprintf(&b, "    return sorted(%s, key=lambda v: v[%q])\n\n\n", s.ident(), s.word())
	}
	return b.String()
}

// numbered renders a file the way Claude Code's Read tool returns it.
func numbered(src string) string {
	var b strings.Builder
	for i, line := range strings.Split(src, "\n") {
		fmt.Fprintf(&b, "%6d\t%s\n", i+1, line)
	}
	return b.String()
}

func (s *synth) shell() string {
	var b strings.Builder
	switch s.rng.IntN(3) {
	case 0:
		b.WriteString("total 248\n")
		for range 10 + s.rng.IntN(30) {
			fmt.Fprintf(&b, "-rw-r--r--  1 dev dev %7d Nov %2d %02d:%02d %s_%s.go\n", s.rng.IntN(90000), 1+s.rng.IntN(28), s.rng.IntN(24), s.rng.IntN(60), s.word(), s.word())
		}
	case 1:
		for range 5 + s.rng.IntN(20) {
			name := s.ident()
			fmt.Fprintf(&b, "=== RUN   Test%s\n--- PASS: Test%s (%d.%02ds)\n", name, name, s.rng.IntN(3), s.rng.IntN(100))
		}
		fmt.Fprintf(&b, "PASS\nok  \tgithub.com/claude-balancer/caddy-claude-balancer/%s\t%d.%03ds\n", s.word(), s.rng.IntN(9), s.rng.IntN(1000))
	default:
		fmt.Fprintf(&b, "diff --git a/%s.go b/%s.go\nindex 3f2a1c0..8e4b7d2 100644\n", s.word(), s.word())
		for range 8 + s.rng.IntN(20) {
			sign := []string{"+", "-", " "}[s.rng.IntN(3)]
			fmt.Fprintf(&b, "%s\t%s := %s(%s)\n", sign, s.ident(), s.ident(), s.ident())
		}
	}
	return b.String()
}

func (s *synth) note(texts ...string) {
	for _, t := range texts {
		s.texts = append(s.texts, t)
		s.bytes += len(t)
	}
}

func (s *synth) textBlock(t string) map[string]any {
	s.note(t)
	return map[string]any{"type": "text", "text": t}
}

// addTurn appends a user prompt, an assistant turn with thinking and a tool call, and the tool's result.
func (s *synth) addTurn() {
	s.turn++
	id := fmt.Sprintf("toolu_%024d", s.turn)
	s.messages = append(s.messages, map[string]any{"role": "user", "content": []any{s.textBlock(s.prose(2 + s.rng.IntN(6)))}})

	thinking := s.prose(3 + s.rng.IntN(8))
	s.note(thinking)
	var name string
	var input map[string]any
	var result string
	switch s.rng.IntN(4) {
	case 0:
		name, input = "Read", map[string]any{"file_path": "/work/main/tokens/" + s.word() + ".go"}
		result = numbered(s.goCode(2 + s.rng.IntN(6)))
	case 1:
		name, input = "Read", map[string]any{"file_path": "/work/main/scripts/" + s.word() + ".py"}
		result = numbered(s.pyCode(2 + s.rng.IntN(5)))
	case 2:
		name, input = "Bash", map[string]any{"command": "go test ./" + s.word() + "/... -run " + s.ident(), "description": s.sentence()}
		result = s.shell()
	default:
		name, input = "Edit", map[string]any{"file_path": "/work/main/" + s.word() + ".go", "old_string": s.goCode(1), "new_string": s.goCode(1)}
		result = "The file has been updated. Here's the result of running `cat -n` on a snippet:\n" + numbered(s.goCode(1))
	}
	rawInput, _ := json.Marshal(input)
	s.note(name, string(rawInput), result)
	s.messages = append(s.messages,
		map[string]any{"role": "assistant", "content": []any{
			map[string]any{"type": "thinking", "thinking": thinking, "signature": "EqQBCkYIBxgCKkB" + strings.Repeat("x", 64)},
			s.textBlock(s.sentence()),
			map[string]any{"type": "tool_use", "id": id, "name": name, "input": input},
		}},
		map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "tool_result", "tool_use_id": id, "content": result},
		}},
	)
}

// body renders the request as Claude Code does: JSON without HTML escaping, and the prompt-cache marker as the
// last member of the last message's last block (it moves there on every turn).
func (s *synth) body() []byte {
	messages := append([]any(nil), s.messages...)
	if n := len(messages); n > 0 {
		last := messages[n-1].(map[string]any)
		blocks := append([]any(nil), last["content"].([]any)...)
		var block bytes.Buffer
		enc := json.NewEncoder(&block)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(blocks[len(blocks)-1]); err != nil {
			panic(err)
		}
		raw := bytes.TrimSpace(block.Bytes())
		raw = append(raw[:len(raw)-1:len(raw)-1], `,"cache_control":{"type":"ephemeral"}}`...)
		blocks[len(blocks)-1] = json.RawMessage(raw)
		messages[n-1] = map[string]any{"role": last["role"], "content": blocks}
	}
	req := map[string]any{
		"model":      "claude-opus-5-5",
		"max_tokens": 32000,
		"system":     s.system,
		"tools":      s.tools,
		"messages":   messages,
		"metadata":   map[string]any{"user_id": "user_0000"},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// synthConversation returns a conversation of at least one turn whose text is about textBytes long.
func synthConversation(seed uint64, textBytes int) *synth {
	s := newSynth(seed)
	s.addTurn()
	for s.bytes < textBytes {
		s.addTurn()
	}
	return s
}
