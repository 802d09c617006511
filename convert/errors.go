package convert

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

// UpstreamError is an error an OpenAI-compatible provider reported in a
// reply with a 2xx status: an error object instead of a completion, or an
// error chunk in the middle of a stream.
type UpstreamError struct {
	// Status is the HTTP status the error stands for: the error's own code
	// when it carries one, else 500.
	Status int
	// Type is the Anthropic error type for Status.
	Type string
	// Message is the provider's message.
	Message string
}

func (e *UpstreamError) Error() string {
	return fmt.Sprintf("convert: upstream error %d: %s: %s", e.Status, e.Type, e.Message)
}

// maxErrorText bounds the part of a non-JSON error body used as a message.
const maxErrorText = 512

// ErrorFromOpenAI returns the Anthropic error type and message for an error
// reply of an OpenAI-compatible provider with the given HTTP status. It reads
// the shapes seen in the wild: {"error":{"message","type","code"}} (OpenAI,
// OpenRouter, DeepSeek), {"error":"text"}, {"object":"error","message"}
// (vLLM), {"detail":...} (FastAPI servers), a list holding one of these
// (Gemini), and plain text. A context-length error becomes Anthropic's
// "prompt is too long: N tokens > M maximum", which Claude Code answers by
// compacting the conversation.
func ErrorFromOpenAI(status int, body []byte) (errType, message string) {
	e := parseError(status, body)
	return e.Type, e.Message
}

func parseError(status int, body []byte) *UpstreamError {
	msg, code, typ := errorFields(body)
	if status < 400 {
		status = http.StatusInternalServerError
		if n, err := strconv.Atoi(code); err == nil && n >= 400 && n <= 599 {
			status = n
		}
	}
	if msg == "" {
		msg = http.StatusText(status)
		if msg == "" {
			msg = "upstream error " + strconv.Itoa(status)
		}
	}
	errType := apierr.TypeForStatus(status)
	switch {
	case code == "insufficient_quota" || typ == "insufficient_quota":
		errType = apierr.Billing
	case status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge ||
		status == http.StatusUnprocessableEntity:
		if m, ok := contextLengthMessage(msg, code); ok {
			errType, msg = apierr.InvalidRequest, m
			status = http.StatusBadRequest
		}
	}
	return &UpstreamError{Status: status, Type: errType, Message: msg}
}

// errorFields extracts the message, code and type of an error body.
func errorFields(body []byte) (msg, code, typ string) {
	b := trimSpace(body)
	if !validJSON(b) {
		text := strings.TrimSpace(string(b))
		if len(text) > maxErrorText {
			text = text[:maxErrorText] + "..."
		}
		return text, "", ""
	}
	if isArray(b) {
		a := newArray(b)
		first, _ := a.next()
		b = first
	}
	if !isObject(b) {
		return "", "", ""
	}
	e := field(b, "error")
	switch {
	case isString(e):
		return str(e), "", ""
	case isObject(e):
		b = e
	}
	msg = str(field(b, "message"))
	if msg == "" {
		msg = detailText(field(b, "detail"))
	}
	return msg, scalarText(field(b, "code")), str(field(b, "type"))
}

// detailText reads FastAPI's "detail": a string or a list of {"msg"}.
func detailText(d []byte) string {
	if isString(d) {
		return str(d)
	}
	var parts []string
	a := newArray(d)
	for e, ok := a.next(); ok; e, ok = a.next() {
		if m := str(field(e, "msg")); m != "" {
			parts = append(parts, m)
		}
	}
	return strings.Join(parts, "; ")
}

// scalarText returns a string or number value as text.
func scalarText(v []byte) string {
	if isString(v) {
		return str(v)
	}
	if isNumber(v) {
		return string(v)
	}
	return ""
}

var (
	contextLimitRe = regexp.MustCompile(`(?i)maximum context length is (\d+) tokens.*?(?:resulted in|requested(?: about)?) (\d+) tokens`)
	contextWordsRe = regexp.MustCompile(`(?i)context[ _]length|context window|maximum context|too many tokens|prompt is too long|input is too long`)
)

// contextLengthMessage rewrites a provider's context-length error in
// Anthropic's words.
func contextLengthMessage(msg, code string) (string, bool) {
	if strings.HasPrefix(msg, "prompt is too long") {
		return msg, true
	}
	if m := contextLimitRe.FindStringSubmatch(msg); m != nil {
		return "prompt is too long: " + m[2] + " tokens > " + m[1] + " maximum", true
	}
	if code == "context_length_exceeded" || contextWordsRe.MatchString(msg) {
		return "prompt is too long: " + msg, true
	}
	return "", false
}
