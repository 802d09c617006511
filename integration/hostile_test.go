package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawRequest sends a request exactly as written, for paths and headers an
// HTTP client would normalise or refuse, and reads the answer. The request
// is written while the answer is read, since a server may answer before it
// read everything.
func rawRequest(t *testing.T, e *env, req string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(e.base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	written := make(chan struct{})
	go func() {
		defer close(written)
		_, _ = io.WriteString(conn, req)
	}()
	method, _, _ := strings.Cut(req, " ")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		conn.Close()
		<-written
		t.Fatalf("no answer to %.80q: %v", req, err)
	}
	b, _ := io.ReadAll(resp.Body)
	conn.Close()
	<-written
	return resp, b
}

// isEnvelope reports whether b is an Anthropic error envelope of type typ
// (any type when typ is "").
func isEnvelope(b []byte, typ string) bool {
	var env struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	return json.Unmarshal(b, &env) == nil && env.Type == "error" && env.Error.Message != "" &&
		(typ == "" && env.Error.Type != "" || env.Error.Type == typ)
}

func TestBodiesOverTheLimit(t *testing.T) {
	up := newMock(t, okEither("ok"))
	e := start(t, fmt.Sprintf("max_request_body 4KiB\nprovider a {\nbase_url %s\napi_key k\n}", up.URL))
	// A valid request of exactly n bytes.
	sized := func(n int) []byte {
		b := body("m", false, `"pad":""`)
		return append(b[:len(b)-2], append(bytes.Repeat([]byte("x"), n-len(b)), `"}`...)...)
	}
	if b := sized(4096); len(b) != 4096 {
		t.Fatalf("sized: %d", len(b))
	}
	big, huge := sized(64<<10), sized(8<<20)
	for _, tc := range []struct {
		name    string
		path    string
		body    []byte
		chunked bool
		status  int
	}{
		{"at the limit", "/v1/messages", sized(4096), false, 200},
		{"one byte over", "/v1/messages", sized(4097), false, 413},
		{"with a length", "/v1/messages", big, false, 413},
		{"chunked", "/v1/messages", big, true, 413},
		{"count_tokens with a length", "/v1/messages/count_tokens", big, false, 413},
		{"count_tokens chunked", "/v1/messages/count_tokens", big, true, 413},
		// Far past the limit, the server stops reading and closes the
		// connection gracefully: the client still gets the answer.
		{"megabytes with a length", "/v1/messages", huge, false, 413},
		{"megabytes chunked", "/v1/messages", huge, true, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.count()
			var r io.Reader = bytes.NewReader(tc.body)
			if tc.chunked {
				// A reader of unknown length makes the client send chunks.
				r = io.MultiReader(r)
			}
			req, _ := http.NewRequest(http.MethodPost, e.base+tc.path, r)
			req.Header.Set("Content-Type", "application/json")
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tc.chunked != (req.ContentLength <= 0) {
				t.Fatalf("chunked %v but content length %d", tc.chunked, req.ContentLength)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d: %s", resp.StatusCode, out)
			}
			if tc.status == 413 && (!isEnvelope(out, "request_too_large") || up.count() != before) {
				t.Fatalf("want a request_too_large envelope and no upstream call: %s", out)
			}
		})
	}
	if resp, _ := e.messages(body("m", false)); resp.StatusCode != 200 {
		t.Fatalf("served nothing after the large bodies: %d", resp.StatusCode)
	}
}

func TestHostileBodies(t *testing.T) {
	nested := func(depth int) string { return strings.Repeat("[", depth) + strings.Repeat("]", depth) }
	huge := strings.Repeat("abcdefghijklmnopqrstuvwxyz012345", (3<<20)/32)
	cases := []struct {
		name, ctype, body string
		// status is what the client gets; 200 means forwarded untouched.
		status  int
		errType string
	}{
		{"nesting under the bound", "application/json", `{"model":"m","max_tokens":5,"x":` + nested(500) + `,"messages":[]}`, 200, ""},
		{"nesting past the bound", "application/json", `{"model":"m","x":` + nested(100000) + `}`, 400, "invalid_request_error"},
		{"nesting in messages", "application/json", `{"model":"m","messages":[{"role":"user","content":` + nested(600) + `}]}`, 400, "invalid_request_error"},
		{"unclosed nesting", "application/json", `{"model":"m","x":` + strings.Repeat("[{\"a\":", 50000), 400, "invalid_request_error"},
		{"a 3 MiB string", "application/json", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"` + huge + `"}]}`, 200, ""},
		{"invalid UTF-8 in a key and a value", "application/json", "{\"model\":\"m\",\"\xff\xfe\":\"\xc3\x28\",\"messages\":[]}", 200, ""},
		{"invalid UTF-8 model", "application/json", "{\"model\":\"m\xff\",\"messages\":[]}", 200, ""},
		{"lone surrogate escape", "application/json", `{"model":"m","messages":[{"role":"user","content":"\ud800 \udfff"}]}`, 200, ""},
		{"duplicate model", "application/json", `{"model":"m","messages":[],"model":"other"}`, 400, "invalid_request_error"},
		{"duplicate stream", "application/json", `{"model":"m","stream":false,"messages":[],"stream":true}`, 400, "invalid_request_error"},
		{"duplicate max_tokens and messages", "application/json", `{"model":"m","max_tokens":5,"messages":[],"max_tokens":7,"messages":[{"role":"user","content":"x"}]}`, 200, ""},
		{"duplicate keys below the top", "application/json", `{"model":"m","messages":[{"role":"user","role":"assistant","content":"x"}],"x":{"model":"a","model":"b"}}`, 200, ""},
		{"max_tokens huge", "application/json", `{"model":"m","max_tokens":1000000000000000000,"messages":[]}`, 200, ""},
		{"max_tokens beyond int64", "application/json", `{"model":"m","max_tokens":99999999999999999999999999999,"messages":[]}`, 200, ""},
		{"max_tokens beyond float64", "application/json", `{"model":"m","max_tokens":1e400,"messages":[]}`, 200, ""},
		{"max_tokens negative", "application/json", `{"model":"m","max_tokens":-1,"messages":[]}`, 200, ""},
		{"max_tokens a string", "application/json", `{"model":"m","max_tokens":"lots","messages":[]}`, 200, ""},
		// The API's content type is JSON. Without a key only JSON is taken:
		// the other types are those a web page may send anywhere.
		{"text/plain with JSON", "text/plain", string(body("m", false)), 415, "invalid_request_error"},
		{"no content type", "", string(body("m", false)), 415, "invalid_request_error"},
		{"form encoded", "application/x-www-form-urlencoded", "model=m&max_tokens=5", 415, "invalid_request_error"},
		{"multipart", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--x--\r\n", 415, "invalid_request_error"},
		{"empty body", "application/json", "", 400, "invalid_request_error"},
		{"null", "application/json", "null", 400, "invalid_request_error"},
		{"byte order mark", "application/json", "\xef\xbb\xbf" + string(body("m", false)), 400, "invalid_request_error"},
		{"trailing garbage", "application/json", string(body("m", false)) + "}", 400, "invalid_request_error"},
		{"NUL bytes", "application/json", "{\"model\":\"m\",\x00\"messages\":[]}", 400, "invalid_request_error"},
	}
	for _, mode := range []string{"dedup on", "dedup off"} {
		t.Run(mode, func(t *testing.T) {
			up := newMock(t, okJSON("ok"))
			extra := ""
			if mode == "dedup off" {
				extra = "dedup off"
			}
			e := start(t, fmt.Sprintf("%s\nprovider a {\nbase_url %s\napi_key k\n}", extra, up.URL))
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					before := up.count()
					req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/messages", strings.NewReader(tc.body))
					if tc.ctype != "" {
						req.Header.Set("Content-Type", tc.ctype)
					}
					resp, err := e.client.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					out, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != tc.status {
						t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, tc.status, out)
					}
					if tc.status != 200 {
						if !isEnvelope(out, tc.errType) || up.count() != before {
							t.Fatalf("want a %s envelope and no upstream call: %.300s", tc.errType, out)
						}
						return
					}
					got := up.last()
					if up.count() != before+1 || got.Body == nil || string(got.Body) != tc.body {
						t.Fatalf("the provider did not get the body untouched (%d bytes of %d)", len(got.Body), len(tc.body))
					}
					wantType := tc.ctype
					if wantType == "" {
						wantType = "application/json"
					}
					if got.Header.Get("Content-Type") != wantType {
						t.Fatalf("the provider got content type %q, want %q", got.Header.Get("Content-Type"), wantType)
					}
				})
			}
		})
	}
}

func TestHeaderFloods(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL))
	request := func(headers string) string {
		b := body("m", false)
		return fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s", len(b), headers, b)
	}
	many := func(n, size int) string {
		var sb strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&sb, "X-Flood-%d: %s\r\n", i, strings.Repeat("v", size))
		}
		return sb.String()
	}
	for _, tc := range []struct {
		name    string
		headers string
		status  int
	}{
		// Caddy reads at most 16 KiB of headers by default.
		{"a few hundred small headers", many(300, 8), 200},
		{"thousands of headers", many(5000, 8), 431},
		{"one huge header", "X-Huge: " + strings.Repeat("h", 2<<20) + "\r\n", 431},
		{"a huge header name", strings.Repeat("H", 64<<10) + ": v\r\n", 431},
		{"tens of thousands of empty values", many(20000, 0), 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := rawRequest(t, e, request(tc.headers))
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %.200s", resp.StatusCode, tc.status, out)
			}
			if tc.status == 200 && up.last().Header.Get("X-Flood-299") == "" {
				t.Fatalf("the headers did not reach the provider")
			}
		})
	}
	if resp, _ := e.messages(body("m", false)); resp.StatusCode != 200 {
		t.Fatalf("served nothing after the floods: %d", resp.StatusCode)
	}
}

// trustProxy makes X-Forwarded-For the client address: a request with it
// looks like a remote client's.
const trustProxy = `servers {
	trusted_proxies static 127.0.0.1/32
	client_ip_headers X-Forwarded-For
}`

const remote = "X-Forwarded-For: 203.0.113.9\r\n"

// managementTricks are requests that try to reach the management endpoints
// past their checks.
var managementTricks = []struct{ method, uri string }{
	{"GET", "/providers"},
	{"GET", "/providers/"},
	{"HEAD", "/providers"},
	{"GET", "/providers?format=json"},
	{"GET", "/providers?format=html"},
	{"POST", "/providers/reload"},
	{"GET", "/providers/../v1/messages"},
	{"GET", "/v1/messages/../../providers"},
	{"GET", "//providers"},
	{"GET", "/./providers"},
	{"GET", "/%70roviders"},
	{"GET", "/%2fproviders"},
	{"GET", "/providers;x"},
	{"GET", "/providers%3bx"},
	{"GET", "/providers%00"},
	{"GET", "/PROVIDERS"},
	{"GET", "http://127.0.0.1/providers"},
	{"GET", "/oauth"},
	{"GET", "/oauth/"},
	{"GET", "/oauth/status"},
	{"GET", "/oauth/generate-url?account_email=x@example.com"},
	{"POST", "/oauth/exchange-code"},
	{"POST", "/oauth/refresh/x@example.com"},
	{"DELETE", "/oauth/tokens"},
	{"GET", "/oauth/..%2f..%2fproviders"},
	{"GET", "/oauth/..%2f.."},
	{"GET", "/oauth/%2e%2e/providers"},
	{"GET", "/oauth%2fstatus"},
	{"GET", "/%6fauth/status"},
}

// isManagement reports whether the handler sees uri as a management path.
func isManagement(uri string) bool {
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return false
	}
	p := u.Path
	return p == "/providers" || p == "/providers/" || p == "/providers/reload" || p == "/oauth" || strings.HasPrefix(p, "/oauth/")
}

// leaksState reports whether an answer shows the balancer's state or an
// OAuth page.
func leaksState(out []byte) bool {
	for _, s := range []string{`"base_url"`, `"balancer"`, "login_url", "<html", "<!DOCTYPE"} {
		if bytes.Contains(out, []byte(s)) {
			return true
		}
	}
	return false
}

func TestManagementRefusesRemoteClientsWhateverThePath(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	conf := fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}\nprovider max {\nbase_url %s\noauth x@example.com\n}", up.URL, up.URL)
	e := start(t, conf)
	e.load(conf, trustProxy)
	for _, tc := range managementTricks {
		t.Run(tc.method+" "+tc.uri, func(t *testing.T) {
			resp, out := rawRequest(t, e, tc.method+" "+tc.uri+" HTTP/1.1\r\nHost: localhost\r\n"+remote+"Content-Length: 0\r\n\r\n")
			want := 404
			if isManagement(tc.uri) {
				want = 403
			}
			if resp.StatusCode != want && resp.StatusCode != 400 {
				t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, want, out)
			}
			if leaksState(out) {
				t.Fatalf("a remote client got management content: %.300s", out)
			}
		})
	}
	// The same paths from a loopback client do reach the endpoints.
	resp, out := rawRequest(t, e, "GET /%70roviders HTTP/1.1\r\nHost: localhost\r\n\r\n")
	if resp.StatusCode != 200 || !leaksState(out) {
		t.Fatalf("local /providers: %d %.200s", resp.StatusCode, out)
	}
}

func TestAdminKeyRequiredWhateverThePath(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	const key = "adm-9f86d081884c7d659a2feaa0c55ad015"
	conf := fmt.Sprintf("admin_key %s\nprovider a {\nbase_url %s\napi_key k\n}\nprovider max {\nbase_url %s\noauth x@example.com\n}", key, up.URL, up.URL)
	e := start(t, conf)
	e.load(conf, trustProxy)
	for _, from := range []string{"local", "remote"} {
		for _, cred := range []struct{ name, query, header string }{
			{"no key", "", ""},
			{"key in the query", "admin_key=" + key + "&key=" + key, ""},
			{"key in a cookie", "", "Cookie: admin_key=" + key + "\r\n"},
			{"wrong key", "", "X-Admin-Key: " + key[:len(key)-1] + "\r\n"},
			{"longer key", "", "Authorization: Bearer " + key + "0\r\n"},
			{"client key header", "", "X-Api-Key: " + key + "\r\n"},
		} {
			for _, tc := range managementTricks {
				uri := tc.uri
				if cred.query != "" {
					if strings.Contains(uri, "?") {
						uri += "&" + cred.query
					} else {
						uri += "?" + cred.query
					}
				}
				hdr := cred.header
				if from == "remote" {
					hdr += remote
				}
				resp, out := rawRequest(t, e, tc.method+" "+uri+" HTTP/1.1\r\nHost: localhost\r\n"+hdr+"Content-Length: 0\r\n\r\n")
				want := 404
				if isManagement(uri) {
					want = 401
				}
				if resp.StatusCode != want && resp.StatusCode != 400 || leaksState(out) {
					t.Errorf("%s, %s: %s %s: status %d, want %d: %.200s", from, cred.name, tc.method, uri, resp.StatusCode, want, out)
				}
			}
		}
	}
	resp, out := rawRequest(t, e, "GET /providers HTTP/1.1\r\nHost: localhost\r\n"+remote+"X-Admin-Key: "+key+"\r\n\r\n")
	if resp.StatusCode != 200 || !leaksState(out) {
		t.Fatalf("remote with the key: %d %.200s", resp.StatusCode, out)
	}
}

func TestClientKeyChecks(t *testing.T) {
	up := newMock(t, okEither("ok"))
	const key = "ck-5e884898da28047151d0e56f8dc62927"
	t.Setenv("CB_HOSTILE_CLIENT_KEY", key)
	conf := fmt.Sprintf("client_keys {env.CB_HOSTILE_CLIENT_KEY} other-key-2\nprovider a {\nbase_url %s\napi_key k\n}", up.URL)
	e := start(t, conf)
	e.load(conf, trustProxy)
	for _, tc := range []struct {
		name   string
		query  string
		header string
		status int
	}{
		{"none", "", "", 401},
		{"x-api-key", "", "X-Api-Key: " + key, 200},
		{"bearer", "", "Authorization: Bearer " + key, 200},
		{"bearer in lower case", "", "Authorization: bearer " + key, 200},
		{"dedicated header", "", "X-Claude-Balancer-Key: " + key, 200},
		{"prefix", "", "X-Api-Key: " + key[:len(key)-1], 401},
		{"extended", "", "X-Api-Key: " + key + "0", 401},
		{"other case", "", "X-Api-Key: " + strings.ToUpper(key), 401},
		{"empty", "", "X-Api-Key: ", 401},
		{"one byte", "", "X-Api-Key: c", 401},
		{"very long", "", "X-Api-Key: " + strings.Repeat(key, 200), 401},
		{"two keys joined", "", "X-Api-Key: " + key + ",other-key-2", 401},
		{"basic scheme", "", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+key)), 401},
		{"token without scheme", "", "Authorization: " + key, 401},
		{"query x-api-key", "x-api-key=" + key, "", 401},
		{"query key", "key=" + key + "&api_key=" + key + "&beta=true", "", 401},
		{"cookie", "", "Cookie: x-api-key=" + key, 401},
		{"admin header", "", "X-Admin-Key: " + key, 401},
	} {
		for _, path := range []string{"/v1/messages", "/v1/messages/count_tokens"} {
			for _, from := range []string{"", remote} {
				uri := path
				if tc.query != "" {
					uri += "?" + tc.query
				}
				hdr := from
				if tc.header != "" {
					hdr += tc.header + "\r\n"
				}
				b := body("m", false)
				before := up.count()
				resp, out := rawRequest(t, e, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s", uri, len(b), hdr, b))
				if resp.StatusCode != tc.status {
					t.Errorf("%s %s (remote %v): status %d, want %d: %.200s", tc.name, path, from != "", resp.StatusCode, tc.status, out)
					continue
				}
				if tc.status == 401 && (!isEnvelope(out, "authentication_error") || up.count() != before) {
					t.Errorf("%s %s: want an authentication_error envelope and no upstream call: %.200s", tc.name, path, out)
				}
				if strings.Contains(string(out), key) {
					t.Errorf("%s %s: the answer repeats the key", tc.name, path)
				}
			}
		}
	}
}

// TestKeysAreComparedInConstantTime checks the source rather than timing
// answers, which would be flaky: keyMatches hashes both keys with SHA-256
// (so keys of any length compare as 32 bytes) and compares the digests with
// crypto/subtle, and every key check goes through it. The behaviour with
// keys of other lengths is in TestClientKeyChecks.
func TestKeysAreComparedInConstantTime(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "../access.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]map[string]bool{}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok {
			continue
		}
		got := map[string]bool{}
		ast.Inspect(fn, func(n ast.Node) bool {
			if c, ok := n.(*ast.CallExpr); ok {
				switch fun := c.Fun.(type) {
				case *ast.SelectorExpr:
					if x, ok := fun.X.(*ast.Ident); ok {
						got[x.Name+"."+fun.Sel.Name] = true
					}
				case *ast.Ident:
					got[fun.Name] = true
				}
			}
			return true
		})
		calls[fn.Name.Name] = got
	}
	km := calls["keyMatches"]
	if km == nil || !km["sha256.Sum256"] || !km["subtle.ConstantTimeCompare"] {
		t.Fatalf("keyMatches does not compare SHA-256 digests with crypto/subtle: %v", km)
	}
	for _, fn := range []string{"authorizeClient", "management"} {
		if !calls[fn]["keyMatches"] {
			t.Errorf("%s does not check keys with keyMatches", fn)
		}
	}
}

// TestProviderConfigErrorsAreReported loads configs a provider rejects: each
// must come back as an error naming the problem (and no secret), with the
// running config kept.
func TestProviderConfigErrorsAreReported(t *testing.T) {
	up := newMock(t, okJSON("ok"))
	good := fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL)
	e := start(t, good)
	t.Setenv("CB_CONFIG_SECRET", "sekrit-config-7f1e")
	t.Setenv("CB_CONFIG_EMPTY", "")
	for _, tc := range []struct{ name, provider, want string }{
		{"proxy without a host", "proxy http://u:{env.CB_CONFIG_SECRET}@", "invalid proxy URL"},
		{"proxy that does not parse", "proxy http://u:{env.CB_CONFIG_SECRET}@host:port:x/", "invalid proxy URL"},
		{"proxy scheme", "proxy ftp://u:{env.CB_CONFIG_SECRET}@127.0.0.1:1", "not supported"},
		{"empty credential", "api_key {env.CB_CONFIG_EMPTY}", "credential is empty"},
		{"two credentials", "api_key k\nauth_token t", "choose one"},
		{"unknown type", "type grpc", "provider type"},
		{"OAuth over OpenAI", "type openai\noauth me@example.com", "need type anthropic"},
		{"header that cannot be set", "header Host example.com", "cannot be set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			block := fmt.Sprintf("provider b {\nbase_url %s\n%s\n}\n%s", up.URL, tc.provider, good)
			msg := e.loadErr(e.caddyfile(block, ""))
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "sekrit-config") {
				t.Fatalf("error %q: want %q and no secret", msg, tc.want)
			}
			if resp, _ := e.messages(body("m", false)); resp.StatusCode != 200 {
				t.Fatalf("the running config was lost: %d", resp.StatusCode)
			}
		})
	}
}

// secretTokens is a Claude-like OAuth token endpoint whose tokens carry
// markers in their middle, where masked previews never reach.
type secretTokens struct {
	mu     sync.Mutex
	issued []string
	prefix string
}

func (s *secretTokens) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.issued)
	at := fmt.Sprintf("%sAccess%d", s.prefix, n)
	rt := fmt.Sprintf("%sRefresh%d", s.prefix, n)
	s.issued = append(s.issued, at, rt)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":"sk-ant-oat01-%s-tail","refresh_token":"sk-ant-ort01-%s-tail","expires_in":28800,"token_type":"Bearer","scope":"user:inference"}`, at, rt)
}

func randomMarker(t *testing.T, name string) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "sekrit" + name + hex.EncodeToString(b)
}

// TestSecretsNeverLeak configures every kind of secret through {env.*},
// drives successes and failures through all of them, and greps everything
// the balancer and Caddy show: log files at DEBUG (Caddy's and the access
// log), answers and their headers, the status endpoints and page, the
// admin API, metrics, the adapted config and a config error.
func TestSecretsNeverLeak(t *testing.T) {
	secrets := map[string]string{}
	for _, name := range []string{"API_KEY", "AUTH_TOKEN", "HEADER", "PROXY_PASS", "CLIENT_KEY", "ADMIN_KEY", "TEAM_KEY"} {
		secrets[name] = randomMarker(t, strings.ReplaceAll(strings.ToLower(name), "_", ""))
		t.Setenv("CB_SECRET_"+name, secrets[name])
	}
	tokens := &secretTokens{prefix: randomMarker(t, "oauth")}
	ts := newHTTPServer(t, tokens)

	// The provider answers according to the model: failures on demand.
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case strings.HasSuffix(r.URL.Path, "/count_tokens"):
			if r.Header.Get("X-Api-Key") == "" {
				errorStatus(500, "api_error", "no counting here")(w, r, n)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"input_tokens":7}`)
		case bytes.Contains(b, []byte("fail401")):
			errorStatus(401, "authentication_error", "invalid x-api-key")(w, r, n)
		case bytes.Contains(b, []byte("fail500")):
			errorStatus(500, "api_error", "internal")(w, r, n)
		default:
			r.Body = io.NopCloser(bytes.NewReader(b))
			okEither("fine")(w, r, n)
		}
	})
	// The proxy answers as the provider once the proxy password checks out.
	wantProxyAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("cb:"+secrets["PROXY_PASS"]))
	var proxied int
	var proxyMu sync.Mutex
	proxy := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.Header.Get("Proxy-Authorization") != wantProxyAuth {
			w.WriteHeader(http.StatusProxyAuthRequired)
			return
		}
		proxyMu.Lock()
		proxied++
		proxyMu.Unlock()
		okEither("via proxy")(w, r, n)
	})
	dir := t.TempDir()
	logFile, accessFile := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "access.log")
	block := fmt.Sprintf(`
		client_keys {env.CB_SECRET_CLIENT_KEY}
		client erin {
			key {env.CB_SECRET_TEAM_KEY}
			rate 1000/1m
			tokens 1000000/5h
			pricing * 3 15 0.3 3.75
		}
		admin_key {env.CB_SECRET_ADMIN_KEY}
		max_request_body 1MiB
		sticky 0
		health {
			threshold 100
		}
		oauth {
			token_url %[1]s/token
			authorize_url %[1]s/authorize
		}
		provider key {
			base_url %[2]s
			api_key {env.CB_SECRET_API_KEY}
			header X-Org-Secret {env.CB_SECRET_HEADER}
		}
		provider tok {
			base_url %[2]s
			auth_token {env.CB_SECRET_AUTH_TOKEN}
		}
		provider prx {
			base_url http://upstream.invalid
			api_key {env.CB_SECRET_API_KEY}
			proxy http://cb:{env.CB_SECRET_PROXY_PASS}@%[3]s
		}
		provider max {
			base_url %[2]s
			oauth secrets-test@example.com
		}
		provider dead {
			base_url %[4]s
			auth_token {env.CB_SECRET_AUTH_TOKEN}
		}
		route m-key {
			to key
		}
		route m-tok {
			to tok
		}
		route m-prx {
			to prx
		}
		route m-max {
			to max
			to key
		}
		route m-fail {
			to dead
			to key
			to tok
		}
		route * {
			to key
			to tok
		}`, ts.URL, up.URL, strings.TrimPrefix(proxy.URL, "http://"), refusedURL(t))
	global := fmt.Sprintf("log {\noutput file %s\nformat json\nlevel DEBUG\n}", logFile)
	e := start(t, block)
	// Caddy does not redact X-Api-Key and the other key headers in access
	// logs (only Authorization, Cookie and their proxy twins), so a site that
	// logs requests filters them, as the README says.
	caddyfile := globalOptions(global) + fmt.Sprintf(`
:%d {
	log {
		output file %s
		format filter {
			wrap json
			request>headers>X-Api-Key delete
			request>headers>X-Claude-Balancer-Key delete
			request>headers>X-Admin-Key delete
		}
		level DEBUG
	}
	claude_balancer {
		name %s
%s
	}
}
`, httpPort, accessFile, e.name, indent(block, "\t\t"))
	e.tester.InitServer(caddyfile, "caddyfile")
	e.client = &http.Client{Timeout: 30 * time.Second}
	client := []string{"X-Api-Key", secrets["CLIENT_KEY"]}
	admin := []string{"Authorization", "Bearer " + secrets["ADMIN_KEY"]}
	waitFor(t, "the config to serve", func() bool {
		resp, err := http.Get(e.base + "/health")
		if err != nil {
			return false
		}
		var doc struct{ Balancer string }
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		return doc.Balancer == e.name
	})

	var seen bytes.Buffer
	apiCalls := 0
	keep := func(what string, resp *http.Response, out []byte) {
		fmt.Fprintf(&seen, "== %s: %d\n", what, resp.StatusCode)
		_ = resp.Header.Write(&seen)
		seen.Write(out)
		seen.WriteByte('\n')
	}
	call := func(method, path string, b []byte, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, e.base+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		keep(method+" "+path, resp, out)
		if strings.HasPrefix(path, "/v1/") {
			apiCalls++
		}
		return resp, out
	}
	expect := func(what string, resp *http.Response, out []byte, status int) {
		t.Helper()
		if resp.StatusCode != status {
			t.Fatalf("%s: status %d, want %d: %.300s", what, resp.StatusCode, status, out)
		}
	}

	// Log the OAuth account in.
	resp, out := call("GET", "/oauth/generate-url?account_email=secrets-test@example.com", nil, admin...)
	expect("generate-url", resp, out, 200)
	var gen struct{ State string }
	_ = json.Unmarshal(out, &gen)
	resp, out = call("POST", "/oauth/exchange-code", []byte(fmt.Sprintf(`{"code":"c#%s","account_email":"secrets-test@example.com"}`, gen.State)), admin...)
	expect("exchange-code", resp, out, 200)
	// The login lives in the storage every test shares.
	t.Cleanup(func() {
		req, _ := http.NewRequest(http.MethodDelete, e.base+"/oauth/tokens/secrets-test@example.com", nil)
		req.Header.Set("X-Admin-Key", secrets["ADMIN_KEY"])
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})

	// Successes through every credential, both modes, every way of
	// presenting the client key.
	for _, stream := range []bool{false, true} {
		for _, model := range []string{"m-key", "m-tok", "m-prx", "m-max"} {
			resp, out = call("POST", "/v1/messages", body(model, stream), client...)
			expect(model, resp, out, 200)
		}
	}
	resp, out = call("POST", "/v1/messages", body("m-key", false, `"x":1`), "Authorization", "Bearer "+secrets["CLIENT_KEY"])
	expect("bearer client key", resp, out, 200)
	resp, out = call("POST", "/v1/messages", body("m-key", false, `"x":2`), "X-Claude-Balancer-Key", secrets["CLIENT_KEY"])
	expect("dedicated client key header", resp, out, 200)
	resp, out = call("POST", "/v1/messages", body("m-key", false, `"x":3`), "X-Api-Key", secrets["TEAM_KEY"])
	expect("a named client's key", resp, out, 200)
	// Failures: credentials rejected upstream, every provider failing, a
	// refused connection, a refresh, refused clients and admins, bad bodies.
	resp, out = call("POST", "/v1/messages", body("m-key", false, `"fail401":1`), client...)
	// The operator's credential: never the client's to fix.
	expect("upstream 401", resp, out, 502)
	resp, out = call("POST", "/v1/messages", body("m-fail", true, `"fail500":1`), client...)
	expect("all failed", resp, out, 500)
	resp, out = call("POST", "/v1/messages", body("m-max", false, `"fail401":1`), client...)
	expect("OAuth 401", resp, out, 502)
	resp, out = call("POST", "/oauth/refresh/secrets-test@example.com", nil, admin...)
	expect("refresh", resp, out, 200)
	resp, out = call("POST", "/v1/messages", body("m-key", false), "X-Api-Key", secrets["CLIENT_KEY"]+"x")
	expect("wrong client key", resp, out, 401)
	resp, out = call("GET", "/providers", nil, "X-Admin-Key", secrets["ADMIN_KEY"]+"x")
	expect("wrong admin key", resp, out, 401)
	resp, out = call("POST", "/v1/messages", append(body("m-key", false, `"pad":"`), bytes.Repeat([]byte("x"), 2<<20)...), client...)
	expect("too large", resp, out, 413)
	resp, out = call("POST", "/v1/messages", []byte(`{"model":`), client...)
	expect("malformed", resp, out, 400)
	// count_tokens, upstream and local.
	resp, out = call("POST", "/v1/messages/count_tokens", body("m-key", false), client...)
	expect("count upstream", resp, out, 200)
	resp, out = call("POST", "/v1/messages/count_tokens", body("m-tok", false), client...)
	expect("count local", resp, out, 200)
	// Every status view.
	for _, view := range [][]string{
		{"/providers"}, {"/providers?format=html"}, {"/providers", "Accept", "text/html"},
		{"/oauth/status"}, {"/oauth/"}, {"/health"}, {"/"},
	} {
		resp, out = call("GET", view[0], nil, append(admin, view[1:]...)...)
		expect(view[0], resp, out, 200)
	}
	resp, out = call("GET", "/oauth/status", nil, "X-Api-Key", secrets["CLIENT_KEY"])
	expect("status with the client key", resp, out, 401)

	// The requests really carried the secrets upstream.
	var sawKey, sawToken, sawHeader, sawOAuth bool
	for _, r := range up.requests() {
		sawKey = sawKey || r.Header.Get("X-Api-Key") == secrets["API_KEY"]
		sawToken = sawToken || r.Header.Get("Authorization") == "Bearer "+secrets["AUTH_TOKEN"]
		sawHeader = sawHeader || r.Header.Get("X-Org-Secret") == secrets["HEADER"]
		sawOAuth = sawOAuth || strings.HasPrefix(r.Header.Get("Authorization"), "Bearer sk-ant-oat01-"+tokens.prefix)
	}
	proxyMu.Lock()
	viaProxy := proxied
	proxyMu.Unlock()
	tokens.mu.Lock()
	issued := append([]string(nil), tokens.issued...)
	tokens.mu.Unlock()
	if !sawKey || !sawToken || !sawHeader || !sawOAuth || viaProxy == 0 || len(issued) < 4 {
		t.Fatalf("secrets not exercised: key %v token %v header %v oauth %v proxy %d tokens %d", sawKey, sawToken, sawHeader, sawOAuth, viaProxy, len(issued))
	}

	// Caddy's admin API, metrics and the adapted config.
	sources := map[string][]byte{"answers": seen.Bytes()}
	for _, path := range []string{"/config/", "/claude_balancer/providers", "/claude_balancer/oauth/status?balancer=" + e.name, "/metrics"} {
		status, out := adminDo(t, http.MethodGet, path)
		if status != 200 {
			t.Fatalf("admin %s: %d %s", path, status, out)
		}
		sources["admin "+path] = out
	}
	req, _ := http.NewRequest(http.MethodPost, adminURL("/adapt"), strings.NewReader(caddyfile))
	req.Header.Set("Content-Type", "text/caddyfile")
	aresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	adapted, _ := io.ReadAll(aresp.Body)
	aresp.Body.Close()
	if aresp.StatusCode != 200 || !bytes.Contains(adapted, []byte("{env.CB_SECRET_API_KEY}")) {
		t.Fatalf("adapt: %d %.300s", aresp.StatusCode, adapted)
	}
	sources["caddy adapt"] = adapted
	// A config whose proxy URL is invalid names the URL in its error.
	bad := strings.Replace(caddyfile, "@"+strings.TrimPrefix(proxy.URL, "http://"), "@", 1)
	sources["config error"] = []byte(e.loadErr(bad))

	// Every request's log line is written before the logs are read.
	resp, out = call("POST", "/v1/messages", body("m-last", false), client...)
	expect("last", resp, out, 200)
	waitFor(t, "the last request in the logs", func() bool {
		l, _ := os.ReadFile(logFile)
		a, _ := os.ReadFile(accessFile)
		return bytes.Contains(l, []byte(`"model":"m-last"`)) && bytes.Count(a, []byte(`"uri":"/v1/messages`)) == apiCalls
	})
	for name, file := range map[string]string{"Caddy's log": logFile, "the access log": accessFile} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		sources[name] = b
	}
	if !bytes.Contains(sources["Caddy's log"], []byte(`"level":"debug"`)) || !bytes.Contains(sources["Caddy's log"], []byte("provider error")) {
		t.Fatalf("Caddy's log lacks debug or provider error lines:\n%.2000s", sources["Caddy's log"])
	}

	markers := map[string]string{"proxy password in basic auth": base64.StdEncoding.EncodeToString([]byte("cb:" + secrets["PROXY_PASS"]))}
	for name, s := range secrets {
		markers[name] = s
	}
	for _, tok := range issued {
		markers["OAuth token "+tok] = tok
	}
	for what, src := range sources {
		for name, m := range markers {
			if i := bytes.Index(src, []byte(m)); i >= 0 {
				t.Errorf("%s shows the %s: ...%s...", what, name, src[max(0, i-200):min(len(src), i+len(m)+50)])
			}
		}
	}
}

// newHTTPServer starts a test server for a handler.
func newHTTPServer(t *testing.T, h http.Handler) *mock {
	m := newMock(t, func(w http.ResponseWriter, r *http.Request, _ int) { h.ServeHTTP(w, r) })
	return m
}
