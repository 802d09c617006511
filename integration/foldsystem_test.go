package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// strictRelay is an Anthropic-compatible relay that refuses messages of role
// "system" inside "messages", as relays that predate them do.
func strictRelay(t *testing.T) *mock {
	return newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		b, _ := io.ReadAll(r.Body)
		var req struct {
			Messages []struct {
				Role string `json:"role"`
			} `json:"messages"`
		}
		_ = json.Unmarshal(b, &req)
		for i, m := range req.Messages {
			if m.Role != "user" && m.Role != "assistant" {
				errorStatus(400, "invalid_request_error", fmt.Sprintf("messages.%d.role: Input should be 'user' or 'assistant'", i))(w, r, n)
				return
			}
		}
		if strings.HasSuffix(r.URL.Path, "/count_tokens") {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"input_tokens":7}`)
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		okEither("relayed")(w, r, n)
	})
}

// A body as Claude Code sends one with the mid-conversation-system beta:
// the system message last, after the user's turn, with a cache breakpoint.
const midConversationBody = `{"model":"claude-sonnet-4-5","max_tokens":64,"system":[{"type":"text","text":"You are Claude Code."}],` +
	`"messages":[{"role":"user","content":[{"type":"text","text":"say hi"}]},` +
	`{"role":"system","content":[{"type":"text","text":"# Environment\nPlatform: linux","cache_control":{"type":"ephemeral"}}]}],"stream":false}`

const midConversationFolded = `{"model":"claude-sonnet-4-5","max_tokens":64,"system":[{"type":"text","text":"You are Claude Code."}],` +
	`"messages":[{"role":"user","content":[{"type":"text","text":"say hi"},{"type":"text","text":"# Environment\nPlatform: linux","cache_control":{"type":"ephemeral"}}]}],"stream":false}`

func TestMidConversationSystemToAStrictRelay(t *testing.T) {
	t.Run("without fold_system the relay's 400 goes to the client", func(t *testing.T) {
		relay := strictRelay(t)
		other := newMock(t, okEither("never"))
		e := start(t, fmt.Sprintf(`
			provider relay {
				base_url %s
				api_key k
			}
			provider other {
				base_url %s
				api_key k
			}`, relay.URL, other.URL))
		for range 3 {
			resp, out := e.messages([]byte(midConversationBody))
			if resp.StatusCode != 400 || !strings.Contains(string(out), "messages.1.role: Input should be") || !isEnvelope(out, "invalid_request_error") {
				t.Fatalf("%d %s", resp.StatusCode, out)
			}
		}
		if other.count() != 0 {
			t.Fatalf("a request-scoped 400 failed over")
		}
		if p := e.providers()["relay"]; !p.Healthy || p.ErrorCount != 0 {
			t.Fatalf("the relay was penalised: %+v", p)
		}
		if string(relay.last().Body) != midConversationBody {
			t.Fatalf("the relay got %s", relay.last().Body)
		}
	})
	t.Run("with fold_system the relay gets a user turn", func(t *testing.T) {
		relay := strictRelay(t)
		e := start(t, fmt.Sprintf("provider relay {\nbase_url %s\napi_key k\nfold_system\n}", relay.URL))
		resp, out := e.messages([]byte(midConversationBody))
		if resp.StatusCode != 200 || !strings.Contains(string(out), "relayed") {
			t.Fatalf("%d %s", resp.StatusCode, out)
		}
		if got := string(relay.last().Body); got != midConversationFolded {
			t.Fatalf("the relay got\n%s\nwant\n%s", got, midConversationFolded)
		}
		// count_tokens goes the same way.
		resp, out = e.post("/v1/messages/count_tokens", []byte(midConversationBody))
		if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Count-Source") != "upstream" || string(out) != `{"input_tokens":7}` {
			t.Fatalf("count: %d %v %s", resp.StatusCode, resp.Header, out)
		}
		if got := relay.last(); got.Path != "/v1/messages/count_tokens" || string(got.Body) != midConversationFolded {
			t.Fatalf("count: the relay got %s %s", got.Path, got.Body)
		}
		// A body without system messages passes byte for byte.
		plain := body("claude-sonnet-4-5", false, `"x": "caf\u00e9"`)
		if resp, _ := e.messages(plain); resp.StatusCode != 200 || string(relay.last().Body) != string(plain) {
			t.Fatalf("plain body: %d %s", resp.StatusCode, relay.last().Body)
		}
	})
	t.Run("only the provider with fold_system gets the folded body", func(t *testing.T) {
		relay := newMock(t, errorStatus(529, "overloaded_error", "Overloaded"))
		direct := newMock(t, okEither("direct"))
		e := start(t, fmt.Sprintf(`
			provider relay {
				base_url %s
				api_key k
				fold_system
			}
			provider direct {
				base_url %s
				api_key k
			}`, relay.URL, direct.URL))
		resp, out := e.messages([]byte(midConversationBody))
		if resp.StatusCode != 200 || !strings.Contains(string(out), "direct") {
			t.Fatalf("%d %s", resp.StatusCode, out)
		}
		if string(relay.last().Body) != midConversationFolded || string(direct.last().Body) != midConversationBody {
			t.Fatalf("relay got %s\ndirect got %s", relay.last().Body, direct.last().Body)
		}
	})
}

func TestFoldSystemRefusedForOpenAIProviders(t *testing.T) {
	e := start(t, "provider a {\nbase_url http://127.0.0.1:9\napi_key k\n}")
	msg := e.loadErr(globalOptions("") + fmt.Sprintf(":%d {\n\tclaude_balancer {\n\t\tprovider o {\n\t\t\ttype openai\n\t\t\tbase_url http://127.0.0.1:9\n\t\t\tapi_key k\n\t\t\tfold_system\n\t\t}\n\t}\n}\n", httpPort))
	if !strings.Contains(msg, "fold_system is for anthropic providers") {
		t.Fatalf("error: %s", msg)
	}
	// In JSON too.
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://localhost:%d/load", adminPort), strings.NewReader(fmt.Sprintf(
		`{"apps":{"http":{"servers":{"s":{"listen":[":%d"],"routes":[{"handle":[{"handler":"claude_balancer","name":"json_fold","providers":[{"name":"o","type":"openai","base_url":"http://127.0.0.1:9","api_key":"k","fold_system":true}]}]}]}}}}}`, httpPort)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == 200 || !strings.Contains(string(b), "fold_system is for anthropic providers") {
		t.Fatalf("JSON config: %d %s", resp.StatusCode, b)
	}
}

// An OpenAI-compatible provider gets mid-conversation system messages in
// place (inline_system system), and their tokens are counted locally.
func TestMidConversationSystemToAnOpenAIProvider(t *testing.T) {
	up := newMock(t, openAIText("converted"))
	e := start(t, fmt.Sprintf("provider o {\ntype openai\nbase_url %s\napi_key k\n}", up.URL))
	resp, out := e.messages([]byte(midConversationBody))
	if resp.StatusCode != 200 || !strings.Contains(string(out), "converted") {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	var sent struct {
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(up.last().Body, &sent); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(sent.Messages)
	if want := "[{system You are Claude Code.} {user say hi} {system # Environment\nPlatform: linux}]"; got != want {
		t.Fatalf("upstream messages %q, want %q", got, want)
	}
	// Counted locally, system message included.
	count := func(b string) int {
		resp, out := e.post("/v1/messages/count_tokens", []byte(b))
		var c struct {
			N int `json:"input_tokens"`
		}
		if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Count-Source") != "local" || json.Unmarshal(out, &c) != nil {
			t.Fatalf("count: %d %v %s", resp.StatusCode, resp.Header, out)
		}
		return c.N
	}
	without := strings.Replace(midConversationBody, `,{"role":"system","content":[{"type":"text","text":"# Environment\nPlatform: linux","cache_control":{"type":"ephemeral"}}]}`, "", 1)
	if without == midConversationBody {
		t.Fatal("the test body changed")
	}
	if with, wo := count(midConversationBody), count(without); with <= wo {
		t.Fatalf("count with the system message %d, without %d", with, wo)
	}
	if up.count() != 1 {
		t.Fatalf("count_tokens reached the OpenAI provider")
	}
}
