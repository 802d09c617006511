package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/claude-balancer/caddy-claude-balancer"
)

// ports are picked once per test binary so that this package never collides
// with another Caddy on the machine.
var adminPort, httpPort, httpsPort = freePort(), freePort(), freePort()

// dataDir holds Caddy's storage for this test binary; Caddy's default
// storage path is fixed before TestMain runs, so tests name it explicitly.
var dataDir string

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestMain(m *testing.M) {
	// Keep Caddy's autosave and data out of the user's directories.
	dir, err := os.MkdirTemp("", "claude-balancer-it-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir+"/config")
	os.Setenv("XDG_DATA_HOME", dir+"/data")
	dataDir = dir + "/storage"
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a running Caddy with one claude_balancer site.
type env struct {
	t      *testing.T
	tester *caddytest.Tester
	base   string
	name   string
	client *http.Client
}

var nameSanitizer = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// globalOptions is prepended to every test Caddyfile.
func globalOptions(extra string) string {
	return fmt.Sprintf(`{
	skip_install_trust
	admin localhost:%d
	http_port %d
	https_port %d
	persist_config off
	storage file_system %s
	%s
}
`, adminPort, httpPort, httpsPort, dataDir, extra)
}

// start loads a Caddyfile whose site runs claude_balancer with the given
// block body. The balancer gets a name unique to the test.
func start(t *testing.T, block string) *env {
	t.Helper()
	e := &env{t: t, name: nameSanitizer.ReplaceAllString(t.Name(), "_"), base: fmt.Sprintf("http://127.0.0.1:%d", httpPort)}
	e.tester = caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort, LoadRequestTimeout: 20 * time.Second})
	e.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	e.load(block, "")
	return e
}

func (e *env) caddyfile(block, global string) string {
	return globalOptions(global) + fmt.Sprintf(`
:%d {
	claude_balancer {
		name %s
%s
	}
}
`, httpPort, e.name, indent(block, "\t\t"))
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = prefix + strings.TrimSpace(l)
	}
	return strings.Join(lines, "\n")
}

// load (re)loads the config; it is a Caddy reload when a config is running.
func (e *env) load(block, global string) {
	e.t.Helper()
	e.tester.InitServer(e.caddyfile(block, global), "caddyfile")
	if e.t.Failed() {
		e.t.FailNow()
	}
	e.settle()
}

// settle waits until the new config serves requests: connections accepted
// while the previous config shuts down may be closed without an answer.
func (e *env) settle() {
	e.t.Helper()
	ok := 0
	waitFor(e.t, "the new config to serve", func() bool {
		resp, err := e.client.Get(e.base + "/health")
		if err != nil {
			ok = 0
			return false
		}
		var doc struct {
			Balancer string `json:"balancer"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if doc.Balancer == e.name {
			ok++
		} else {
			ok = 0
		}
		return ok >= 3
	})
	e.client.CloseIdleConnections()
}

// loadErr loads a config that must be rejected and returns Caddy's error.
func (e *env) loadErr(cfg string) string {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://localhost:%d/load", adminPort), strings.NewReader(cfg))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		e.t.Fatalf("config was accepted; want an error")
	}
	return string(b)
}

// post sends a Messages request and returns the response with its body read.
func (e *env) post(path string, body []byte, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.base+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("reading response: %v", err)
	}
	return resp, b
}

func (e *env) messages(body []byte, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	return e.post("/v1/messages", body, hdr...)
}

func (e *env) get(path string, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.base+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// providerState is the part of /providers the tests look at.
type providerState struct {
	Name              string  `json:"name"`
	Healthy           bool    `json:"healthy"`
	State             string  `json:"state"`
	Errors            string  `json:"errors"`
	ErrorCount        int     `json:"error_count"`
	CooldownRemaining float64 `json:"cooldown_remaining_seconds"`
	QuotaCooldown     bool    `json:"quota_cooldown"`
	LastError         string  `json:"last_error"`
	Requests          int64   `json:"requests"`
	CountTokens       struct {
		Healthy bool   `json:"healthy"`
		Errors  string `json:"errors"`
	} `json:"count_tokens"`
	Credentials *struct {
		Tracked     int `json:"tracked"`
		CoolingDown int `json:"cooling_down"`
		Rejected    int `json:"rejected_recently"`
	} `json:"credentials"`
}

func (e *env) providers() map[string]providerState {
	e.t.Helper()
	resp, b := e.get("/providers")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("/providers: %d %s", resp.StatusCode, b)
	}
	var doc struct {
		Providers []providerState `json:"providers"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		e.t.Fatalf("/providers: %v: %s", err, b)
	}
	out := map[string]providerState{}
	for _, p := range doc.Providers {
		out[p.Name] = p
	}
	return out
}

// recorded is a request a mock provider received.
type recorded struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// mock is a programmable provider.
type mock struct {
	*httptest.Server
	mu     sync.Mutex
	got    []recorded
	behave func(w http.ResponseWriter, r *http.Request, n int)
}

func newMock(t *testing.T, behave func(w http.ResponseWriter, r *http.Request, n int)) *mock {
	return newMockWith(t, behave, nil)
}

// newMockWith is newMock with a chance to set up the server before it starts.
func newMockWith(t *testing.T, behave func(w http.ResponseWriter, r *http.Request, n int), setup func(*http.Server)) *mock {
	m := &mock{behave: behave}
	m.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		m.mu.Lock()
		n := len(m.got)
		m.got = append(m.got, recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body})
		b := m.behave
		m.mu.Unlock()
		b(w, r, n)
	}))
	if setup != nil {
		setup(m.Server.Config)
	}
	m.Server.Start()
	t.Cleanup(m.Server.Close)
	return m
}

func (m *mock) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.got)
}

func (m *mock) requests() []recorded {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]recorded(nil), m.got...)
}

func (m *mock) last() recorded {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.got) == 0 {
		return recorded{}
	}
	return m.got[len(m.got)-1]
}

func (m *mock) set(behave func(w http.ResponseWriter, r *http.Request, n int)) {
	m.mu.Lock()
	m.behave = behave
	m.mu.Unlock()
}

// Behaviours.

func messageJSON(text string) string {
	return fmt.Sprintf(`{"id":"msg_01","type":"message","role":"assistant","model":"claude-test","content":[{"type":"text","text":%q}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":3}}`, text)
}

func okJSON(text string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Request-Id", "req_json")
		w.Header().Set("Anthropic-Ratelimit-Requests-Remaining", "99")
		io.WriteString(w, messageJSON(text))
	}
}

// sseEvents is a complete stream answering text.
func sseEvents(text string) []string {
	return []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
		"event: ping\ndata: {\"type\": \"ping\"}\n\n",
		fmt.Sprintf("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":%q}}\n\n", text),
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n",
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	}
}

func writeSSE(w http.ResponseWriter, events []string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Request-Id", "req_sse")
	w.WriteHeader(http.StatusOK)
	f := w.(http.Flusher)
	for _, ev := range events {
		io.WriteString(w, ev)
		f.Flush()
	}
}

func okSSE(text string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, _ int) { writeSSE(w, sseEvents(text)) }
}

// okEither answers in the mode the request asks for.
func okEither(text string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		if isStream(r) {
			okSSE(text)(w, r, n)
			return
		}
		okJSON(text)(w, r, n)
	}
}

func isStream(r *http.Request) bool {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	var v struct {
		Stream bool `json:"stream"`
	}
	return json.Unmarshal(b, &v) == nil && v.Stream
}

func errorStatus(status int, typ, msg string, hdr ...string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Request-Id", "req_err")
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":%q}}`, typ, msg)
	}
}

// stall waits until the request is cancelled.
func stall(w http.ResponseWriter, r *http.Request, _ int) {
	<-r.Context().Done()
}

// hangUp closes the connection without an answer.
func hangUp(w http.ResponseWriter, r *http.Request, _ int) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

// cutAfter sends the first n events of a stream, then drops the connection.
func cutAfter(n int, text string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		for _, ev := range sseEvents(text)[:n] {
			fmt.Fprintf(buf, "%x\r\n%s\r\n", len(ev), ev)
		}
		buf.Flush()
	}
}

func body(model string, stream bool, extra ...string) []byte {
	s := fmt.Sprintf(`{"model":%q,"max_tokens":64,"messages":[{"role":"user","content":"hello"}]`, model)
	if stream {
		s += `,"stream":true`
	}
	for _, e := range extra {
		s += "," + e
	}
	return []byte(s + "}")
}

// readSSE splits an SSE body into events (their raw text).
func readSSE(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	var cur strings.Builder
	for sc.Scan() {
		line := sc.Text()
		cur.WriteString(line + "\n")
		if line == "" {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
