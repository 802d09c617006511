package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/claude-balancer/caddy-claude-balancer"
)

// fixturePath is a real Claude Code request: its headers and a ~49 KB body.
const fixturePath = "../testdata/claude-code-2.1.332-request.json"

// Targets, in the order every comparison rotates them. balancer runs the
// default configuration (de-duplication on); balancer_nodedup turns
// de-duplication off, leaving the bare passthrough path.
const (
	targetBalancer        = "balancer"
	targetBalancerNoDedup = "balancer_nodedup"
	targetReverseProxy    = "reverse_proxy"
	// targetBalancerOpenAI is the balancer in front of an OpenAI-compatible
	// provider: the same answer as Chat Completions, converted both ways.
	targetBalancerOpenAI = "balancer_openai"
)

// Modes: the value of the request's "stream" field.
const (
	modeJSON   = "json"
	modeStream = "stream"
)

var (
	targets = []string{targetBalancer, targetBalancerNoDedup, targetReverseProxy}
	// compareTargets adds the conversion path to the side-by-side runs.
	compareTargets = []string{targetBalancer, targetBalancerNoDedup, targetReverseProxy, targetBalancerOpenAI}
	modes          = []string{modeJSON, modeStream}
	concurrences   = []int{1, 8, 32}
)

// started is set once Caddy runs, so TestMain stops only what was started.
var started bool

func TestMain(m *testing.M) {
	// Keep Caddy's autosave and data out of the user's directories.
	dir, err := os.MkdirTemp("", "claude-balancer-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_CONFIG_HOME", dir+"/config")
	os.Setenv("XDG_DATA_HOME", dir+"/data")
	code := m.Run()
	if started {
		if err := caddy.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping caddy:", err)
		}
	}
	if env.mock != nil {
		env.mock.Close()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// environment is the running Caddy, the mock upstream and the requests.
type environment struct {
	mock *httptest.Server
	// served counts the requests the mock answered.
	served *atomic.Int64
	// base maps a target to its site's base URL.
	base map[string]string
	// path is the request path and query Claude Code uses.
	path string
	// header is the request header set, shared read-only by every request.
	header http.Header
	// body maps a mode to the request body.
	body map[string][]byte
	// answer maps a mode to the exact bytes the mock answers with.
	answer map[string][]byte
	client *http.Client
}

var (
	env     environment
	envOnce sync.Once
	envErr  error
)

// setup starts the mock and Caddy once per test binary.
func setup(tb testing.TB) *environment {
	tb.Helper()
	envOnce.Do(func() { envErr = env.start() })
	if envErr != nil {
		tb.Fatal(envErr)
	}
	return &env
}

func (e *environment) start() error {
	if err := e.loadFixture(); err != nil {
		return err
	}
	e.answer = map[string][]byte{modeJSON: mockJSON(), modeStream: bytes.Join(mockStream(), nil)}
	e.served = new(atomic.Int64)
	e.mock = httptest.NewServer(newMock(e.served))
	upstream := strings.TrimPrefix(e.mock.URL, "http://")

	ports, err := freePorts(len(compareTargets))
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(caddyfileTemplate, ports[0], upstream, ports[1], upstream, ports[2], upstream, ports[3], upstream)
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return fmt.Errorf("adapting the Caddyfile: %w", err)
	}
	if len(warnings) > 0 {
		return fmt.Errorf("adapting the Caddyfile: %v", warnings)
	}
	if err := caddy.Load(adapted, true); err != nil {
		return fmt.Errorf("loading the config: %w", err)
	}
	started = true
	e.base = map[string]string{
		targetBalancer:        fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		targetBalancerNoDedup: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		targetReverseProxy:    fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		targetBalancerOpenAI:  fmt.Sprintf("http://127.0.0.1:%d", ports[3]),
	}
	e.client = &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 128,
		DisableCompression:  true,
	}}
	return nil
}

// caddyfileTemplate has one site per target, on loopback ports, in front of
// one upstream. The default log discards its output but keeps its level, so the
// balancer still encodes its per-request line (a real cost) without the
// benchmark measuring a terminal. No access logs are enabled on either site.
const caddyfileTemplate = `{
	admin off
	persist_config off
	auto_https off
	skip_install_trust
	log {
		output discard
		level INFO
	}
}

http://:%d {
	bind 127.0.0.1
	claude_balancer {
		name bench
		provider m {
			base_url http://%s
			api_key k
		}
	}
}

http://:%d {
	bind 127.0.0.1
	claude_balancer {
		name bench_nodedup
		dedup off
		provider m {
			base_url http://%s
			api_key k
		}
	}
}

http://:%d {
	bind 127.0.0.1
	reverse_proxy %s
}

http://:%d {
	bind 127.0.0.1
	claude_balancer {
		name bench_openai
		provider o {
			type openai
			base_url http://%s/v1
			api_key k
		}
	}
}
`

// freePorts reserves n distinct loopback ports and releases them for Caddy.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// loadFixture reads the Claude Code request: its path, its headers, and its
// body compacted as Claude Code sends it, with "stream" set per mode.
func (e *environment) loadFixture() error {
	raw, err := os.ReadFile(fixturePath)
	if err != nil {
		return fmt.Errorf("reading the fixture: %w", err)
	}
	var fx struct {
		Path    string            `json:"path"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		return fmt.Errorf("decoding the fixture: %w", err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, fx.Body); err != nil {
		return fmt.Errorf("compacting the fixture body: %w", err)
	}
	streamBody := compact.Bytes()
	if n := bytes.Count(streamBody, []byte(`"stream":true`)); n != 1 {
		return fmt.Errorf("fixture body has %d \"stream\":true fields, want 1", n)
	}
	e.path = fx.Path
	e.header = make(http.Header, len(fx.Headers))
	for k, v := range fx.Headers {
		e.header.Set(k, v)
	}
	e.body = map[string][]byte{
		modeStream: streamBody,
		modeJSON:   bytes.Replace(streamBody, []byte(`"stream":true`), []byte(`"stream":false`), 1),
	}
	return nil
}

// newMock answers POST /v1/messages at once, as JSON or as an SSE stream
// flushed event by event, depending on the request's "stream" field. It
// counts the requests it answers in served.
func newMock(served *atomic.Int64) http.Handler {
	jsonAnswer := mockJSON()
	events := mockStream()
	chatJSON, chunks := mockChatJSON(), mockChatStream()
	bufs := sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 64<<10)) }}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions" {
			buf := bufs.Get().(*bytes.Buffer)
			buf.Reset()
			_, _ = io.Copy(buf, r.Body)
			stream := wantsStream(buf.Bytes())
			bufs.Put(buf)
			served.Add(1)
			if !stream {
				w.Header()["Content-Type"] = []string{"application/json"}
				_, _ = w.Write(chatJSON)
				return
			}
			w.Header()["Content-Type"] = []string{"text/event-stream"}
			w.WriteHeader(http.StatusOK)
			f := w.(http.Flusher)
			for _, c := range chunks {
				if _, err := w.Write(c); err != nil {
					return
				}
				f.Flush()
			}
			return
		}
		if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
			http.Error(w, `{"type":"error","error":{"type":"not_found_error","message":"not found"}}`, http.StatusNotFound)
			return
		}
		buf := bufs.Get().(*bytes.Buffer)
		buf.Reset()
		_, err := io.Copy(buf, r.Body)
		stream := wantsStream(buf.Bytes())
		bufs.Put(buf)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		served.Add(1)
		h := w.Header()
		for k, v := range mockHeaders {
			h[k] = v
		}
		if !stream {
			h["Content-Type"] = []string{"application/json"}
			_, _ = w.Write(jsonAnswer)
			return
		}
		h["Content-Type"] = []string{"text/event-stream; charset=utf-8"}
		h["Cache-Control"] = []string{"no-cache"}
		w.WriteHeader(http.StatusOK)
		f := w.(http.Flusher)
		for _, ev := range events {
			if _, err := w.Write(ev); err != nil {
				return
			}
			f.Flush()
		}
	})
}

// wantsStream reports whether a request body has "stream":true. Claude
// Code sends "stream" as the last key, so the tail is searched first, from
// the end; a converted Chat Completions body has it near the start, where
// bytes.Index (vectorised, unlike LastIndex) finds it at once. A backward
// search over a whole ~49 KB body would cost the mock ~70 µs per request and
// handicap whichever target's upstream body puts the key first. The key is
// written once per body: inside a string it would read \"stream\":.
func wantsStream(body []byte) bool {
	const key = `"stream":`
	tail := max(0, len(body)-256)
	i := bytes.LastIndex(body[tail:], []byte(key))
	if i >= 0 {
		i += tail
	} else {
		i = bytes.Index(body, []byte(key))
	}
	return i >= 0 && bytes.HasPrefix(body[i+len(key):], []byte("true"))
}

// mockHeaders are the response headers the Anthropic API sends that Claude
// Code reads, so every proxy copies a realistic header set.
var mockHeaders = http.Header{
	"Request-Id":                                 {"req_011CbenchMockRequestId0000"},
	"Anthropic-Organization-Id":                  {"00000000-0000-4000-8000-000000000001"},
	"Anthropic-Ratelimit-Requests-Limit":         {"4000"},
	"Anthropic-Ratelimit-Requests-Remaining":     {"3999"},
	"Anthropic-Ratelimit-Requests-Reset":         {"2026-01-01T00:00:01Z"},
	"Anthropic-Ratelimit-Input-Tokens-Limit":     {"2000000"},
	"Anthropic-Ratelimit-Input-Tokens-Remaining": {"1990000"},
	"Anthropic-Ratelimit-Input-Tokens-Reset":     {"2026-01-01T00:00:01Z"},
	"Anthropic-Ratelimit-Output-Tokens-Limit":    {"400000"},
	"Via":    {"1.1 google"},
	"Cf-Ray": {"8f0000000000abcd-FRA"},
}

const mockText = "I'll look at the failing test first. The error says the handler returns 502 when the " +
	"upstream closes the stream before message_stop, which matches the commit-point logic in attempt.go: " +
	"a truncated stream before content is a provider failure and should fail over, while after content it " +
	"must end with an error event. Let me read the test and the relay code to confirm which case this is, " +
	"then propose the smallest change that makes the behaviour explicit and keeps the stream byte-faithful."

// mockJSON is a complete non-streaming message of about 1 KB.
func mockJSON() []byte {
	text, _ := json.Marshal(mockText)
	return []byte(`{"id":"msg_01XbenchMockMessageId000000","type":"message","role":"assistant",` +
		`"model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":` + string(text) + `}],` +
		`"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,` +
		`"cache_creation_input_tokens":1204,"cache_read_input_tokens":36017,` +
		`"cache_creation":{"ephemeral_5m_input_tokens":1204,"ephemeral_1h_input_tokens":0},` +
		`"output_tokens":92,"service_tier":"standard"}}`)
}

// mockStream is a streamed message as the API sends it: message_start,
// content_block_start, ping, 50 text deltas, content_block_stop,
// message_delta and message_stop, one element per event.
// mockChatJSON is mockJSON's answer as a Chat Completion.
func mockChatJSON() []byte {
	text, _ := json.Marshal(mockText)
	return []byte(`{"id":"chatcmpl-bench","object":"chat.completion","model":"up","choices":[{"index":0,` +
		`"message":{"role":"assistant","content":` + string(text) + `},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":37224,"completion_tokens":92,"prompt_tokens_details":{"cached_tokens":36017}}}`)
}

// mockChatStream is mockStream's answer as Chat Completions chunks: the same
// 50 text deltas.
func mockChatStream() [][]byte {
	chunk := func(delta, finish string) []byte {
		return []byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"up","choices":[{"index":0,"delta":` +
			delta + `,"finish_reason":` + finish + `}]}` + "\n\n")
	}
	out := [][]byte{chunk(`{"role":"assistant","content":""}`, "null")}
	const deltas = 50
	step := (len(mockText) + deltas - 1) / deltas
	for i := 0; i < len(mockText); i += step {
		text, _ := json.Marshal(mockText[i:min(i+step, len(mockText))])
		out = append(out, chunk(`{"content":`+string(text)+`}`, "null"))
	}
	return append(out, chunk(`{}`, `"stop"`),
		[]byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":37224,"completion_tokens":92,"prompt_tokens_details":{"cached_tokens":36017}}}`+"\n\n"),
		[]byte("data: [DONE]\n\n"))
}

func mockStream() [][]byte {
	ev := func(name, data string) []byte { return []byte("event: " + name + "\ndata: " + data + "\n\n") }
	out := [][]byte{
		ev("message_start", `{"type":"message_start","message":{"id":"msg_01XbenchMockMessageId000000",`+
			`"type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],`+
			`"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,`+
			`"cache_creation_input_tokens":1204,"cache_read_input_tokens":36017,`+
			`"cache_creation":{"ephemeral_5m_input_tokens":1204,"ephemeral_1h_input_tokens":0},`+
			`"output_tokens":1,"service_tier":"standard"}}}`),
		ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`),
		ev("ping", `{"type": "ping"}`),
	}
	const deltas = 50
	step := (len(mockText) + deltas - 1) / deltas
	for i := 0; i < len(mockText); i += step {
		chunk, _ := json.Marshal(mockText[i:min(i+step, len(mockText))])
		out = append(out, ev("content_block_delta",
			`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`+string(chunk)+`}}`))
	}
	return append(out,
		ev("content_block_stop", `{"type":"content_block_stop","index":0}`),
		ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},`+
			`"usage":{"input_tokens":3,"cache_creation_input_tokens":1204,"cache_read_input_tokens":36017,"output_tokens":92}}`),
		ev("message_stop", `{"type":"message_stop"}`),
	)
}
