// Package convert translates between the Anthropic Messages API and OpenAI
// Chat Completions, so that a client speaking Anthropic (Claude Code) can be
// served by any OpenAI-compatible provider: requests one way, JSON replies
// and SSE streams the other way, and errors. It also keeps thinking blocks
// made from OpenAI reasoning away from Anthropic providers, which would
// reject their signatures.
//
// Everything works on raw JSON bytes. Strings that only change place are
// copied as written, never decoded and encoded again. A request, a reply
// and each stream chunk are validated in the walk that reads them; a
// request body already validated (AppendValidRequest) is not validated again, and
// a Stream reads the start its chunks share (id, model...) once. A Stream
// can lend the events it makes (Borrow) to a relay that hands each on
// before it feeds the next chunk: a chunk of text costs no allocation.
package convert

import (
	"encoding/json"
	"fmt"
)

// Options are the conversion settings of one OpenAI-compatible provider.
// The zero value suits OpenAI itself and most compatible servers.
type Options struct {
	// MaxTokensField names the field that carries max_tokens upstream:
	// "max_tokens" (default) or "max_completion_tokens" (OpenAI reasoning
	// models reject max_tokens).
	MaxTokensField string `json:"max_tokens_field,omitempty"`

	// MaxTokens caps the max_tokens sent upstream; 0 sends the client's value.
	// Claude Code asks for 32000 or more, which many providers refuse.
	MaxTokens int64 `json:"max_tokens,omitempty"`

	// SanitizeSchema rewrites tool and output schemas for providers that
	// accept only a subset of JSON Schema (Gemini, some vLLM guided-decoding
	// back ends). See README.md for the exact list.
	SanitizeSchema bool `json:"sanitize_schema,omitempty"`

	// Reasoning says how Anthropic thinking settings become a reasoning level:
	// "off" (default) sends none; "effort" derives it from the request
	// (output_config.effort, else the thinking budget); "minimal", "low",
	// "medium" or "high" send that level whenever the request does not
	// disable thinking.
	Reasoning string `json:"reasoning,omitempty"`

	// ReasoningFormat says where the level goes: "reasoning_effort"
	// (default, OpenAI, DeepSeek, vLLM, ...) or "reasoning", OpenRouter's
	// {"reasoning":{"effort":...}} object (a thinking budget is sent there as
	// {"max_tokens":N} instead).
	ReasoningFormat string `json:"reasoning_format,omitempty"`

	// ThinkingHistory says what happens to thinking blocks in the history:
	// "drop" (default) removes them; "reasoning_content" (DeepSeek, Kimi,
	// vLLM) or "reasoning" (OpenRouter) sends their text in that field of the
	// assistant message. Redacted thinking is always dropped.
	ThinkingHistory string `json:"thinking_history,omitempty"`

	// TopK forwards top_k, which only some compatible providers accept.
	TopK bool `json:"top_k,omitempty"`

	// InlineSystem says how system messages inside "messages" are sent:
	// "system" (default) keeps them in place as system messages; "merge"
	// appends their text to the leading system message (for chat templates
	// that allow only one, first, system message); "user" sends them in place
	// as user messages.
	InlineSystem string `json:"inline_system,omitempty"`

	// PromptCacheKey sends the Claude Code session id (from metadata.user_id)
	// as prompt_cache_key, which OpenAI uses to route requests that share a
	// prefix to the same cache.
	PromptCacheKey bool `json:"prompt_cache_key,omitempty"`

	// Extra is a JSON object whose members are added to every request, after
	// the converted ones, e.g. {"provider":{"sort":"throughput"}}. Most JSON
	// parsers keep the last of duplicate keys, so a member named like a
	// converted one overrides it.
	Extra json.RawMessage `json:"extra,omitempty"`
}

// Validate reports the first option that holds a value it does not know.
func (o Options) Validate() error {
	check := func(name, v string, allowed ...string) error {
		if v == "" {
			return nil
		}
		for _, a := range allowed {
			if v == a {
				return nil
			}
		}
		return fmt.Errorf("convert: %s %q: want one of %q", name, v, allowed)
	}
	if err := check("max_tokens_field", o.MaxTokensField, "max_tokens", "max_completion_tokens"); err != nil {
		return err
	}
	if err := check("reasoning", o.Reasoning, "off", "effort", "minimal", "low", "medium", "high"); err != nil {
		return err
	}
	if err := check("reasoning_format", o.ReasoningFormat, "reasoning_effort", "reasoning"); err != nil {
		return err
	}
	if err := check("thinking_history", o.ThinkingHistory, "drop", "reasoning_content", "reasoning"); err != nil {
		return err
	}
	if err := check("inline_system", o.InlineSystem, "system", "merge", "user"); err != nil {
		return err
	}
	if o.MaxTokens < 0 {
		return fmt.Errorf("convert: max_tokens %d: must not be negative", o.MaxTokens)
	}
	if len(o.Extra) > 0 && (!validJSON(o.Extra) || !isObject(trimSpace(o.Extra))) {
		return fmt.Errorf("convert: extra: not a JSON object")
	}
	return nil
}

func trimSpace(b []byte) []byte {
	i, j := 0, len(b)
	for i < j && isSpace(b[i]) {
		i++
	}
	for j > i && isSpace(b[j-1]) {
		j--
	}
	return b[i:j]
}
