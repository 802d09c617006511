package convert

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

func TestStopReason(t *testing.T) {
	for _, c := range []struct {
		finish  string
		tools   bool
		matched string
		want    string
		seq     string
	}{
		{`"stop"`, false, ``, "end_turn", ""},
		{`"stop"`, true, ``, "tool_use", ""},
		{`"stop"`, false, `"###"`, "stop_sequence", `"###"`},
		{`"stop"`, false, `""`, "end_turn", ""},
		{`"length"`, false, ``, "max_tokens", ""},
		{`"length"`, true, ``, "max_tokens", ""},
		{`"tool_calls"`, false, ``, "tool_use", ""},
		{`"function_call"`, false, ``, "tool_use", ""},
		{`"content_filter"`, false, ``, "refusal", ""},
		{`"eos"`, false, ``, "end_turn", ""},
		{`null`, false, ``, "end_turn", ""},
	} {
		var matched []byte
		if c.matched != "" {
			matched = []byte(c.matched)
		}
		got, seq := stopReason([]byte(c.finish), c.tools, matched)
		if got != c.want || string(seq) != c.seq {
			t.Errorf("stopReason(%s, %v, %s) = %s, %s; want %s, %s", c.finish, c.tools, c.matched, got, seq, c.want, c.seq)
		}
	}
}

func TestToolInputFromArguments(t *testing.T) {
	for _, c := range []struct{ args, want string }{
		{`"{\"a\": 1}"`, `{"a":1}`},
		{`""`, `{}`},
		{`"  "`, `{}`},
		{`null`, `{}`},
		{`{"a":[1, 2]}`, `{"a":[1,2]}`},
		{`"\"{\\\"a\\\":1}\""`, `{"a":1}`},
		{`"{\"a\": "`, `{"invalid_arguments":"{\"a\": "}`},
		{`"[1]"`, `{"invalid_arguments":"[1]"}`},
	} {
		if got := string(appendToolInput(nil, []byte(c.args))); got != c.want {
			t.Errorf("appendToolInput(%s) = %s, want %s", c.args, got, c.want)
		}
	}
}

func TestUsageSeparatesCachedTokens(t *testing.T) {
	for _, c := range []struct{ usage, want string }{
		{`{"prompt_tokens":100,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":60}}`,
			`"input_tokens":40,"cache_creation_input_tokens":0,"cache_read_input_tokens":60,"output_tokens":5`},
		{`{"prompt_tokens":100,"completion_tokens":5,"prompt_cache_hit_tokens":30,"prompt_cache_miss_tokens":70}`,
			`"input_tokens":70,"cache_creation_input_tokens":0,"cache_read_input_tokens":30,"output_tokens":5`},
		{`{"prompt_tokens":100,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":50,"cache_write_tokens":20}}`,
			`"input_tokens":30,"cache_creation_input_tokens":20,"cache_read_input_tokens":50,"output_tokens":5`},
		{`{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":60}}`,
			`"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":60,"output_tokens":1`},
	} {
		u, ok := parseUsage([]byte(c.usage))
		if got := string(u.appendUsage(nil)); !ok || got != c.want {
			t.Errorf("usage %s:\n got %s\nwant %s", c.usage, got, c.want)
		}
	}
}

func TestResponseErrors(t *testing.T) {
	for _, c := range []struct {
		name, body string
		upstream   bool
		status     int
		errType    string
	}{
		{"not JSON", `<html>`, false, 0, ""},
		{"not an object", `[1]`, false, 0, ""},
		{"no choices", `{"id":"x","choices":[]}`, false, 0, ""},
		{"error object", `{"error":{"message":"overloaded","code":503}}`, true, 503, apierr.Overloaded},
		{"vLLM error", `{"object":"error","message":"bad","type":"BadRequestError","code":400}`, true, 400, apierr.InvalidRequest},
		{"error without code", `{"error":{"message":"boom"}}`, true, 500, apierr.API},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Response([]byte(c.body), "m")
			var ue *UpstreamError
			switch {
			case c.upstream && (!errors.As(err, &ue) || ue.Status != c.status || ue.Type != c.errType):
				t.Fatalf("err = %#v, want status %d type %s", err, c.status, c.errType)
			case !c.upstream && !errors.Is(err, ErrMalformed):
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestResponseReportsClientModelAndFreshIDs(t *testing.T) {
	body := []byte(`{"id":"chatcmpl-1","model":"gpt-4o","choices":[{"index":0,"message":{"content":"hi","tool_calls":[
		{"id":"","function":{"name":"A","arguments":"{}"}},{"function":{"name":"B","arguments":"{}"}},{"id":"call_same_id_0001","function":{"name":"C","arguments":"{}"}},{"id":"call_same_id_0001","function":{"name":"D","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}`)
	seen := map[string]bool{}
	for range 3 {
		out, err := Response(body, `claude-"quoted"`)
		if err != nil {
			t.Fatal(err)
		}
		var msg struct {
			ID      string `json:"id"`
			Model   string `json:"model"`
			Content []struct {
				ID string `json:"id"`
			} `json:"content"`
		}
		if err := json.Unmarshal(out, &msg); err != nil {
			t.Fatal(err)
		}
		if msg.Model != `claude-"quoted"` || !strings.HasPrefix(msg.ID, "msg_") || len(msg.ID) != 28 {
			t.Fatalf("message %s", out)
		}
		ids := []string{msg.ID}
		for _, b := range msg.Content[1:] {
			if !toolIDRe.MatchString(b.ID) {
				t.Fatalf("tool id %q", b.ID)
			}
			ids = append(ids, b.ID)
		}
		if ids[3] != "call_same_id_0001" {
			t.Fatalf("a usable upstream id was replaced: %v", ids)
		}
		for _, id := range ids {
			if seen[id] && id != "call_same_id_0001" {
				t.Fatalf("id %s repeated", id)
			}
			seen[id] = true
		}
		if ids[3] == ids[4] {
			t.Fatalf("duplicate tool ids in one message: %v", ids)
		}
	}
}

func TestResponseThinkingSignatureIsOwnAndMatchesText(t *testing.T) {
	out, err := Response([]byte(`{"choices":[{"message":{"content":"x","reasoning_content":"why\nnot \u00e9"},"finish_reason":"stop"}]}`), "m")
	if err != nil {
		t.Fatal(err)
	}
	var msg struct {
		Content []struct {
			Thinking, Signature string
		} `json:"content"`
	}
	if err := json.Unmarshal(out, &msg); err != nil {
		t.Fatal(err)
	}
	th := msg.Content[0]
	if th.Thinking != "why\nnot é" || th.Signature != ThinkingSignature(th.Thinking) || !IsOwnSignature(th.Signature) {
		t.Fatalf("thinking block %+v", th)
	}
}
