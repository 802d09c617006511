package convert

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

const genuineSig = "EqQBCgIYAhIMc2lnbmF0dXJlLWZpeHR1cmUtb25seRoMdGhpcy1pcy1ub3QtcmVhbA=="

var ownSig = ThinkingSignature("mine")

func TestOwnSignaturesNeverMatchGenuineOnes(t *testing.T) {
	if !IsOwnSignature(ownSig) || len(ownSig) != len(OwnSignaturePrefix)+32 {
		t.Fatalf("own signature %q", ownSig)
	}
	if _, err := base64.StdEncoding.DecodeString(ownSig); err == nil {
		t.Fatal("own signature decodes as base64")
	}
	r := rand.New(rand.NewSource(1))
	for range 1000 {
		b := make([]byte, 1+r.Intn(300))
		r.Read(b)
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
			if sig := enc.EncodeToString(b); IsOwnSignature(sig) {
				t.Fatalf("base64 signature %q taken for own", sig)
			}
		}
	}
	if IsOwnSignature(genuineSig) || ThinkingSignature("a") == ThinkingSignature("b") {
		t.Fatal("signatures mix up")
	}
}

func thinkingBlock(text, sig string) string {
	return `{"type":"thinking","thinking":"` + text + `","signature":"` + sig + `"}`
}

func TestStripForeignThinking(t *testing.T) {
	const toolUse = `{"type":"tool_use","id":"toolu_01A","name":"Bash","input":{"command":"ls"}}`
	const toolResult = `{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01A","content":"ok"}]}`
	for _, c := range []struct {
		name, body, want string
	}{
		{
			name: "genuine thinking stays",
			body: `{"messages":[{"role":"assistant","content":[` + thinkingBlock("a", genuineSig) + `]}]}`,
		},
		{
			name: "prefix only in text",
			body: `{"messages":[{"role":"user","content":"` + OwnSignaturePrefix + `"}]}`,
		},
		{
			name: "invalid JSON passes on",
			body: `{"messages":[` + thinkingBlock("a", ownSig),
		},
		{
			name: "own block dropped from history",
			body: `{"thinking":{"type":"enabled","budget_tokens":2000},"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[` + thinkingBlock("a", ownSig) + `,{"type":"text","text":"A"}]},{"role":"user","content":"next"}]}`,
			want: `{"thinking":{"type":"enabled","budget_tokens":2000},"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"text","text":"A"}]},{"role":"user","content":"next"}]}`,
		},
		{
			name: "message left empty removed",
			body: `{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[` + thinkingBlock("a", ownSig) + `]},{"role":"user","content":"again"}]}`,
			want: `{"messages":[{"role":"user","content":"q"},{"role":"user","content":"again"}]}`,
		},
		{
			name: "tool loop turns thinking off",
			body: `{"model":"claude-opus-4-1","thinking":{"type":"adaptive"},"context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"},{"type":"clear_tool_uses_20250919"}]},"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[` + thinkingBlock("a", ownSig) + `,` + toolUse + `]},` + toolResult + `]}`,
			want: `{"model":"claude-opus-4-1","context_management":{"edits":[{"type":"clear_tool_uses_20250919"}]},"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[` + toolUse + `]},` + toolResult + `]}`,
		},
		{
			name: "context management left empty removed",
			body: `{"thinking":{"type":"enabled","budget_tokens":1024},"context_management":{"edits":[{"type":"clear_thinking_20251015"}]},"messages":[{"role":"assistant","content":[` + thinkingBlock("a", ownSig) + `,` + toolUse + `]},` + toolResult + `]}`,
			want: `{"messages":[{"role":"assistant","content":[` + toolUse + `]},` + toolResult + `]}`,
		},
		{
			name: "thinking already off",
			body: `{"thinking":{"type":"disabled"},"messages":[{"role":"assistant","content":[` + thinkingBlock("a", ownSig) + `,` + toolUse + `]},` + toolResult + `]}`,
			want: `{"thinking":{"type":"disabled"},"messages":[{"role":"assistant","content":[` + toolUse + `]},` + toolResult + `]}`,
		},
		{
			name: "an older tool loop keeps thinking on",
			body: `{"thinking":{"type":"adaptive"},"messages":[{"role":"assistant","content":[` + thinkingBlock("a", ownSig) + `,` + toolUse + `]},` + toolResult + `,{"role":"assistant","content":[` + thinkingBlock("b", genuineSig) + `,{"type":"text","text":"done"}]},{"role":"user","content":"more"}]}`,
			want: `{"thinking":{"type":"adaptive"},"messages":[{"role":"assistant","content":[` + toolUse + `]},` + toolResult + `,{"role":"assistant","content":[` + thinkingBlock("b", genuineSig) + `,{"type":"text","text":"done"}]},{"role":"user","content":"more"}]}`,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := []byte(c.body)
			out, changed := StripForeignThinking(body)
			if c.want == "" {
				if changed || len(out) != len(body) || &out[0] != &body[0] {
					t.Fatalf("body changed: %v %s", changed, out)
				}
				return
			}
			if !changed || string(out) != c.want {
				t.Fatalf("got  %s\nwant %s", out, c.want)
			}
		})
	}
}

// mockAnthropic answers like the Messages API does to thinking blocks: it
// refuses a signature it did not make, a tool loop whose last assistant
// message does not start with thinking while thinking is on, and a
// clear_thinking edit while thinking is off.
func mockAnthropic(t *testing.T) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Thinking *struct {
				Type string `json:"type"`
			} `json:"thinking"`
			ContextManagement *struct {
				Edits []struct {
					Type string `json:"type"`
				} `json:"edits"`
			} `json:"context_management"`
			Messages []struct {
				Role    string          `json:"role"`
				Content json.RawMessage `json:"content"`
			} `json:"messages"`
		}
		type block struct {
			Type      string `json:"type"`
			Signature string `json:"signature"`
		}
		blocks := func(content json.RawMessage) []block {
			var bs []block
			_ = json.Unmarshal(content, &bs) // a string content has no blocks
			return bs
		}
		fail := func(msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"type":"error","error":{"type":"invalid_request_error","message":%q}}`, msg)
		}
		if err := json.Unmarshal(body, &req); err != nil {
			fail(err.Error())
			return
		}
		thinkingOn := req.Thinking != nil && req.Thinking.Type != "disabled"
		lastAsst := -1
		for i, m := range req.Messages {
			if m.Role == "assistant" {
				lastAsst = i
			}
			for j, b := range blocks(m.Content) {
				if b.Type != "thinking" {
					continue
				}
				if _, err := base64.StdEncoding.DecodeString(b.Signature); err != nil || b.Signature == "" {
					fail(fmt.Sprintf("messages.%d.content.%d: Invalid `signature` in `thinking` block", i, j))
					return
				}
			}
		}
		if thinkingOn && lastAsst >= 0 {
			c := blocks(req.Messages[lastAsst].Content)
			hasTool := false
			for _, b := range c {
				hasTool = hasTool || b.Type == "tool_use"
			}
			if hasTool && c[0].Type != "thinking" && c[0].Type != "redacted_thinking" {
				fail(fmt.Sprintf("messages.%d.content.0.type: Expected `thinking` or `redacted_thinking`, but found `%s`", lastAsst, c[0].Type))
				return
			}
		}
		if !thinkingOn && req.ContextManagement != nil {
			for _, e := range req.ContextManagement.Edits {
				if strings.HasPrefix(e.Type, "clear_thinking") {
					fail("clear_thinking requires thinking to be enabled")
					return
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"msg_01","type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn"}`)
	}))
}

// TestConversationMovesFromOpenAIToAnthropic plays two turns: the first
// answered by an OpenAI-compatible provider with reasoning and a tool call,
// the second sent to an Anthropic provider that refuses foreign thinking.
func TestConversationMovesFromOpenAIToAnthropic(t *testing.T) {
	stream, err := os.ReadFile("testdata/streams/deepseek_reasoning_text_tool.sse")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := translate(t, stream, false)
	if err != nil {
		t.Fatal(err)
	}
	var turn1 struct {
		Content []json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(sdkMessage(t, clientBytes(evs, nil)), &turn1); err != nil {
		t.Fatal(err)
	}
	var toolID struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(turn1.Content[2], &toolID)

	// Claude Code sends the first turn back as it stored it, after an
	// earlier exchange that Anthropic itself answered.
	assistant, _ := json.Marshal(map[string]any{"role": "assistant", "content": turn1.Content})
	body := []byte(`{"model":"claude-opus-4-1","max_tokens":32000,"stream":false,"thinking":{"type":"adaptive"},` +
		`"context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]},"messages":[` +
		`{"role":"user","content":"hello"},` +
		`{"role":"assistant","content":[` + thinkingBlock("Greet back.", genuineSig) + `,{"type":"text","text":"Hi!"}]},` +
		`{"role":"user","content":"list the files"},` + string(assistant) + `,` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"` + toolID.ID + `","content":"a.txt"}]}]}`)

	srv := mockAnthropic(t)
	defer srv.Close()
	post := func(b []byte) (int, string) {
		res, err := http.Post(srv.URL+"/v1/messages", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		msg, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(msg)
	}

	if status, msg := post(body); status != http.StatusBadRequest || !strings.Contains(msg, "Invalid `signature`") {
		t.Fatalf("the mock accepted foreign thinking: %d %s", status, msg)
	}
	fixed, changed := StripForeignThinking(body)
	if !changed {
		t.Fatal("nothing stripped")
	}
	if status, msg := post(fixed); status != http.StatusOK {
		t.Fatalf("second turn failed: %d %s\n%s", status, msg, fixed)
	}
	// Dropping the blocks alone is not enough: with thinking still on, the
	// tool loop would be refused.
	withThinking := append([]byte(`{"thinking":{"type":"adaptive"},`), fixed[1:]...)
	if status, msg := post(withThinking); status != http.StatusBadRequest || !strings.Contains(msg, "Expected `thinking`") {
		t.Fatalf("the mock accepted a tool loop without thinking: %d %s", status, msg)
	}
	if !bytes.Contains(fixed, []byte(thinkingBlock("Greet back.", genuineSig))) {
		t.Fatalf("genuine thinking block changed:\n%s", fixed)
	}
}
