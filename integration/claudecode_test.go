package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// claudeBin returns the pinned Claude Code CLI (make claude-code installs
// it), skipping the test when it is absent.
func claudeBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CLAUDE_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../.cache/claude-code/node_modules/.bin/claude")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Claude Code CLI not found at %s (run make claude-code)", bin)
		}
		t.Skipf("Claude Code CLI not found at %s (run make claude-code)", bin)
	}
	return bin
}

// runClaude runs `claude -p prompt` against the balancer and returns its
// output.
func runClaude(t *testing.T, e *env, prompt string, args ...string) (string, error) {
	t.Helper()
	return runClaudeIn(t, e, t.TempDir(), prompt, args...)
}

// runClaudeIn runs Claude Code with home as its home and working directory.
func runClaudeIn(t *testing.T, e *env, home, prompt string, args ...string) (string, error) {
	t.Helper()
	return runClaudeWith(t, e, home, nil, prompt, args...)
}

// runClaudeWith is runClaudeIn with more environment variables.
func runClaudeWith(t *testing.T, e *env, home string, extraEnv []string, prompt string, args ...string) (string, error) {
	t.Helper()
	bin := claudeBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-p", prompt}, args...)...)
	cmd.Dir = home
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"ANTHROPIC_BASE_URL="+e.base,
		"ANTHROPIC_API_KEY=sk-ant-test-client",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		"DISABLE_AUTOUPDATER=1",
		"CLAUDE_CODE_MAX_RETRIES=0",
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("claude: %w: %s", err, errb.String())
	}
	return out.String(), nil
}

// claudeMock answers every Messages request the way the API does, with a
// text reply, and records the models and paths it saw.
func claudeMock(t *testing.T, reply string) *mock {
	return newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if strings.HasSuffix(r.URL.Path, "/count_tokens") {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"input_tokens":42}`)
			return
		}
		if isStream(r) {
			okSSE(reply)(w, r, n)
			return
		}
		okJSON(reply)(w, r, n)
	})
}

func TestClaudeCodeCLI(t *testing.T) {
	claudeBin(t)
	t.Run("through one provider", func(t *testing.T) {
		up := claudeMock(t, "MOCK-ANSWER-4217")
		e := start(t, fmt.Sprintf("provider a {\nbase_url %s\npassthrough_auth\n}", up.URL))
		out, err := runClaude(t, e, "Say the magic number")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "MOCK-ANSWER-4217") {
			t.Fatalf("claude printed %q", out)
		}
		var sawMain bool
		for _, r := range up.requests() {
			if r.Path == "/v1/messages" {
				var b struct {
					Stream bool `json:"stream"`
				}
				_ = json.Unmarshal(r.Body, &b)
				sawMain = sawMain || b.Stream
				if r.Header.Get("X-Api-Key") != "sk-ant-test-client" || r.Header.Get("User-Agent") == "" || r.Query != "beta=true" {
					t.Errorf("request not passed through as Claude Code sent it: %v %q", r.Header, r.Query)
				}
			}
		}
		if !sawMain {
			t.Fatalf("no streaming request reached the provider")
		}
	})
	t.Run("first provider failing", func(t *testing.T) {
		bad := newMock(t, errorStatus(529, "overloaded_error", "Overloaded"))
		good := claudeMock(t, "FAILOVER-ANSWER-77")
		e := start(t, fmt.Sprintf(`
			provider bad {
				base_url %s
				passthrough_auth
			}
			provider good {
				base_url %s
				passthrough_auth
			}`, bad.URL, good.URL))
		out, err := runClaude(t, e, "Say the magic number")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "FAILOVER-ANSWER-77") || strings.Contains(strings.ToLower(out), "overloaded") {
			t.Fatalf("claude printed %q", out)
		}
		if bad.count() == 0 {
			t.Fatalf("the failing provider was never tried")
		}
	})
}

func TestClaudeCodeCLIDuplicatesShareOneCall(t *testing.T) {
	claudeBin(t)
	var mu sync.Mutex
	release := make(chan struct{})
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if strings.HasSuffix(r.URL.Path, "/count_tokens") {
			fmt.Fprint(w, `{"input_tokens":42}`)
			return
		}
		<-release
		mu.Lock()
		defer mu.Unlock()
		if isStream(r) {
			okSSE("SHARED-ANSWER-9")(w, r, n)
			return
		}
		okJSON("SHARED-ANSWER-9")(w, r, n)
	})
	// Two terminals running the same prompt are two sessions: their
	// metadata differs, so it is declared retry noise here.
	e := start(t, fmt.Sprintf(`
		dedup {
			ignore max_tokens metadata
		}
		provider a {
			base_url %s
			passthrough_auth
		}`, up.URL))
	outs := make([]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	dir := t.TempDir()
	for i := range outs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			outs[i], errs[i] = runClaudeIn(t, e, dir, "Say the shared magic number")
		}(i)
	}
	waitFor(t, "the second run to join the first", func() bool { j, _ := e.dedupStats(); return j >= 1 })
	close(release)
	wg.Wait()
	for i := range outs {
		if errs[i] != nil || !strings.Contains(outs[i], "SHARED-ANSWER-9") {
			t.Fatalf("run %d: %v %q", i, errs[i], outs[i])
		}
	}
	calls := 0
	for _, r := range up.requests() {
		if r.Path == "/v1/messages" {
			calls++
		}
	}
	if calls != 1 {
		t.Fatalf("upstream messages calls: %d, want 1", calls)
	}
}

// openAIAgent plays an OpenAI-compatible model for Claude Code: asked with
// the Bash tool available, it first calls Bash, then answers with what the
// tool printed.
func openAIAgent(t *testing.T) *mock {
	return newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		var req struct {
			Stream   bool `json:"stream"`
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
		var toolOutput string
		for _, m := range req.Messages {
			if m.Role == "tool" {
				var s string
				if json.Unmarshal(m.Content, &s) != nil {
					s = string(m.Content)
				}
				toolOutput = s
			}
		}
		switch {
		case hasBash && toolOutput == "":
			openAIChunks(w,
				chunk(`{"role":"assistant","content":""}`, ""),
				chunk(`{"tool_calls":[{"index":0,"id":"call_cb_agent_0001","type":"function","function":{"name":"Bash","arguments":""}}]}`, ""),
				chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"{\"command\": \"echo cb-tool-\"}"}}]}`, ""),
				chunk(`{"tool_calls":[{"index":0,"function":{"arguments":""}}]}`, ""),
				chunk(`{}`, "tool_calls"), usageChunk)
		case toolOutput != "":
			openAIText(fmt.Sprintf("TOOL SAID: %s", strings.TrimSpace(strings.ReplaceAll(toolOutput, "\n", " "))))(w, r, n)
		default:
			openAIText("plain answer")(w, r, n)
		}
	})
}

func TestClaudeCodeCLIWithOpenAIProviderRunsATool(t *testing.T) {
	claudeBin(t)
	agent := openAIAgent(t)
	failing := newMock(t, errorStatus(529, "overloaded_error", "Overloaded"))
	e := start(t, fmt.Sprintf(`
		provider anthropic {
			base_url %s
			passthrough_auth
		}
		provider compat {
			type openai
			base_url %s/v1
			api_key sk-compat
		}
		route * {
			to anthropic
			to compat some-vendor/some-model
		}`, failing.URL, agent.URL))
	out, err := runClaude(t, e, "Run echo through Bash and tell me what it printed", "--allowedTools", "Bash")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "TOOL SAID: cb-tool-") {
		t.Fatalf("claude printed %q", out)
	}
	if failing.count() == 0 {
		t.Fatalf("the failing Anthropic provider was never tried")
	}
	sawToolTurn := false
	for _, r := range agent.requests() {
		if strings.Contains(string(r.Body), `"role":"tool"`) && strings.Contains(string(r.Body), `"tool_call_id":"call_cb_agent_0001"`) {
			sawToolTurn = true
		}
		if !strings.Contains(string(r.Body), `"model":"some-vendor/some-model"`) || r.Path != "/v1/chat/completions" {
			t.Fatalf("upstream request: %s %s", r.Path, r.Body)
		}
	}
	if !sawToolTurn {
		t.Fatalf("the tool result never came back to the provider")
	}
}

// Claude Code sends mid-conversation system messages (its environment, as a
// system message after the user's turn) when CLAUDE_CODE_FORCE_MID_CONVERSATION_SYSTEM
// is set; otherwise only for some models (2.1.332: its default model, not
// claude-haiku-4-5, which the runs ask for so that the variable decides).
// Through an OpenAI-compatible provider they arrive in place, as system
// messages, and through an Anthropic relay that refuses them, folded into the
// user's turn.
func TestClaudeCodeCLIMidConversationSystem(t *testing.T) {
	claudeBin(t)
	force := []string{"CLAUDE_CODE_FORCE_MID_CONVERSATION_SYSTEM=1"}
	t.Run("OpenAI-compatible provider", func(t *testing.T) {
		up := newMock(t, openAIText("MID-SYSTEM-OK-31"))
		e := start(t, fmt.Sprintf(`
			provider compat {
				type openai
				base_url %s/v1
				api_key sk-compat
			}
			route * {
				to compat some-vendor/some-model
			}`, up.URL))
		out, err := runClaudeWith(t, e, t.TempDir(), force, "Say the magic number", "--model", "claude-haiku-4-5")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "MID-SYSTEM-OK-31") {
			t.Fatalf("claude printed %q", out)
		}
		inPlace := false
		for _, r := range up.requests() {
			var req struct {
				Messages []struct {
					Role string `json:"role"`
				} `json:"messages"`
			}
			if json.Unmarshal(r.Body, &req) != nil {
				t.Fatalf("upstream body: %s", r.Body)
			}
			// A system message after the conversation started: not the
			// leading system prompt.
			for i, m := range req.Messages {
				if i > 0 && m.Role == "system" && req.Messages[i-1].Role != "system" {
					inPlace = true
				}
			}
		}
		if !inPlace {
			t.Fatalf("no mid-conversation system message reached the provider: %s", up.last().Body)
		}
	})
	t.Run("Anthropic relay with fold_system", func(t *testing.T) {
		relay := strictRelay(t)
		e := start(t, fmt.Sprintf("provider relay {\nbase_url %s\npassthrough_auth\nfold_system\n}", relay.URL))
		out, err := runClaudeWith(t, e, t.TempDir(), force, "Say the magic number", "--model", "claude-haiku-4-5")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "relayed") {
			t.Fatalf("claude printed %q", out)
		}
		for _, r := range relay.requests() {
			if r.Path == "/v1/messages" && strings.Contains(string(r.Body), `"role":"system"`) {
				t.Fatalf("a system message reached the relay: %.300s", r.Body)
			}
		}
	})
	t.Run("Anthropic relay without fold_system", func(t *testing.T) {
		// The relay's 400 reaches Claude Code as it is, which then asks
		// again without system messages; the relay is not penalised.
		relay := strictRelay(t)
		e := start(t, fmt.Sprintf("provider relay {\nbase_url %s\npassthrough_auth\n}", relay.URL))
		out, err := runClaudeWith(t, e, t.TempDir(), force, "Say the magic number", "--model", "claude-haiku-4-5")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "relayed") {
			t.Fatalf("claude printed %q", out)
		}
		var with, without int
		for _, r := range relay.requests() {
			if r.Path == "/v1/messages" {
				if strings.Contains(string(r.Body), `"role":"system"`) {
					with++
				} else {
					without++
				}
			}
		}
		if with == 0 || without == 0 {
			t.Fatalf("requests with system messages: %d, without: %d", with, without)
		}
		if p := e.providers()["relay"]; !p.Healthy || p.ErrorCount != 0 {
			t.Fatalf("the relay was penalised: %+v", p)
		}
	})
}
