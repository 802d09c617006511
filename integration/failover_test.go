package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func twoProviders(aURL, bURL, extra string) string {
	return fmt.Sprintf(`
		provider a {
			base_url %s
			api_key ka
			timeouts {
				first_byte 500ms
				idle 500ms
			}
		}
		provider b {
			base_url %s
			api_key kb
		}
		%s`, aURL, bURL, extra)
}

// refusedURL is an address nothing listens on.
func refusedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestFailoverBeforeCommit(t *testing.T) {
	overloaded, err := os.ReadFile("../testdata/anthropic-stream-overloaded-before-content.sse")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		stream bool
		behave func(http.ResponseWriter, *http.Request, int)
	}{
		{"500", false, errorStatus(500, "api_error", "internal")},
		{"502 html", false, func(w http.ResponseWriter, r *http.Request, _ int) {
			w.WriteHeader(502)
			io.WriteString(w, "<html>bad gateway</html>")
		}},
		{"529 overloaded", true, errorStatus(529, "overloaded_error", "Overloaded")},
		{"429 rate limited", false, errorStatus(429, "rate_limit_error", "slow down")},
		{"401 credential", false, errorStatus(401, "authentication_error", "invalid x-api-key")},
		{"403 credential", true, errorStatus(403, "permission_error", "forbidden")},
		{"400 credit balance", false, errorStatus(400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API.")},
		{"connection closed", false, hangUp},
		{"first byte timeout", true, stall},
		{"error event before content", true, func(w http.ResponseWriter, r *http.Request, _ int) {
			writeSSE(w, readSSE(overloaded))
		}},
		{"stream ends before content", true, func(w http.ResponseWriter, r *http.Request, _ int) {
			writeSSE(w, sseEvents("x")[:1])
		}},
		{"connection cut before content", true, cutAfter(1, "x")},
		{"200 with error body", false, func(w http.ResponseWriter, r *http.Request, _ int) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"type":"error","error":{"type":"api_error","message":"hidden failure"}}`)
		}},
		{"200 with invalid json", false, func(w http.ResponseWriter, r *http.Request, _ int) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"msg_1","content":[`)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newMock(t, tc.behave)
			b := newMock(t, okEither("from b"))
			e := start(t, twoProviders(a.URL, b.URL, ""))
			resp, out := e.messages(body("claude-sonnet-4-5", tc.stream))
			if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Provider") != "b" {
				t.Fatalf("status %d provider %q: %s", resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Provider"), out)
			}
			if !strings.Contains(string(out), "from b") || strings.Contains(string(out), "Overloaded") {
				t.Fatalf("client saw something other than b's answer: %s", out)
			}
			if a.count() != 1 || b.count() != 1 {
				t.Fatalf("calls a=%d b=%d", a.count(), b.count())
			}
			if p := e.providers()["a"]; p.ErrorCount != 1 && !p.QuotaCooldown {
				t.Fatalf("a's errors = %s, want 1", p.Errors)
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		b := newMock(t, okEither("from b"))
		e := start(t, twoProviders(refusedURL(t), b.URL, ""))
		resp, out := e.messages(body("m", true))
		if resp.StatusCode != 200 || !strings.Contains(string(out), "from b") {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		if p := e.providers()["a"]; p.ErrorCount != 1 || !strings.Contains(p.LastError, "refused") {
			t.Fatalf("a: %+v", p)
		}
	})
}

func TestNoFailoverAfterCommit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		behave func(http.ResponseWriter, *http.Request, int)
		want   string
	}{
		{"error event after content", func(w http.ResponseWriter, r *http.Request, _ int) {
			evs := sseEvents("partial")
			writeSSE(w, append(evs[:4:4], "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"))
		}, "overloaded_error"},
		{"connection cut after content", cutAfter(4, "partial"), "api_error"},
		{"idle timeout after content", func(w http.ResponseWriter, r *http.Request, _ int) {
			writeSSE(w, sseEvents("partial")[:4])
			<-r.Context().Done()
		}, "timeout_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newMock(t, tc.behave)
			b := newMock(t, okEither("from b"))
			e := start(t, twoProviders(a.URL, b.URL, ""))
			resp, out := e.messages(body("m", true))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			evs := readSSE(out)
			if len(evs) < 2 || !strings.Contains(evs[len(evs)-1], "event: error") || !strings.Contains(evs[len(evs)-1], tc.want) {
				t.Fatalf("stream did not end with an error frame of type %s:\n%s", tc.want, out)
			}
			if !strings.Contains(string(out), "partial") || strings.Contains(string(out), "from b") {
				t.Fatalf("unexpected content: %s", out)
			}
			if b.count() != 0 {
				t.Fatalf("b was called after commit")
			}
			if p := e.providers()["a"]; p.ErrorCount != 1 {
				t.Fatalf("a's errors = %s, want 1", p.Errors)
			}
		})
	}
}

func TestRequestErrorsGoBackUntouched(t *testing.T) {
	for _, status := range []int{400, 413, 422} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			a := newMock(t, errorStatus(status, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"))
			b := newMock(t, okEither("from b"))
			e := start(t, twoProviders(a.URL, b.URL, ""))
			resp, out := e.messages(body("m", true))
			want := `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 250000 tokens > 200000 maximum"}}`
			if resp.StatusCode != status || string(out) != want {
				t.Fatalf("got %d %s", resp.StatusCode, out)
			}
			if resp.Header.Get("Request-Id") != "req_err" {
				t.Fatalf("request-id not passed back")
			}
			if b.count() != 0 {
				t.Fatalf("request error was failed over")
			}
			if p := e.providers()["a"]; p.ErrorCount != 0 || !p.Healthy {
				t.Fatalf("a was penalized: %+v", p)
			}
		})
	}
}

func TestAllFailedNamesEveryProvider(t *testing.T) {
	a := newMock(t, errorStatus(500, "api_error", "a is down"))
	b := newMock(t, errorStatus(503, "overloaded_error", "b is busy", "Retry-After", "7"))
	e := start(t, twoProviders(a.URL, b.URL, ""))
	resp, out := e.messages(body("claude-x", false))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("status %d retry-after %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), out)
	}
	var env struct {
		Type  string `json:"type"`
		Error struct{ Type, Message string }
	}
	if err := json.Unmarshal(out, &env); err != nil || env.Type != "error" || env.Error.Type != "overloaded_error" {
		t.Fatalf("envelope: %s", out)
	}
	for _, s := range []string{"a: HTTP 500", "a is down", "b: HTTP 503", "b is busy"} {
		if !strings.Contains(env.Error.Message, s) {
			t.Errorf("message %q lacks %q", env.Error.Message, s)
		}
	}
}

func TestNoneAvailable(t *testing.T) {
	a := newMock(t, errorStatus(500, "api_error", "down"))
	b := newMock(t, errorStatus(429, "rate_limit_error", "limited", "Retry-After", "30"))
	e := start(t, twoProviders(a.URL, b.URL, `
		health {
			threshold 1
			cooldown 1m
		}`))
	resp, _ := e.messages(body("m", false))
	if resp.StatusCode != 429 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	// a cools down for errors (60s), b for quota (30s): the soonest is b.
	resp, out := e.messages(body("m", false))
	if resp.StatusCode != 503 || !strings.Contains(string(out), "overloaded_error") {
		t.Fatalf("status %d: %s", resp.StatusCode, out)
	}
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if ra < 25 || ra > 30 {
		t.Fatalf("retry-after %q, want about 30", resp.Header.Get("Retry-After"))
	}
	if a.count() != 1 || b.count() != 1 {
		t.Fatalf("providers in cooldown were called: a=%d b=%d", a.count(), b.count())
	}

	// Everything cooling down for quota answers 429.
	q := newMock(t, errorStatus(429, "rate_limit_error", "limited", "Retry-After", "30"))
	e = start(t, fmt.Sprintf("provider q {\nbase_url %s\napi_key k\n}", q.URL))
	e.messages(body("m", false))
	resp, out = e.messages(body("m", false))
	if resp.StatusCode != 429 || !strings.Contains(string(out), "rate_limit_error") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("all quota: %d %s", resp.StatusCode, out)
	}
}

func TestThresholdCooldownHalfOpenAndReset(t *testing.T) {
	a := newMock(t, errorStatus(500, "api_error", "down"))
	b := newMock(t, okEither("from b"))
	e := start(t, twoProviders(a.URL, b.URL, `
		sticky 0
		health {
			threshold 2
			cooldown 400ms
		}`))
	e.messages(body("m", false))
	if p := e.providers()["a"]; p.Errors != "1/2" || !p.Healthy {
		t.Fatalf("after one error: %+v", p)
	}
	e.messages(body("m", false))
	if p := e.providers()["a"]; p.Errors != "2/2" || p.Healthy || p.State != "cooldown" {
		t.Fatalf("after two errors: %+v", p)
	}
	e.messages(body("m", false))
	if a.count() != 2 {
		t.Fatalf("a was called while cooling down")
	}
	// After the cooldown a failed trial restarts it at once.
	waitFor(t, "cooldown end", func() bool { return e.providers()["a"].State == "half_open" })
	e.messages(body("m", false))
	if p := e.providers()["a"]; a.count() != 3 || p.State != "cooldown" {
		t.Fatalf("failed trial: calls %d state %+v", a.count(), p)
	}
	// A successful trial heals it.
	a.set(okEither("from a"))
	waitFor(t, "cooldown end", func() bool { return e.providers()["a"].State == "half_open" })
	resp, _ := e.messages(body("m", false))
	if p := e.providers()["a"]; resp.Header.Get("X-Claude-Balancer-Provider") != "a" || p.State != "healthy" || p.ErrorCount != 0 {
		t.Fatalf("successful trial: provider %q state %+v", resp.Header.Get("X-Claude-Balancer-Provider"), p)
	}
}

func TestErrorCountDecays(t *testing.T) {
	a := newMock(t, errorStatus(500, "api_error", "down"))
	b := newMock(t, okEither("from b"))
	e := start(t, twoProviders(a.URL, b.URL, `
		sticky 0
		health {
			threshold 2
			reset_after 300ms
		}`))
	e.messages(body("m", false))
	if p := e.providers()["a"]; p.ErrorCount != 1 {
		t.Fatalf("errors %s", p.Errors)
	}
	waitFor(t, "decay", func() bool { return e.providers()["a"].ErrorCount == 0 })
	e.messages(body("m", false))
	if p := e.providers()["a"]; p.ErrorCount != 1 || !p.Healthy {
		t.Fatalf("a second error after the decay must start again at 1: %+v", p)
	}
}

func TestQuotaCooldownHonoursRetryAfterAndResetHeaders(t *testing.T) {
	reset := time.Now().Add(90 * time.Second).UTC().Format(time.RFC3339)
	for name, behave := range map[string]func(http.ResponseWriter, *http.Request, int){
		"retry-after": errorStatus(429, "rate_limit_error", "slow down", "Retry-After", "90"),
		"ratelimit reset": errorStatus(429, "rate_limit_error", "slow down",
			"Anthropic-Ratelimit-Tokens-Remaining", "0", "Anthropic-Ratelimit-Tokens-Reset", reset),
	} {
		t.Run(name, func(t *testing.T) {
			a := newMock(t, behave)
			b := newMock(t, okEither("from b"))
			e := start(t, twoProviders(a.URL, b.URL, "sticky 0"))
			e.messages(body("m", false))
			p := e.providers()["a"]
			if p.Healthy || !p.QuotaCooldown || p.CooldownRemaining < 80 || p.CooldownRemaining > 91 {
				t.Fatalf("a after a 429: %+v", p)
			}
			e.messages(body("m", false))
			if a.count() != 1 {
				t.Fatalf("a was called during its quota cooldown")
			}
		})
	}
}

func TestStickinessPerSessionAndRoute(t *testing.T) {
	a := newMock(t, okEither("from a"))
	b := newMock(t, okEither("from b"))
	e := start(t, twoProviders(a.URL, b.URL, `
		route *sonnet* {
			to a
			to b
		}
		route *haiku* {
			to a
			to b
		}`))
	// Session s1's first turn fails over to b: a is below its threshold and
	// stays healthy, but s1 keeps going to b, whose cache is warm.
	a.set(func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 0 {
			errorStatus(500, "api_error", "blip")(w, r, n)
			return
		}
		okEither("from a")(w, r, n)
	})
	s1 := []string{"X-Claude-Code-Session-Id", "s1"}
	resp, _ := e.messages(body("claude-sonnet-4-5", false), s1...)
	if resp.Header.Get("X-Claude-Balancer-Provider") != "b" {
		t.Fatalf("first turn: %q", resp.Header.Get("X-Claude-Balancer-Provider"))
	}
	for i := 0; i < 3; i++ {
		resp, _ = e.messages(body("claude-sonnet-4-5", false), s1...)
		if resp.Header.Get("X-Claude-Balancer-Provider") != "b" {
			t.Fatalf("turn %d of s1 went to %q", i+2, resp.Header.Get("X-Claude-Balancer-Provider"))
		}
	}
	// Another session, and the same session on another route, start on a.
	resp, _ = e.messages(body("claude-sonnet-4-5", false), "X-Claude-Code-Session-Id", "s2")
	if resp.Header.Get("X-Claude-Balancer-Provider") != "a" {
		t.Fatalf("s2 went to %q (a called %d times, last %+v)", resp.Header.Get("X-Claude-Balancer-Provider"), a.count(), e.providers()["a"])
	}
	resp, _ = e.messages(body("claude-haiku-4-5", false), s1...)
	if resp.Header.Get("X-Claude-Balancer-Provider") != "a" {
		t.Fatalf("s1 on the haiku route went to %q", resp.Header.Get("X-Claude-Balancer-Provider"))
	}
	// The session id inside metadata.user_id binds too.
	meta := `"metadata":{"user_id":"{\"device_id\":\"d\",\"account_uuid\":\"\",\"session_id\":\"s1\"}"}`
	resp, _ = e.messages(body("claude-sonnet-4-5", false, meta))
	if resp.Header.Get("X-Claude-Balancer-Provider") != "b" {
		t.Fatalf("metadata session went to %q", resp.Header.Get("X-Claude-Balancer-Provider"))
	}
}

func TestStreamEndsAtMessageStopEvenIfTheProviderKeepsTheConnection(t *testing.T) {
	done := make(chan struct{})
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		writeSSE(w, sseEvents("complete"))
		// The provider never closes; the balancer must not wait for it.
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})
	defer close(done)
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\ntimeouts {\nidle 30s\n}\n}", up.URL))
	e.client.Timeout = 5 * time.Second
	resp, out := e.messages(body("m", true))
	if resp.StatusCode != 200 || string(out) != strings.Join(sseEvents("complete"), "") {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	if p := e.providers()["a"]; p.ErrorCount != 0 {
		t.Fatalf("a complete stream counted as an error: %+v", p)
	}
}
