package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// toolCalls is a chunk delta holding tool_calls entries.
func toolCalls(entries ...string) string {
	return `{"tool_calls":[` + strings.Join(entries, ",") + `]}`
}

// callStart is a tool_calls entry opening a call; callPiece one carrying
// more of its arguments.
func callStart(index int, id, name, args string) string {
	return fmt.Sprintf(`{"index":%d,"id":%q,"type":"function","function":{"name":%q,"arguments":%q}}`, index, id, name, args)
}

func callPiece(index int, args string) string {
	return fmt.Sprintf(`{"index":%d,"function":{"arguments":%q}}`, index, args)
}

// openAIShape writes a Chat Completions stream of the given chunk data,
// ending with [DONE] when done is set.
func openAIShape(w http.ResponseWriter, done bool, chunks ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	f := w.(http.Flusher)
	for _, c := range chunks {
		fmt.Fprintf(w, "data: %s\n\n", c)
		f.Flush()
	}
	if done {
		io.WriteString(w, "data: [DONE]\n\n")
		f.Flush()
	}
}

// describe sums up an assembled message: "text:<text>", "thinking:<text>" or
// "tool_use:<name>:<compact input>" per block, joined by " | ", then the
// stop reason.
func describe(t *testing.T, msg anthropic.Message) string {
	t.Helper()
	var parts []string
	for _, b := range msg.Content {
		switch b.Type {
		case "text":
			parts = append(parts, "text:"+b.Text)
		case "thinking":
			parts = append(parts, "thinking:"+b.Thinking)
		case "tool_use":
			var in bytes.Buffer
			if err := json.Compact(&in, b.Input); err != nil {
				t.Fatalf("tool input %s: %v", b.Input, err)
			}
			parts = append(parts, "tool_use:"+b.Name+":"+in.String())
		default:
			parts = append(parts, b.Type)
		}
	}
	return strings.Join(parts, " | ") + " / " + string(msg.StopReason)
}

// TestOpenAIStreamShapesThroughCaddy serves each stream shape from an
// OpenAI-compatible mock behind a real Caddy and reads the Anthropic stream
// the client gets with the official SDK.
func TestOpenAIStreamShapesThroughCaddy(t *testing.T) {
	const (
		idA = "call_shape_aaaaaaaaaaaa"
		idB = "call_shape_bbbbbbbbbbbb"
	)
	for _, c := range []struct {
		name   string
		done   bool
		chunks []string
		want   string
	}{
		{"interleaved parallel calls", true, []string{
			chunk(`{"role":"assistant","content":""}`, ""),
			chunk(toolCalls(callStart(0, idA, "Read", ""), callStart(1, idB, "Glob", "")), ""),
			chunk(toolCalls(callPiece(0, `{"file_path":`)), ""),
			chunk(toolCalls(callPiece(1, `{"pattern":`)), ""),
			chunk(toolCalls(callPiece(0, `"/repo/go.mod"}`)), ""),
			chunk(toolCalls(callPiece(1, `"*.go"}`)), ""),
			chunk(`{}`, "tool_calls"), usageChunk,
		}, `tool_use:Read:{"file_path":"/repo/go.mod"} | tool_use:Glob:{"pattern":"*.go"} / tool_use`},
		{"text parts in a delta", true, []string{
			chunk(`{"role":"assistant","content":[{"type":"text","text":"Hello"}]}`, ""),
			chunk(`{"content":[{"type":"text","text":" from parts."}]}`, ""),
			chunk(`{}`, "stop"), usageChunk,
		}, `text:Hello from parts. / end_turn`},
		{"a streamed refusal", true, []string{
			chunk(`{"role":"assistant","content":null,"refusal":""}`, ""),
			chunk(`{"refusal":"I can't help"}`, ""),
			chunk(`{"refusal":" with that."}`, ""),
			chunk(`{}`, "content_filter"), usageChunk,
		}, `text:I can't help with that. / refusal`},
		{"a reused index with a new id", true, []string{
			chunk(toolCalls(callStart(0, idA, "Bash", `{"command":"ls"}`)), ""),
			chunk(`{"content":"\n"}`, ""),
			chunk(toolCalls(callStart(0, idB, "Read", "")), ""),
			chunk(toolCalls(callPiece(0, `{"file_path":"/repo/go.mod"}`)), ""),
			chunk(`{}`, "tool_calls"), usageChunk,
		}, `tool_use:Bash:{"command":"ls"} | tool_use:Read:{"file_path":"/repo/go.mod"} / tool_use`},
		{"text between argument pieces of one call", true, []string{
			chunk(toolCalls(callStart(0, idA, "Bash", `{"command":`)), ""),
			chunk(`{"content":"\n\n"}`, ""),
			chunk(toolCalls(callPiece(0, `"go test ./..."}`)), ""),
			chunk(`{}`, "tool_calls"), usageChunk,
		}, `tool_use:Bash:{"command":"go test ./..."} / tool_use`},
		{"split arguments", true, []string{
			chunk(toolCalls(callStart(0, idA, "Bash", "")), ""),
			chunk(toolCalls(callPiece(0, `{"comm`)), ""),
			chunk(toolCalls(callPiece(0, `and":"l`)), ""),
			chunk(toolCalls(callPiece(0, `s"}`)), ""),
			chunk(`{}`, "tool_calls"), usageChunk,
		}, `tool_use:Bash:{"command":"ls"} / tool_use`},
		{"empty arguments", true, []string{
			chunk(toolCalls(callStart(0, idA, "TodoRead", "")), ""),
			chunk(`{}`, "tool_calls"), usageChunk,
		}, `tool_use:TodoRead:{} / tool_use`},
		{"reasoning then text, usage in its own chunk", true, []string{
			chunk(`{"role":"assistant","reasoning_content":"Think."}`, ""),
			chunk(`{"reasoning":" More."}`, ""),
			chunk(`{"content":"Done."}`, ""),
			chunk(`{}`, "stop"), usageChunk,
		}, `thinking:Think. More. | text:Done. / end_turn`},
		{"no [DONE] after the finish", false, []string{
			chunk(`{"content":"Bye."}`, ""),
			chunk(`{}`, "stop"), usageChunk,
		}, `text:Bye. / end_turn`},
		{"calls without ids", true, []string{
			chunk(`{"tool_calls":[{"index":0,"type":"function","function":{"name":"Bash","arguments":"{\"command\":\"pwd\"}"}}]}`, ""),
			chunk(`{}`, "tool_calls"), usageChunk,
		}, `tool_use:Bash:{"command":"pwd"} / tool_use`},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := newMock(t, func(w http.ResponseWriter, r *http.Request, _ int) { openAIShape(w, c.done, c.chunks...) })
			e := start(t, fmt.Sprintf(`
				provider compat {
					type openai
					base_url %s/v1
					api_key sk-compat
				}`, up.URL))
			client := anthropic.NewClient(option.WithBaseURL(e.base), option.WithAPIKey("x"), option.WithMaxRetries(0))
			stream := client.Messages.NewStreaming(context.Background(), anthropic.MessageNewParams{
				Model: "claude-sonnet-4-5", MaxTokens: 1000,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("go"))}})
			var msg anthropic.Message
			for stream.Next() {
				if err := msg.Accumulate(stream.Current()); err != nil {
					t.Fatal(err)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if got := describe(t, msg); got != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
			if p := e.providers()["compat"]; p.ErrorCount != 0 || !p.Healthy {
				t.Fatalf("the provider was counted failing: %+v", p)
			}
		})
	}
}

// interleavingAgent plays an OpenAI-compatible model for Claude Code that
// calls two tools at once and streams their arguments interleaved: asked
// with the Bash tool available, it runs two echo commands in parallel, then
// answers with what both printed.
func interleavingAgent(t *testing.T) *mock {
	return newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		var req struct {
			Messages []struct {
				Role    string          `json:"role"`
				Content json.RawMessage `json:"content"`
			} `json:"messages"`
			Tools []struct {
				Function struct {
					Name string `json:"name"`
				} `json:"function"`
			} `json:"tools"`
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &req)
		hasBash := false
		for _, tl := range req.Tools {
			hasBash = hasBash || tl.Function.Name == "Bash"
		}
		var outputs []string
		for _, m := range req.Messages {
			if m.Role == "tool" {
				var s string
				if json.Unmarshal(m.Content, &s) != nil {
					s = string(m.Content)
				}
				outputs = append(outputs, strings.TrimSpace(strings.ReplaceAll(s, "\n", " ")))
			}
		}
		switch {
		case hasBash && len(outputs) == 0:
			openAIChunks(w,
				chunk(`{"role":"assistant","content":""}`, ""),
				chunk(toolCalls(callStart(0, "call_cb_inter_0001", "Bash", ""), callStart(1, "call_cb_inter_0002", "Bash", "")), ""),
				chunk(toolCalls(callPiece(0, `{"command": "echo cb-`)), ""),
				chunk(toolCalls(callPiece(1, `{"command": "echo cb-`)), ""),
				chunk(toolCalls(callPiece(0, `first"`)), ""),
				chunk(toolCalls(callPiece(1, `second"`)), ""),
				chunk(toolCalls(callPiece(1, `, "description": "Print the second word"}`)), ""),
				chunk(toolCalls(callPiece(0, `, "description": "Print the first word"}`)), ""),
				chunk(`{}`, "tool_calls"), usageChunk)
		case len(outputs) > 0:
			openAIText("TOOLS SAID: "+strings.Join(outputs, " + "))(w, r, n)
		default:
			openAIText("plain answer")(w, r, n)
		}
	})
}

func TestClaudeCodeCLIRunsInterleavedParallelToolCallsFromAnOpenAIProvider(t *testing.T) {
	claudeBin(t)
	agent := interleavingAgent(t)
	e := start(t, fmt.Sprintf(`
		provider compat {
			type openai
			base_url %s/v1
			api_key sk-compat
		}`, agent.URL))
	out, err := runClaude(t, e, "Run the two echo commands through Bash and tell me what they printed", "--allowedTools", "Bash")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "TOOLS SAID:") || !strings.Contains(out, "cb-first") || !strings.Contains(out, "cb-second") {
		t.Fatalf("claude printed %q", out)
	}
	sawBoth := false
	for _, r := range agent.requests() {
		body := string(r.Body)
		if strings.Contains(body, `"tool_call_id":"call_cb_inter_0001"`) && strings.Contains(body, `"tool_call_id":"call_cb_inter_0002"`) {
			sawBoth = true
			// Each result answers its own call.
			var req struct {
				Messages []struct {
					Role       string          `json:"role"`
					ToolCallID string          `json:"tool_call_id"`
					Content    json.RawMessage `json:"content"`
				} `json:"messages"`
			}
			if err := json.Unmarshal(r.Body, &req); err != nil {
				t.Fatal(err)
			}
			for _, m := range req.Messages {
				if m.Role != "tool" {
					continue
				}
				want := map[string]string{"call_cb_inter_0001": "cb-first", "call_cb_inter_0002": "cb-second"}[m.ToolCallID]
				if want == "" || !strings.Contains(string(m.Content), want) {
					t.Fatalf("tool result %s: %s", m.ToolCallID, m.Content)
				}
			}
		}
	}
	if !sawBoth {
		t.Fatalf("the two tool results never came back to the provider")
	}
	if p := e.providers()["compat"]; p.ErrorCount != 0 || !p.Healthy {
		t.Fatalf("the provider was counted failing: %+v", p)
	}
}
