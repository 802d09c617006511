package convert

import (
	"encoding/json"
	"testing"
)

func TestOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		opt  Options
		ok   bool
	}{
		{"zero value", Options{}, true},
		{"everything set", Options{MaxTokensField: "max_completion_tokens", MaxTokens: 8192, SanitizeSchema: true,
			Reasoning: "effort", ReasoningFormat: "reasoning", ThinkingHistory: "reasoning_content", TopK: true,
			InlineSystem: "merge", PromptCacheKey: true, Extra: json.RawMessage(`{"a":1}`)}, true},
		{"fixed reasoning level", Options{Reasoning: "low"}, true},
		{"unknown max tokens field", Options{MaxTokensField: "max_output_tokens"}, false},
		{"unknown reasoning", Options{Reasoning: "lots"}, false},
		{"unknown reasoning format", Options{ReasoningFormat: "thinking"}, false},
		{"unknown thinking history", Options{ThinkingHistory: "text"}, false},
		{"unknown inline system", Options{InlineSystem: "developer"}, false},
		{"negative cap", Options{MaxTokens: -1}, false},
		{"extra not an object", Options{Extra: json.RawMessage(`[1]`)}, false},
		{"extra not JSON", Options{Extra: json.RawMessage(`{`)}, false},
	} {
		if err := c.opt.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate() = %v", c.name, err)
		}
	}
}
