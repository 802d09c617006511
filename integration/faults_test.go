//go:build linux

package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// faultTimeouts are provider a's timeouts in the fault matrix, unless a
// case sets its own.
const faultTimeouts = "connect 200ms\nfirst_byte 300ms\nidle 300ms"

// faultConfig has provider a, the one that misbehaves, first and a healthy
// b second. Model "warm" goes to b only, for the warm-up request. The
// threshold is high enough that one failure never takes a out.
func faultConfig(aURL, aOpts, timeouts, bURL, bOpts, extra string) string {
	auth := "api_key ka"
	if strings.Contains(aOpts, "passthrough_auth") {
		auth = ""
	}
	return fmt.Sprintf(`
		sticky 0
		health {
			threshold 5
		}
		provider a {
			base_url %s
			%s
			timeouts {
				%s
			}
			%s
		}
		provider b {
			base_url %s
			api_key kb
			%s
		}
		route warm {
			to b
		}
		route * {
			to a
			to b
		}
		%s`, aURL, auth, timeouts, aOpts, bURL, bOpts, extra)
}

// Outcomes of a fault case.
const (
	failover = "failover" // b answers; a's failure stays invisible
	frame    = "frame"    // a's stream started, then ended with an error frame
	answered = "answered" // a answered correctly
	failed   = "failed"   // every provider failed: an error envelope
)

// event builds one SSE event.
func event(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }

func textDelta(text string) string {
	return event("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%q}}`, text))
}

// streamThen writes events, then waits until the balancer lets go of the
// request, keeping the connection open.
func streamThen(events []string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		writeSSE(w, events)
		<-r.Context().Done()
	}
}

// faultCase is one row of the fault matrix: how provider a misbehaves and
// what the client, a's health and b must show for it.
type faultCase struct {
	name   string
	stream bool
	a      func(http.ResponseWriter, *http.Request, int)
	// aURL replaces a's mock when a is not an HTTP server.
	aURL  func(t *testing.T) string
	aOpts func(t *testing.T) string
	// timeouts of a; faultTimeouts when empty.
	timeouts string
	// b replaces b's good answers; b then gets a's timeouts.
	b       func(http.ResponseWriter, *http.Request, int)
	want    string
	errType string // of the error frame or envelope
	aErrors int    // a's counted errors afterwards
	quota   bool   // a cools down for quota instead
	reason  string // in a's last error
	// within bounds the whole answer; 3s when zero.
	within time.Duration
}

func passthrough(*testing.T) string { return "passthrough_auth" }

func TestFaultMatrix(t *testing.T) {
	evs := sseEvents("partial")
	ok := sseEvents("from a")
	oversize := event("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`+strings.Repeat("x", 9<<20)+`"}}`)
	var drip []string
	for i := 0; i < 20; i++ {
		drip = append(drip, textDelta(fmt.Sprintf("d%d ", i)))
	}
	dataOnly := func(w http.ResponseWriter, r *http.Request, _ int) {
		var out []string
		for _, ev := range ok {
			out = append(out, ev[strings.Index(ev, "\n")+1:])
		}
		writeSSE(w, out)
	}
	cases := []faultCase{
		// Transport failures.
		{name: "connection refused", aURL: refusedURL, want: failover, aErrors: 1, reason: "refused"},
		{name: "reset before headers", stream: true, a: resetBeforeHeaders, want: failover, aErrors: 1, reason: "reset"},
		{name: "reset before content", stream: true, a: resetAfter(1, "x"), want: failover, aErrors: 1, reason: "reset"},
		{name: "reset mid-stream", stream: true, a: resetAfter(4, "partial"), want: frame, errType: "api_error", aErrors: 1, reason: "reset"},
		{name: "name does not resolve", aURL: func(*testing.T) string { return "http://nowhere.invalid:80" },
			aOpts: func(t *testing.T) string { return "resolvers " + fakeDNS(t, false) }, want: failover, aErrors: 1, reason: "resolve"},
		{name: "DNS server never answers", stream: true, aURL: func(*testing.T) string { return "http://nowhere.invalid:80" },
			aOpts: func(t *testing.T) string { return "resolvers " + fakeDNS(t, true) }, timeouts: "connect 200ms\nfirst_byte 5s",
			want: failover, aErrors: 1, reason: "resolve", within: 2 * time.Second},
		// A handshake under the race detector on a loaded machine can take
		// longer than the matrix's 200 ms connect bound.
		{name: "TLS certificate rejected", aURL: func(t *testing.T) string { return quietTLSServer(t).URL },
			timeouts: "connect 5s\nfirst_byte 5s", want: failover, aErrors: 1, reason: "certificate"},
		{name: "connect timeout", stream: true, aURL: fullBacklog, timeouts: "connect 200ms\nfirst_byte 5s",
			want: failover, aErrors: 1, reason: "timed out", within: 2 * time.Second},

		// Timeouts.
		{name: "first byte timeout, stream", stream: true, a: stall, want: failover, aErrors: 1, reason: "first_byte", within: 2 * time.Second},
		{name: "first byte timeout, JSON", a: stall, want: failover, aErrors: 1, reason: "first_byte", within: 2 * time.Second},
		{name: "silent after message_start", stream: true, a: streamThen(evs[:1]), want: failover, aErrors: 1, reason: "idle", within: 2 * time.Second},
		{name: "idle timeout mid-stream", stream: true, a: streamThen(evs[:4]), want: frame, errType: "timeout_error", aErrors: 1, within: 2 * time.Second},
		{name: "open after content without message_stop", stream: true, a: streamThen(evs[:6]), want: frame, errType: "timeout_error", aErrors: 1, within: 2 * time.Second},
		{name: "slow drip under the idle bound", stream: true, a: func(w http.ResponseWriter, r *http.Request, _ int) {
			writeSSE(w, ok[:2])
			for _, ev := range drip {
				time.Sleep(50 * time.Millisecond)
				writeEvents(w, ev)
			}
			writeEvents(w, ok[4:]...)
		}, want: answered, within: 4 * time.Second},

		// Malformed answers.
		{name: "bad JSON before content", stream: true, a: func(w http.ResponseWriter, r *http.Request, _ int) {
			writeSSE(w, []string{ok[0], event("content_block_start", `{"type":"content_block_start","index":0,`), ok[3], ok[4], ok[5], ok[6]})
		}, want: failover, aErrors: 1, reason: "not JSON"},
		{name: "bad JSON mid-stream", stream: true, a: func(w http.ResponseWriter, r *http.Request, _ int) {
			writeSSE(w, append(evs[:4:4], event("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"te`), ok[4], ok[5], ok[6]))
		}, want: frame, errType: "api_error", aErrors: 1, reason: "not JSON"},
		{name: "no event lines", stream: true, a: dataOnly, want: answered},
		{name: "oversized event", stream: true, a: func(w http.ResponseWriter, r *http.Request, _ int) {
			writeSSE(w, []string{ok[0], oversize, ok[4], ok[5], ok[6]})
		}, want: failover, aErrors: 1, reason: "oversized"},
		{name: "truncated JSON body", a: func(w http.ResponseWriter, r *http.Request, _ int) {
			full := messageJSON("from a")
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", fmt.Sprint(len(full)+100))
			io.WriteString(w, full[:len(full)/2])
		}, want: failover, aErrors: 1, reason: "unexpected EOF"},
		{name: "200 with an error body", a: func(w http.ResponseWriter, r *http.Request, _ int) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"type":"error","error":{"type":"api_error","message":"hidden"}}`)
		}, want: failover, aErrors: 1, reason: "error body"},
		// The account said when to come back: it cools down until then, and
		// the answer is not counted as an error.
		{name: "429 with retry-after", a: errorStatus(429, "rate_limit_error", "slow down", "Retry-After", "60"), want: failover, aErrors: 0, quota: true},
		{name: "529 overloaded", stream: true, a: errorStatus(529, "overloaded_error", "Overloaded"), want: failover, aErrors: 1},

		// Upstreams that keep the connection open after a complete answer.
		{name: "message_stop then open", stream: true, a: streamThen(ok), timeouts: "first_byte 5s\nidle 5s", want: answered, within: time.Second},
		{name: "JSON with length then open", a: func(w http.ResponseWriter, r *http.Request, n int) {
			w.Header().Set("Content-Length", fmt.Sprint(len(messageJSON("from a"))))
			okJSON("from a")(w, r, n)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, timeouts: "first_byte 5s\nidle 5s", want: answered, within: time.Second},
		{name: "JSON without length then open", a: func(w http.ResponseWriter, r *http.Request, _ int) {
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + messageJSON("from a"))
			buf.Flush()
			// Without a length only the end of the connection ends the body.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, conn)
		}, want: failover, aErrors: 1, reason: "idle", within: 2 * time.Second},

		// Scopes: a passthrough provider's 401, 403 and 429 are about the
		// client's credential, never counted against the provider; its other
		// failures are the provider's whoever asks.
		{name: "passthrough 401", a: errorStatus(401, "authentication_error", "invalid x-api-key"), aOpts: passthrough, want: failover, aErrors: 0},
		{name: "passthrough 403", stream: true, a: errorStatus(403, "permission_error", "not allowed"), aOpts: passthrough, want: failover, aErrors: 0},
		{name: "passthrough 429 with retry-after", a: errorStatus(429, "rate_limit_error", "slow down", "Retry-After", "60"), aOpts: passthrough, want: failover, aErrors: 0},
		{name: "passthrough 402", a: errorStatus(402, "billing_error", "credit balance is too low"), aOpts: passthrough, want: failover, aErrors: 0},
		{name: "passthrough 500", stream: true, a: errorStatus(500, "api_error", "down"), aOpts: passthrough, want: failover, aErrors: 1, reason: "HTTP 500"},
		{name: "passthrough 529", a: errorStatus(529, "overloaded_error", "Overloaded"), aOpts: passthrough, want: failover, aErrors: 1, reason: "HTTP 529"},
		{name: "passthrough in-band authentication error", stream: true, a: func(w http.ResponseWriter, r *http.Request, _ int) {
			writeSSE(w, []string{ok[0], event("error", `{"type":"error","error":{"type":"authentication_error","message":"token expired"}}`)})
		}, aOpts: passthrough, want: failover, aErrors: 0},

		// Every provider fails.
		{name: "all fail", a: errorStatus(500, "api_error", "a is down"), b: hangUp, want: failed, errType: "api_error", aErrors: 1},
		{name: "all time out", stream: true, a: stall, b: stall, timeouts: "first_byte 300ms", want: failed, errType: "timeout_error", aErrors: 1, within: 3 * time.Second},
	}
	for _, status := range []int{401, 402, 403, 404, 408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529} {
		cases = append(cases, faultCase{name: fmt.Sprintf("status %d", status), stream: status%2 == 0, a: errorStatus(status, typeForStatus(status), "failing"),
			want: failover, aErrors: 1, reason: fmt.Sprintf("HTTP %d", status)})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var a *mock
			aURL := ""
			if tc.aURL != nil {
				aURL = tc.aURL(t)
			} else {
				a = newMock(t, tc.a)
				aURL = a.URL
			}
			bBehave := tc.b
			if bBehave == nil {
				bBehave = okEither("from b")
			}
			b := newMock(t, bBehave)
			opts, timeouts := "", tc.timeouts
			if tc.aOpts != nil {
				opts = tc.aOpts(t)
			}
			if timeouts == "" {
				timeouts = faultTimeouts
			}
			bOpts := ""
			if tc.b != nil {
				// b fails too, under the same bounds.
				bOpts = "timeouts {\n" + timeouts + "\n}"
			}
			e := start(t, faultConfig(aURL, opts, timeouts, b.URL, bOpts, ""))
			if tc.b == nil {
				if resp, out := e.messages(body("warm", tc.stream)); resp.StatusCode != 200 {
					t.Fatalf("warm-up: %d %s", resp.StatusCode, out)
				}
			}
			within := tc.within
			if within == 0 {
				within = 3 * time.Second
			}
			client := &http.Client{Timeout: within + 2*time.Second, Transport: &http.Transport{}}
			servers := []*httptest.Server{b.Server}
			if a != nil {
				servers = append(servers, a.Server)
			}
			leaks := newLeakCheck(e, []*http.Client{client}, servers...)
			bBefore := b.count()

			req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/messages", bytes.NewReader(body("claude-x", tc.stream)))
			req.Header.Set("Content-Type", "application/json")
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			out, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			elapsed := time.Since(t0)
			if err != nil {
				t.Fatalf("reading the answer after %v: %v (got %.300q)", elapsed, err, out)
			}
			if elapsed > within {
				t.Fatalf("answer took %v, want at most %v", elapsed, within)
			}
			evs := wellFormed(t, resp, out)
			provider := resp.Header.Get("X-Claude-Balancer-Provider")
			switch tc.want {
			case failover:
				if resp.StatusCode != 200 || provider != "b" || !strings.Contains(string(out), "from b") {
					t.Fatalf("want b's answer, got %d from %q: %.300s", resp.StatusCode, provider, out)
				}
				if b.count()-bBefore != 1 {
					t.Fatalf("b called %d times", b.count()-bBefore)
				}
			case frame:
				if resp.StatusCode != 200 || provider != "a" || !strings.Contains(streamText(evs), "partial") {
					t.Fatalf("want a's partial stream, got %d from %q: %.300s", resp.StatusCode, provider, out)
				}
				if got := errorFrame(evs); got != tc.errType {
					t.Fatalf("stream ends with error frame %q, want %q:\n%s", got, tc.errType, out)
				}
				if b.count() != bBefore {
					t.Fatal("failover after commit")
				}
			case answered:
				if resp.StatusCode != 200 || provider != "a" || errorFrame(evs) != "" {
					t.Fatalf("want a's answer, got %d from %q: %.300s", resp.StatusCode, provider, out)
				}
				if b.count() != bBefore {
					t.Fatal("b was called")
				}
			case failed:
				if resp.StatusCode < 500 || !strings.Contains(string(out), `"type":"`+tc.errType+`"`) ||
					!strings.Contains(string(out), "a: ") || !strings.Contains(string(out), "b: ") {
					t.Fatalf("want an error naming both providers, got %d: %s", resp.StatusCode, out)
				}
			}
			if a != nil && a.count() != 1 {
				t.Fatalf("a called %d times", a.count())
			}
			p := e.providers()["a"]
			t.Logf("%d from %q in %v, last event %q; a: %d errors, quota %v, %q", resp.StatusCode, provider,
				elapsed.Round(time.Millisecond), lastType(evs), p.ErrorCount, p.QuotaCooldown, p.LastError)
			if p.ErrorCount != tc.aErrors || p.QuotaCooldown != tc.quota {
				t.Fatalf("a's health: errors %d quota %v, want %d %v (%s)", p.ErrorCount, p.QuotaCooldown, tc.aErrors, tc.quota, p.LastError)
			}
			if !strings.Contains(p.LastError, tc.reason) {
				t.Fatalf("a's last error %q does not mention %q", p.LastError, tc.reason)
			}
			if pb := e.providers()["b"]; tc.b == nil && pb.ErrorCount != 0 {
				t.Fatalf("b's errors: %d", pb.ErrorCount)
			}
			leaks.verify()
		})
	}
}

// typeForStatus is the Anthropic error type a provider sends with status.
func typeForStatus(status int) string {
	switch status {
	case 401:
		return "authentication_error"
	case 402:
		return "billing_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 408:
		return "timeout_error"
	case 429:
		return "rate_limit_error"
	case 529:
		return "overloaded_error"
	}
	return "api_error"
}

// TestClientDisconnectCancelsUpstream leaves at every phase of a request and
// checks that the provider's request is cancelled, its health untouched,
// and nothing left behind.
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	evs := sseEvents("partial")
	phases := []struct {
		name string
		// sent is what the provider sends before it waits.
		sent []string
		// content: the client leaves after it read content.
		content bool
	}{
		{name: "before the response starts"},
		{name: "after headers, before content", sent: []string{evs[0], evs[2]}},
		{name: "mid-stream", sent: evs[:4], content: true},
	}
	for _, mode := range []string{"dedup on", "dedup off"} {
		extra := ""
		if mode == "dedup off" {
			extra = "dedup off"
		}
		for _, ph := range phases {
			t.Run(mode+"/"+ph.name, func(t *testing.T) {
				reached, cancelled := make(chan struct{}), make(chan struct{})
				a := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
					if n > 0 {
						okEither("warm")(w, r, n)
						return
					}
					if ph.sent != nil {
						writeSSE(w, ph.sent)
					}
					close(reached)
					<-r.Context().Done()
					close(cancelled)
				})
				b := newMock(t, okEither("from b"))
				e := start(t, faultConfig(a.URL, "", "first_byte 10s\nidle 10s", b.URL, "", extra))
				e.messages(body("warm", true))
				client := &http.Client{Transport: &http.Transport{}}
				leaks := newLeakCheck(e, []*http.Client{client}, a.Server, b.Server)

				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.base+"/v1/messages", bytes.NewReader(body("claude-x", true)))
				req.Header.Set("Content-Type", "application/json")
				done := make(chan error, 1)
				go func() {
					resp, err := client.Do(req)
					if err == nil {
						if ph.content {
							// Leave only once the content reached this client.
							rd := sse.NewReader(resp.Body)
							for {
								ev, err := rd.Next()
								if err != nil || ev.Name == "content_block_delta" {
									break
								}
							}
							rd.Release()
							cancel()
						}
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					done <- err
				}()
				select {
				case <-reached:
				case <-time.After(5 * time.Second):
					t.Fatal("the request never reached the provider")
				}
				if !ph.content {
					cancel()
				}
				select {
				case <-cancelled:
				case <-time.After(5 * time.Second):
					t.Fatal("the provider's request was not cancelled")
				}
				if err := <-done; err == nil {
					t.Fatal("the client's request ended normally")
				}
				if p := e.providers()["a"]; p.ErrorCount != 0 || b.count() != 1 {
					t.Fatalf("a client leaving counted against a (%d errors) or failed over (b called %d times)", p.ErrorCount, b.count())
				}
				leaks.verify()
			})
		}
		t.Run(mode+"/while sending the body", func(t *testing.T) {
			a := newMock(t, okEither("from a"))
			b := newMock(t, okEither("from b"))
			e := start(t, faultConfig(a.URL, "", faultTimeouts, b.URL, "", extra))
			e.messages(body("warm", false))
			leaks := newLeakCheck(e, nil, a.Server, b.Server)
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n%s", body("claude-x", false)[:20])
			conn.Close()
			leaks.verify()
			if a.count() != 0 {
				t.Fatal("a partial body reached the provider")
			}
		})
	}
}

// bigStream is a provider that streams 64 KiB text deltas until the test
// calls finish, then ends the message. written counts the bytes it has
// handed to its connection.
type bigStream struct {
	gate    chan struct{}
	pace    time.Duration
	until   int64 // bytes after which it ends by itself; 0: only finish ends it
	stop    atomic.Bool
	written atomic.Int64
	calls   atomic.Int32
}

const bigChunk = 64 << 10

// newBigStream returns a provider that sends a chunk every pace (as fast as
// it can with 0) once the gate opens. Only its first request gets the big
// stream; later ones get a small answer at once.
func newBigStream(pace time.Duration, until int64) *bigStream {
	return &bigStream{gate: make(chan struct{}), pace: pace, until: until}
}

func (s *bigStream) finish() { s.stop.Store(true) }

func (s *bigStream) behave(w http.ResponseWriter, r *http.Request, n int) {
	if s.calls.Add(1) > 1 {
		okEither("small")(w, r, n)
		return
	}
	ok := sseEvents("")
	writeSSE(w, append(ok[:2:2], textDelta("partial")))
	<-s.gate
	delta := textDelta(strings.Repeat("x", bigChunk))
	rc := http.NewResponseController(w)
	// The bound only matters if the test never calls finish.
	for i := 0; i < 4096 && !s.stop.Load() && (s.until == 0 || s.written.Load() < s.until); i++ {
		if _, err := io.WriteString(w, delta); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		s.written.Add(int64(len(delta)))
		if s.pace > 0 {
			time.Sleep(s.pace)
		}
	}
	writeEvents(w, ok[4:]...)
}

// readStream reads a stream without keeping it. It returns its last event
// and the number of big chunks, which must have arrived unaltered.
func readStream(r io.Reader) (last sse.Event, chunks int, err error) {
	rd := sse.NewReader(r)
	defer rd.Release()
	chunk := bytes.Repeat([]byte("x"), bigChunk)
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			return last, chunks, nil
		}
		if err != nil {
			return last, chunks, err
		}
		if ev.Name == "content_block_delta" && len(ev.Data) > bigChunk {
			if !bytes.Contains(ev.Data, chunk) {
				return last, chunks, fmt.Errorf("chunk %d was altered", chunks)
			}
			chunks++
		}
		last = ev
	}
}

// chunksWritten is how many big chunks a bigStream sent.
func (s *bigStream) chunksWritten() int {
	return int(s.written.Load() / int64(len(textDelta(strings.Repeat("x", bigChunk)))))
}

// TestSlowReader holds a streaming client that reads nothing while the
// answer grows past what the sockets buffer.
func TestSlowReader(t *testing.T) {
	t.Run("dedup off: the provider waits, the others do not, nothing is lost", func(t *testing.T) {
		up := newBigStream(0, 0)
		a := newMock(t, up.behave)
		b := newMock(t, okEither("from b"))
		e := start(t, faultConfig(a.URL, "", "first_byte 2s\nidle 300ms", b.URL, "", "dedup off"))
		e.messages(body("warm", true))
		slow := &http.Client{Transport: &http.Transport{}}
		leaks := newLeakCheck(e, []*http.Client{slow}, a.Server, b.Server)
		resp, err := slow.Post(e.base+"/v1/messages", "application/json", bytes.NewReader(body("claude-x", true)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		close(up.gate)
		// Wait until the provider has been unable to write for three idle
		// timeouts: the relay is blocked on the slow client.
		var last int64
		var since time.Time
		waitFor(t, "the provider to block", func() bool {
			if n := up.written.Load(); n != last || since.IsZero() {
				last, since = n, time.Now()
			}
			return last > 0 && time.Since(since) > 900*time.Millisecond
		})
		// Another client of the same provider is served meanwhile.
		t0 := time.Now()
		other, out := e.messages(body("other", true))
		if other.StatusCode != 200 || !strings.Contains(string(out), "message_stop") || time.Since(t0) > 2*time.Second {
			t.Fatalf("another client: %d after %v: %.200s", other.StatusCode, time.Since(t0), out)
		}
		up.finish()
		ev, chunks, err := readStream(resp.Body)
		if err != nil || ev.Name != "message_stop" {
			t.Fatalf("the slow client's stream ended with %v %s %s after %d chunks", err, ev.Name, ev.Data, chunks)
		}
		if chunks != up.chunksWritten() {
			t.Fatalf("the slow client got %d chunks of %d", chunks, up.chunksWritten())
		}
		if p := e.providers()["a"]; p.ErrorCount != 0 {
			t.Fatalf("a slow client counted against the provider: %s", p.LastError)
		}
		resp.Body.Close()
		leaks.verify()
	})
	t.Run("dedup on: the slow client is ended, the others get everything", func(t *testing.T) {
		// Paced like a fast provider, so that only the client that reads
		// nothing falls behind. 24 MiB is well past what the sockets buffer
		// (about 4 MiB) plus the lag a member may have (4 MiB).
		up := newBigStream(4*time.Millisecond, 24<<20)
		a := newMock(t, up.behave)
		b := newMock(t, okEither("from b"))
		e := start(t, faultConfig(a.URL, "", "first_byte 2s\nidle 2s", b.URL, "", ""))
		e.messages(body("warm", true))
		slow, fast := &http.Client{Transport: &http.Transport{}}, &http.Client{Transport: &http.Transport{}}
		leaks := newLeakCheck(e, []*http.Client{slow, fast}, a.Server, b.Server)
		resp, err := slow.Post(e.base+"/v1/messages", "application/json", bytes.NewReader(body("claude-x", true)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		type result struct {
			last   sse.Event
			chunks int
			err    error
		}
		joined := make(chan result, 1)
		go func() {
			fr, err := fast.Post(e.base+"/v1/messages", "application/json", bytes.NewReader(body("claude-x", true)))
			if err != nil {
				joined <- result{err: err}
				return
			}
			defer fr.Body.Close()
			last, chunks, err := readStream(fr.Body)
			joined <- result{last, chunks, err}
		}()
		waitFor(t, "the identical request to join", func() bool { j, _ := e.dedupStats(); return j == 1 })
		close(up.gate)
		var f result
		select {
		case f = <-joined:
		case <-time.After(10 * time.Second):
			t.Fatal("the joined client was held up")
		}
		if f.err != nil || f.last.Name != "message_stop" || f.chunks != up.chunksWritten() {
			t.Fatalf("the joined client's stream ended with %v %q after %d chunks of %d", f.err, f.last.Name, f.chunks, up.chunksWritten())
		}
		ev, _, err := readStream(resp.Body)
		if err != nil || ev.Name != "error" || !strings.Contains(string(ev.Data), "overloaded_error") || !strings.Contains(string(ev.Data), "too slow") {
			t.Fatalf("the slow client's stream ended with %v %s %s", err, ev.Name, ev.Data)
		}
		if up.calls.Load() != 1 || e.slowEnded() != 1 {
			t.Fatalf("upstream calls: %d, want one shared call; slow clients ended: %d", up.calls.Load(), e.slowEnded())
		}
		if p := e.providers()["a"]; p.ErrorCount != 0 {
			t.Fatalf("a slow client counted against the provider: %s", p.LastError)
		}
		resp.Body.Close()
		leaks.verify()
	})
}
