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
	"runtime"
	"strings"
	"testing"

	claudebalancer "github.com/claude-balancer/caddy-claude-balancer"
	"github.com/claude-balancer/caddy-claude-balancer/conformance"
)

// The check command provisions its config in this process without starting
// it, so it runs beside the Caddy the other tests drive; its balancers have
// names of their own so that they share no state with those.

// checkSignature is the thinking signature the Anthropic mocks sign with.
const checkSignature = "EqQBCkYIBxgCKkCheckSignature"

// anthropicProvider is a mock Anthropic provider for the check: it streams
// text, a tool call with input_json_delta pieces, thinking with a signature
// (and checks it when it comes back), accepts images and answers
// count_tokens, unless told otherwise; it sends the quota headers of a
// subscription ("unified"), of an API key ("api") or none.
type anthropicProvider struct {
	noCount, noImages bool
	quota             string
}

func (a anthropicProvider) serve(w http.ResponseWriter, r *http.Request, n int) {
	b, _ := io.ReadAll(r.Body)
	if strings.HasSuffix(r.URL.Path, "/count_tokens") {
		if a.noCount {
			errorStatus(404, "not_found_error", "Not Found")(w, r, n)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"input_tokens":42}`)
		return
	}
	var req struct {
		Thinking   json.RawMessage `json:"thinking"`
		ToolChoice json.RawMessage `json:"tool_choice"`
	}
	json.Unmarshal(b, &req)
	body := string(b)
	switch {
	case a.noImages && strings.Contains(body, `"type":"image"`):
		errorStatus(400, "invalid_request_error", "messages.0.content.0.image: this model does not support images")(w, r, n)
		return
	case req.Thinking != nil && strings.Contains(body, `"tool_result"`) && !strings.Contains(body, `"signature":"`+checkSignature+`"`):
		errorStatus(400, "invalid_request_error", "messages.1.content.0: Invalid `signature` in `thinking` block")(w, r, n)
		return
	}
	switch a.quota {
	case "unified":
		w.Header().Set("Anthropic-Ratelimit-Unified-Status", "allowed")
		w.Header().Set("Anthropic-Ratelimit-Unified-5h-Utilization", "0.12")
		w.Header().Set("Anthropic-Ratelimit-Unified-Reset", "1767225600")
	case "api":
		w.Header().Set("Anthropic-Ratelimit-Requests-Remaining", "49")
		w.Header().Set("Anthropic-Ratelimit-Input-Tokens-Remaining", "39000")
		w.Header().Set("Anthropic-Ratelimit-Output-Tokens-Remaining", "8000")
	}
	var events []any
	start := map[string]any{"type": "message_start", "message": map[string]any{"id": "msg_check", "type": "message", "role": "assistant",
		"model": "claude-test", "content": []any{}, "stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": 30, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}
	events = append(events, start)
	stop := "end_turn"
	switch {
	case req.Thinking != nil && !strings.Contains(body, `"tool_result"`):
		events = append(events, blockStart(0, map[string]any{"type": "thinking", "thinking": "", "signature": ""}),
			delta(0, map[string]any{"type": "thinking_delta", "thinking": "The user wants the weather: call the tool."}),
			delta(0, map[string]any{"type": "signature_delta", "signature": checkSignature}),
			blockStop(0))
		events = append(events, toolUse(1)...)
		stop = "tool_use"
	case req.ToolChoice != nil:
		events = append(events, toolUse(0)...)
		stop = "tool_use"
	default:
		text := "ready"
		switch {
		case strings.Contains(body, `"tool_result"`):
			text = "It is sunny in Paris."
		case strings.Contains(body, `"type":"image"`):
			text = "Red"
		}
		events = append(events, blockStart(0, map[string]any{"type": "text", "text": ""}),
			delta(0, map[string]any{"type": "text_delta", "text": text}), blockStop(0))
	}
	events = append(events,
		map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop, "stop_sequence": nil}, "usage": map[string]any{"output_tokens": 9}},
		map[string]any{"type": "message_stop"})
	var raw []string
	for _, ev := range events {
		data, _ := json.Marshal(ev)
		raw = append(raw, fmt.Sprintf("event: %s\ndata: %s\n\n", ev.(map[string]any)["type"], data))
	}
	writeSSE(w, raw)
}

func blockStart(i int, block map[string]any) map[string]any {
	return map[string]any{"type": "content_block_start", "index": i, "content_block": block}
}

func delta(i int, d map[string]any) map[string]any {
	return map[string]any{"type": "content_block_delta", "index": i, "delta": d}
}

func blockStop(i int) map[string]any { return map[string]any{"type": "content_block_stop", "index": i} }

func toolUse(i int) []any {
	return []any{
		blockStart(i, map[string]any{"type": "tool_use", "id": fmt.Sprintf("toolu_check%d", i), "name": "get_weather", "input": map[string]any{}}),
		delta(i, map[string]any{"type": "input_json_delta", "partial_json": `{"city": `}),
		delta(i, map[string]any{"type": "input_json_delta", "partial_json": `"Paris"}`}),
		blockStop(i),
	}
}

// openAIEmptyArguments is an OpenAI-compatible provider whose tool calls
// come with empty arguments, and which sends no reasoning.
func openAIEmptyArguments(w http.ResponseWriter, r *http.Request, n int) {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	body := string(b)
	if strings.Contains(body, `"tool_choice":{"type":"function"`) {
		openAIChunks(w,
			chunk(`{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}`, ""),
			chunk(`{}`, "tool_calls"), usageChunk)
		return
	}
	text := "ready"
	switch {
	case strings.Contains(body, `"role":"tool"`):
		text = "Sunny."
	case strings.Contains(body, `"image_url"`):
		text = "Red"
	}
	openAIText(text)(w, r, n)
}

// checkConfig writes a Caddyfile whose balancer holds the given block. The
// balancer is named after the test unless the block names it.
func checkConfig(t *testing.T, block string) string {
	t.Helper()
	if !strings.Contains(block, "name ") {
		block = "name check_" + nameSanitizer.ReplaceAllString(t.Name(), "_") + "\n" + block
	}
	cfg := fmt.Sprintf(`{
	storage file_system %s
}

http://localhost:9 {
	claude_balancer {
%s
	}
}
`, dataDir, indent(block, "\t\t"))
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// runCheck runs the command in process and returns its status and output.
func runCheck(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	status := claudebalancer.Check(context.Background(), args, &stdout, &stderr)
	return status, stdout.String(), stderr.String()
}

// checkJSON runs the command with --json and returns its status and reports
// by provider.
func checkJSON(t *testing.T, args ...string) (int, map[string]conformance.Report) {
	t.Helper()
	status, out, errOut := runCheck(t, append(args, "--json")...)
	var reports []conformance.Report
	if err := json.Unmarshal([]byte(out), &reports); err != nil {
		t.Fatalf("status %d, output is not JSON: %v\n%s\n%s", status, err, out, errOut)
	}
	m := map[string]conformance.Report{}
	for _, r := range reports {
		m[r.Provider] = r
	}
	return status, m
}

// verdicts maps each probe of a report to its verdict.
func verdicts(r conformance.Report) map[string]conformance.Result {
	m := map[string]conformance.Result{}
	for _, p := range r.Probes {
		m[p.Probe] = p
	}
	return m
}

func wantVerdict(t *testing.T, r conformance.Report, probe string, want conformance.Verdict, detail string) {
	t.Helper()
	got, ok := verdicts(r)[probe]
	if !ok {
		t.Fatalf("%s: no %s probe in %+v", r.Provider, probe, r.Probes)
	}
	if got.Verdict != want || !strings.Contains(got.Detail+" "+got.Error, detail) {
		t.Errorf("%s %s: %s %q %q, want %s with %q", r.Provider, probe, got.Verdict, got.Detail, got.Error, want, detail)
	}
}

func TestCheckProviders(t *testing.T) {
	full := newMock(t, anthropicProvider{quota: "api"}.serve)
	nocount := newMock(t, anthropicProvider{noCount: true}.serve)
	oai := newMock(t, openAIEmptyArguments)
	file := checkConfig(t, fmt.Sprintf(`
		name default
		provider anthropic {
			base_url %s
			api_key sk-full
		}
		provider relay {
			base_url %s
			auth_token tok-relay
		}
		provider openrouter {
			type openai
			base_url %s
			api_key sk-compat
		}
		route * {
			to anthropic
			to relay
			to openrouter anthropic/claude-haiku-4.5
		}`, full.URL, nocount.URL, oai.URL))

	status, reports := checkJSON(t, "--config", file)
	if status != 0 || len(reports) != 3 {
		t.Fatalf("status %d, %d reports: %+v", status, len(reports), reports)
	}

	r := reports["anthropic"]
	if !r.Passed || r.Type != "anthropic" || r.Auth != "api_key" || r.Model != "claude-haiku-4-5" {
		t.Errorf("anthropic: %+v", r)
	}
	for probe, detail := range map[string]string{
		conformance.ProbeText:         `"ready" (end_turn)`,
		conformance.ProbeToolCall:     `get_weather {"city":"Paris"} in 2 input_json_delta pieces`,
		conformance.ProbeToolResult:   "sunny in Paris",
		conformance.ProbeThinking:     "signed",
		conformance.ProbeSignature:    "signature accepted",
		conformance.ProbeImage:        `"Red"`,
		conformance.ProbeCountTokens:  "42 input tokens",
		conformance.ProbePromptCache:  "cache_creation_input_tokens=0 cache_read_input_tokens=0",
		conformance.ProbeQuotaHeaders: "API limits: input-tokens-remaining=39000 output-tokens-remaining=8000 requests-remaining=49",
	} {
		wantVerdict(t, r, probe, conformance.Pass, detail)
	}
	// The signature went back as the provider made it, with a result for
	// the tool call the thinking turn held.
	var sentBack bool
	for _, rec := range full.requests() {
		b := string(rec.Body)
		if strings.Contains(b, `"signature":"`+checkSignature+`"`) && strings.Contains(b, `"tool_use_id":"toolu_check1"`) {
			sentBack = true
		}
		if rec.Header.Get("X-Api-Key") != "sk-full" || rec.Header.Get("Anthropic-Version") != "2023-06-01" {
			t.Errorf("anthropic got headers %v", rec.Header)
		}
	}
	if !sentBack {
		t.Error("the thinking block was never sent back to anthropic")
	}

	r = reports["relay"]
	if !r.Passed {
		t.Errorf("relay did not pass: %v", r.Failed())
	}
	wantVerdict(t, r, conformance.ProbeCountTokens, conformance.OptionalFail, "HTTP 404")
	wantVerdict(t, r, conformance.ProbeQuotaHeaders, conformance.OptionalFail, "no anthropic-ratelimit-* headers")
	wantVerdict(t, r, conformance.ProbeThinking, conformance.Pass, "signed")

	r = reports["openrouter"]
	if !r.Passed || r.Type != "openai" || r.Model != "anthropic/claude-haiku-4.5" {
		t.Errorf("openrouter: %+v", r)
	}
	wantVerdict(t, r, conformance.ProbeText, conformance.Pass, `"ready"`)
	wantVerdict(t, r, conformance.ProbeToolCall, conformance.Pass, "get_weather {}: the provider sent empty arguments")
	wantVerdict(t, r, conformance.ProbeToolResult, conformance.Pass, "Sunny")
	wantVerdict(t, r, conformance.ProbeThinking, conformance.OptionalFail, "reasoning option is off")
	wantVerdict(t, r, conformance.ProbeSignature, conformance.Skipped, "no thinking block")
	wantVerdict(t, r, conformance.ProbeImage, conformance.Pass, `"Red"`)
	wantVerdict(t, r, conformance.ProbeCountTokens, conformance.Skipped, "counted locally")
	wantVerdict(t, r, conformance.ProbeQuotaHeaders, conformance.Skipped, "OpenAI-compatible")
	for _, rec := range oai.requests() {
		if rec.Path != "/chat/completions" || rec.Header.Get("Authorization") != "Bearer sk-compat" ||
			!strings.Contains(string(rec.Body), `"model":"anthropic/claude-haiku-4.5"`) {
			t.Errorf("openrouter got %s %v %s", rec.Path, rec.Header, rec.Body)
		}
	}

	// The same verdicts as a table.
	status, out, _ := runCheck(t, "--config", file)
	if status != 0 {
		t.Fatalf("text run: status %d\n%s", status, out)
	}
	for _, want := range []string{
		"provider anthropic (balancer default, type anthropic, auth api_key, model claude-haiku-4-5)",
		"  PROBE                RESULT         STATUS     TIME  DETAIL",
		"  count_tokens         optional-fail  404",
		"  quota_headers        skipped        -             -  OpenAI-compatible providers send no Anthropic quota headers",
		"  => pass (2 optional probes failed)",
		"3 providers checked: every required probe passed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
	t.Logf("\n%s", out)
}

func TestCheckOpenAIReasoning(t *testing.T) {
	// A provider that reasons when asked to, and wants its reasoning back.
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		body := string(b)
		switch {
		case strings.Contains(body, `"role":"tool"`) && strings.Contains(body, `"reasoning_effort"`) &&
			!strings.Contains(body, `"reasoning_content":"Call the tool."`):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			io.WriteString(w, `{"error":{"message":"reasoning_content of the last assistant turn is missing","type":"invalid_request_error"}}`)
		case strings.Contains(body, `"reasoning_effort"`) && !strings.Contains(body, `"role":"tool"`):
			openAIChunks(w,
				chunk(`{"role":"assistant","reasoning_content":"Call the tool."}`, ""),
				chunk(`{"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}`, ""),
				chunk(`{}`, "tool_calls"), usageChunk)
		default:
			openAIEmptyArguments(w, r, n)
		}
	})
	block := fmt.Sprintf(`
		provider deep {
			type openai
			base_url %s
			api_key k
			reasoning effort
			thinking_history reasoning_content
		}`, up.URL)
	status, reports := checkJSON(t, "--config", checkConfig(t, block))
	if status != 0 {
		t.Fatalf("status %d: %+v", status, reports)
	}
	wantVerdict(t, reports["deep"], conformance.ProbeThinking, conformance.Pass, "signed by the balancer")
	wantVerdict(t, reports["deep"], conformance.ProbeSignature, conformance.Pass, "thinking block sent back and accepted")

	// Dropping the reasoning from the history fails where Claude Code's
	// next turn would.
	status, reports = checkJSON(t, "--config", checkConfig(t, strings.Replace(block, "thinking_history reasoning_content", "thinking_history drop", 1)))
	if status != 1 {
		t.Fatalf("status %d: %+v", status, reports)
	}
	wantVerdict(t, reports["deep"], conformance.ProbeSignature, conformance.Fail, "reasoning_content of the last assistant turn is missing")
}

func TestCheckFailsOnARequiredProbe(t *testing.T) {
	up := newMock(t, anthropicProvider{noImages: true}.serve)
	fine := newMock(t, anthropicProvider{quota: "unified"}.serve)
	file := checkConfig(t, fmt.Sprintf(`
		provider noimages {
			base_url %s
			api_key k
		}
		provider fine {
			base_url %s
			api_key k
		}`, up.URL, fine.URL))
	status, reports := checkJSON(t, "--config", file)
	if status != 1 {
		t.Fatalf("status %d, want 1", status)
	}
	r := reports["noimages"]
	if r.Passed || strings.Join(r.Failed(), ",") != conformance.ProbeImage {
		t.Errorf("noimages: passed %v, failed %v", r.Passed, r.Failed())
	}
	img := verdicts(r)[conformance.ProbeImage]
	if img.Status != 400 || !strings.Contains(img.Error, "this model does not support images") || !img.Required {
		t.Errorf("image: %+v", img)
	}
	if !reports["fine"].Passed {
		t.Errorf("fine: %v", reports["fine"].Failed())
	}
	wantVerdict(t, reports["fine"], conformance.ProbeQuotaHeaders, conformance.Pass, "unified: 5h-utilization=0.12 reset=1767225600 status=allowed")

	// --provider checks the named providers only.
	status, reports = checkJSON(t, "--config", file, "--provider", "fine")
	if status != 0 || len(reports) != 1 || !reports["fine"].Passed {
		t.Fatalf("--provider fine: status %d, %+v", status, reports)
	}
	status, out, errOut := runCheck(t, "--config", file)
	t.Logf("\n%s", out)
	if status != 1 || !strings.Contains(out, "  image                FAIL           400") ||
		!strings.Contains(out, "=> FAIL: image") || !strings.Contains(errOut, "required probes failed: noimages (image)") {
		t.Errorf("status %d\n%s\n%s", status, out, errOut)
	}
}

func TestCheckPassthroughUsesTheUsersKey(t *testing.T) {
	up := newMock(t, anthropicProvider{}.serve)
	other := newMock(t, anthropicProvider{}.serve)
	file := checkConfig(t, fmt.Sprintf(`
		provider mine {
			base_url %s
			passthrough_auth
		}
		provider off {
			base_url %s
			api_key k
			disabled
		}`, up.URL, other.URL))
	t.Setenv("ANTHROPIC_API_KEY", "")
	t.Setenv("ANTHROPIC_AUTH_TOKEN", "")
	status, reports := checkJSON(t, "--config", file)
	if status != 0 || up.count()+other.count() != 0 {
		t.Fatalf("status %d, %d upstream requests", status, up.count()+other.count())
	}
	wantVerdict(t, reports["mine"], conformance.ProbeText, conformance.Skipped, "set ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN")
	wantVerdict(t, reports["off"], conformance.ProbeImage, conformance.Skipped, "disabled in the config")

	t.Setenv("ANTHROPIC_API_KEY", "sk-user")
	status, reports = checkJSON(t, "--config", file, "--provider", "mine,off")
	if status != 0 || !reports["mine"].Passed || !reports["off"].Passed {
		t.Fatalf("status %d: %+v", status, reports)
	}
	wantVerdict(t, reports["off"], conformance.ProbeText, conformance.Pass, "ready")
	for _, rec := range up.requests() {
		if got := rec.Header.Get("X-Api-Key"); got != "sk-user" {
			t.Errorf("passthrough sent x-api-key %q", got)
		}
	}
}

func TestCheckSelectsBalancersAndModels(t *testing.T) {
	a := newMock(t, anthropicProvider{}.serve)
	b := newMock(t, anthropicProvider{}.serve)
	cfg := fmt.Sprintf(`{
	storage file_system %s
}

http://localhost:9 {
	claude_balancer {
		name check_one
		provider a {
			base_url %s
			api_key k
		}
		route *sonnet* {
			to a
		}
	}
}

http://localhost:10 {
	reverse_proxy 127.0.0.1:1
}

http://localhost:11 {
	route {
		claude_balancer {
			name check_two
			provider b {
				base_url %s
				api_key k
			}
		}
	}
}
`, dataDir, a.URL, b.URL)
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	status, reports := checkJSON(t, "--config", file, "--provider", "a,b")
	if status != 0 || len(reports) != 2 || reports["a"].Balancer != "check_one" || reports["b"].Balancer != "check_two" {
		t.Fatalf("status %d: %+v", status, reports)
	}
	// a serves the sonnet models only; b serves every model.
	if reports["a"].Model != "claude-sonnet-4-5" || reports["b"].Model != "claude-haiku-4-5" {
		t.Errorf("models: a %s, b %s", reports["a"].Model, reports["b"].Model)
	}
	status, reports = checkJSON(t, "--config", file, "--balancer", "check_two", "--model", "claude-opus-4-5")
	if status != 0 || len(reports) != 1 || reports["b"].Model != "claude-opus-4-5" {
		t.Fatalf("--balancer check_two: status %d, %+v", status, reports)
	}
	if !strings.Contains(string(b.last().Body), `"model":"claude-opus-4-5"`) {
		t.Errorf("b was asked %s", b.last().Body)
	}
}

func TestCheckUsageErrors(t *testing.T) {
	up := newMock(t, anthropicProvider{}.serve)
	file := checkConfig(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL))
	noBalancer := filepath.Join(t.TempDir(), "Caddyfile")
	os.WriteFile(noBalancer, []byte("http://localhost:9 {\n\trespond ok\n}\n"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", file, "--provider", "nope"}, `no provider named "nope" (providers: a)`},
		{[]string{"--config", file, "--balancer", "nope"}, `no balancer named "nope"`},
		{[]string{"--config", file, "--bogus"}, "unknown flag: --bogus"},
		{[]string{"--config", file, "extra"}, "unexpected arguments: extra"},
		{[]string{"--config", file, "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"--config", filepath.Join(t.TempDir(), "missing")}, "reading config from file"},
		{[]string{"--config", noBalancer}, "the config has no claude_balancer handler"},
	} {
		status, _, errOut := runCheck(t, c.args...)
		if status != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: status %d, stderr %q, want 2 and %q", c.args, status, errOut, c.want)
		}
	}
	if up.count() != 0 {
		t.Errorf("usage errors sent %d requests", up.count())
	}
}

// TestCheckBinaryHelp builds the binary and asks for the command's help.
func TestCheckBinaryHelp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "caddy")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	build := exec.Command("go", "build", "-o", bin, "./cmd/caddy")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "claude-balancer", "check", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("check --help: %v\n%s", err, out)
	}
	for _, want := range []string{"caddy claude-balancer check [flags]", "--provider strings", "--json", "exit status is 0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}
