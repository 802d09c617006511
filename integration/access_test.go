package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestClientKeys(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	t.Setenv("CB_CLIENT_KEY", "team-key-2")
	e := start(t, fmt.Sprintf(`
		client_keys team-key-1 {env.CB_CLIENT_KEY}
		provider a {
			base_url %s
			passthrough_auth
		}`, up.URL))
	for _, tc := range []struct {
		name   string
		hdr    []string
		status int
	}{
		{"missing", nil, 401},
		{"wrong", []string{"X-Api-Key", "nope"}, 401},
		{"wrong bearer", []string{"Authorization", "Bearer team-key-11"}, 401},
		{"x-api-key", []string{"X-Api-Key", "team-key-1"}, 200},
		{"bearer from env", []string{"Authorization", "Bearer team-key-2"}, 200},
		{"dedicated header", []string{"X-Claude-Balancer-Key", "team-key-1", "X-Api-Key", "sk-user-own"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.count()
			resp, out := e.messages(body("m", false), tc.hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d: %s", resp.StatusCode, out)
			}
			if tc.status != 200 {
				if up.count() != before || !strings.Contains(string(out), `"authentication_error"`) {
					t.Fatalf("unauthorized request reached the provider or bad envelope: %s", out)
				}
				return
			}
			h := up.last().Header
			// The balancer's key never reaches a provider; the user's own
			// key does, with passthrough_auth.
			for _, k := range []string{"X-Api-Key", "Authorization", "X-Claude-Balancer-Key"} {
				if v := h.Get(k); strings.Contains(v, "team-key") {
					t.Fatalf("client key forwarded in %s", k)
				}
			}
			if tc.name == "dedicated header" && h.Get("X-Api-Key") != "sk-user-own" {
				t.Fatalf("user's own key not passed through: %q", h.Get("X-Api-Key"))
			}
		})
	}
	// A key in the query string is not a key.
	resp, _ := e.post("/v1/messages?x-api-key=team-key-1&key=team-key-1", body("m", false))
	if resp.StatusCode != 401 {
		t.Fatalf("query-string key accepted: %d", resp.StatusCode)
	}
}

func TestOnlyLoopbackClientsWithoutKeys(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	e := &env{t: t}
	e = start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL))
	// Trusting the loopback proxy makes X-Forwarded-For the client address,
	// which is how a remote client looks.
	e.load(fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL), `servers {
		trusted_proxies static 127.0.0.1/32
		client_ip_headers X-Forwarded-For
	}`)
	resp, out := e.messages(body("m", false), "X-Forwarded-For", "203.0.113.9")
	if resp.StatusCode != 403 || !strings.Contains(string(out), "client_keys") || up.count() != 0 {
		t.Fatalf("remote client: %d %s", resp.StatusCode, out)
	}
	resp, out = e.messages(body("m", false))
	if resp.StatusCode != 200 {
		t.Fatalf("local client: %d %s", resp.StatusCode, out)
	}
	// Management endpoints too.
	resp, out = e.get("/providers", "X-Forwarded-For", "203.0.113.9")
	if resp.StatusCode != 403 || !strings.Contains(string(out), "admin_key") {
		t.Fatalf("remote /providers: %d %s", resp.StatusCode, out)
	}
	for _, path := range []string{"/oauth/", "/oauth/status", "/oauth/generate-url"} {
		resp, out = e.get(path, "X-Forwarded-For", "203.0.113.9")
		if resp.StatusCode != 403 {
			t.Fatalf("remote %s: %d %s", path, resp.StatusCode, out)
		}
	}
	// Liveness stays public and holds no secret.
	resp, out = e.get("/health", "X-Forwarded-For", "203.0.113.9")
	if resp.StatusCode != 200 || strings.Contains(string(out), up.URL) {
		t.Fatalf("remote /health: %d %s", resp.StatusCode, out)
	}
}

func TestAdminKeyProtectsManagement(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	e := start(t, fmt.Sprintf(`
		admin_key adm-secret
		provider a {
			base_url %s
			api_key sk-never-shown
		}`, up.URL))
	resp, out := e.get("/providers")
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no key: %d %s", resp.StatusCode, out)
	}
	for _, hdr := range [][]string{{"Authorization", "Bearer adm-secret"}, {"X-Admin-Key", "adm-secret"}} {
		resp, out = e.get("/providers", hdr...)
		if resp.StatusCode != 200 {
			t.Fatalf("%v: %d %s", hdr, resp.StatusCode, out)
		}
		if strings.Contains(string(out), "sk-never-shown") || strings.Contains(string(out), "adm-secret") {
			t.Fatalf("secret in /providers: %s", out)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, e.base+"/providers", nil)
	req.SetBasicAuth("admin", "adm-secret")
	if resp, err := e.client.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("basic auth: %v %v", resp, err)
	}
}

func TestBadRequests(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	e := start(t, fmt.Sprintf(`
		max_request_body 4KiB
		provider a {
			base_url %s
			api_key k
		}`, up.URL))
	big := bytes.Repeat([]byte("x"), 5000)
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		status             int
		errType            string
	}{
		{"too large", "POST", "/v1/messages", append(append([]byte(`{"model":"m","messages":[{"role":"user","content":"`), big...), `"}]}`...), 413, "request_too_large"},
		{"malformed json", "POST", "/v1/messages", []byte(`{"model":"m","messages":[}`), 400, "invalid_request_error"},
		{"truncated json", "POST", "/v1/messages", []byte(`{"model":"m","messages":[`), 400, "invalid_request_error"},
		{"not an object", "POST", "/v1/messages", []byte(`[1,2]`), 400, "invalid_request_error"},
		{"missing model", "POST", "/v1/messages", []byte(`{"messages":[]}`), 400, "invalid_request_error"},
		{"model not a string", "POST", "/v1/messages", []byte(`{"model":5,"messages":[]}`), 400, "invalid_request_error"},
		{"duplicate model", "POST", "/v1/messages", []byte(`{"model":"a","model":"b","messages":[]}`), 400, "invalid_request_error"},
		{"deep nesting", "POST", "/v1/messages", []byte(`{"model":"m","x":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`), 400, "invalid_request_error"},
		{"wrong method", "GET", "/v1/messages", nil, 405, "invalid_request_error"},
		{"unknown path", "POST", "/v1/complete", []byte(`{}`), 404, "not_found_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.base+tc.path, bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			buf.ReadFrom(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(buf.String(), `"type":"error"`) || !strings.Contains(buf.String(), tc.errType) {
				t.Fatalf("got %d %s", resp.StatusCode, buf.String())
			}
		})
	}
	if up.count() != 0 {
		t.Fatalf("bad requests reached the provider")
	}
	// Invalid UTF-8 is the provider's business: forwarded as is.
	in := []byte("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe bad\"}]}")
	resp, _ := e.messages(in)
	if resp.StatusCode != 200 || !bytes.Equal(up.last().Body, in) {
		t.Fatalf("invalid UTF-8: %d, forwarded %q", resp.StatusCode, up.last().Body)
	}
}

func TestConfigErrorsNameFileAndLine(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL))
	msg := e.loadErr(globalOptions("") + `
:` + fmt.Sprint(httpPort) + ` {
	claude_balancer {
		provider a {
			base_url http://127.0.0.1:1
			api_key k
			timeouts {
				first_byte soon
			}
		}
	}
}
`)
	if !strings.Contains(msg, "Caddyfile:17") || !strings.Contains(msg, `invalid duration \"soon\"`) {
		t.Fatalf("error does not name the position: %s", msg)
	}
	// The running config is kept.
	if resp, _ := e.messages(body("m", false)); resp.StatusCode != 200 {
		t.Fatalf("running config lost: %d", resp.StatusCode)
	}
}
