package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func (e *env) do(method, path string, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.base+path, nil)
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

// Claude Code's warm-up probe is answered at once, whoever sends it and
// without a key, and no provider hears of it.
func TestWarmUpProbe(t *testing.T) {
	up := newMock(t, okEither("ok"))
	e := start(t, fmt.Sprintf("client_keys secret-key\nprovider a {\nbase_url %s\napi_key k\n}", up.URL))
	for _, tc := range []struct {
		name string
		hdr  []string
	}{
		{"as Claude Code sends it", []string{"User-Agent", "Bun/1.4.6", "Accept", "*/*"}},
		{"through a proxy", []string{"X-Forwarded-For", "203.0.113.9"}},
		{"with a wrong key", []string{"X-Api-Key", "wrong"}},
	} {
		for _, method := range []string{http.MethodHead, http.MethodGet} {
			t.Run(tc.name+" "+method, func(t *testing.T) {
				resp, b := e.do(method, "/api/hello", tc.hdr...)
				if resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != 0 {
					t.Fatalf("%d, length %d: %q", resp.StatusCode, resp.ContentLength, b)
				}
			})
		}
	}
	resp, b := e.do(http.MethodPost, "/api/hello")
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" || !isEnvelope(b, "invalid_request_error") {
		t.Fatalf("POST: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	// The other endpoints still want the key.
	if resp, _ := e.messages(body("m", false)); resp.StatusCode != 401 {
		t.Fatalf("messages without a key: %d", resp.StatusCode)
	}
	if up.count() != 0 {
		t.Fatalf("the provider heard of the probe: %d requests", up.count())
	}
	p := e.providers()["a"]
	if p.Requests != 0 || p.ErrorCount != 0 || !p.Healthy {
		t.Fatalf("the probe counted: %+v", p)
	}
	if _, m := adminDo(t, http.MethodGet, "/metrics"); strings.Contains(string(m), `claude_balancer_requests_total{balancer="`+e.name+`"`) {
		t.Fatalf("the probe was counted as a request")
	}
}

// HEAD is GET without a body on every GET endpoint, and 405 where GET is.
func TestHeadAsGet(t *testing.T) {
	up := newMock(t, okEither("ok"))
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL))
	for _, tc := range []struct {
		path string
		hdr  []string
	}{
		{"/health", nil},
		{"/", nil},
		{"/providers", nil},
		{"/providers/", nil},
		{"/providers", []string{"Accept", "text/html"}},
		{"/providers?format=json", []string{"Accept", "text/html"}},
		{"/v1/messages", nil},
		{"/v1/messages/count_tokens", nil},
		{"/providers/reload", nil},
		{"/no/such/path", nil},
		{"/oauth/status", nil},
		{"/oauth/", nil},
		{"/oauth/exchange-code", nil},
	} {
		t.Run(tc.path+strings.Join(tc.hdr, "="), func(t *testing.T) {
			get, gb := e.do(http.MethodGet, tc.path, tc.hdr...)
			head, hb := e.do(http.MethodHead, tc.path, tc.hdr...)
			if len(gb) == 0 {
				t.Fatalf("GET gave no body")
			}
			if len(hb) != 0 {
				t.Fatalf("HEAD gave a body: %q", hb)
			}
			if head.StatusCode != get.StatusCode {
				t.Fatalf("HEAD %d, GET %d", head.StatusCode, get.StatusCode)
			}
			for _, k := range []string{"Content-Type", "Allow", "Cache-Control", "X-Content-Type-Options"} {
				if head.Header.Get(k) != get.Header.Get(k) {
					t.Errorf("%s: HEAD %q, GET %q", k, head.Header.Get(k), get.Header.Get(k))
				}
			}
			if tc.path == "/health" || get.StatusCode == 405 {
				// Answers that do not change between two requests have the
				// same length.
				if head.ContentLength != int64(len(gb)) {
					t.Errorf("HEAD Content-Length %d, GET body %d bytes", head.ContentLength, len(gb))
				}
			}
			if get.StatusCode == 405 && (get.Header.Get("Allow") == "" || !isEnvelope(gb, "invalid_request_error")) {
				t.Errorf("405 without Allow or envelope: %v %s", get.Header, gb)
			}
		})
	}
	// The GET endpoints name HEAD among the methods they take.
	for _, path := range []string{"/health", "/providers", "/oauth/status"} {
		resp, b := e.do(http.MethodPost, path)
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" || !isEnvelope(b, "invalid_request_error") {
			t.Errorf("POST %s: %d %q %s", path, resp.StatusCode, resp.Header.Get("Allow"), b)
		}
	}
	if up.count() != 0 {
		t.Fatalf("the provider was asked")
	}
}
