package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func TestRequestRejectsWhatIsNotAMessagesRequest(t *testing.T) {
	for _, c := range []struct{ name, body string }{
		{"not JSON", `{"messages":[`},
		{"trailing data", `{"messages":[]} x`},
		{"not an object", `[{"messages":[]}]`},
		{"no messages", `{"model":"m"}`},
		{"messages not an array", `{"messages":{}}`},
		{"message not an object", `{"messages":["hi"]}`},
		{"unknown role", `{"messages":[{"role":"tool","content":"x"}]}`},
		{"missing role", `{"messages":[{"content":"x"}]}`},
		{"content a number", `{"messages":[{"role":"user","content":3}]}`},
		{"missing content", `{"messages":[{"role":"user"}]}`},
		{"block not an object", `{"messages":[{"role":"user","content":["x"]}]}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := Request([]byte(c.body), "m", Options{})
			if !errors.Is(err, ErrInvalidRequest) || out != nil {
				t.Fatalf("got %s, %v; want an ErrInvalidRequest", out, err)
			}
		})
	}
}

// convertRequest converts body and decodes the result for inspection.
func convertRequest(t *testing.T, body string, opt Options) map[string]any {
	t.Helper()
	out, err := Request([]byte(body), "up-model", opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkChatRequest(out); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRequestFields(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	longUser := strings.Repeat("u", 65)
	for _, c := range []struct {
		name  string
		body  string
		opt   Options
		field string
		want  string // JSON of the field; "" for absent
	}{
		{"model is the upstream one", `{"model":"claude",` + msgs + `}`, Options{}, "model", `"up-model"`},
		{"max_tokens passes", `{"max_tokens":100,` + msgs + `}`, Options{}, "max_tokens", `100`},
		{"max_tokens capped", `{"max_tokens":64000,` + msgs + `}`, Options{MaxTokens: 8192}, "max_tokens", `8192`},
		{"max_tokens below the cap", `{"max_tokens":100,` + msgs + `}`, Options{MaxTokens: 8192}, "max_tokens", `100`},
		{"max_completion_tokens", `{"max_tokens":100,` + msgs + `}`, Options{MaxTokensField: "max_completion_tokens"}, "max_completion_tokens", `100`},
		{"no max_tokens under the other name", `{"max_tokens":100,` + msgs + `}`, Options{MaxTokensField: "max_completion_tokens"}, "max_tokens", ``},
		{"top_k dropped by default", `{"top_k":5,` + msgs + `}`, Options{}, "top_k", ``},
		{"top_k kept on request", `{"top_k":5,` + msgs + `}`, Options{TopK: true}, "top_k", `5`},
		{"four stop sequences at most", `{"stop_sequences":["a","b","c","d","e"],` + msgs + `}`, Options{}, "stop", `["a","b","c","d"]`},
		{"no stream_options without stream", `{"stream":false,` + msgs + `}`, Options{}, "stream_options", ``},
		{"stream asks for usage", `{"stream":true,` + msgs + `}`, Options{}, "stream_options", `{"include_usage":true}`},
		{"short user id kept", `{"metadata":{"user_id":"me"},` + msgs + `}`, Options{}, "user", `"me"`},
		{"long user id hashed", `{"metadata":{"user_id":"` + longUser + `"},` + msgs + `}`, Options{}, "user", `"` + shortID(longUser) + `"`},
		{"session as prompt_cache_key", `{"metadata":{"user_id":"{\"session_id\":\"s-1\"}"},` + msgs + `}`, Options{PromptCacheKey: true}, "prompt_cache_key", `"s-1"`},
		{"older session form", `{"metadata":{"user_id":"user_ab_account_cd_session_ef-12"},` + msgs + `}`, Options{PromptCacheKey: true}, "prompt_cache_key", `"ef-12"`},
		{"no prompt_cache_key by default", `{"metadata":{"user_id":"me"},` + msgs + `}`, Options{}, "prompt_cache_key", ``},
		{"reasoning off by default", `{"thinking":{"type":"enabled","budget_tokens":9000},` + msgs + `}`, Options{}, "reasoning_effort", ``},
		{"effort from output_config", `{"output_config":{"effort":"max"},` + msgs + `}`, Options{Reasoning: "effort"}, "reasoning_effort", `"high"`},
		{"per-message effort wins", `{"output_config":{"effort":"high"},"messages":[{"role":"user","content":"hi","output_config":{"effort":"low"}}]}`, Options{Reasoning: "effort"}, "reasoning_effort", `"low"`},
		{"small budget is low", `{"thinking":{"type":"enabled","budget_tokens":1024},` + msgs + `}`, Options{Reasoning: "effort"}, "reasoning_effort", `"low"`},
		{"medium budget", `{"thinking":{"type":"enabled","budget_tokens":8000},` + msgs + `}`, Options{Reasoning: "effort"}, "reasoning_effort", `"medium"`},
		{"adaptive without effort sends nothing", `{"thinking":{"type":"adaptive"},` + msgs + `}`, Options{Reasoning: "effort"}, "reasoning_effort", ``},
		{"fixed level", `` + `{` + msgs + `}`, Options{Reasoning: "minimal"}, "reasoning_effort", `"minimal"`},
		{"disabled thinking sends nothing", `{"thinking":{"type":"disabled"},` + msgs + `}`, Options{Reasoning: "high"}, "reasoning_effort", ``},
		{"budget as OpenRouter max_tokens", `{"thinking":{"type":"enabled","budget_tokens":5000},` + msgs + `}`, Options{Reasoning: "effort", ReasoningFormat: "reasoning"}, "reasoning", `{"max_tokens":5000}`},
		{"extra members", `{` + msgs + `}`, Options{Extra: json.RawMessage(` { "provider" : {"order":["a"]} } `)}, "provider", `{"order":["a"]}`},
		{"tool_choice dropped without tools", `{"tool_choice":{"type":"any"},` + msgs + `}`, Options{}, "tool_choice", ``},
		{"billing header left out of the system prompt", `{"system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=1"},{"type":"text","text":"Be kind."}],` + msgs + `}`, Options{}, "messages", `[{"content":"Be kind.","role":"system"},{"content":"hi","role":"user"}]`},
		{"inline system merged", `{"system":"A","messages":[{"role":"user","content":"hi"},{"role":"system","content":"B"}]}`, Options{InlineSystem: "merge"}, "messages", `[{"content":"A\nB","role":"system"},{"content":"hi","role":"user"}]`},
		{"inline system kept in place", `{"messages":[{"role":"user","content":"hi"},{"role":"system","content":[{"type":"text","text":"B"}]}]}`, Options{}, "messages", `[{"content":"hi","role":"user"},{"content":"B","role":"system"}]`},
		{"the last of duplicate keys wins", `{"messages":[{"role":"user","content":"a"}],"tools":[{"name":"A","input_schema":{}}],"messages":[{"role":"user","content":"b"}],"tools":[]}`, Options{}, "messages", `[{"content":"b","role":"user"}]`},
		{"tools of a duplicate key dropped", `{"tools":[{"name":"A","input_schema":{}}],"tools":[],` + msgs + `}`, Options{}, "tools", ``},
		{"empty messages dropped", `{"messages":[{"role":"user","content":""},{"role":"assistant","content":[]},{"role":"user","content":[{"type":"text","text":""}]},{"role":"user","content":"x"}]}`, Options{}, "messages", `[{"content":"x","role":"user"}]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := convertRequest(t, c.body, c.opt)
			v, ok := m[c.field]
			switch {
			case c.want == "" && ok:
				t.Fatalf("%s = %s, want it absent", c.field, jsonOf(t, v))
			case c.want != "" && !ok:
				t.Fatalf("%s absent, want %s", c.field, c.want)
			case c.want != "" && jsonOf(t, v) != c.want:
				t.Fatalf("%s = %s, want %s", c.field, jsonOf(t, v), c.want)
			}
		})
	}
}

func TestRequestPlacesToolResultsRightAfterTheirCalls(t *testing.T) {
	body := `{"messages":[
		{"role":"user","content":"go"},
		{"role":"assistant","content":[{"type":"tool_use","id":"call_one_0000000","name":"A","input":{}},{"type":"tool_use","id":"call_two_0000000","name":"B","input":{"x":1}}]},
		{"role":"user","content":[{"type":"text","text":"before"},{"type":"tool_result","tool_use_id":"call_two_0000000","content":"2"},{"type":"tool_result","tool_use_id":"call_one_0000000","content":"1"},{"type":"text","text":"after"}]}]}`
	m := convertRequest(t, body, Options{})
	got := jsonOf(t, m["messages"])
	want := `[{"content":"go","role":"user"},` +
		`{"content":null,"role":"assistant","tool_calls":[{"function":{"arguments":"{}","name":"A"},"id":"call_one_0000000","type":"function"},{"function":{"arguments":"{\"x\":1}","name":"B"},"id":"call_two_0000000","type":"function"}]},` +
		`{"content":"1","role":"tool","tool_call_id":"call_one_0000000"},{"content":"2","role":"tool","tool_call_id":"call_two_0000000"},` +
		`{"content":"before\nafter","role":"user"}]`
	if got != want {
		t.Fatalf("messages:\n%s\nwant\n%s", got, want)
	}
}

func TestRequestUnwrapsToolIDsItWrapped(t *testing.T) {
	var ids toolIDs
	fixedIDs(t)
	wrapped := ids.assign([]byte("functions.Read:3"))
	body := `{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"` + wrapped + `","name":"Read","input":{}}]},` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"` + wrapped + `","content":"ok"}]}]}`
	out, err := Request([]byte(body), "m", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(out, []byte(`"functions.Read:3"`)) != 2 || bytes.Contains(out, []byte(wrapped)) {
		t.Fatalf("ids not unwrapped: %s", out)
	}
}

func TestRequestKeepsLargeStringsByteForByte(t *testing.T) {
	text := `line one\nline \"two\" \u00e9 \ud83d\ude00 end`
	body := `{"messages":[{"role":"user","content":[{"type":"text","text":"` + text + `"}]}]}`
	out, err := Request([]byte(body), "m", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte(`"content":"`+text+`"`)) {
		t.Fatalf("text re-encoded: %s", out)
	}
}

func TestAppendRequestAppendsAndKeepsDstOnError(t *testing.T) {
	dst := []byte("prefix")
	out, err := AppendRequest(dst, []byte(`{"messages":[]}`), "m", Options{})
	if err != nil || !bytes.HasPrefix(out, []byte(`prefix{"model":"m"`)) {
		t.Fatalf("got %s, %v", out, err)
	}
	out, err = AppendRequest(dst, []byte(`nope`), "m", Options{})
	if err == nil || string(out) != "prefix" {
		t.Fatalf("got %s, %v", out, err)
	}
}

func TestSanitizedSchemaDropsKeywordsButNotProperties(t *testing.T) {
	schema := `{"$schema":"x","type":"object","additionalProperties":false,
		"properties":{"format":{"type":"string","format":"email","default":"a"},"n":{"type":["null","number"],"const":3},
		"list":{"type":"array","items":[{"type":"string","examples":["e"]}]},"u":{"oneOf":[{"type":"string"},{"not":{}}]}},
		"required":["format","ghost"],"$defs":{"d":{"type":"object","propertyNames":{"pattern":"x"}}}}`
	got := string(appendSchema(nil, []byte(schema), true))
	want := `{"type":"object","properties":{"format":{"type":"string","default":"a"},"n":{"type":"number","enum":[3]},` +
		`"list":{"type":"array","items":[{"type":"string"}]},"u":{"anyOf":[{"type":"string"},{}]}},"required":["format"],"$defs":{"d":{"type":"object"}}}`
	if got != want {
		t.Fatalf("sanitized:\n%s\nwant\n%s", got, want)
	}
	if raw := appendSchema(nil, []byte(schema), false); string(raw) != schema {
		t.Fatalf("unsanitized schema changed: %s", raw)
	}
}

// Claude Code's mid-conversation system messages (the mid-conversation-system
// beta) go where they stand, as inline_system says; one without text, a
// directive with nothing for the model to read, is dropped in every mode.
func TestRequestMidConversationSystemMessages(t *testing.T) {
	body := `{"system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=2"},{"type":"text","text":"You are Claude Code."}],"messages":[
		{"role":"user","content":[{"type":"text","text":"run it"}]},
		{"role":"system","content":[{"type":"text","text":"# Environment"},{"type":"text","text":"Platform: linux","cache_control":{"type":"ephemeral"}}]},
		{"role":"assistant","content":[{"type":"tool_use","id":"call_one_0000000","name":"Bash","input":{"command":"ls"}}]},
		{"role":"system","content":"Tools changed."},
		{"role":"user","content":[{"type":"tool_result","tool_use_id":"call_one_0000000","content":"a.txt"}]},
		{"role":"system","content":[{"type":"text","text":""}]},
		{"role":"system","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}}]},
		{"role":"system","content":""}]}`
	const (
		user  = `{"content":"run it","role":"user"}`
		calls = `{"content":null,"role":"assistant","tool_calls":[{"function":{"arguments":"{\"command\":\"ls\"}","name":"Bash"},"id":"call_one_0000000","type":"function"}]}`
		tool  = `{"content":"a.txt","role":"tool","tool_call_id":"call_one_0000000"}`
	)
	for _, tc := range []struct {
		mode, want string
	}{
		{"", `[{"content":"You are Claude Code.","role":"system"},` + user + `,{"content":"# Environment\nPlatform: linux","role":"system"},` + calls + `,` + tool + `,{"content":"Tools changed.","role":"system"}]`},
		{"system", `[{"content":"You are Claude Code.","role":"system"},` + user + `,{"content":"# Environment\nPlatform: linux","role":"system"},` + calls + `,` + tool + `,{"content":"Tools changed.","role":"system"}]`},
		{"user", `[{"content":"You are Claude Code.","role":"system"},` + user + `,{"content":"# Environment\nPlatform: linux","role":"user"},` + calls + `,` + tool + `,{"content":"Tools changed.","role":"user"}]`},
		{"merge", `[{"content":"You are Claude Code.\n# Environment\nPlatform: linux\nTools changed.","role":"system"},` + user + `,` + calls + `,` + tool + `]`},
	} {
		t.Run("inline_system "+tc.mode, func(t *testing.T) {
			m := convertRequest(t, body, Options{InlineSystem: tc.mode})
			if got := jsonOf(t, m["messages"]); got != tc.want {
				t.Fatalf("messages:\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// AppendValidRequest converts every request as Request does; it reads the body
// without validating it (a body intake accepted), so a bad escape deep in a
// message, which Request refuses, goes through as it was read.
func TestAppendValidRequestConvertsWithoutValidating(t *testing.T) {
	paths, _ := filepath.Glob("testdata/requests/*.json")
	n := 0
	for _, p := range paths {
		if strings.Contains(p, ".want") {
			continue
		}
		c := loadRequestCase(t, p)
		want, werr := Request(c.Body, c.Model, c.Options)
		got, err := AppendValidRequest(nil, c.Body, c.Model, c.Options)
		if fmt.Sprint(err) != fmt.Sprint(werr) || !bytes.Equal(got, want) {
			t.Fatalf("%s: AppendValidRequest gives %v\n%s\nRequest gives %v\n%s", p, err, got, werr, want)
		}
		n++
	}
	if n < 10 {
		t.Fatalf("only %d request cases", n)
	}

	bad := []byte(`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a\q"}]}]}`)
	if _, err := Request(bad, "m", Options{}); err == nil {
		t.Fatal("Request accepted a bad escape")
	}
	out, err := AppendValidRequest(nil, bad, "m", Options{})
	if err != nil || !bytes.Contains(out, []byte(`a\q`)) {
		t.Fatalf("AppendValidRequest validated what it was told is valid: %v\n%s", err, out)
	}
}

// A tools array read once is not read again: a body that starts its
// "tools" with the same bytes gets the same tools from the cache, a
// changed array is read anew, and what a walk that did not validate kept
// (AppendValidRequest) never spares a validating walk its validation.
func TestToolsReadOnceAreKept(t *testing.T) {
	tools := func(desc string) string {
		var b strings.Builder
		b.WriteString(`[`)
		for i := range 12 {
			if i > 0 {
				b.WriteString(`,`)
			}
			fmt.Fprintf(&b, `{"name":"tool%d","description":%q,"input_schema":{"type":"object","properties":{"a":{"type":"string","description":"an argument of tool %d"}}}}`, i, desc, i)
		}
		b.WriteString(`]`)
		return b.String()
	}
	body := func(ts string) []byte {
		return []byte(`{"model":"m","max_tokens":5,"tools":` + ts + `,"messages":[{"role":"user","content":"hi"}]}`)
	}
	a := body(tools("A tool that does one thing well, and says so at some length."))
	if len(a) < 2*toolsMin {
		t.Fatalf("the body is too small to keep its tools: %d bytes", len(a))
	}
	first, err := Request(a, "m", Options{})
	if err != nil {
		t.Fatal(err)
	}
	hits := toolsKept.Hits()
	again, err := Request(a, "m", Options{})
	if err != nil || !bytes.Equal(again, first) || toolsKept.Hits() != hits+1 {
		t.Fatalf("the same tools again: %v, %d hits, same output %v", err, toolsKept.Hits()-hits, bytes.Equal(again, first))
	}
	// The same tools at another place in another body.
	moved := []byte(`{"system":"be brief","model":"m","tools":` + tools("A tool that does one thing well, and says so at some length.") + `,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	out, err := Request(moved, "m", Options{})
	if err != nil || toolsKept.Hits() != hits+2 || !bytes.Contains(out, []byte(`"name":"tool11"`)) {
		t.Fatalf("moved tools: %v, %d hits\n%s", err, toolsKept.Hits()-hits, out)
	}
	// One byte changed at the end of the array: read anew, and right.
	changedTools := tools("A tool that does one thing well, and says so at some length.")
	changedTools = changedTools[:len(changedTools)-len(`"}}}}]`)-1] + `X"}}}}]`
	changed := body(changedTools)
	cacheless, err := appendRequestUncached(changed)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Request(changed, "m", Options{})
	if err != nil || !bytes.Equal(got, cacheless) || !bytes.Contains(got, []byte(`tool 1X"`)) {
		t.Fatalf("changed tools: %v\n%s\nwant\n%s", err, got, cacheless)
	}
	// Invalid tools that a walk trusting its body kept are not trusted by
	// a walk that validates.
	bad := body(strings.ReplaceAll(tools("A tool with a bad escape, kept by a walk that trusted it."), "bad escape", `bad \q escape`))
	if _, err := appendRequestUncached(bad); err == nil {
		t.Fatal("Request accepted a bad escape")
	}
	if _, err := AppendValidRequest(nil, bad, "m", Options{}); err != nil {
		t.Fatalf("AppendValidRequest: %v", err)
	}
	if _, err := Request(bad, "m", Options{}); err == nil {
		t.Fatal("tools kept by a walk that did not validate them spared Request its validation")
	}
}

// appendRequestUncached converts body with the tools cache emptied first.
func appendRequestUncached(body []byte) ([]byte, error) {
	toolsKept.Reset()
	return Request(body, "m", Options{})
}
