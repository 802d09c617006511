package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// fault is what a mock provider does with one request.
type fault int

const (
	faultNone fault = iota
	// fault500 answers 500 api_error at once.
	fault500
	// fault529 answers 529 overloaded_error, half the time with
	// retry-after: 1.
	fault529
	// faultOverloadedInBand starts a 200 stream and sends an overloaded
	// error frame before any content (a JSON request gets fault529).
	faultOverloadedInBand
	// faultResetAfterContent sends part of the answer, content included,
	// then resets the connection.
	faultResetAfterContent
	// faultSlow delays the first byte and every event, then answers in full.
	faultSlow
	numFaults
)

var faultNames = [numFaults]string{"ok", "500", "529", "overloaded in band", "reset after content", "slow"}

func (f fault) String() string { return faultNames[f] }

// providerSpec describes one mock provider.
type providerSpec struct {
	name string
	// faultRate is the fraction of requests that get a fault; the kind is
	// drawn uniformly from fault500 to faultSlow.
	faultRate float64
	// firstByte delays the response headers.
	firstByte time.Duration
	// quotaStep, when set, makes the provider a subscription account whose
	// 5h window fills by this share with each answer and resets every
	// quotaWindow; full, it answers 429 with the window rejected.
	quotaStep   float64
	quotaWindow time.Duration
}

// mockProvider is an Anthropic Messages API on loopback. Its answer is
// derived from the request's nonce, so a client can tell its own answer from
// any other, whichever provider served it.
type mockProvider struct {
	providerSpec
	srv *httptest.Server

	mu  sync.Mutex
	rng *rand.Rand

	served [numFaults]atomic.Int64
	// conns counts the connections open to the mock.
	conns atomic.Int64
	// rejected counts requests without the provider's key or with a body
	// the mock cannot read: the balancer should send none.
	rejected atomic.Int64

	// The quota window of a subscription account: its use and reset.
	util    float64
	resetAt time.Time
	// limited counts the 429s the window's limit caused.
	limited atomic.Int64
}

// quota fills the account's window with one answer and sets its headers; it
// reports false when the window is full: the answer is a 429.
func (m *mockProvider) quota(h http.Header) bool {
	if m.quotaStep == 0 {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if !now.Before(m.resetAt) {
		m.util, m.resetAt = 0, now.Add(m.quotaWindow)
	}
	status, ok := "allowed", m.util < 1
	if ok {
		m.util += m.quotaStep
		if m.util >= 0.8 {
			status = "allowed_warning"
		}
	} else {
		status = "rejected"
	}
	h.Set("Anthropic-Ratelimit-Unified-Status", status)
	h.Set("Anthropic-Ratelimit-Unified-Representative-Claim", "five_hour")
	h.Set("Anthropic-Ratelimit-Unified-5h-Utilization", strconv.FormatFloat(m.util, 'f', 3, 64))
	h.Set("Anthropic-Ratelimit-Unified-5h-Reset", strconv.FormatInt(m.resetAt.Unix()+1, 10))
	h.Set("Anthropic-Ratelimit-Unified-5h-Status", status)
	return ok
}

// Timing of a healthy answer: deltas events, gap apart. A JSON answer takes
// as long before it is sent, so duplicates find it in flight.
const (
	deltas  = 12
	gap     = 3 * time.Millisecond
	slowGap = 25 * time.Millisecond
	slowTTF = 250 * time.Millisecond
)

func newMockProvider(spec providerSpec, seed uint64) *mockProvider {
	m := &mockProvider{providerSpec: spec, rng: rand.New(rand.NewPCG(seed, uint64(len(spec.name))))}
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(m.serve))
	m.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			m.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			m.conns.Add(-1)
		}
	}
	m.srv.Start()
	return m
}

func (m *mockProvider) key() string { return "sk-soak-" + m.name }

// pick draws the fault for a request, and whether a 529 says when to retry.
func (m *mockProvider) pick() (fault, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rng.Float64() >= m.faultRate {
		return faultNone, false
	}
	return fault500 + fault(m.rng.IntN(int(faultSlow-fault500+1))), m.rng.IntN(2) == 0
}

// soakRequest is what the mock reads from a request body.
type soakRequest struct {
	Model    string `json:"model"`
	Stream   bool   `json:"stream"`
	Messages []struct {
		Content string `json:"content"`
	} `json:"messages"`
}

func (m *mockProvider) serve(w http.ResponseWriter, r *http.Request) {
	var req soakRequest
	if r.URL.Path != "/v1/messages" || r.Header.Get("X-Api-Key") != m.key() ||
		json.NewDecoder(r.Body).Decode(&req) != nil || len(req.Messages) != 1 {
		m.rejected.Add(1)
		writeError(w, http.StatusBadRequest, "invalid_request_error", "not a soak request")
		return
	}
	h := w.Header()
	h.Set("Request-Id", "req_soak_"+m.name)
	if !m.quota(h) {
		m.limited.Add(1)
		writeError(w, http.StatusTooManyRequests, "rate_limit_error", "This request would exceed your account's rate limit.")
		return
	}
	f, retryAfter := m.pick()
	if f == faultOverloadedInBand && !req.Stream {
		f = fault529
	}
	m.served[f].Add(1)
	ctx := r.Context()
	ttf, between := m.firstByte, gap
	if f == faultSlow {
		ttf, between = slowTTF, slowGap
	}
	if !pause(ctx, ttf) {
		return
	}
	switch f {
	case fault500:
		writeError(w, http.StatusInternalServerError, "api_error", "internal server error")
		return
	case fault529:
		if retryAfter {
			h.Set("Retry-After", "1")
		}
		writeError(w, 529, "overloaded_error", "Overloaded")
		return
	}
	text := answerText(req.Messages[0].Content)
	if !req.Stream {
		if !pause(ctx, deltas*between) {
			return
		}
		body := messageJSON(req.Model, text)
		h.Set("Content-Type", "application/json")
		if f == faultResetAfterContent {
			h.Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body[:len(body)/2])
			reset(w)
			return
		}
		_, _ = w.Write(body)
		return
	}
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(name, data string) bool {
		_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
		return err == nil && rc.Flush() == nil
	}
	if !send("message_start", messageStart(req.Model)) || !send("ping", `{"type": "ping"}`) {
		return
	}
	if f == faultOverloadedInBand {
		send("error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
		return
	}
	if !send("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`) {
		return
	}
	step := (len(text) + deltas - 1) / deltas
	for i := 0; i < len(text); i += step {
		if f == faultResetAfterContent && i >= len(text)/2 {
			reset(w)
			return
		}
		chunk, _ := json.Marshal(text[i:min(i+step, len(text))])
		if !pause(ctx, between) ||
			!send("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`+string(chunk)+`}}`) {
			return
		}
	}
	_ = send("content_block_stop", `{"type":"content_block_stop","index":0}`) &&
		send("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":`+strconv.Itoa(deltas)+`}}`) &&
		send("message_stop", `{"type":"message_stop"}`)
}

// pause waits d, or less when the request goes away; it reports whether
// the request is still there.
func pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// reset ends the connection with a TCP reset, after what was written so far.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":%q}}`, typ, msg)
}

// answerText is the text of the answer to a request whose message is nonce.
func answerText(nonce string) string {
	return "Reply to " + nonce + ": the stream is relayed event by event, and a duplicate gets these same words."
}

func messageStart(model string) string {
	m, _ := json.Marshal(model)
	return `{"type":"message_start","message":{"id":"msg_soak","type":"message","role":"assistant","model":` + string(m) +
		`,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}`
}

func messageJSON(model, text string) []byte {
	m, _ := json.Marshal(model)
	t, _ := json.Marshal(text)
	return []byte(`{"id":"msg_soak","type":"message","role":"assistant","model":` + string(m) +
		`,"content":[{"type":"text","text":` + string(t) + `}],"stop_reason":"end_turn","stop_sequence":null,` +
		`"usage":{"input_tokens":10,"output_tokens":` + strconv.Itoa(deltas) + `}}`)
}
