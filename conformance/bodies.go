package conformance

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
)

// The probes' requests look like Claude Code's: streamed, with Claude Code's
// identity as the first system block (Claude subscription tokens are only
// accepted with it) and cache_control on the system prompt (Claude Code marks
// every request so, and a provider that refused it would fail every turn).

// identity is the system block Claude Code sends first.
const identity = "You are Claude Code, Anthropic's official CLI for Claude."

// ephemeral is a cache_control mark.
var ephemeral = map[string]string{"type": "ephemeral"}

var system = []any{
	map[string]any{"type": "text", "text": identity},
	map[string]any{"type": "text", "cache_control": ephemeral,
		"text": "This request checks that the provider works with Claude Code. Answer as briefly as you can."},
}

// toolName is the probes' tool: one required string parameter.
const toolName = "get_weather"

var weatherTool = map[string]any{
	"name":        toolName,
	"description": "Get the current weather in a city.",
	"input_schema": map[string]any{
		"type":       "object",
		"properties": map[string]any{"city": map[string]any{"type": "string", "description": "The city, e.g. Paris"}},
		"required":   []string{"city"},
	},
}

// syntheticToolUse stands in for the tool call of an earlier probe that did
// not produce one, so that the probes after it still run.
var syntheticToolUse = json.RawMessage(`{"type":"tool_use","id":"toolu_01CheckProbeToolUse01","name":"get_weather","input":{"city":"Paris"}}`)

// The prompts.
const (
	textPrompt    = "Reply with the single word: ready"
	toolPrompt    = "What is the weather in Paris? Use the get_weather tool."
	toolResult    = "Sunny, 22 °C."
	imagePrompt   = "What colour is this image? Answer with one word."
	maxTokens     = 256
	thinkBudget   = 1024
	thinkMaxToken = 2048
)

// Thinking settings: the smallest budget Anthropic accepts.
var thinking = map[string]any{"type": "enabled", "budget_tokens": thinkBudget}

// squarePNG is an 8x8 red PNG, base64-encoded.
var squarePNG = func() string {
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for y := range 8 {
		for x := range 8 {
			img.Set(x, y, color.RGBA{R: 220, A: 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}()

func userText(text string) map[string]any {
	return map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": text}}}
}

// request builds a streamed Messages request body.
func request(model string, limit int, messages []any, extra map[string]any) []byte {
	body := map[string]any{
		"model":      model,
		"max_tokens": limit,
		"stream":     true,
		"system":     system,
		"messages":   messages,
	}
	for k, v := range extra {
		body[k] = v
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return b
}

func textBody(model string) []byte {
	return request(model, maxTokens, []any{userText(textPrompt)}, nil)
}

func toolCallBody(model string) []byte {
	return request(model, maxTokens, []any{userText(toolPrompt)}, map[string]any{
		"tools":       []any{weatherTool},
		"tool_choice": map[string]any{"type": "tool", "name": toolName},
	})
}

// toolResultBody sends back an assistant turn holding tool calls, with a
// result for each.
func toolResultBody(model string, assistant []json.RawMessage, extra map[string]any) []byte {
	var results []any
	for _, b := range assistant {
		var blk block
		if json.Unmarshal(b, &blk) == nil && blk.Type == "tool_use" {
			results = append(results, map[string]any{"type": "tool_result", "tool_use_id": blk.ID, "content": toolResult})
		}
	}
	messages := []any{
		userText(toolPrompt),
		map[string]any{"role": "assistant", "content": assistant},
		map[string]any{"role": "user", "content": results},
	}
	limit := maxTokens
	all := map[string]any{"tools": []any{weatherTool}}
	for k, v := range extra {
		all[k] = v
	}
	if _, ok := all["thinking"]; ok {
		limit = thinkMaxToken
	}
	return request(model, limit, messages, all)
}

// thinkingBody asks for thinking and offers the tool (a forced tool choice is
// not allowed with thinking), so that the answer can be sent back with a tool
// call, the case where Anthropic checks the thinking block's signature.
func thinkingBody(model string) []byte {
	return request(model, thinkMaxToken, []any{userText(toolPrompt)}, map[string]any{
		"tools":    []any{weatherTool},
		"thinking": thinking,
	})
}

func imageBody(model string) []byte {
	return request(model, maxTokens, []any{map[string]any{"role": "user", "content": []any{
		map[string]any{"type": "image", "source": map[string]any{"type": "base64", "media_type": "image/png", "data": squarePNG}},
		map[string]any{"type": "text", "text": imagePrompt},
	}}}, nil)
}

func countBody(model string) []byte {
	b, err := json.Marshal(map[string]any{
		"model":    model,
		"system":   system,
		"messages": []any{userText(textPrompt)},
		"tools":    []any{weatherTool},
	})
	if err != nil {
		panic(err)
	}
	return b
}
