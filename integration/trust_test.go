package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Who sent a request, and whose fault a failure is (README, "Security").

// byKey answers each client credential (its x-api-key) with its own
// behaviour, and everyone else with def.
func byKey(def func(http.ResponseWriter, *http.Request, int), keyed map[string]func(http.ResponseWriter, *http.Request, int)) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		if b, ok := keyed[r.Header.Get("X-Api-Key")]; ok {
			b(w, r, n)
			return
		}
		def(w, r, n)
	}
}

func TestPassthroughRejectedKeyDoesNotCoolTheProvider(t *testing.T) {
	const rejection = `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`
	up := newMock(t, byKey(okJSON("ok"), map[string]func(http.ResponseWriter, *http.Request, int){
		"sk-mistyped": func(w http.ResponseWriter, r *http.Request, _ int) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Request-Id", "req_401")
			w.WriteHeader(401)
			io.WriteString(w, rejection)
		},
	}))
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\npassthrough_auth\n}", up.URL))
	for i := range 3 {
		resp, out := e.messages(body("m", false), "X-Api-Key", "sk-mistyped")
		// The client's own rejection comes back as the provider sent it, so
		// that Claude Code asks its user to log in again.
		if resp.StatusCode != 401 || string(out) != rejection || resp.Header.Get("Request-Id") != "req_401" {
			t.Fatalf("try %d: %d %s", i, resp.StatusCode, out)
		}
		if up.count() != i+1 {
			t.Fatalf("try %d did not reach the provider: a rejected credential is never cooled down", i)
		}
	}
	resp, out := e.messages(body("m", false), "X-Api-Key", "sk-good")
	if resp.StatusCode != 200 {
		t.Fatalf("another client after the rejections: %d %s", resp.StatusCode, out)
	}
	// A client whose token was just refreshed is served at once.
	resp, out = e.messages(body("m", false), "X-Api-Key", "sk-refreshed")
	if resp.StatusCode != 200 {
		t.Fatalf("refreshed credential: %d %s", resp.StatusCode, out)
	}
	p := e.providers()["a"]
	if !p.Healthy || p.ErrorCount != 0 || p.QuotaCooldown {
		t.Fatalf("the provider paid for a client's key: %+v", p)
	}
	if p.Credentials == nil || p.Credentials.Rejected != 1 || p.Credentials.CoolingDown != 0 {
		t.Fatalf("credentials %+v", p.Credentials)
	}
}

func TestPassthroughQuotaCoolsOnlyThatCredential(t *testing.T) {
	up := newMock(t, byKey(okJSON("ok"), map[string]func(http.ResponseWriter, *http.Request, int){
		"sk-busy": errorStatus(429, "rate_limit_error", "your key is rate limited", "Retry-After", "600"),
	}))
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\npassthrough_auth\n}", up.URL))
	resp, out := e.messages(body("m", false), "X-Api-Key", "sk-busy")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "600" {
		t.Fatalf("busy client: %d retry-after %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), out)
	}
	for i := range 3 {
		resp, out = e.messages(body("m", false), "X-Api-Key", fmt.Sprintf("sk-other-%d", i))
		if resp.StatusCode != 200 {
			t.Fatalf("other client %d: %d %s", i, resp.StatusCode, out)
		}
	}
	before := up.count()
	resp, out = e.messages(body("m", false), "X-Api-Key", "sk-busy")
	secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != 429 || secs < 590 || secs > 600 || !strings.Contains(string(out), `"rate_limit_error"`) {
		t.Fatalf("busy client again: %d retry-after %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), out)
	}
	if up.count() != before {
		t.Fatal("a credential cooling down reached the provider")
	}
	p := e.providers()["a"]
	if !p.Healthy || p.QuotaCooldown || p.ErrorCount != 0 || p.Credentials.CoolingDown != 1 {
		t.Fatalf("provider state %+v credentials %+v", p, p.Credentials)
	}
}

func TestPassthroughQuotaFailsOverToACandidateThatCanServe(t *testing.T) {
	a := newMock(t, byKey(okJSON("from a"), map[string]func(http.ResponseWriter, *http.Request, int){
		"sk-busy": errorStatus(429, "rate_limit_error", "slow down", "Retry-After", "600"),
	}))
	b := newMock(t, okJSON("from b"))
	e := start(t, fmt.Sprintf(`
		sticky 0
		provider a {
			base_url %s
			passthrough_auth
		}
		provider b {
			base_url %s
			api_key sk-operator
		}`, a.URL, b.URL))
	for i := range 2 {
		resp, out := e.messages(body("m", false), "X-Api-Key", "sk-busy")
		if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "b" {
			t.Fatalf("try %d: %d %s", i, resp.StatusCode, out)
		}
	}
	if a.count() != 1 {
		t.Fatalf("a was asked %d times; its cooldown for this credential should skip it", a.count())
	}
	resp, out := e.messages(body("m", false), "X-Api-Key", "sk-fine")
	if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "a" {
		t.Fatalf("another client: %d from %q %s", resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Provider"), out)
	}
}

func TestPassthroughProviderFaultsStayProviderWide(t *testing.T) {
	up := newMock(t, errorStatus(500, "api_error", "down for everyone"))
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\npassthrough_auth\n}", up.URL))
	for i := range 2 {
		e.messages(body("m", false), "X-Api-Key", fmt.Sprintf("sk-client-%d", i))
	}
	resp, out := e.messages(body("m", false), "X-Api-Key", "sk-client-3")
	if resp.StatusCode != 503 || !strings.Contains(string(out), "overloaded_error") || up.count() != 2 {
		t.Fatalf("third client: %d %s (provider asked %d times)", resp.StatusCode, out, up.count())
	}
}

func TestWhatTheClientGetsWhenScopesMix(t *testing.T) {
	ownRejection := `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`
	for _, tc := range []struct {
		name       string
		a, b       func(http.ResponseWriter, *http.Request, int)
		status     int
		retryAfter string
		body       string
	}{
		{"own rejection wins over a provider failure",
			func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(401)
				io.WriteString(w, ownRejection)
			},
			errorStatus(500, "api_error", "b is down"), 401, "", ownRejection},
		{"quota wins over a provider failure",
			errorStatus(429, "rate_limit_error", "slow down", "Retry-After", "30"),
			errorStatus(503, "api_error", "b is down"), 429, "30", ""},
		{"the soonest quota answer",
			errorStatus(429, "rate_limit_error", "slow down", "Retry-After", "300"),
			errorStatus(429, "rate_limit_error", "slow down", "Retry-After", "20"), 429, "20", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newMock(t, tc.a), newMock(t, tc.b)
			e := start(t, fmt.Sprintf(`
				provider a {
					base_url %s
					passthrough_auth
				}
				provider b {
					base_url %s
					api_key sk-operator
				}`, a.URL, b.URL))
			resp, out := e.messages(body("m", false), "X-Api-Key", "sk-client")
			if resp.StatusCode != tc.status || a.count() != 1 || b.count() != 1 {
				t.Fatalf("%d %s (a %d, b %d calls)", resp.StatusCode, out, a.count(), b.count())
			}
			if got := resp.Header.Get("Retry-After"); tc.retryAfter != "" {
				if n, _ := strconv.Atoi(got); got != tc.retryAfter && (n < 1 || n > 20) {
					t.Fatalf("retry-after %q, want %s", got, tc.retryAfter)
				}
			}
			if tc.body != "" && string(out) != tc.body {
				t.Fatalf("body %s, want the provider's unchanged", out)
			}
		})
	}
}

func TestOperatorCredentialRejectionIsNeverTheClients(t *testing.T) {
	up := newMock(t, errorStatus(401, "authentication_error", "invalid x-api-key"))
	conf := fmt.Sprintf("provider relay {\nbase_url %s\napi_key sk-wrong\n}", up.URL)
	e := start(t, conf)
	e.load(conf, "events {\non credential_rejected cb_test_recorder\n}")
	resp, out := e.messages(body("m", false))
	if resp.StatusCode != 502 || !strings.Contains(string(out), `"api_error"`) ||
		!strings.Contains(string(out), `configured credential of provider \"relay\" was rejected`) {
		t.Fatalf("first: %d %s", resp.StatusCode, out)
	}
	e.messages(body("m", false))
	// Cooling down now: still not the client's fault.
	resp, out = e.messages(body("m", false))
	if resp.StatusCode != 503 || !strings.Contains(string(out), `"overloaded_error"`) ||
		!strings.Contains(string(out), "configured credential of relay was rejected") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("cooling down: %d %s", resp.StatusCode, out)
	}
	_, st := e.get("/providers")
	if !strings.Contains(string(st), `"credential_rejected"`) {
		t.Fatalf("/providers does not show the rejection: %s", st)
	}
	if got := eventsMatching("credential_rejected " + e.name + " relay"); len(got) != 1 {
		t.Fatalf("events: %v, want one for the transition", got)
	}
	_, metrics := adminDo(t, http.MethodGet, "/metrics")
	if !strings.Contains(string(metrics), fmt.Sprintf(`claude_balancer_provider_credential_rejected{balancer=%q,provider="relay"} 1`, e.name)) {
		t.Fatal("the rejection is not on the metrics")
	}
	// Once the credential works again, the mark goes.
	up.set(okJSON("fixed"))
	adminDo(t, http.MethodPost, "/claude_balancer/providers/relay/reset?balancer="+e.name)
	if resp, out := e.messages(body("m", false)); resp.StatusCode != 200 {
		t.Fatalf("after the fix: %d %s", resp.StatusCode, out)
	}
	if _, st := e.get("/providers"); strings.Contains(string(st), `"credential_rejected"`) {
		t.Fatalf("the rejection stayed after an accepted answer: %s", st)
	}
}

// proxyClient connects to Caddy as a remote client would look through the
// PROXY protocol: its address is from.
func proxyClient(from string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			_, port, _ := net.SplitHostPort(addr)
			if _, err := fmt.Fprintf(c, "PROXY TCP4 %s 127.0.0.1 40000 %s\r\n", from, port); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
	}}
}

const proxyProtocolGlobal = `servers {
	listener_wrappers {
		proxy_protocol {
			allow 127.0.0.1/32
		}
	}
	trusted_proxies static 127.0.0.1/32
	client_ip_headers X-Forwarded-For
}`

func send(t *testing.T, c *http.Client, method, url string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

func TestLocalMeansThisMachineAndNoOneElse(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key sk-operator\n}", up.URL))
	e.load(fmt.Sprintf("provider a {\nbase_url %s\napi_key sk-operator\n}", up.URL), proxyProtocolGlobal)
	local := e.client
	remote := proxyClient("203.0.113.9")
	port := strconv.Itoa(httpPort)
	endpoints := []struct {
		method, path string
		body         []byte
	}{
		{"POST", "/v1/messages", body("m", false)},
		{"POST", "/v1/messages/count_tokens", body("m", false)},
		{"GET", "/providers", nil},
		{"POST", "/providers/reload", nil},
		{"GET", "/oauth/", nil},
		{"GET", "/oauth/status", nil},
	}
	refused := []struct {
		name   string
		client *http.Client
		hdr    []string
	}{
		{"spoofed X-Forwarded-For through a trusted proxy", local, []string{"X-Forwarded-For", "127.0.0.1, 203.0.113.9"}},
		{"X-Forwarded-For naming loopback", local, []string{"X-Forwarded-For", "127.0.0.1"}},
		{"Forwarded", local, []string{"Forwarded", "for=127.0.0.1"}},
		{"X-Real-IP", local, []string{"X-Real-IP", "127.0.0.1"}},
		{"X-Forwarded-Host", local, []string{"X-Forwarded-Host", "localhost"}},
		{"X-Forwarded-Proto", local, []string{"X-Forwarded-Proto", "http"}},
		{"a rebound DNS name", local, []string{"Host", "attacker.example:" + port}},
		{"a remote peer", remote, nil},
		{"a remote peer naming localhost", remote, []string{"Host", "localhost:" + port}},
	}
	for _, rc := range refused {
		for _, ep := range endpoints {
			t.Run(rc.name+" "+ep.method+" "+ep.path, func(t *testing.T) {
				before := up.count()
				resp, out := send(t, rc.client, ep.method, e.base+ep.path, ep.body, rc.hdr...)
				if resp.StatusCode != 403 || !strings.Contains(string(out), "permission_error") {
					t.Fatalf("%d %s", resp.StatusCode, out)
				}
				if up.count() != before {
					t.Fatal("a refused request reached the provider")
				}
			})
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "claude.localhost:" + port, "127.8.9.10:" + port, "[::1]:" + port, "LOCALHOST"} {
		resp, out := send(t, local, "POST", e.base+"/v1/messages", body("m", false), "Host", host)
		if resp.StatusCode != 200 {
			t.Fatalf("local request with Host %s: %d %s", host, resp.StatusCode, out)
		}
	}
	// /health is public and holds no secret.
	resp, out := send(t, remote, "GET", e.base+"/health", nil)
	if resp.StatusCode != 200 || strings.Contains(string(out), up.URL) {
		t.Fatalf("remote /health: %d %s", resp.StatusCode, out)
	}
}

func TestRemoteClientsNeedKeys(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	block := fmt.Sprintf("client_keys team-key\nadmin_key adm-key\nprovider a {\nbase_url %s\napi_key sk-operator\n}", up.URL)
	e := start(t, block)
	e.load(block, proxyProtocolGlobal)
	remote := proxyClient("203.0.113.9")
	if resp, out := send(t, remote, "POST", e.base+"/v1/messages", body("m", false)); resp.StatusCode != 401 {
		t.Fatalf("remote without key: %d %s", resp.StatusCode, out)
	}
	if resp, out := send(t, remote, "POST", e.base+"/v1/messages", body("m", false), "X-Api-Key", "team-key"); resp.StatusCode != 200 {
		t.Fatalf("remote with key: %d %s", resp.StatusCode, out)
	}
	if resp, out := send(t, remote, "GET", e.base+"/providers", nil); resp.StatusCode != 401 {
		t.Fatalf("remote /providers without admin key: %d %s", resp.StatusCode, out)
	}
	if resp, out := send(t, remote, "GET", e.base+"/providers", nil, "X-Admin-Key", "adm-key"); resp.StatusCode != 200 {
		t.Fatalf("remote /providers with admin key: %d %s", resp.StatusCode, out)
	}
}

func TestBrowsersCannotDriveALocalBalancer(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key sk-operator\n}", up.URL))
	port := strconv.Itoa(httpPort)
	for _, tc := range []struct {
		name   string
		hdr    []string
		status int
	}{
		{"Claude Code, an SDK or curl", nil, 200},
		{"typed into the address bar", []string{"Sec-Fetch-Site", "none"}, 200},
		{"the site's own page", []string{"Sec-Fetch-Site", "same-origin"}, 200},
		{"another site", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"another port of the same host", []string{"Sec-Fetch-Site", "same-site"}, 403},
		{"an old browser on another site", []string{"Origin", "https://attacker.example"}, 403},
		{"an old browser on this origin", []string{"Origin", "http://127.0.0.1:" + port}, 200},
		{"an opaque origin", []string{"Origin", "null"}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, ep := range []string{"/v1/messages", "/v1/messages/count_tokens"} {
				resp, out := send(t, e.client, "POST", e.base+ep, body("m", false), tc.hdr...)
				if resp.StatusCode != tc.status {
					t.Fatalf("%s: %d %s", ep, resp.StatusCode, out)
				}
			}
			for _, ep := range []string{"/providers", "/oauth/"} {
				resp, out := send(t, e.client, "GET", e.base+ep, nil, tc.hdr...)
				if resp.StatusCode != tc.status {
					t.Fatalf("GET %s: %d %s", ep, resp.StatusCode, out)
				}
			}
			// A bodiless reload is exempt from the content type rule; admitted,
			// it reaches the reload (which has no startup file to read here).
			resp, out := send(t, e.client, "POST", e.base+"/providers/reload", nil, tc.hdr...)
			if admitted := resp.StatusCode != 403; admitted != (tc.status == 200) || resp.StatusCode == 415 {
				t.Fatalf("POST /providers/reload: %d %s", resp.StatusCode, out)
			}
		})
	}
	// A "simple" request a page may send without asking the browser first.
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
		for _, ep := range []string{"/v1/messages", "/v1/messages/count_tokens"} {
			resp, out := send(t, e.client, "POST", e.base+ep, body("m", false), "Content-Type", ct)
			if resp.StatusCode != 415 || !strings.Contains(string(out), "invalid_request_error") {
				t.Fatalf("%s as %q: %d %s", ep, ct, resp.StatusCode, out)
			}
		}
	}
	if resp, out := send(t, e.client, "POST", e.base+"/v1/messages", body("m", false), "Content-Type", "application/json; charset=utf-8"); resp.StatusCode != 200 {
		t.Fatalf("json with a charset: %d %s", resp.StatusCode, out)
	}
}

func TestAKeyIsJudgedByItselfAlone(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	e := start(t, fmt.Sprintf("client_keys team-key\nprovider a {\nbase_url %s\napi_key sk-operator\n}", up.URL))
	resp, out := send(t, e.client, "POST", e.base+"/v1/messages", body("m", false),
		"X-Api-Key", "team-key", "Sec-Fetch-Site", "cross-site", "Content-Type", "text/plain", "X-Forwarded-For", "198.51.100.7")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
}

func TestBalancersInOneConfigNeedTheirOwnNames(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL))
	other := freePort()
	cfg := globalOptions("") + fmt.Sprintf(`
:%d {
	claude_balancer {
		provider a {
			base_url %s
			api_key k
		}
	}
}
:%d {
	claude_balancer {
		provider b {
			base_url %s
			api_key k
		}
	}
}
`, httpPort, up.URL, other, up.URL)
	msg := e.loadErr(cfg)
	if !strings.Contains(msg, `share the name \"default\"`) || !strings.Contains(msg, "name") {
		t.Fatalf("error: %s", msg)
	}
	// One site on two listeners is one configuration: it loads, and both
	// listeners share its state.
	e.tester.InitServer(globalOptions("")+fmt.Sprintf(`
:%d, :%d {
	claude_balancer {
		name %s
		provider a {
			base_url %s
			api_key k
		}
	}
}
`, httpPort, other, e.name, up.URL), "caddyfile")
	e.settle()
	if resp, out := e.messages(body("m", false)); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	resp, out := send(t, e.client, "GET", fmt.Sprintf("http://127.0.0.1:%d/providers", other), nil)
	if resp.StatusCode != 200 || !strings.Contains(string(out), `"requests": 1`) {
		t.Fatalf("the other listener does not share the state: %d %s", resp.StatusCode, out)
	}
}

func TestValidityNeverDependsOnDedup(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	for _, mode := range []string{"", "dedup off"} {
		e := start(t, fmt.Sprintf("%s\nprovider a {\nbase_url %s\napi_key k\n}", mode, up.URL))
		for name, b := range map[string]string{
			"escaped duplicate model":  `{"model":"m","mod\u0065l":"other","max_tokens":1,"messages":[]}`,
			"escaped duplicate stream": `{"model":"m","stre\u0061m":true,"stream":false,"max_tokens":1,"messages":[]}`,
			"leading zero":             `{"model":"m","max_tokens":016,"messages":[]}`,
			"raw tab in a string":      "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"a\tb\"}]}",
			"bad escape":               `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"\q"}]}`,
		} {
			resp, out := e.messages([]byte(b))
			if resp.StatusCode != 400 || !strings.Contains(string(out), "invalid_request_error") {
				t.Fatalf("%q, %s: %d %s", mode, name, resp.StatusCode, out)
			}
		}
		for name, b := range map[string]string{
			"invalid UTF-8":  "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}",
			"lone surrogate": `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"\ud800"}]}`,
		} {
			before := len(up.requests())
			resp, out := e.messages([]byte(b))
			if resp.StatusCode != 200 || string(up.requests()[before].Body) != b {
				t.Fatalf("%q, %s: %d %s; must pass byte for byte", mode, name, resp.StatusCode, out)
			}
		}
	}
}

func TestAllFailedMessageHidesTheResolver(t *testing.T) {
	dns := fakeDNS(t, false)
	e := start(t, fmt.Sprintf("provider a {\nbase_url http://nowhere.invalid:80\napi_key k\nresolvers %s\n}", dns))
	resp, out := e.messages(body("m", false))
	if resp.StatusCode != 502 || !strings.Contains(string(out), "nowhere.invalid") {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	host, port, _ := net.SplitHostPort(dns)
	if strings.Contains(string(out), dns) || strings.Contains(string(out), host+":"+port) {
		t.Fatalf("the answer names the resolver %s: %s", dns, out)
	}
	if p := e.providers()["a"]; strings.Contains(p.LastError, dns) {
		t.Fatalf("/providers names the resolver: %s", p.LastError)
	}
}
