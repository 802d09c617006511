package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

func fixtureRequest(t *testing.T) (http.Header, []byte, string) {
	t.Helper()
	raw, err := os.ReadFile("../testdata/claude-code-2.1.332-request.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Path    string            `json:"path"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	for k, v := range fx.Headers {
		h.Set(k, v)
	}
	return h, fx.Body, fx.Path
}

func TestPassthroughJSONIsByteIdentical(t *testing.T) {
	up := newMock(t, okJSON("hi there"))
	e := start(t, fmt.Sprintf(`
		provider a {
			base_url %s
			api_key sk-test-a
		}`, up.URL))
	// Odd spacing, key order, unicode and unknown fields must reach the
	// provider untouched.
	in := []byte("{ \"model\" : \"claude-sonnet-4-5\",\n\"max_tokens\":64, \"zz_unknown\": {\"a\":[1,2]}, \"messages\":[{\"role\":\"user\",\"content\":\"h\u00e9llo \\u00e9\"}]}")
	resp, out := e.messages(in)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, out)
	}
	if got := up.last().Body; !bytes.Equal(got, in) {
		t.Fatalf("provider got %q, want %q", got, in)
	}
	if string(out) != messageJSON("hi there") {
		t.Fatalf("client got %s", out)
	}
	if resp.Header.Get("Request-Id") != "req_json" || resp.Header.Get("Anthropic-Ratelimit-Requests-Remaining") != "99" {
		t.Fatalf("upstream headers not passed back: %v", resp.Header)
	}
	if resp.Header.Get("X-Claude-Balancer-Provider") != "a" {
		t.Fatalf("x-claude-balancer-provider = %q", resp.Header.Get("X-Claude-Balancer-Provider"))
	}
}

func TestPassthroughSSEIsByteIdentical(t *testing.T) {
	fixture, err := os.ReadFile("../testdata/anthropic-stream-thinking-text-tool.sse")
	if err != nil {
		t.Fatal(err)
	}
	dataOnly := []string{}
	for _, ev := range sseEvents("data only") {
		dataOnly = append(dataOnly, ev[strings.Index(ev, "\n")+1:])
	}
	for name, stream := range map[string][]string{
		"fixture":   readSSE(fixture),
		"data-only": dataOnly,
	} {
		t.Run(name, func(t *testing.T) {
			up := newMock(t, func(w http.ResponseWriter, r *http.Request, _ int) { writeSSE(w, stream) })
			e := start(t, fmt.Sprintf(`
				provider a {
					base_url %s
					api_key sk-test-a
				}`, up.URL))
			resp, out := e.messages(body("claude-sonnet-4-5", true))
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), out)
			}
			if want := strings.Join(stream, ""); string(out) != want {
				t.Fatalf("client got\n%s\nwant\n%s", out, want)
			}
			if resp.Header.Get("Request-Id") != "req_sse" {
				t.Fatalf("request-id not passed back")
			}
		})
	}
}

func TestClaudeCodeHeadersForwardedAndOthersStripped(t *testing.T) {
	up := newMock(t, okSSE("ok"))
	// A forwarded request is not local: it needs a client key.
	e := start(t, fmt.Sprintf(`
		client_keys sk-client
		provider a {
			base_url %s/prefix
			api_key sk-provider
			header X-Extra configured
		}`, up.URL))
	hdr, fx, path := fixtureRequest(t)
	req, _ := http.NewRequest(http.MethodPost, e.base+path, bytes.NewReader(fx))
	req.Header = hdr.Clone()
	req.Header.Set("X-Api-Key", "sk-client")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "should-not-pass")
	req.Header.Set("X-Forwarded-For", "10.1.2.3")
	req.Header.Set("Cookie", "a=b")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := up.last()
	if got.Path != "/prefix/v1/messages" || got.Query != "beta=true" {
		t.Fatalf("path %q query %q", got.Path, got.Query)
	}
	if !bytes.Equal(got.Body, fx) {
		t.Fatalf("body changed")
	}
	for _, k := range []string{"Anthropic-Version", "Anthropic-Beta", "User-Agent", "X-App", "X-Claude-Code-Session-Id",
		"X-Stainless-Retry-Count", "X-Stainless-Package-Version", "Anthropic-Dangerous-Direct-Browser-Access"} {
		if got.Header.Get(k) != hdr.Get(k) {
			t.Errorf("%s = %q, want %q", k, got.Header.Get(k), hdr.Get(k))
		}
	}
	if got.Header.Get("X-Api-Key") != "sk-provider" {
		t.Errorf("x-api-key = %q, want the provider's key", got.Header.Get("X-Api-Key"))
	}
	if got.Header.Get("X-Extra") != "configured" {
		t.Errorf("configured header missing")
	}
	for _, k := range []string{"Accept-Encoding", "X-Hop", "X-Forwarded-For", "Cookie", "Authorization"} {
		if v := got.Header.Get(k); v != "" && !(k == "Accept-Encoding" && v == "identity") {
			t.Errorf("%s forwarded: %q", k, v)
		}
	}
}

func TestAuthModes(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	for _, tc := range []struct {
		name, conf         string
		clientHdr          []string
		wantKey, wantAuthz string
	}{
		{"api_key", "api_key sk-a", []string{"X-Api-Key", "client"}, "sk-a", ""},
		{"auth_token", "auth_token tok-b", []string{"Authorization", "Bearer client"}, "", "Bearer tok-b"},
		{"passthrough key", "passthrough_auth", []string{"X-Api-Key", "client-key"}, "client-key", ""},
		{"passthrough bearer", "passthrough_auth", []string{"Authorization", "Bearer client-oauth"}, "", "Bearer client-oauth"},
		{"env placeholder", "api_key {env.CB_TEST_KEY}", nil, "sk-from-env", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CB_TEST_KEY", "sk-from-env")
			e := start(t, fmt.Sprintf("provider a {\nbase_url %s\n%s\n}", up.URL, tc.conf))
			resp, out := e.messages(body("m", false), tc.clientHdr...)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %s", resp.StatusCode, out)
			}
			h := up.last().Header
			if h.Get("X-Api-Key") != tc.wantKey || h.Get("Authorization") != tc.wantAuthz {
				t.Fatalf("x-api-key %q authorization %q", h.Get("X-Api-Key"), h.Get("Authorization"))
			}
		})
	}
}

func TestRouteRewritesOnlyTheModel(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	e := start(t, fmt.Sprintf(`
		provider a {
			base_url %s
			api_key k
		}
		route *sonnet* {
			to a claude-opus-4-1
		}`, up.URL))
	in := []byte(`{"model" : "claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"model: \"claude-sonnet-4-5\""}]}`)
	resp, out := e.messages(in)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, out)
	}
	want := `{"model" : "claude-opus-4-1","max_tokens":64,"messages":[{"role":"user","content":"model: \"claude-sonnet-4-5\""}]}`
	if got := string(up.last().Body); got != want {
		t.Fatalf("provider got %s", got)
	}
}

func TestRouteMatching(t *testing.T) {
	a := newMock(t, okJSON("a"))
	b := newMock(t, okJSON("b"))
	c := newMock(t, okJSON("c"))
	e := start(t, fmt.Sprintf(`
		provider a {
			base_url %s
			api_key k
		}
		provider b {
			base_url %s
			api_key k
		}
		provider c {
			base_url %s
			api_key k
		}
		route *sonnet* {
			to a
		}
		route claude-sonnet-4-5-special {
			to b
		}
		route claude-*-haiku* *sonnet* {
			to c
		}`, a.URL, b.URL, c.URL))
	for model, want := range map[string]string{
		"claude-sonnet-4-5":         "a", // first glob wins over a later one
		"CLAUDE-SONNET-4-5-SPECIAL": "b", // an exact name wins over globs, case-insensitively
		"claude-3-5-haiku-latest":   "c",
	} {
		resp, out := e.messages(body(model, false))
		if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != want {
			t.Errorf("%s: status %d provider %q, want %q (%s)", model, resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Provider"), want, out)
		}
	}
	resp, out := e.messages(body("gpt-4o", false))
	if resp.StatusCode != 404 || !strings.Contains(string(out), `"not_found_error"`) {
		t.Fatalf("unrouted model: %d %s", resp.StatusCode, out)
	}
}

func TestNoRoutesServesEveryModelInDeclarationOrder(t *testing.T) {
	a := newMock(t, errorStatus(500, "api_error", "down"))
	b := newMock(t, okJSON("b"))
	e := start(t, fmt.Sprintf(`
		provider a {
			base_url %s
			api_key k
		}
		provider b {
			base_url %s
			api_key k
		}`, a.URL, b.URL))
	resp, out := e.messages(body("anything-at-all", false))
	if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "b" || a.count() != 1 {
		t.Fatalf("status %d provider %q a=%d: %s", resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Provider"), a.count(), out)
	}
}

func TestProviderProxy(t *testing.T) {
	up := newMock(t, okJSON("via proxy"))
	var proxied atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An HTTP forward proxy gets the absolute URL.
		if !r.URL.IsAbs() {
			http.Error(w, "not a proxy request", http.StatusBadRequest)
			return
		}
		proxied.Add(1)
		out, err := http.NewRequest(r.Method, r.URL.String(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(proxy.Close)
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\nproxy %s\n}", up.URL, proxy.URL))
	resp, out := e.messages(body("m", false))
	if resp.StatusCode != 200 || !strings.Contains(string(out), "via proxy") || proxied.Load() != 1 {
		t.Fatalf("%d %s proxied=%d", resp.StatusCode, out, proxied.Load())
	}
}
