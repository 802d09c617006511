package integration

import (
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

// openAIChunks writes a Chat Completions stream.
func openAIChunks(w http.ResponseWriter, chunks ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	f := w.(http.Flusher)
	for _, c := range chunks {
		fmt.Fprintf(w, "data: %s\n\n", c)
		f.Flush()
	}
	io.WriteString(w, "data: [DONE]\n\n")
	f.Flush()
}

func chunk(delta string, finish string) string {
	fr := "null"
	if finish != "" {
		fr = fmt.Sprintf("%q", finish)
	}
	return fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","model":"up-model","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}`, delta, fr)
}

const usageChunk = `{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":21,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":7}}}`

// openAIText answers any chat completion with text, in the mode asked.
func openAIText(text string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		if isStream(r) {
			openAIChunks(w, chunk(`{"role":"assistant","content":""}`, ""), chunk(fmt.Sprintf(`{"content":%q}`, text), ""),
				chunk(`{}`, "stop"), usageChunk)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"up-model","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":21,"completion_tokens":5}}`, text)
	}
}

func TestOpenAIProviderStreamsAnthropicEvents(t *testing.T) {
	up := newMock(t, openAIText("hello from openai"))
	e := start(t, fmt.Sprintf(`
		provider o {
			type openai
			base_url %s/v1
			api_key sk-openai
		}
		route * {
			to o vendor/model-x
		}`, up.URL))
	client := anthropic.NewClient(option.WithBaseURL(e.base), option.WithAPIKey("x"), option.WithMaxRetries(0))
	params := anthropic.MessageNewParams{Model: "claude-sonnet-4-5", MaxTokens: 100,
		System:   []anthropic.TextBlockParam{{Text: "be brief"}},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}}
	stream := client.Messages.NewStreaming(context.Background(), params)
	var acc anthropic.Message
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(acc.Content) != 1 || acc.Content[0].Text != "hello from openai" || acc.StopReason != "end_turn" ||
		acc.Model != "claude-sonnet-4-5" || acc.Usage.OutputTokens != 5 {
		t.Fatalf("message: %+v", acc)
	}
	got := up.last()
	var sent struct {
		Model         string            `json:"model"`
		Stream        bool              `json:"stream"`
		Messages      []json.RawMessage `json:"messages"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(got.Body, &sent); err != nil {
		t.Fatal(err)
	}
	if got.Path != "/v1/chat/completions" || got.Header.Get("Authorization") != "Bearer sk-openai" || sent.Model != "vendor/model-x" ||
		!sent.Stream || !sent.StreamOptions.IncludeUsage || len(sent.Messages) != 2 {
		t.Fatalf("upstream got %s %v %s", got.Path, got.Header, got.Body)
	}
	if got.Header.Get("Anthropic-Version") != "" || got.Header.Get("X-Api-Key") != "" {
		t.Fatalf("Anthropic headers sent to an OpenAI provider: %v", got.Header)
	}

	msg, err := client.Messages.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Content[0].Text != "hello from openai" || !strings.HasPrefix(msg.ID, "msg_") {
		t.Fatalf("json message: %+v", msg)
	}
}

func TestFailoverBetweenAnthropicAndOpenAI(t *testing.T) {
	anth := newMock(t, errorStatus(529, "overloaded_error", "Overloaded"))
	oai := newMock(t, openAIText("rescued"))
	e := start(t, fmt.Sprintf(`
		provider anthropic {
			base_url %s
			api_key k
		}
		provider openrouter {
			type openai
			base_url %s
			api_key k
		}
		route *sonnet* {
			to anthropic
			to openrouter anthropic/claude-sonnet-4
		}`, anth.URL, oai.URL))
	resp, out := e.messages(body("claude-sonnet-4-5", true))
	if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "openrouter" || !strings.Contains(string(out), "rescued") ||
		!strings.Contains(string(out), "event: message_start") {
		t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Provider"), out)
	}
	// And back: the OpenAI provider failing hands over to Anthropic.
	anth.set(okEither("anthropic again"))
	oai.set(func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		io.WriteString(w, `{"error":{"message":"upstream down","type":"server_error"}}`)
	})
	e2 := start(t, fmt.Sprintf(`
		provider openrouter {
			type openai
			base_url %s
			api_key k
		}
		provider anthropic {
			base_url %s
			api_key k
		}`, oai.URL, anth.URL))
	resp, out = e2.messages(body("claude-sonnet-4-5", false))
	if resp.StatusCode != 200 || !strings.Contains(string(out), "anthropic again") {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
}

func TestOpenAIErrorsBecomeAnthropicErrors(t *testing.T) {
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		io.WriteString(w, `{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}`)
	})
	e := start(t, fmt.Sprintf("provider o {\ntype openai\nbase_url %s\napi_key k\n}", up.URL))
	resp, out := e.messages(body("m", true))
	if resp.StatusCode != 400 || string(out) != `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: This model's maximum context length is 8192 tokens"}}` {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
}

func TestForeignThinkingNeverReachesAnthropic(t *testing.T) {
	// Turn one: an OpenAI provider answers with reasoning and a tool call.
	oai := newMock(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		openAIChunks(w,
			chunk(`{"role":"assistant","reasoning_content":"I should look at the files."}`, ""),
			chunk(`{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"Bash","arguments":"{\"command\":"}}]}`, ""),
			chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"\"ls\"}"}}]}`, ""),
			chunk(`{}`, "tool_calls"), usageChunk)
	})
	// Turn two goes to Anthropic, which rejects signatures it did not make.
	anth := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), `"signature":"claude-balancer:`) {
			errorStatus(400, "invalid_request_error", "messages.1.content.0: Invalid `signature` in `thinking` block")(w, r, n)
			return
		}
		okSSE("turn two done")(w, r, n)
	})
	e := start(t, fmt.Sprintf(`
		sticky 0
		provider o {
			type openai
			base_url %s
			api_key k
		}
		provider a {
			base_url %s
			api_key k
		}
		route first-turn {
			to o
		}
		route * {
			to a
		}`, oai.URL, anth.URL))
	client := anthropic.NewClient(option.WithBaseURL(e.base), option.WithAPIKey("x"), option.WithMaxRetries(0))
	first := anthropic.MessageNewParams{Model: "first-turn", MaxTokens: 1000,
		Thinking: anthropic.ThinkingConfigParamOfEnabled(1024),
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("list files"))}}
	stream := client.Messages.NewStreaming(context.Background(), first)
	var acc anthropic.Message
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if stream.Err() != nil || len(acc.Content) != 2 || acc.Content[0].Type != "thinking" || acc.Content[1].Type != "tool_use" {
		t.Fatalf("turn one: %v %+v", stream.Err(), acc.Content)
	}
	second := anthropic.MessageNewParams{Model: "claude-sonnet-4-5", MaxTokens: 1000,
		Thinking: anthropic.ThinkingConfigParamOfEnabled(1024),
		Messages: []anthropic.MessageParam{
			anthropic.NewUserMessage(anthropic.NewTextBlock("list files")),
			acc.ToParam(),
			anthropic.NewUserMessage(anthropic.NewToolResultBlock(acc.Content[1].ID, "a.txt b.txt", false)),
		}}
	stream = client.Messages.NewStreaming(context.Background(), second)
	var acc2 anthropic.Message
	for stream.Next() {
		_ = acc2.Accumulate(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("turn two: %v", err)
	}
	if len(acc2.Content) != 1 || acc2.Content[0].Text != "turn two done" {
		t.Fatalf("turn two: %+v", acc2.Content)
	}
}

func TestCountTokensForOpenAIRouteIsLocal(t *testing.T) {
	up := newMock(t, openAIText("x"))
	e := start(t, fmt.Sprintf("provider o {\ntype openai\nbase_url %s\napi_key k\n}", up.URL))
	resp, out := e.post("/v1/messages/count_tokens", countBody("m"))
	if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Count-Source") != "local" || up.count() != 0 {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
}
