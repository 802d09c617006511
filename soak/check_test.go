package soak

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// Outcome labels of an answer a client read to its end.
const (
	okStream = "ok stream"
	okJSON   = "ok json"
	// errStream is followed by the error frame's type.
	errStream = "error stream"
	// errJSON is followed by the status and the envelope's type.
	errJSON   = "error json"
	cancelled = "cancelled by client"
)

// check reads an answer to its end and judges it. A streaming request must
// get an event stream that ends with message_stop (and whose text is want)
// or with an "event: error" frame, nothing after either; a JSON request must
// get a complete message whose text is want. Any other status must carry an
// Anthropic error envelope. check returns the outcome label, or an error for
// anything else: a truncated or malformed answer, a wrong text, bytes after
// the end. onEvent, when set, is called with the count of events read so far.
func check(resp *http.Response, stream bool, want string, onEvent func(n int)) (string, error) {
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", fmt.Errorf("status %d: reading the body: %w", resp.StatusCode, err)
		}
		if ct != "application/json" {
			return "", fmt.Errorf("status %d with content type %q: %.200s", resp.StatusCode, ct, body)
		}
		typ, err := envelope(body)
		if err != nil {
			return "", fmt.Errorf("status %d: %w", resp.StatusCode, err)
		}
		return errJSON + " " + strconv.Itoa(resp.StatusCode) + " " + typ, nil
	}
	if !stream {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", fmt.Errorf("reading the message: %w", err)
		}
		if ct != "application/json" {
			return "", fmt.Errorf("message with content type %q", ct)
		}
		if err := checkMessage(body, want); err != nil {
			return "", err
		}
		return okJSON, nil
	}
	if ct != "text/event-stream" {
		return "", fmt.Errorf("stream with content type %q", ct)
	}
	rd := sse.NewReader(resp.Body)
	defer rd.Release()
	var (
		acc     anthropic.Accumulator
		n       int
		end     string
		errType string
	)
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("reading event %d: %w", n+1, err)
		}
		if ev.Empty() {
			continue
		}
		n++
		if end != "" {
			return "", fmt.Errorf("event %q after %s", ev.Name, end)
		}
		if ev.Name == "error" {
			if errType, err = envelope(ev.Data); err != nil {
				return "", fmt.Errorf("error frame: %w", err)
			}
			end = "an error frame"
		} else if err := acc.Add(ev.Name, ev.Data); err != nil {
			return "", fmt.Errorf("event %d (%s): %w", n, ev.Name, err)
		} else if acc.Done() {
			end = "message_stop"
		}
		if onEvent != nil {
			onEvent(n)
		}
	}
	switch {
	case errType != "":
		return errStream + " " + errType, nil
	case end == "":
		return "", fmt.Errorf("stream ended after %d events without message_stop or an error frame", n)
	}
	msg, err := acc.Message()
	if err != nil {
		return "", err
	}
	if err := checkMessage(msg, want); err != nil {
		return "", err
	}
	return okStream, nil
}

// envelope checks that b is an Anthropic error envelope and returns its
// error type.
func envelope(b []byte) (string, error) {
	var v struct {
		Type  string `json:"type"`
		Error *struct {
			Type    string  `json:"type"`
			Message *string `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("error body is not JSON: %.200q", b)
	}
	if dec.More() {
		return "", fmt.Errorf("bytes after the error envelope: %.200q", b)
	}
	if v.Type != "error" || v.Error == nil || v.Error.Message == nil || v.Error.Type == "" {
		return "", fmt.Errorf("not an Anthropic error envelope: %.200q", b)
	}
	return v.Error.Type, nil
}

// checkMessage checks that b is a finished message whose text is want.
func checkMessage(b []byte, want string) error {
	var m struct {
		Type       string `json:"type"`
		Role       string `json:"role"`
		StopReason string `json:"stop_reason"`
		Content    []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("message is not JSON: %w: %.200q", err, b)
	}
	if m.Type != "message" || m.Role != "assistant" || m.StopReason == "" {
		return fmt.Errorf("not a finished message: %.200q", b)
	}
	var text []byte
	for _, c := range m.Content {
		if c.Type != "text" {
			return fmt.Errorf("unexpected %q block: %.200q", c.Type, b)
		}
		text = append(text, c.Text...)
	}
	if string(text) != want {
		return fmt.Errorf("%w: got %q, want %q", errWrongAnswer, text, want)
	}
	return nil
}

// errWrongAnswer is a complete answer to another request.
var errWrongAnswer = errors.New("wrong answer")

func sseEvent(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }

// completeStream is a well-formed stream whose text is text.
func completeStream(text string) []string {
	t, _ := json.Marshal(text)
	return []string{
		sseEvent("message_start", messageStart("m")),
		sseEvent("ping", `{"type":"ping"}`),
		sseEvent("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`),
		sseEvent("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`+string(t)+`}}`),
		sseEvent("content_block_stop", `{"type":"content_block_stop","index":0}`),
		sseEvent("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}`),
		sseEvent("message_stop", `{"type":"message_stop"}`),
	}
}

func joined(parts ...[]string) string {
	var s string
	for _, p := range parts {
		for _, e := range p {
			s += e
		}
	}
	return s
}

func TestCheckAcceptsOnlyCompleteAnswersAndWellFormedErrors(t *testing.T) {
	const want = "hello"
	full := completeStream(want)
	errFrame := sseEvent("error", `{"type":"error","error":{"type":"api_error","message":"upstream reset"}}`)
	tests := []struct {
		name   string
		stream bool
		status int
		ct     string
		body   string
		want   string // outcome; empty when check must fail
	}{
		{"complete stream", true, 200, "text/event-stream; charset=utf-8", joined(full), okStream},
		{"stream ending with an error frame after content", true, 200, "text/event-stream", joined(full[:4]) + errFrame, errStream + " api_error"},
		{"stream ending with an error frame before content", true, 200, "text/event-stream", joined(full[:2]) + errFrame, errStream + " api_error"},
		{"stream cut before message_stop", true, 200, "text/event-stream", joined(full[:6]), ""},
		{"stream cut inside an event", true, 200, "text/event-stream", joined(full[:6]) + "event: message_stop\ndata: {\"type\"", ""},
		{"event after message_stop", true, 200, "text/event-stream", joined(full) + sseEvent("ping", `{"type":"ping"}`), ""},
		{"event after an error frame", true, 200, "text/event-stream", joined(full[:4]) + errFrame + full[4], ""},
		{"error frame that is not an envelope", true, 200, "text/event-stream", joined(full[:4]) + sseEvent("error", `oops`), ""},
		{"stream with another request's text", true, 200, "text/event-stream", joined(completeStream("other")), ""},
		{"stream request answered with JSON", true, 200, "application/json", string(messageJSON("m", want)), ""},
		{"complete message", false, 200, "application/json", string(messageJSON("m", want)), okJSON},
		{"truncated message", false, 200, "application/json", string(messageJSON("m", want))[:40], ""},
		{"message with another request's text", false, 200, "application/json", string(messageJSON("m", "other")), ""},
		{"unfinished message", false, 200, "application/json", `{"type":"message","role":"assistant","content":[{"type":"text","text":"hello"}],"stop_reason":null}`, ""},
		{"error envelope", false, 529, "application/json", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, errJSON + " 529 overloaded_error"},
		{"error envelope to a streaming request", true, 500, "application/json", `{"type":"error","error":{"type":"api_error","message":"x"}}`, errJSON + " 500 api_error"},
		{"plain text error", false, 502, "text/plain", "bad gateway", ""},
		{"envelope with bytes after it", false, 500, "application/json", `{"type":"error","error":{"type":"api_error","message":"x"}}{}`, ""},
		{"envelope without a type", false, 500, "application/json", `{"type":"error","error":{"message":"x"}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tt.status, Header: http.Header{"Content-Type": {tt.ct}},
				Body: io.NopCloser(strings.NewReader(tt.body))}
			got, err := check(resp, tt.stream, want, nil)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("check accepted it as %q", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("check = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestCheckCountsEventsForTheCaller(t *testing.T) {
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: io.NopCloser(strings.NewReader(joined(completeStream("x"))))}
	var seen []int
	if _, err := check(resp, true, "x", func(n int) { seen = append(seen, n) }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[1 2 3 4 5 6 7]" {
		t.Fatalf("onEvent saw %v", seen)
	}
}
