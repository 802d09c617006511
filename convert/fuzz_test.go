package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// fuzzOptions derives conversion options from the bits of b.
func fuzzOptions(b uint8) Options {
	return Options{
		MaxTokensField:  []string{"", "max_completion_tokens"}[b&1],
		SanitizeSchema:  b&2 != 0,
		Reasoning:       []string{"off", "effort", "high", "effort"}[b>>2&3],
		ReasoningFormat: []string{"", "reasoning"}[b>>4&1],
		ThinkingHistory: []string{"drop", "reasoning_content"}[b>>5&1],
		InlineSystem:    []string{"system", "merge", "user", "system"}[b>>6&3],
		TopK:            b&1 != 0,
		PromptCacheKey:  b&4 != 0,
		MaxTokens:       int64(b),
	}
}

func FuzzRequest(f *testing.F) {
	paths, _ := filepath.Glob("testdata/requests/*.json")
	for _, p := range paths {
		if strings.Contains(p, ".want") {
			continue
		}
		c := loadRequestCase(f, p)
		if len(c.Body) > 8<<10 {
			// Large seeds slow the mutator to a crawl; the small ones cover
			// the same shapes.
			continue
		}
		f.Add([]byte(c.Body), uint8(len(p)))
	}
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":[{"type":"image"}]}]}]}`), uint8(0))
	f.Add([]byte(`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"toolu_oai_abcdef_!!","name":"a","input":[1]}]}],"system":[{"type":"text","text":"\u0000"}]}`), uint8(255))
	f.Fuzz(func(t *testing.T, body []byte, flags uint8) {
		out, err := Request(body, "model", fuzzOptions(flags))
		// A body known valid is read without validation, to the same
		// result; any other body must not make it panic.
		vout, verr := AppendValidRequest(nil, body, "model", fuzzOptions(flags))
		if rawjson.Valid(body) && (!bytes.Equal(out, vout) || fmt.Sprint(err) != fmt.Sprint(verr)) {
			t.Fatalf("AppendValidRequest gives %v\n%s\nRequest gives %v\n%s", verr, vout, err, out)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v does not wrap ErrInvalidRequest", err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("output is not JSON:\n%s", out)
		}
		if err := checkChatRequest(out); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if stripped, changed := StripForeignThinking(body); changed && !json.Valid(stripped) {
			t.Fatalf("stripped body is not JSON:\n%s", stripped)
		}
	})
}

// streamProgram turns fuzz bytes into a sequence of upstream events: a
// small language over the chunk shapes providers send, so the fuzzer
// explores the state machine rather than JSON syntax.
type streamProgram struct {
	b []byte
	i int
}

func (p *streamProgram) byte() byte {
	if p.i >= len(p.b) {
		return 0
	}
	c := p.b[p.i]
	p.i++
	return c
}

var (
	fuzzTexts  = []string{"Hello", "", "caf\u00e9", "line\nbreak", `quote "q" \ back`, "\u2028", "{\"", "\x01", "\n\n", " "}
	fuzzArgs   = []string{`{"`, `a`, `":`, `1}`, ``, `"x\"y"`, `{"b":[1,2]}`, `\`, `}`, `"}`, " \n"}
	fuzzNames  = []string{"Bash", "", "Read", "mcp__x__y"}
	fuzzIDs    = []string{"call_abcdefghijklmnop", "", "functions.Bash:0", "call_0", "toolu_01AbCdEfGhIjKlMnOpQrSt"}
	fuzzFinish = []string{"stop", "length", "tool_calls", "content_filter", "weird", "error", "function_call"}
)

func pick(list []string, c byte) string { return list[int(c)%len(list)] }

func (p *streamProgram) next() (sse.Event, bool) {
	if p.i >= len(p.b) {
		return sse.Event{}, false
	}
	op, a := p.byte(), p.byte()
	chunk := func(delta string, extra string) sse.Event {
		data := `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":` + delta + extra + `}]}`
		return sse.Event{Data: []byte(data)}
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	switch op % 16 {
	case 0:
		return chunk(`{"content":`+q(pick(fuzzTexts, a))+`}`, ""), true
	case 1:
		return chunk(`{"reasoning_content":`+q(pick(fuzzTexts, a))+`}`, ""), true
	case 2:
		return chunk(`{"reasoning":`+q(pick(fuzzTexts, a))+`,"content":null}`, ""), true
	case 3:
		return chunk(`{"tool_calls":[{"index":`+strconv.Itoa(int(a%4))+`,"id":`+q(pick(fuzzIDs, p.byte()))+
			`,"type":"function","function":{"name":`+q(pick(fuzzNames, p.byte()))+`,"arguments":""}}]}`, ""), true
	case 4:
		return chunk(`{"tool_calls":[{"index":`+strconv.Itoa(int(a%4))+`,"function":{"arguments":`+q(pick(fuzzArgs, p.byte()))+`}}]}`, ""), true
	case 5:
		return chunk(`{"tool_calls":[{"id":`+q(pick(fuzzIDs, a))+`,"function":{"name":`+q(pick(fuzzNames, p.byte()))+
			`,"arguments":`+q(pick(fuzzArgs, p.byte()))+`}},{"function":{"name":"Glob","arguments":{"p":1}}}]}`, ""), true
	case 6:
		return chunk(`{}`, `,"finish_reason":`+q(pick(fuzzFinish, a))+`,"stop_reason":`+q(pick(fuzzTexts, p.byte()))), true
	case 7:
		return sse.Event{Data: []byte(`{"choices":[],"usage":{"prompt_tokens":` + strconv.Itoa(int(a)*7) +
			`,"completion_tokens":` + strconv.Itoa(int(p.byte())) + `,"prompt_tokens_details":{"cached_tokens":` + strconv.Itoa(int(a)) + `}}}`)}, true
	case 8:
		return sse.Event{Data: []byte("[DONE]")}, true
	case 9:
		return sse.Event{Data: []byte(`{"error":{"message":"boom","code":` + strconv.Itoa(400+int(a)) + `}}`)}, true
	case 10:
		return sse.Event{}, true
	case 11:
		n := min(int(a%32), len(p.b)-p.i)
		raw := p.b[p.i : p.i+n]
		p.i += n
		return sse.Event{Data: raw}, true
	case 12:
		return chunk(`{"reasoning_content":"r","content":"t","tool_calls":[{"index":`+strconv.Itoa(int(a%4))+
			`,"id":"call_mixmixmixmixmix","function":{"name":"Bash","arguments":"{}"}}]}`, ""), true
	case 13:
		return sse.Event{Name: "error", Data: []byte(pick(fuzzTexts, a))}, true
	case 14:
		return chunk(`{"content":[{"type":"text","text":`+q(pick(fuzzTexts, a))+`},{"type":"image_url","image_url":{"url":"x"}},{"type":"refusal","refusal":`+
			q(pick(fuzzTexts, p.byte()))+`}]}`, ""), true
	default:
		return chunk(`{"content":null,"refusal":`+q(pick(fuzzTexts, a))+`}`, ""), true
	}
}

func FuzzStream(f *testing.F) {
	f.Add([]byte{0, 0, 1, 1, 0, 2, 3, 0, 0, 1, 4, 0, 0, 4, 0, 3, 6, 2, 7, 5, 8, 0})
	f.Add([]byte{1, 3, 0, 1, 3, 1, 1, 2, 4, 1, 1, 4, 0, 1, 6, 0, 0})
	f.Add([]byte{5, 0, 0, 0, 5, 1, 1, 1, 6, 2, 0, 8, 0})
	f.Add([]byte{3, 0, 4, 1, 4, 0, 0, 0, 4, 1, 4, 0})
	f.Add([]byte{12, 1, 12, 2, 0, 3, 6, 0, 0})
	f.Add([]byte{0, 4, 9, 3})
	f.Add([]byte{11, 5, '{', '"', 'a', '"', '}'})
	// Seeds for the shapes of testdata/fuzz/FuzzStream, written out for
	// reading: interleaved calls, a reused index, text inside a call, parts
	// and refusals.
	f.Add([]byte{3, 0, 0, 0, 3, 1, 3, 2, 4, 0, 0, 4, 1, 0, 4, 0, 1, 4, 1, 1, 4, 0, 2, 4, 1, 2, 4, 0, 3, 4, 1, 3, 6, 2, 0, 8, 0})
	f.Add([]byte{3, 0, 0, 0, 4, 0, 6, 3, 0, 2, 2, 4, 0, 6, 6, 2, 0, 8, 0})
	f.Add([]byte{3, 0, 0, 0, 4, 0, 0, 0, 8, 4, 0, 1, 0, 0, 4, 0, 2, 4, 0, 3, 6, 2, 0, 8, 0})
	f.Add([]byte{14, 0, 1, 14, 2, 8, 6, 0, 0, 8, 0, 15, 0, 15, 9, 6, 3, 0, 8, 0})
	if b, err := os.ReadFile("testdata/streams/reasoning_text_parallel_tools.sse"); err == nil {
		f.Add(append([]byte{11, 31}, b...))
	}
	f.Fuzz(func(t *testing.T, prog []byte) {
		s := NewStream("model", StreamOptions{InputTokens: int64(len(prog))})
		p := &streamProgram{b: prog}
		var evs []sse.Event
		var err error
		for ev, ok := p.next(); ok && err == nil; ev, ok = p.next() {
			evs, err = s.Feed(evs, ev)
		}
		if err == nil {
			evs, err = s.Close(evs)
		}
		if cerr := checkAnthropicStream(evs, streamCheck{complete: err == nil}); cerr != nil {
			var raw []byte
			for _, ev := range evs {
				raw = append(raw, ev.Raw...)
			}
			t.Fatalf("%v (end: %v)\n%s", cerr, err, raw)
		}
	})
}
