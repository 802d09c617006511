package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

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

// caddyRunning is set once Caddy runs in this process, so that TestMain
// stops only what was started.
var caddyRunning bool

func TestMain(m *testing.M) {
	if os.Getenv(peerEnv) == "1" {
		// The helper process of TestCompareProxies and TestCapacity: the
		// clients and the mock upstreams, driven over stdin and stdout.
		os.Exit(peerMain())
	}
	// Keep Caddy's autosave and data out of the user's directories.
	dir, err := os.MkdirTemp("", "claude-balancer-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_CONFIG_HOME", dir+"/config")
	os.Setenv("XDG_DATA_HOME", dir+"/data")
	code := m.Run()
	if caddyRunning {
		if err := caddy.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping caddy:", err)
		}
	}
	for _, m := range env.mocks {
		m.Close()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// environment is an in-process Caddy with one site per target, each in
// front of its own mock upstream, and a client for them. The always-on
// tests and the Go benchmarks use it; TestCompareProxies and TestCapacity
// put the clients and mocks in a helper process instead.
type environment struct {
	*driver
	mocks map[string]*mockServer
	// base maps a target to its site's base URL.
	base map[string]string
	// config is the adapted config, to restore after a test loaded another.
	config []byte
}

var (
	env     environment
	envOnce sync.Once
	envErr  error
)

// setup starts the mocks and Caddy once per test binary.
func setup(tb testing.TB) *environment {
	tb.Helper()
	envOnce.Do(func() { envErr = env.start() })
	if envErr != nil {
		tb.Fatal(envErr)
	}
	return &env
}

func (e *environment) start() error {
	d, err := newDriver()
	if err != nil {
		return err
	}
	e.driver = d
	e.mocks = map[string]*mockServer{}
	upstreams := map[string]string{}
	for _, target := range compareTargets {
		m := startMock()
		e.mocks[target] = m
		upstreams[target] = m.hostPort()
	}
	e.base, e.config, err = loadSites(compareTargets, upstreams, "")
	return err
}

// restore puts back the in-process environment's config after a test loaded
// its own, or stops Caddy when the environment never started.
func restoreEnvironment() error {
	if env.config == nil {
		caddyRunning = false
		return caddy.Stop()
	}
	return caddy.Load(env.config, true)
}

// siteTemplates hold each target's handler, in front of the upstream %[1]s,
// with %[2]s added inside the provider block.
var siteTemplates = map[string]string{
	targetBalancer: `claude_balancer {
		name bench
		provider m {
			base_url http://%[1]s
			api_key k
			%[2]s
		}
	}`,
	targetBalancerNoDedup: `claude_balancer {
		name bench_nodedup
		dedup off
		provider m {
			base_url http://%[1]s
			api_key k
			%[2]s
		}
	}`,
	targetReverseProxy: `reverse_proxy %[1]s`,
	targetBalancerOpenAI: `claude_balancer {
		name bench_openai
		provider o {
			type openai
			base_url http://%[1]s/v1
			api_key k
			%[2]s
		}
	}`,
}

// globalOptions keep Caddy off the network and the disk. The default log
// discards its output but keeps its level, so the balancer still encodes its
// per-request line (a real cost) without the benchmark measuring a terminal.
// No site has access logs.
const globalOptions = `{
	admin off
	persist_config off
	auto_https off
	skip_install_trust
	log {
		output discard
		level INFO
	}
}
`

// loadSites loads a config into this process's Caddy with one loopback site
// per target, each in front of its upstream (host:port), and returns each
// site's base URL and the adapted config. providerExtra goes inside every
// balancer provider block.
// loadSitesForTest loads a site per target, as loadSites does, for the rest
// of the test: the benchmark config comes back when it ends.
func loadSitesForTest(t *testing.T, ts []string, upstreams map[string]string, providerExtra string) map[string]string {
	t.Helper()
	sites, _, err := loadSites(ts, upstreams, providerExtra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := restoreEnvironment(); err != nil {
			t.Errorf("restoring the benchmark config: %v", err)
		}
	})
	return sites
}

func loadSites(ts []string, upstreams map[string]string, providerExtra string) (map[string]string, []byte, error) {
	ports, err := freePorts(len(ts))
	if err != nil {
		return nil, nil, err
	}
	var cfg strings.Builder
	cfg.WriteString(globalOptions)
	base := map[string]string{}
	for i, target := range ts {
		tmpl, ok := siteTemplates[target]
		if !ok {
			return nil, nil, fmt.Errorf("no site for target %q", target)
		}
		fmt.Fprintf(&cfg, "\nhttp://:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", ports[i], fmt.Sprintf(tmpl, upstreams[target], providerExtra))
		base[target] = fmt.Sprintf("http://127.0.0.1:%d", ports[i])
	}
	formatted := caddyfile.Format([]byte(cfg.String()))
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(formatted, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, nil, fmt.Errorf("adapting the Caddyfile: %w", err)
	}
	if len(warnings) > 0 {
		return nil, nil, fmt.Errorf("adapting the Caddyfile: %v", warnings)
	}
	if err := caddy.Load(adapted, true); err != nil {
		return nil, nil, fmt.Errorf("loading the config: %w", err)
	}
	caddyRunning = true
	return base, adapted, nil
}

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

// compareBodySize is the size the comparison's request body is cut down to:
// Claude Code's request with its later tool definitions dropped.
const compareBodySize = 30 << 10

// nonceMarker is written into the last user message's text; each request
// overwrites its digits with its own number.
const nonceMarker = " [bench request 0000000000000000]"

// fixture is Claude Code's request as the benchmarks send it.
type fixture struct {
	// path is the request path and query Claude Code uses.
	path string
	// header is Claude Code's header set with one client key, the same for
	// every request.
	header http.Header
	// body maps a mode to the ~30 KB request body that every request makes
	// distinct.
	body map[string]*distinctBody
	// full is the whole request body (about 49 KB) with "stream":true,
	// compacted as Claude Code sends it.
	full []byte
	// dropped names the tools left out of body.
	dropped []string
}

// benchClientKey is the client key of every request: one team's Claude Code
// users behind one key. Requests differ in their bodies only.
const benchClientKey = "sk-ant-bench-team-key"

// loadFixture reads the Claude Code request: its path, its headers, and its
// body compacted as Claude Code sends it.
func loadFixture() (*fixture, error) {
	raw, err := os.ReadFile(fixturePath)
	if err != nil {
		return nil, fmt.Errorf("reading the fixture: %w", err)
	}
	var fx struct {
		Path    string            `json:"path"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		return nil, fmt.Errorf("decoding the fixture: %w", err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, fx.Body); err != nil {
		return nil, fmt.Errorf("compacting the fixture body: %w", err)
	}
	f := &fixture{path: fx.Path, header: make(http.Header, len(fx.Headers)+1), full: compact.Bytes(), body: map[string]*distinctBody{}}
	if n := bytes.Count(f.full, []byte(`"stream":true`)); n != 1 {
		return nil, fmt.Errorf("fixture body has %d \"stream\":true fields, want 1", n)
	}
	for k, v := range fx.Headers {
		f.header.Set(k, v)
	}
	f.header.Set("X-Api-Key", benchClientKey)
	for _, mode := range modes {
		db, dropped, err := buildDistinctBody(f.full, mode == modeStream, compareBodySize)
		if err != nil {
			return nil, err
		}
		f.body[mode], f.dropped = db, dropped
	}
	return f, nil
}

// distinctBody is a request body with a fixed-width decimal nonce inside the
// text of its last user message: next copies it and writes a new number, so
// that no two requests have the same bytes and de-duplication can never
// merge them.
type distinctBody struct {
	template []byte
	// at is the offset of the nonce's digits.
	at, width int
}

// nonceSeq numbers the requests of this process. It starts at a multiple of
// the process id, so that the helper process and the test process never
// send the same body either.
var nonceSeq atomic.Uint64

func init() { nonceSeq.Store(uint64(os.Getpid()%10_000_000) * 1_000_000_000) }

// next returns a fresh copy of the body with the next nonce.
func (d *distinctBody) next() []byte {
	b := slices.Clone(d.template)
	n := nonceSeq.Add(1)
	for i := d.at + d.width - 1; i >= d.at; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return b
}

func (d *distinctBody) size() int { return len(d.template) }

// buildDistinctBody cuts Claude Code's compacted body down to at most limit
// bytes by dropping tool definitions from the end of the list, sets
// "stream", and appends nonceMarker to the text of the last user message.
// Every other byte stays as Claude Code wrote it, key order included.
func buildDistinctBody(full []byte, stream bool, limit int) (*distinctBody, []string, error) {
	var body object
	if err := json.Unmarshal(full, &body); err != nil {
		return nil, nil, fmt.Errorf("decoding the fixture body: %w", err)
	}
	var tools []json.RawMessage
	if err := json.Unmarshal(body.get("tools"), &tools); err != nil {
		return nil, nil, fmt.Errorf("decoding the fixture's tools: %w", err)
	}
	if err := body.set("stream", []byte(strconv.FormatBool(stream))); err != nil {
		return nil, nil, err
	}
	var messages []object
	if err := json.Unmarshal(body.get("messages"), &messages); err != nil {
		return nil, nil, fmt.Errorf("decoding the fixture's messages: %w", err)
	}
	last := -1
	for i, m := range messages {
		if string(m.get("role")) == `"user"` {
			last = i
		}
	}
	if last < 0 {
		return nil, nil, errors.New("the fixture has no user message")
	}
	content, err := withMarker(messages[last].get("content"))
	if err != nil {
		return nil, nil, err
	}
	if err := messages[last].set("content", content); err != nil {
		return nil, nil, err
	}
	if err := body.set("messages", marshalList(messages)); err != nil {
		return nil, nil, err
	}
	var dropped []string
	for {
		if err := body.set("tools", marshalList(tools)); err != nil {
			return nil, nil, err
		}
		out := body.marshal()
		if len(out) <= limit || len(tools) == 0 {
			at := bytes.Index(out, []byte(nonceMarker))
			if at < 0 || bytes.Count(out, []byte(nonceMarker)) != 1 {
				return nil, nil, errors.New("the nonce marker is not in the body exactly once")
			}
			width := strings.Count(nonceMarker, "0")
			at += strings.Index(nonceMarker, "0")
			return &distinctBody{template: out, at: at, width: width}, dropped, nil
		}
		var tool struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(tools[len(tools)-1], &tool)
		dropped = append(dropped, tool.Name)
		tools = tools[:len(tools)-1]
	}
}

// withMarker appends nonceMarker to a message's content: to the string, or
// to the last text block.
func withMarker(content json.RawMessage) (json.RawMessage, error) {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return marshalString(s + nonceMarker), nil
	}
	var blocks []object
	if err := json.Unmarshal(content, &blocks); err != nil {
		return nil, fmt.Errorf("decoding the last user message's content: %w", err)
	}
	for i := len(blocks) - 1; i >= 0; i-- {
		if string(blocks[i].get("type")) != `"text"` {
			continue
		}
		if err := json.Unmarshal(blocks[i].get("text"), &s); err != nil {
			return nil, fmt.Errorf("decoding a text block: %w", err)
		}
		if err := blocks[i].set("text", marshalString(s+nonceMarker)); err != nil {
			return nil, err
		}
		return marshalList(blocks), nil
	}
	return nil, errors.New("the last user message has no text block")
}

// object is a JSON object that keeps its keys in order and its values as
// they were written.
type object []member

type member struct {
	key   string
	value json.RawMessage
}

func (o *object) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("not a JSON object: %.40s", b)
	}
	*o = (*o)[:0]
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		*o = append(*o, member{key: t.(string), value: v})
	}
	return nil
}

func (o object) get(key string) json.RawMessage {
	for _, m := range o {
		if m.key == key {
			return m.value
		}
	}
	return nil
}

func (o object) set(key string, value json.RawMessage) error {
	for i := range o {
		if o[i].key == key {
			o[i].value = value
			return nil
		}
	}
	return fmt.Errorf("no %q key in the fixture", key)
}

// marshal writes the object compactly, its values byte for byte.
func (o object) marshal() []byte {
	b := []byte{'{'}
	for i, m := range o {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, marshalString(m.key)...)
		b = append(b, ':')
		b = append(b, m.value...)
	}
	return append(b, '}')
}

func marshalList[T object | json.RawMessage](list []T) json.RawMessage {
	b := []byte{'['}
	for i, v := range list {
		if i > 0 {
			b = append(b, ',')
		}
		switch v := any(v).(type) {
		case object:
			b = append(b, v.marshal()...)
		case json.RawMessage:
			b = append(b, v...)
		}
	}
	return append(b, ']')
}

// marshalString encodes s as JSON without HTML escapes, as Claude Code does.
func marshalString(s string) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// mockServer is one target's mock upstream. It counts the requests it
// answers and the TCP connections it accepts.
type mockServer struct {
	*httptest.Server
	served atomic.Int64
	conns  atomic.Int64
}

func startMock() *mockServer {
	m := &mockServer{}
	m.Server = httptest.NewUnstartedServer(newMock(&m.served))
	m.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			m.conns.Add(1)
		}
	}
	m.Start()
	return m
}

func (m *mockServer) hostPort() string { return strings.TrimPrefix(m.URL, "http://") }

// newMock answers POST /v1/messages at once, as JSON or as an SSE stream
// flushed event by event, depending on the request's "stream" field, and
// POST /v1/chat/completions the same way as Chat Completions. It counts the
// requests it answers in served.
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
// search over a whole ~30 KB body would cost the mock tens of µs per request
// and handicap whichever target's upstream body puts the key first. The key
// is written once per body: inside a string it would read \"stream\":.
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

// mockStream is a streamed message as the API sends it: message_start,
// content_block_start, ping, 50 text deltas, content_block_stop,
// message_delta and message_stop, one element per event.
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

// machineCPU reads the whole machine's busy and total CPU time from
// /proc/stat (Linux); ok is false elsewhere.
func machineCPU() (busy, total time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, false
	}
	// user nice system idle iowait irq softirq steal, in clock ticks (USER_HZ, 100 on Linux).
	var ticks [8]int64
	for i := range ticks {
		if i+1 < len(f) {
			ticks[i], _ = strconv.ParseInt(f[i+1], 10, 64)
		}
	}
	const tick = 10 * time.Millisecond
	busyTicks := ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
	return time.Duration(busyTicks) * tick, time.Duration(busyTicks+ticks[3]+ticks[4]) * tick, true
}
